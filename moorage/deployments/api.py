"""REST endpoints for deployments, and the agents' progress reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import FileResponse, HttpRequest
from ninja import Field, Query, Router, Schema, Status

from moorage.accounts.models import Membership
from moorage.accounts.permissions import Action, require
from moorage.apps.selectors import app_get
from moorage.apps.sources import archive_path
from moorage.deployments import selectors, services
from moorage.deployments.choices import DeploymentStatus
from moorage.deployments.models import Deployment
from moorage.errors import NotFound
from moorage.protocol.enums import ReportStatus
from moorage.regions.auth import RegionTokenAuth
from moorage.regions.models import Region
from moorage.schemas import CredentialRevision, ObjectId, PathId

router = Router(tags=["deployments"])
agent_router = Router(tags=["agent"], auth=RegionTokenAuth())


class StalledOut(Schema):
    code: str = Field(..., description="agent_offline: the region's agent has not been in "
                      "touch; agent_silent: it is, but has not reported on this deployment.")
    message: str
    since: datetime


class DeploymentOut(Schema):
    id: int
    app: str
    app_id: int
    number: int
    region: str
    status: DeploymentStatus
    image: str
    build: dict[str, Any] | None = Field(..., description="What a build-from-source deploy "
                                         "builds (docs/sync.md); null for an image deploy.")
    image_digest: str
    pull_mode: str
    pull_summary: str = Field(..., description="How it pulls: \"'ghcr-prod' (revision 3)\", "
                              "\"anonymous\" or \"anonymous (the default is for ghcr.io)\".")
    default_host: str | None = Field(..., description="The account default's registry when "
                                     "it was not used because the image is on another one.")
    credential_name: str | None
    credential_revision: int | None = Field(..., description="Revision required at deploy.")
    used_revision: int | None = Field(..., description="Revision the agent pulled with.")
    error_code: str | None
    error_message: str | None
    progress: dict[str, Any]
    created_at: datetime
    started_at: datetime | None = Field(..., description="When its agent started it.")
    finished_at: datetime | None
    stalled: StalledOut | None = Field(
        ..., description="Set while the deployment is not finished and its region's agent "
        "has not been in touch, or not reported on it, for longer than the installation's "
        "bound (MOORAGE_DEPLOY_STALLED_AFTER): it then makes no progress, and says why.")


class LogLineOut(Schema):
    id: int
    at: datetime
    line: str


class LogQuery(Schema):
    after: int = Field(0, ge=0)


class ErrorIn(Schema):
    code: str = Field(..., max_length=64)
    message: str = Field("", max_length=2000)


class EventIn(Schema):
    status: ReportStatus
    log: list[str] = Field(default_factory=list, max_length=1000)
    image_digest: str = Field("", max_length=200)
    credential_id: ObjectId | None = None
    credential_revision: CredentialRevision | None = None
    container_id: str = Field("", max_length=128)
    error: ErrorIn | None = None
    progress: dict[str, Any] | None = None


def deployment_out(d: Deployment) -> dict[str, Any]:
    stall = selectors.deployment_stall(d)
    return {
        "id": d.pk, "app": d.app.name, "app_id": d.app_id, "number": d.number,
        "region": d.region.slug, "status": d.status, "image": d.image,
        "build": d.build,
        "image_digest": d.image_digest, "pull_mode": d.pull_mode,
        "pull_summary": d.pull_summary, "default_host": d.default_host or None,
        "credential_name": d.credential_name or None,
        "credential_revision": d.credential_revision, "used_revision": d.used_revision,
        "error_code": d.error_code or None, "error_message": d.error_message or None,
        "progress": d.progress, "created_at": d.created_at, "started_at": d.started_at,
        "finished_at": d.finished_at,
        "stalled": None if stall is None else
        {"code": stall.code, "message": stall.message, "since": stall.since},
    }


def _membership(request: HttpRequest) -> Membership:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    return membership


@router.post("/apps/{app_id}/deploy", response={201: list[DeploymentOut]},
             summary="Deploy the app in each of its regions")
def app_deploy(request: HttpRequest, app_id: int) -> Status[list[dict[str, Any]]]:
    membership = _membership(request)
    created = services.deployment_create(actor=membership.user, membership=membership,
                                         app_id=app_id)
    return Status(201, [deployment_out(d) for d in created])


@router.get("/apps/{app_id}/deployments", response=list[DeploymentOut],
            summary="The app's deployments, newest first")
def app_deployments(request: HttpRequest, app_id: int) -> list[dict[str, Any]]:
    membership = _membership(request)
    require(membership, Action.VIEW)
    app_get(account=membership.account, app_id=app_id)  # 404 for another account's app
    return [deployment_out(d) for d in
            selectors.deployments_of_app(account=membership.account, app_id=app_id)]


@router.get("/deployments/{deployment_id}", response=DeploymentOut, summary="One deployment")
def deployment_get(request: HttpRequest, deployment_id: int) -> dict[str, Any]:
    membership = _membership(request)
    require(membership, Action.VIEW)
    return deployment_out(selectors.deployment_get(account=membership.account,
                                                   deployment_id=deployment_id))


@router.get("/deployments/{deployment_id}/logs", response=list[LogLineOut],
            summary="Step log lines after a line id (follow with ?after=)")
def deployment_logs(request: HttpRequest, deployment_id: int,
                    query: Query[LogQuery]) -> list[dict[str, Any]]:
    membership = _membership(request)
    require(membership, Action.VIEW)
    deployment = selectors.deployment_get(account=membership.account,
                                          deployment_id=deployment_id)
    return [{"id": line.pk, "at": line.at, "line": line.line}
            for line in selectors.deployment_logs(deployment=deployment, after=query.after)]


@agent_router.post("/agent/deployments/{deployment_id}/events", response={204: None},
                   summary="An agent reports a deployment's progress")
def agent_deployment_event(request: HttpRequest, deployment_id: PathId,
                           payload: EventIn) -> Status[None]:
    region: Region = request.auth  # type: ignore[attr-defined]
    services.deployment_report(region=region, deployment_id=deployment_id, report=services.Report(
        status=DeploymentStatus(payload.status), log=payload.log, image_digest=payload.image_digest,
        credential_id=payload.credential_id, credential_revision=payload.credential_revision,
        container_id=payload.container_id,
        error_code=payload.error.code if payload.error else "",
        error_message=payload.error.message if payload.error else "",
        progress=payload.progress,
    ))
    return Status(204, None)


@agent_router.get("/agent/sources/{archive_id}", summary="An agent downloads an uploaded source",
                  response={200: None})
def agent_source_download(request: HttpRequest, archive_id: PathId) -> FileResponse:
    region: Region = request.auth  # type: ignore[attr-defined]
    archive = selectors.source_archive_for_region(region=region, archive_id=archive_id)
    path = archive_path(archive.app_id, archive.sha256)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise NotFound("The source archive is no longer kept.",
                       code="source_archive_not_found") from None
    response = FileResponse(handle, content_type="application/gzip")
    response["Content-Length"] = str(archive.size)
    return response
