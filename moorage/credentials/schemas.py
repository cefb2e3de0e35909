"""API shapes of credentials. No shape carries the secret or anything derived from it."""

from __future__ import annotations

from datetime import datetime

from ninja import Field, Schema

from moorage.credentials import validation
from moorage.credentials.choices import CredentialType, TestResult
from moorage.schemas import StrictIn


class CredentialOut(Schema):
    id: int
    type: CredentialType
    name: str
    server: str = Field(..., description="Canonical registry host, or the git host.")
    username: str
    email: str
    is_default: bool
    revision: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    last_tested_at: datetime | None
    last_test_result: TestResult | None
    last_test_message: str
    used_by_apps: int


class CredentialIn(StrictIn):
    type: CredentialType = CredentialType.CONTAINER_REGISTRY
    name: str = Field(..., max_length=validation.NAME_MAX)
    server: str = Field(..., max_length=validation.SERVER_MAX)
    username: str = Field(..., max_length=validation.USERNAME_MAX)
    secret: str = Field(
        ..., max_length=validation.SECRET_MAX,
        description="The password (registry) or token (git). Write-only.",
    )
    email: str = Field("", max_length=validation.EMAIL_MAX)


class CredentialPatch(StrictIn):
    name: str | None = Field(None, max_length=validation.NAME_MAX)
    server: str | None = Field(None, max_length=validation.SERVER_MAX)
    username: str | None = Field(None, max_length=validation.USERNAME_MAX)
    email: str | None = Field(None, max_length=validation.EMAIL_MAX)
    secret: str | None = Field(
        None, max_length=validation.SECRET_MAX,
        description="A new password or token (a rotation). Leave out to keep the current one.",
    )


class CredentialTestIn(StrictIn):
    image: str | None = Field(
        None, max_length=512, description="Also check pull access to this image."
    )


class CredentialTestOut(Schema):
    ok: bool
    result: TestResult
    message: str
    tested_at: datetime | None
