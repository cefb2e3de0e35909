"""The errors Moorage shows to people.

Every error a user can cause or act on is an :class:`ApplicationError` with a stable ``code``
(part of the API contract: clients branch on it), an HTTP status and a message written for a
person. The API turns it into ``{"code", "message", "detail"}``; pages show the message on the
form or as a flash message. Messages and details never hold a secret.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """Root of every user-facing error."""

    status: int = 400
    default_code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.detail: dict[str, Any] = detail or {}
        if status is not None:
            self.status = status

    def as_dict(self) -> dict[str, Any]:
        """The error in the one shape the API answers with."""
        return {"code": self.code, "message": self.message, "detail": self.detail}


class ValidationFailed(ApplicationError):
    """The input is malformed or breaks a rule; ``detail["fields"]`` names the fields."""

    status = 422
    default_code = "validation_error"


class AuthenticationFailed(ApplicationError):
    """No identity, or one we do not accept (missing, malformed or revoked token...)."""

    status = 401
    default_code = "not_authenticated"


class PermissionDenied(ApplicationError):
    """The caller is known and belongs to the account, but their role may not do this."""

    status = 403
    default_code = "permission_denied"


class NotFound(ApplicationError):
    """Absent, or belonging to another account: the two are deliberately indistinguishable."""

    status = 404
    default_code = "not_found"


class Conflict(ApplicationError):
    """The change clashes with the current state (a duplicate name, the last owner...)."""

    status = 409
    default_code = "conflict"


class RateLimited(ApplicationError):
    """Too many attempts; ``detail["retry_after"]`` says how many seconds to wait."""

    status = 429
    default_code = "rate_limited"


class RequestTooLarge(ApplicationError):
    """A request body over the limit (``DATA_UPLOAD_MAX_MEMORY_SIZE``); nothing was parsed."""

    status = 413
    default_code = "request_too_large"

    @classmethod
    def over_the_limit(cls) -> RequestTooLarge:
        """The error for a body over Django's limit, with the limit in ``detail``."""
        from django.conf import settings

        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return cls(
            f"The request body is larger than {limit} bytes, the most Moorage accepts here. "
            "Source archives have their own upload endpoint (POST /api/v1/apps/ID/source).",
            detail={"max_bytes": limit},
        )
