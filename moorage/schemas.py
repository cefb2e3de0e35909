"""API shapes every domain shares: the one error shape, and the base of request bodies.

Request bodies refuse fields they do not know (``extra="forbid"``): a client sending
``{"type": "git"}`` to change an immutable field, or a misspelt field, gets a 422 naming it
instead of a silent 200 that changed nothing.
"""

from __future__ import annotations

from typing import Any

from ninja import Field, Schema
from pydantic import ConfigDict

#: The error statuses every operation documents (and may answer) with :class:`ErrorOut`.
ERROR_STATUSES: dict[int, str] = {
    400: "The request could not be understood (e.g. a body that is not JSON).",
    401: "Missing or rejected token.",
    403: "The token's role may not do this.",
    404: "Absent, or belonging to another account.",
    409: "Conflicts with the current state.",
    413: "The request body is too large.",
    422: "Invalid input; detail.fields names the fields.",
    429: "Too many attempts; the Retry-After header says when to retry.",
}


class ErrorOut(Schema):
    """Every error: a stable ``code`` to branch on, a ``message`` for a person, ``detail``."""

    code: str = Field(..., description="Stable; clients branch on it.")
    message: str = Field(..., description="Written for a person; never holds a secret.")
    detail: dict[str, Any] = Field(..., description="More about the error, e.g. fields.")


class StrictIn(Schema):
    """The base of every request body: unknown (or immutable) fields are a 422."""

    model_config = ConfigDict(extra="forbid")
