"""REST endpoints for apps: thin wrappers over selectors and services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest
from ninja import Router, Status

from moorage.accounts.models import Membership
from moorage.accounts.permissions import Action, require
from moorage.apps import selectors, services
from moorage.apps.models import App, SourceArchive
from moorage.apps.pull import PullPlan, resolve_pull
from moorage.apps.schemas import (
    AppIn,
    AppOut,
    AppPatch,
    BuildFieldsIn,
    PullCredentialOut,
    SourceArchiveOut,
)
from moorage.apps.sources import MAX_ARCHIVE_BYTES, too_large
from moorage.errors import ApplicationError

router = Router(tags=["apps"])


def _membership(request: HttpRequest) -> Membership:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    return membership


def app_out(app: App) -> dict[str, Any]:
    credential = app.runtime_pull_credential
    return {
        "id": app.pk, "name": app.name, "source": app.source, "image": app.image,
        "runtime_pull": app.runtime_pull,
        "runtime_pull_credential_id": credential.pk if credential else None,
        "runtime_pull_credential_name": credential.name if credential else None,
        "port": app.port, "command": app.command, "replicas": app.replicas,
        "ready_timeout": app.ready_timeout,
        "env": [{"name": v.name, "value": None if v.secret else v.value, "secret": v.secret}
                for v in app.env.all()],
        "regions": sorted(r.slug for r in app.regions.all()),
        "git_url": app.git_url, "git_ref": app.git_ref,
        "git_credential_id": app.git_credential_id,
        "git_credential_name": app.git_credential.name if app.git_credential else None,
        "dockerfile": app.dockerfile,
        "context": app.context, "build_args": app.build_args or {},
        "build_pull_credential_id": app.build_pull_credential_id,
        "build_pull_credential_name": app.build_pull_credential.name
        if app.build_pull_credential else None,
        "source_archive": archive_out(app.source_archive) if app.source_archive else None,
        "replicas_running": [
            {"region": s.region.slug, "deployment_id": s.deployment_id, "running": s.running,
             "desired": s.desired, "reported_at": s.reported_at}
            for s in sorted(app.running_services.all(), key=lambda s: s.region.slug)],
        "created_at": app.created_at, "updated_at": app.updated_at,
    }


def archive_out(archive: SourceArchive) -> dict[str, Any]:
    return {"id": archive.pk, "sha256": archive.sha256, "size": archive.size,
            "created_at": archive.created_at}


BUILD_FIELDS = tuple(BuildFieldsIn.model_fields)


def _build(given: dict[str, Any], app: App | None) -> services.BuildInput | None:
    """The build settings from a request: what it gives, the app's current values for the
    rest (on create, the defaults)."""
    if not any(field in given for field in BUILD_FIELDS):
        return None
    current: dict[str, Any] = {
        "git_url": app.git_url, "git_ref": app.git_ref,
        "git_credential_id": app.git_credential_id, "dockerfile": app.dockerfile,
        "context": app.context, "build_args": app.build_args,
        "build_pull_credential_id": app.build_pull_credential_id,
    } if app else {}
    merged = current | {k: v for k, v in given.items() if k in BUILD_FIELDS}
    if merged.get("git_ref") is None:
        merged.pop("git_ref", None)
    for field, default in (("dockerfile", "Dockerfile"), ("context", ".")):
        if merged.get(field) is None:
            merged[field] = default
    merged["git_url"] = merged.get("git_url") or ""
    return services.BuildInput(**merged)


def plan_out(plan: PullPlan) -> dict[str, Any]:
    credential = plan.credential
    return {
        "image": str(plan.reference) if plan.reference else None,
        "registry_host": plan.reference.domain if plan.reference else None,
        "runtime_pull": plan.source,
        "credential_id": credential.pk if credential else None,
        "credential_name": credential.name if credential else None,
        "credential_server": credential.server if credential else None,
        "anonymous": plan.anonymous,
        "host_mismatch": plan.mismatch,
        "default_host": plan.default_host,
        "message": plan.describe(),
    }


def _env(items: list[Any] | None) -> list[services.EnvInput] | None:
    if items is None:
        return None
    return [services.EnvInput(name=e.name, value=e.value, secret=e.secret) for e in items]


@router.get("/apps", response=list[AppOut], summary="The account's apps")
def apps_list(request: HttpRequest) -> list[dict[str, Any]]:
    membership = _membership(request)
    require(membership, Action.VIEW)
    return [app_out(a) for a in selectors.apps_of(account=membership.account)]


@router.post("/apps", response={201: AppOut}, summary="Create an app")
def app_create(request: HttpRequest, payload: AppIn) -> Status[dict[str, Any]]:
    membership = _membership(request)
    app = services.app_create(
        actor=membership.user, membership=membership, name=payload.name,
        source=payload.source, image=payload.image, runtime_pull=payload.runtime_pull,
        runtime_pull_credential_id=payload.runtime_pull_credential_id, port=payload.port,
        command=payload.command, replicas=payload.replicas,
        ready_timeout=payload.ready_timeout, env=_env(payload.env),
        regions=payload.regions, build=_build(payload.model_dump(exclude_unset=True), None),
        source_upload=payload.source_upload,
    )
    return Status(201, app_out(selectors.app_get(account=membership.account, app_id=app.pk)))


@router.get("/apps/{app_id}", response=AppOut, summary="One app")
def app_get(request: HttpRequest, app_id: int) -> dict[str, Any]:
    membership = _membership(request)
    require(membership, Action.VIEW)
    return app_out(selectors.app_get(account=membership.account, app_id=app_id))


@router.patch("/apps/{app_id}", response=AppOut, summary="Change an app")
def app_update(request: HttpRequest, app_id: int, payload: AppPatch) -> dict[str, Any]:
    membership = _membership(request)
    given = payload.model_dump(exclude_unset=True)
    if "env" in given:
        given["env"] = _env(payload.env)
    app = selectors.app_get(account=membership.account, app_id=app_id)
    build = _build(given, app)
    given = {k: v for k, v in given.items() if k not in BUILD_FIELDS}
    services.app_update(actor=membership.user, membership=membership, app_id=app_id,
                        build=build, **given)
    return app_out(selectors.app_get(account=membership.account, app_id=app_id))


@router.delete("/apps/{app_id}", response={204: None}, summary="Delete an app")
def app_delete(request: HttpRequest, app_id: int) -> Status[None]:
    membership = _membership(request)
    services.app_delete(actor=membership.user, membership=membership, app_id=app_id)
    return Status(204, None)


@router.get("/apps/{app_id}/pull-credential", response=PullCredentialOut,
            summary="Which credential a deploy of this app pulls with, right now")
def app_pull_credential(request: HttpRequest, app_id: int) -> dict[str, Any]:
    membership = _membership(request)
    require(membership, Action.VIEW)
    app = selectors.app_get(account=membership.account, app_id=app_id)
    return plan_out(resolve_pull(account=app.account, image=app.image,
                                 runtime_pull=app.runtime_pull,
                                 credential=app.runtime_pull_credential))


#: What an upload may be sent as: a gzipped tar, or a zip (kept as a gzipped tar).
ARCHIVE_TYPES = frozenset({"application/gzip", "application/x-gzip", "application/x-tar+gzip",
                           "application/zip", "application/x-zip-compressed"})
UPLOAD_CHUNK = 1024 * 1024


def _body_chunks(request: HttpRequest) -> Iterator[bytes]:
    while chunk := request.read(UPLOAD_CHUNK):
        yield chunk


@router.post("/apps/{app_id}/source", response={201: SourceArchiveOut},
             summary="Upload the source to build (a gzipped tar or a zip as the request body)",
             description="Content-Type application/gzip (or application/zip), at most 100 MiB. "
                         "The archive replaces the app's git repository; the next deploy "
                         "builds it.",
             openapi_extra={
                 "requestBody": {"required": True, "content": {
                     "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                     "application/zip": {"schema": {"type": "string", "format": "binary"}}}},
                 "responses": {"415": {
                     "description": "The body is neither application/gzip nor application/zip.",
                     "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/Error"}}}}},
             })
def app_source_upload(request: HttpRequest, app_id: int) -> Status[dict[str, Any]]:
    membership = _membership(request)
    selectors.app_get(account=membership.account, app_id=app_id)  # 404 before the body
    content_type = request.content_type.lower() if request.content_type else ""
    if content_type not in ARCHIVE_TYPES:
        raise ApplicationError("Send the source as a gzipped tar with Content-Type "
                               "application/gzip, or as a zip with application/zip.",
                               code="source_content_type", status=415)
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_ARCHIVE_BYTES:
        raise too_large()
    archive = services.source_archive_upload(actor=membership.user, membership=membership,
                                             app_id=app_id, chunks=_body_chunks(request))
    return Status(201, archive_out(archive))
