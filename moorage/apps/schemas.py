"""API shapes of apps. Secret env values are write-only."""

from __future__ import annotations

from datetime import datetime

from ninja import Field, Schema

from moorage.apps.choices import RuntimePull, SourceMode
from moorage.protocol.readiness import READY_TIMEOUT_DEFAULT, READY_TIMEOUT_MAX, READY_TIMEOUT_MIN
from moorage.schemas import StrictIn, StrictInteger

READY_TIMEOUT_HELP = (
    f"Seconds ({READY_TIMEOUT_MIN}-{READY_TIMEOUT_MAX}, a JSON integer) a new version may take "
    "to run and accept connections on its port before it is given up and the previous "
    "version serves again.")


class EnvIn(StrictIn):
    name: str = Field(..., max_length=128)
    value: str | None = Field(None, max_length=32 * 1024,
                              description="Leave out for a secret to keep its value.")
    secret: bool = False


class EnvOut(Schema):
    name: str
    value: str | None = Field(..., description="null for a secret: never returned.")
    secret: bool


class BuildFieldsIn(StrictIn):
    """The build settings, the same on create and on change (unset = left as they are)."""

    git_url: str | None = Field(None, max_length=2048)
    git_ref: str | None = Field(None, max_length=255)
    git_credential_id: int | None = None
    dockerfile: str | None = Field(None, max_length=255)
    context: str | None = Field(None, max_length=255)
    build_args: dict[str, str] | None = None
    build_pull_credential_id: int | None = Field(
        None, description="Base-image pulls of builds; null = none (never the default).")


class AppIn(BuildFieldsIn):
    name: str = Field(..., max_length=63)
    source: SourceMode = SourceMode.IMAGE
    image: str = Field("", max_length=512)
    runtime_pull: RuntimePull = RuntimePull.ACCOUNT_DEFAULT
    runtime_pull_credential_id: int | None = None
    port: StrictInteger | None = None
    command: list[str] | None = None
    replicas: StrictInteger = 1
    ready_timeout: StrictInteger = Field(READY_TIMEOUT_DEFAULT, description=READY_TIMEOUT_HELP)
    env: list[EnvIn] = Field(default_factory=list)
    regions: list[str] | None = Field(None, description="Default: every region the account "
                                                         "deploys to.")
    source_upload: bool = Field(
        False, description="A build app whose source is uploaded next (POST "
                           "/apps/{id}/source) instead of a git_url.")


class AppPatch(BuildFieldsIn):
    name: str | None = Field(None, max_length=63)
    source: SourceMode | None = None
    image: str | None = Field(None, max_length=512)
    runtime_pull: RuntimePull | None = None
    runtime_pull_credential_id: int | None = None
    port: StrictInteger | None = None
    command: list[str] | None = None
    replicas: StrictInteger | None = None
    ready_timeout: StrictInteger | None = Field(None, description=READY_TIMEOUT_HELP)
    env: list[EnvIn] | None = None
    regions: list[str] | None = None


class PullCredentialOut(Schema):
    image: str | None
    registry_host: str | None
    runtime_pull: RuntimePull
    credential_id: int | None
    credential_name: str | None
    credential_server: str | None
    anonymous: bool
    host_mismatch: bool
    default_host: str | None = Field(..., description="On \"Use account default\": the "
                                     "default's registry when the image is on another one "
                                     "(the pull is then anonymous).")
    message: str


class SourceArchiveOut(Schema):
    id: int
    sha256: str
    size: int
    created_at: datetime


class ReplicasOut(Schema):
    region: str
    deployment_id: int
    running: int
    desired: int
    reported_at: datetime


class AppOut(Schema):
    id: int
    name: str
    source: SourceMode
    image: str
    runtime_pull: RuntimePull
    runtime_pull_credential_id: int | None
    runtime_pull_credential_name: str | None
    port: int | None
    command: list[str] | None
    replicas: int
    ready_timeout: int = Field(..., description=READY_TIMEOUT_HELP)
    env: list[EnvOut]
    regions: list[str]
    git_url: str
    git_ref: str
    git_credential_id: int | None
    git_credential_name: str | None
    dockerfile: str
    context: str
    build_args: dict[str, str]
    build_pull_credential_id: int | None
    build_pull_credential_name: str | None
    source_archive: SourceArchiveOut | None = Field(
        ..., description="The uploaded source a build uses instead of a git repository.")
    replicas_running: list[ReplicasOut] = Field(
        ..., description="Per region, the replicas running and desired, as its agent last "
                         "reported them.")
    created_at: datetime
    updated_at: datetime
