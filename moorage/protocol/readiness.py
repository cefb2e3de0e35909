"""An app's readiness timeout, as the control plane stores it and a DEPLOYMENT carries it.

How long a new version may take to run and, with a port, accept connections before the
runtime gives it up and the previous version serves again. Deployments sent before the field
existed (an older control plane) leave it out: the agent's runtime then uses its own default
(:data:`READY_TIMEOUT_DEFAULT` for one Docker Engine).
"""

from __future__ import annotations

from typing import Any

#: Seconds, when an app does not say.
READY_TIMEOUT_DEFAULT = 30
#: Bounds: at least a second; at most ten minutes, since an agent runs a region's deploys
#: one after the other and a long wait holds the others up.
READY_TIMEOUT_MIN = 1
READY_TIMEOUT_MAX = 600


def ready_timeout_from(payload: dict[str, Any]) -> int | None:
    """A DEPLOYMENT's ``ready_timeout``: ``None`` when absent or null; raises
    :class:`ValueError` for anything but a whole number of seconds within the bounds."""
    value = payload.get("ready_timeout")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) \
            or not READY_TIMEOUT_MIN <= value <= READY_TIMEOUT_MAX:
        raise ValueError(f"ready_timeout is not a whole number of seconds between "
                         f"{READY_TIMEOUT_MIN} and {READY_TIMEOUT_MAX}")
    return value
