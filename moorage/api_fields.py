"""Numbers the API accepts only within what their database columns hold.

An id or revision beyond its column (``2**63`` for a bigint id) would otherwise reach a query
and overflow there: a 500 instead of the 422 it deserves. The schemas use these types.
"""

from __future__ import annotations

from typing import Annotated

from ninja import P, PathEx
from pydantic import Field

MAX_ID = 2**63 - 1  # BigAutoField ids and change-log revisions (bigint)
MAX_CREDENTIAL_REVISION = 2**31 - 1  # a PositiveIntegerField

ObjectId = Annotated[int, Field(ge=1, le=MAX_ID)]
LogRevision = Annotated[int, Field(ge=0, le=MAX_ID)]
CredentialRevision = Annotated[int, Field(ge=1, le=MAX_CREDENTIAL_REVISION)]
# An object id in a URL path (``/deployments/{deployment_id}/...``).
PathId = PathEx[int, P(ge=1, le=MAX_ID)]
