"""Starting deployments, and recording what region agents report about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from moorage.accounts.models import Membership, User
from moorage.accounts.permissions import Action, require
from moorage.apps.choices import SourceMode
from moorage.apps.models import App
from moorage.apps.pull import PullPlan, resolve_pull
from moorage.audit.choices import AuditAction
from moorage.audit.services import audit_record
from moorage.credentials.logins import failure_summary, login_problem, token_of
from moorage.credentials.models import Credential
from moorage.deployments.choices import ORDER, DeploymentStatus, PullMode
from moorage.deployments.models import Deployment, DeploymentLog
from moorage.deployments.payloads import check_secrets
from moorage.errors import Conflict, NotFound, ValidationFailed
from moorage.regions.changelog import record_change
from moorage.regions.choices import ChangeKind, Runtime
from moorage.regions.models import Region

LOG_LINE_MAX = 1000
LOG_LINES_PER_REPORT = 200


@transaction.atomic
def deployment_create(*, actor: User, membership: Membership, app_id: int,
                      only_regions: list[str] | None = None) -> list[Deployment]:
    """Record the app's wanted deployment in each of its regions (or in ``only_regions`` of
    them); their agents pick it up. A region being removed (draining) takes no new deploy.

    The pull is resolved now (I5) and checked (I4): a credential chosen for another
    registry than the image's refuses the deploy with ``credential_host_mismatch``, before
    any network call; an account default for another registry makes the pull anonymous, and
    the deployment records which registry the default is for. A secret the deploy needs that
    cannot be opened (its key was retired or lost) refuses it with ``secret_unavailable``,
    naming the secret.
    """
    require(membership, Action.DEPLOY)
    app = (App.objects.select_for_update(of=("self",)).select_related("runtime_pull_credential")
           .filter(account=membership.account, id=app_id).first())
    if app is None:
        raise NotFound("No such app in this account.", code="app_not_found")
    regions = list(app.regions.filter(account_links__account=app.account).order_by("slug"))
    if only_regions is not None:
        regions = [r for r in regions if r.slug in only_regions]
    draining = [r.slug for r in regions if r.draining_since is not None]
    if draining:
        raise Conflict(
            f"Region {', '.join(draining)} is being removed: no new deploy goes there. Take "
            "it out of the app's regions to deploy elsewhere.", code="region_draining",
            detail={"regions": draining})
    if not regions:
        raise ValidationFailed(
            "The app runs in no region the account deploys to; choose a region for it.",
            code="app_has_no_region",
        )
    build: dict[str, Any] | None = None
    default_host = ""
    if app.source == SourceMode.BUILD:
        _check_build_regions(regions)
        credential, build = _build_spec(app)
        image, describe = "", _describe_build(app, credential)
    else:
        plan = _image_pull(app)
        credential, describe, image = plan.credential, plan.describe(), app.image
        default_host = plan.default_host or ""
    check_secrets(app, [credential, app.git_credential if build and "git" in build else None])
    if credential is not None:
        _check_login_usable(credential)
    number = (app.deployments.aggregate(n=Max("number"))["n"] or 0) + 1
    created = []
    for region in regions:
        deployment = Deployment.objects.create(
            app=app, region=region, number=number, image=image, build=build,
            pull_mode=PullMode.CREDENTIAL if credential else PullMode.ANONYMOUS,
            credential=credential, credential_name=credential.name if credential else "",
            credential_revision=credential.revision if credential else None,
            default_host=default_host, created_by=actor,
        )
        DeploymentLog.objects.create(
            deployment=deployment,
            line=f"Deploy #{number} queued for {region.slug}: {describe}",
        )
        record_change(account_id=app.account_id, kind=ChangeKind.DEPLOYMENT,
                      object_id=deployment.pk, region_id=region.pk)
        created.append(deployment)
    audit_record(
        account=app.account, actor=actor, action=AuditAction.DEPLOY_STARTED, target=app,
        details={"app": app.name, "number": number, "image": image or None,
                 "source": app.source,
                 "regions": [r.slug for r in regions],
                 "credential_name": credential.name if credential else None,
                 "credential_revision": credential.revision if credential else None,
                 "default_host": default_host or None},
    )
    return created


def _check_build_regions(regions: list[Region]) -> None:
    """A swarm region's nodes pull builds from its registry: without one a build cannot run
    there, so the deploy is refused before anything is recorded."""
    missing = [r.slug for r in regions if r.runtime == Runtime.SWARM and not r.registry]
    if missing:
        raise ValidationFailed(
            f"Region {', '.join(missing)} runs on Docker Swarm and has no region registry, so "
            "an image built from source cannot reach its nodes. Ask the platform's operator to "
            "add one ('moorage regions update SLUG --registry HOST[:PORT] ...'), or deploy the "
            "app to other regions.",
            code="region_registry_missing", detail={"regions": missing})


def _check_login_usable(credential: Credential) -> None:
    """An exchanged credential whose token expired and cannot be refreshed refuses the
    deploy now, naming the credential and why, instead of failing at the registry later."""
    problem = login_problem(credential)
    if problem is not None:
        raise ValidationFailed(
            problem + " Fix the key (Test connection shows what the cloud says), then deploy "
            "again.", code="credential_token_expired",
            detail={"credential": credential.name, "credential_id": credential.pk},
        )


def _image_pull(app: App) -> PullPlan:
    """The runtime pull of an image deploy, resolved and checked (I5, I4)."""
    plan = resolve_pull(account=app.account, image=app.image, runtime_pull=app.runtime_pull,
                        credential=app.runtime_pull_credential)
    if plan.invalid_image or plan.reference is None:
        raise ValidationFailed(plan.describe(), code="image_invalid")
    if plan.mismatch and plan.credential is not None:
        raise ValidationFailed(
            f"Credential {plan.credential.name!r} is for {plan.credential.server}, but the "
            f"image {plan.reference.familiar} is on {plan.reference.domain}; Moorage never "
            f"sends a credential to another registry. Choose a credential for "
            f"{plan.reference.domain}, or None for a public image.",
            code="credential_host_mismatch",
            detail={"credential": plan.credential.name, "credential_host":
                    plan.credential.server, "image_host": plan.reference.domain},
        )
    return plan


def _build_spec(app: App) -> tuple[Credential | None, dict[str, Any]]:
    """Freeze what a build uses. Its pull credential is the app's choice or none: never
    the account default (I5)."""
    pull = app.build_pull_credential
    git = app.git_credential
    source: dict[str, Any]
    if app.source_archive is not None:
        archive = app.source_archive
        source = {"archive": {"id": archive.pk, "sha256": archive.sha256,
                              "size": archive.size}}
    elif app.git_url:
        source = {"git": {"url": app.git_url, "ref": app.git_ref,
                          "credential_id": git.pk if git else None,
                          "credential_revision": git.revision if git else None}}
    else:
        raise ValidationFailed("The app has no source yet: give the repository to build, or "
                               "upload the source.", code="build_source_required")
    return pull, source | {
        "dockerfile": app.dockerfile, "context": app.context,
        "build_args": app.build_args or {},
        "pull": {"credential_id": pull.pk, "credential_name": pull.name,
                 "credential_revision": pull.revision} if pull else None,
    }


def _describe_build(app: App, credential: Credential | None) -> str:
    if app.source_archive is not None:
        source = (f"build the uploaded source {app.source_archive.sha256[:12]} "
                  f"({app.source_archive.size} bytes)")
    else:
        source = f"build {app.git_url} at {app.git_ref}"
    if credential is None:
        return f"{source}, base images pulled without a credential."
    return (f"{source}, base images on {credential.server} pulled with {credential.name!r}, "
            "others without a credential.")


#: Pull failures a token that could not be refreshed may explain.
_LOGIN_REFUSED = ("registry_unauthorized", "registry_forbidden")


def _refresh_note(deployment: Deployment, code: str) -> str:
    """When the registry refused an exchanged credential whose refresh is failing, say so:
    the refusal is then most likely the expired token, and the fix is the key."""
    if code not in _LOGIN_REFUSED or deployment.credential_id is None:
        return ""
    credential = (Credential.objects.select_related("login_token")
                  .filter(pk=deployment.credential_id).first())
    token = token_of(credential) if credential is not None else None
    if credential is None or token is None or token.failing_since is None:
        return ""
    return (f" The token of {credential.name!r} could not be refreshed: "
            f"{failure_summary(token, timezone.now())}.")


@dataclass(frozen=True)
class Report:
    """What an agent says about a deployment (``docs/sync.md``)."""

    status: DeploymentStatus
    log: list[str] = field(default_factory=list)
    image_digest: str = ""
    credential_id: int | None = None
    credential_revision: int | None = None
    container_id: str = ""
    error_code: str = ""
    error_message: str = ""
    progress: dict[str, Any] | None = None


#: The error code of an agent's report for a deployment it did not run because a newer one
#: of the app arrived first: recorded as the status ``superseded``, not as a failure.
SUPERSEDED_CODE = "superseded"


@transaction.atomic
def deployment_report(*, region: Region, deployment_id: int, report: Report) -> Deployment:
    """Record an agent's report. Statuses only move forward; a finished deploy is audited.

    Only a deployment of ``region`` can be reported, and a credential it names must be the
    one the deployment pulls with, at a revision that credential has had.

    Each app keeps one current deployment per region (:func:`_settle_older`): the first
    report of a deployment ends the older ones still queued as ``superseded`` (the agent
    only ever runs the newest, so they will never start), and one that comes up ends the
    one it replaced as ``replaced``. A deployment reported running after a newer one came up
    (its report was late) is recorded as ``replaced`` at once.
    """
    # The app's row first: reports of one app's deployments (and deploys) take turns, so two
    # deployments coming up at once cannot both stay running.
    app_id = (Deployment.objects.filter(region=region, id=deployment_id)
              .values_list("app_id", flat=True).first())
    if app_id is not None:
        list(App.objects.select_for_update().filter(pk=app_id).values_list("pk", flat=True))
    # The app's account (for the audit row) and the credential come in the same query: the
    # final report is on the critical path of every deploy.
    deployment = (Deployment.objects.select_for_update(of=("self",))
                  .select_related("app__account", "credential")
                  .filter(region=region, id=deployment_id).first())
    if deployment is None:
        raise NotFound("No such deployment in this region.", code="deployment_not_found")
    _check_reported_credential(deployment, report)
    lines = [line[:LOG_LINE_MAX] for line in report.log[:LOG_LINES_PER_REPORT]]
    # A report resent after a lost answer repeats lines already recorded: add them once.
    recent = list(deployment.logs.order_by("-id").values_list("line", flat=True)[:len(lines)])
    recent.reverse()
    if lines and recent == lines:
        lines = []
    DeploymentLog.objects.bulk_create(
        [DeploymentLog(deployment=deployment, line=line) for line in lines])
    if report.progress is not None:
        deployment.progress = report.progress
    now = timezone.now()
    deployment.reported_at = now
    status = report.status
    if status is DeploymentStatus.FAILED and report.error_code == SUPERSEDED_CODE:
        status = DeploymentStatus.SUPERSEDED
    moved = ORDER[status] > ORDER[DeploymentStatus(deployment.status)] \
        and not deployment.finished
    if moved and status is DeploymentStatus.RUNNING and _newer_came_up(deployment):
        status = DeploymentStatus.REPLACED
    if moved:
        deployment.status = status
        if deployment.started_at is None and status is not DeploymentStatus.SUPERSEDED:
            deployment.started_at = now
        if status in DeploymentStatus.finished():
            deployment.finished_at = now
            deployment.progress = {}
    if report.image_digest:
        deployment.image_digest = report.image_digest[:100]
    if report.container_id:
        deployment.container_id = report.container_id[:80]
    if report.credential_revision is not None:
        deployment.used_revision = report.credential_revision
    if status is DeploymentStatus.FAILED and moved:
        deployment.error_code = report.error_code[:64] or "deploy_failed"
        deployment.error_message = (report.error_message
                                    + _refresh_note(deployment, report.error_code))[:1000]
    if status is DeploymentStatus.SUPERSEDED and moved and report.error_message:
        DeploymentLog.objects.create(deployment=deployment,
                                     line=report.error_message[:LOG_LINE_MAX])
    if moved and status is not DeploymentStatus.SUPERSEDED:
        # Before this one is saved running: one running deployment per app and region.
        _settle_older(deployment, now)
    deployment.save()
    if moved and deployment.status == DeploymentStatus.REPLACED:
        DeploymentLog.objects.create(
            deployment=deployment,
            line="Came up after a newer deployment of the app, which runs in its place.")
    if moved and deployment.finished:
        _audit_finished(deployment)
    return deployment


def _newer_came_up(deployment: Deployment) -> bool:
    """Whether a newer deployment of the app already runs (or ran) in the region."""
    return Deployment.objects.filter(
        app_id=deployment.app_id, region_id=deployment.region_id,
        number__gt=deployment.number,
        status__in=(DeploymentStatus.RUNNING, DeploymentStatus.REPLACED)).exists()


def _settle_older(deployment: Deployment, now: datetime) -> None:
    """End the app's older deployments in the region that ``deployment`` (just moved on)
    takes the place of: those still queued never start (``superseded``); one running when
    this one came up runs no more (``replaced``)."""
    older = Deployment.objects.select_for_update(of=("self",)).select_related(
        "app__account", "region").filter(
        app_id=deployment.app_id, region_id=deployment.region_id,
        number__lt=deployment.number)
    superseded = list(older.filter(status=DeploymentStatus.QUEUED))
    for d in superseded:
        d.status, d.finished_at, d.progress = DeploymentStatus.SUPERSEDED, now, {}
        d.save(update_fields=["status", "finished_at", "progress"])
        DeploymentLog.objects.create(
            deployment=d, line=f"Superseded by #{deployment.number} before it started: the "
                               "region runs only the newest deploy of an app.")
        _audit_finished(d)
    if deployment.status != DeploymentStatus.RUNNING:
        return
    for d in older.filter(status=DeploymentStatus.RUNNING):
        d.status = DeploymentStatus.REPLACED
        d.save(update_fields=["status"])
        DeploymentLog.objects.create(deployment=d,
                                     line=f"Replaced by #{deployment.number}, which runs now.")


def _audit_finished(deployment: Deployment) -> None:
    audit_record(
        account=deployment.app.account, actor=None, action=AuditAction.DEPLOY_FINISHED,
        target=deployment,
        details={"app": deployment.app.name, "number": deployment.number,
                 "region": deployment.region.slug, "status": deployment.status,
                 "error_code": deployment.error_code or None,
                 "image_digest": deployment.image_digest or None,
                 "credential_name": deployment.credential_name or None,
                 "credential_revision": deployment.used_revision},
    )


def _check_reported_credential(deployment: Deployment, report: Report) -> None:
    """Refuse a report naming a credential the deployment does not pull with (another
    account's above all), or a revision the credential never had. A revision reported
    without an id is one of the deployment's own credential."""
    if report.credential_id is None:
        if report.credential_revision is None:
            return
        if deployment.pull_mode != PullMode.CREDENTIAL:
            raise ValidationFailed("This deployment pulls without a credential; there is no "
                                   "credential revision to report.",
                                   code="report_credential_mismatch")
        credential = deployment.credential
    else:
        credential = deployment.credential \
            if report.credential_id == deployment.credential_id \
            else Credential.objects.filter(id=report.credential_id).first()
        if credential is not None and credential.account_id != deployment.app.account_id:
            raise ValidationFailed(
                f"Credential {report.credential_id} is not a credential of this deployment's "
                "account.", code="credential_not_in_account",
                detail={"credential_id": report.credential_id})
        # The deployment's credential, or one deleted since the deployment started with it.
        gone = credential is None and deployment.credential_id is None \
            and deployment.pull_mode == PullMode.CREDENTIAL
        if report.credential_id != deployment.credential_id and not gone:
            raise ValidationFailed(
                f"This deployment does not pull with credential {report.credential_id}.",
                code="report_credential_mismatch",
                detail={"credential_id": report.credential_id})
    if credential is not None and report.credential_revision is not None \
            and report.credential_revision > credential.revision:
        raise ValidationFailed(
            f"Credential {credential.pk} has no revision {report.credential_revision} (its "
            f"revision is {credential.revision}).", code="credential_revision_unknown",
            detail={"credential_id": credential.pk})
