"""API shapes every domain shares: the one error shape, the base of request bodies, and
numbers bounded by their columns.

Request bodies refuse fields they do not know (``extra="forbid"``): a client sending
``{"type": "git"}`` to change an immutable field, or a misspelt field, gets a 422 naming it
instead of a silent 200 that changed nothing.

An id or revision beyond what its database column holds (``2**63`` for a bigint id) would
otherwise reach a query and overflow there: a 500 instead of the 422 it deserves.
"""

from __future__ import annotations

from typing import Annotated, Any

from ninja import Field, P, PathEx, Schema
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


#: An integer and nothing else: pydantic's default (lax) mode would take ``true`` as 1 and
#: ``"80"`` as 80, so a client's wrong type would be saved as something it did not mean.
StrictInteger = Annotated[int, Field(strict=True)]

MAX_ID = 2**63 - 1  # BigAutoField ids and change-log revisions (bigint)
MAX_CREDENTIAL_REVISION = 2**31 - 1  # a PositiveIntegerField

ObjectId = Annotated[int, Field(ge=1, le=MAX_ID)]
LogRevision = Annotated[int, Field(ge=0, le=MAX_ID)]
CredentialRevision = Annotated[int, Field(ge=1, le=MAX_CREDENTIAL_REVISION)]
#: An object id in a URL path (``/deployments/{deployment_id}/...``).
PathId = PathEx[int, P(ge=1, le=MAX_ID)]
