"""API shapes of credentials. No shape carries the secret or anything derived from it."""

from __future__ import annotations

from datetime import datetime

from ninja import Field, Schema

from moorage.credentials import validation
from moorage.credentials.choices import CredentialType, LoginSource, TestResult
from moorage.schemas import StrictIn


class LoginTokenOut(Schema):
    """The current short-lived token of an exchanged credential: when it came, until when it
    works, and how refreshing goes. Never the token itself."""

    status: str = Field(..., description="ok, failing (previous token in use) or expired.")
    summary: str = Field(..., description='e.g. "ECR token, refreshed 10:42, valid until 22:42"')
    refreshed_at: datetime
    expires_at: datetime = Field(..., description="As the token service said (may be past).")
    valid_until: datetime | None = Field(
        ..., description="The expiry to trust; null when the service reported one already past.")
    refresh_due_at: datetime
    refresh_failing_since: datetime | None
    refresh_error_code: str | None
    refresh_error: str | None = Field(
        ..., description='e.g. "refresh failing since 10:42: <reason>"')


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
    login_source: LoginSource = LoginSource.STATIC
    aws_access_key_id: str = ""
    aws_region: str = ""
    token: LoginTokenOut | None = Field(None, description="Exchanged login sources only.")


class CredentialIn(StrictIn):
    type: CredentialType = CredentialType.CONTAINER_REGISTRY
    name: str = Field(..., max_length=validation.NAME_MAX)
    server: str = Field(
        "", max_length=validation.SERVER_MAX,
        description="Registry or git host. aws_ecr: optional, the exchange names it.")
    username: str = Field(
        "", max_length=validation.USERNAME_MAX,
        description="Leave out for aws_ecr (AWS) and gcp_service_account (oauth2accesstoken).")
    secret: str = Field(
        ..., max_length=validation.SECRET_MAX,
        description="The password (registry) or token (git); the secret access key (aws_ecr); "
        "the service-account key JSON (gcp_service_account). Write-only.",
    )
    email: str = Field("", max_length=validation.EMAIL_MAX)
    login_source: LoginSource = Field(
        LoginSource.STATIC,
        description="static, or exchanged by the control plane for short-lived tokens: "
        "aws_ecr, gcp_service_account.")
    aws_access_key_id: str = Field("", max_length=128)
    aws_region: str = Field("", max_length=32)


class CredentialPatch(StrictIn):
    name: str | None = Field(None, max_length=validation.NAME_MAX)
    server: str | None = Field(None, max_length=validation.SERVER_MAX)
    username: str | None = Field(None, max_length=validation.USERNAME_MAX)
    email: str | None = Field(None, max_length=validation.EMAIL_MAX)
    secret: str | None = Field(
        None, max_length=validation.SECRET_MAX,
        description="A new password or token (a rotation). Leave out to keep the current one.",
    )
    login_source: LoginSource | None = None
    aws_access_key_id: str | None = Field(None, max_length=128)
    aws_region: str | None = Field(None, max_length=32)


class CredentialTestIn(StrictIn):
    image: str | None = Field(
        None, max_length=512, description="Also check pull access to this image."
    )


class CredentialTestOut(Schema):
    ok: bool
    result: TestResult
    message: str
    tested_at: datetime | None
