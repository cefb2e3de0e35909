"""A CREDENTIAL's ``expires_at`` (``docs/sync.md``): when the login a region holds stops
working, as the token's issuer said.

``null`` for a password that does not expire (a ``static`` credential); an ISO 8601 UTC
time for a short-lived token the control plane exchanged (``aws_ecr``,
``gcp_service_account``) and refreshes before then. It may lie in the past (an issuer that
reports a stale expiry): the agent still uses the login until the registry refuses it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def format_expiry(expires_at: dt.datetime | None) -> str | None:
    """``expires_at`` as it travels: ISO 8601 in UTC with a ``Z``, or ``None``."""
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    return expires_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiry(value: Any) -> dt.datetime | None:
    """The ``expires_at`` of a payload, checked; ``ValueError`` when it is not a time."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.endswith("Z"):
        raise ValueError("expires_at is not an ISO 8601 UTC time")
    try:
        parsed = dt.datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        raise ValueError("expires_at is not an ISO 8601 UTC time") from None
    return parsed.astimezone(dt.UTC)
