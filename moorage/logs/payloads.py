"""The ``request`` object of a ``logs.request`` op (``docs/sync.md``, "App logs")."""

from __future__ import annotations

from typing import Any

from moorage.logs.models import LogRequest
from moorage.protocol.logs import LogRequestSpec


def log_request_payload(request: LogRequest) -> dict[str, Any]:
    """What the agent is told: which app of which account, and which of its lines."""
    return LogRequestSpec(id=request.pk, account_id=request.app.account_id,
                          app_id=request.app_id, app=request.app.name, tail=request.tail,
                          since=request.since or None, follow=request.follow).to_payload()
