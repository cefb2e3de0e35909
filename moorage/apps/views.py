"""The Apps pages: the list, the App page (source, image, runtime pull, source upload),
deploys and logs."""

from __future__ import annotations

import shlex
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from moorage.accounts.forms import add_application_error
from moorage.accounts.middleware import current_membership
from moorage.accounts.models import Membership
from moorage.accounts.permissions import Action, require
from moorage.apps import selectors, services, sources
from moorage.apps.forms import AppForm, multi_line, pull_choices, pull_value, split_pull
from moorage.apps.models import App
from moorage.apps.pull import resolve_pull
from moorage.apps.upload_handler import ArchiveUploadHandler
from moorage.credentials.models import Credential
from moorage.credentials.selectors import credentials_of, default_credential
from moorage.deployments import selectors as deployment_selectors
from moorage.deployments import services as deployment_services
from moorage.deployments.models import Deployment
from moorage.errors import ApplicationError, ValidationFailed
from moorage.protocol.readiness import READY_TIMEOUT_DEFAULT
from moorage.regions.choices import Runtime
from moorage.regions.models import Region
from moorage.regions.selectors import running_services


def _form(membership: Membership, data: Any = None, initial: dict[str, Any] | None = None,
          app: App | None = None) -> AppForm:
    account = membership.account
    credentials = list(credentials_of(account=account, type="container_registry"))
    git = list(credentials_of(account=account, type="git"))
    enabled = {r.slug for r in Region.objects.filter(account_links__account=account)}
    # A region disabled for the account stays the app's until unticked (re-enabling offers
    # to deploy there again): it is a choice too, so an unchanged save keeps it.
    kept = {r.slug for r in app.regions.all()} - enabled if app is not None else set()
    region_options = [(slug, slug if slug in enabled else f"{slug} (disabled for the account)")
                      for slug in sorted(enabled | kept)]
    return AppForm(data, initial=initial,
                   pull_options=pull_choices(credentials, default_credential(account=account)),
                   region_options=region_options,
                   registry_options=[(c.pk, c.name) for c in credentials],
                   git_options=[(c.pk, c.name) for c in git])


def _preview(membership: Membership, image: str, pull: str) -> str:
    runtime_pull, credential_id = split_pull(pull or "account_default")
    credential = None
    if credential_id is not None:
        credential = Credential.objects.filter(account=membership.account, id=credential_id,
                                               type="container_registry").first()
    try:
        plan = resolve_pull(account=membership.account, image=image, runtime_pull=runtime_pull,
                            credential=credential)
    except ValueError:
        return "Choose how to pull."
    return plan.describe()


@login_required
def app_list(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.VIEW)
    apps = list(selectors.apps_of(account=membership.account))
    for app in apps:
        app.latest = deployment_selectors.latest_per_region(app_id=app.pk)  # type: ignore[attr-defined]
    return render(request, "apps/list.html", {"apps": apps})


def _save(request: HttpRequest, membership: Membership, form: AppForm,
          app: App | None) -> App | None:
    data = form.cleaned_data
    runtime_pull, credential_id = split_pull(data["pull"])
    fields = {
        "name": data["name"], "source": data["source"], "image": data["image"],
        "runtime_pull": runtime_pull, "runtime_pull_credential_id": credential_id,
        "port": data["port"], "command": data["command"], "env": form.env_inputs(),
        "regions": data["regions"], "build": form.build_input(app.build_args if app else None),
    }
    if data.get("replicas") is not None or app is None:
        fields["replicas"] = data.get("replicas") or 1
    if data.get("ready_timeout") is not None:
        fields["ready_timeout"] = data["ready_timeout"]
    try:
        if app is None:
            return services.app_create(actor=membership.user, membership=membership,
                                       source_upload=bool(data.get("source_upload")), **fields)
        return services.app_update(actor=membership.user, membership=membership,
                                   app_id=app.pk, **fields)
    except ApplicationError as exc:
        if exc.status in (403, 404):
            raise
        add_application_error(form, exc)
        return None


@login_required
def app_new(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.DEPLOY)
    initial = {"source": "image", "pull": "account_default", "replicas": 1,
               "ready_timeout": READY_TIMEOUT_DEFAULT,
               "regions": list(Region.objects.filter(account_links__account=membership.account)
                               .values_list("slug", flat=True))}
    form = _form(membership, request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        app = _save(request, membership, form, None)
        if app is not None:
            messages.success(request, f"App {app.name} created.")
            return redirect("app_detail", app_id=app.pk)
    preview = _preview(membership, form["image"].value() or "", form["pull"].value() or "")
    return render(request, "apps/form.html", {"form": form, "app": None, "preview": preview},
                  status=422 if request.method == "POST" else 200)


def _initial(app: App) -> dict[str, Any]:
    """The App page's fields as the app is now, written so that saving them unchanged
    changes nothing: the command quoted as a shell would (``shlex.join``, read back with
    ``shlex.split``), and a variable or build argument whose value cannot sit on one line
    as its name alone, which keeps it (see :class:`AppForm`)."""
    return {
        "name": app.name, "source": app.source, "image": app.image,
        "pull": pull_value(app.runtime_pull, app.runtime_pull_credential_id),
        "port": app.port, "replicas": app.replicas, "ready_timeout": app.ready_timeout,
        "command": shlex.join(app.command) if app.command else "",
        "env": "\n".join(v.name if multi_line(v.value) else f"{v.name}={v.value}"
                         for v in app.env.all() if not v.secret),
        "secret_env": "\n".join(v.name for v in app.env.all() if v.secret),
        "regions": [r.slug for r in app.regions.all()],
        "git_url": app.git_url, "git_ref": app.git_ref,
        "git_credential": app.git_credential_id, "dockerfile": app.dockerfile,
        "context": app.context,
        "build_args": "\n".join(k if multi_line(v) else f"{k}={v}"
                                for k, v in (app.build_args or {}).items()),
        "build_pull": app.build_pull_credential_id,
    }


def _app_page(request: HttpRequest, membership: Membership, app: App, form: AppForm, *,
              status: int = 200, upload_error: ApplicationError | None = None) -> HttpResponse:
    preview = _preview(membership, form["image"].value() or "", form["pull"].value() or "")
    deployments = _deployments(membership, app)
    running = running_services(app_id=app.pk)
    swarm_regions = [r.slug for r in app.regions.all() if r.runtime == Runtime.SWARM]
    return render(request, "apps/form.html", {
        "form": form, "app": app, "preview": preview, "deployments": deployments,
        "latest": deployments[0] if deployments else None, "upload_error": upload_error,
        "polling": any(not d.finished for d in deployments),
        "max_upload_mib": sources.MAX_ARCHIVE_BYTES // (1024 * 1024),
        "running": running, "regions_without_report": sorted(
            {r.slug for r in app.regions.all()} - {s.region.slug for s in running}),
        "update_gap": app.port is not None and app.replicas == 1 and swarm_regions,
    }, status=status)


@login_required
def app_detail(request: HttpRequest, app_id: int) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.VIEW)
    app = selectors.app_get(account=membership.account, app_id=app_id)
    form = _form(membership, request.POST or None, initial=_initial(app), app=app)
    status = 200
    if request.method == "POST":
        require(membership, Action.DEPLOY)
        status = 422
        if form.is_valid() and _save(request, membership, form, app) is not None:
            messages.success(request, "Saved. Changes take effect at the next deploy.")
            return redirect("app_detail", app_id=app.pk)
    return _app_page(request, membership, app, form, status=status)


@csrf_exempt  # checked by _app_source_upload, once the upload handler is in place
@login_required
@require_POST
def app_source_upload(request: HttpRequest, app_id: int) -> HttpResponse:
    """The App page's upload of a build's source: a .tar.gz or .zip of the directory.

    The same service, size limit and errors as ``POST /api/v1/apps/{id}/source``; the limit
    is applied while the browser sends (:class:`ArchiveUploadHandler`), which is why the CSRF
    check runs after the handler is set instead of in the middleware.
    """
    handler = ArchiveUploadHandler(request)
    request.upload_handlers = [handler]
    return _app_source_upload(request, app_id, handler)


@csrf_protect
def _app_source_upload(request: HttpRequest, app_id: int,
                       handler: ArchiveUploadHandler) -> HttpResponse:
    membership = current_membership(request)
    app = selectors.app_get(account=membership.account, app_id=app_id)
    try:
        upload = request.FILES.get("archive")
        if handler.too_large:
            raise sources.too_large()
        if upload is None:
            raise ValidationFailed("Choose the .tar.gz or .zip of the source directory.",
                                   code="source_missing")
        archive = services.source_archive_upload(actor=membership.user, membership=membership,
                                                 app_id=app.pk, chunks=upload.chunks())
    except ApplicationError as exc:
        if exc.status in (401, 403, 404):
            raise
        form = _form(membership, initial=_initial(app), app=app)
        return _app_page(request, membership, app, form, status=exc.status, upload_error=exc)
    messages.success(request, f"Uploaded {upload.name} ({filesizeformat(archive.size)}, "
                              f"sha256 {archive.sha256[:12]}). The next deploy builds it.")
    return redirect("app_detail", app_id=app.pk)


@login_required
def app_preview(request: HttpRequest) -> HttpResponse:
    """The live sentence under the select, re-rendered by htmx as the user types."""
    membership = current_membership(request)
    require(membership, Action.VIEW)
    return render(request, "apps/_preview.html", {
        "preview": _preview(membership, request.GET.get("image", ""),
                            request.GET.get("pull", "")),
    })


@login_required
@require_POST
def app_deploy(request: HttpRequest, app_id: int) -> HttpResponse:
    membership = current_membership(request)
    try:
        created = deployment_services.deployment_create(actor=membership.user,
                                                        membership=membership, app_id=app_id)
    except ApplicationError as exc:
        if exc.status in (403, 404):
            raise
        messages.error(request, exc.message)
    else:
        regions = ", ".join(d.region.slug for d in created)
        messages.success(request, f"Deploy #{created[0].number} queued for {regions}.")
    return redirect("app_detail", app_id=app_id)


@login_required
@require_POST
def app_delete(request: HttpRequest, app_id: int) -> HttpResponse:
    membership = current_membership(request)
    app = selectors.app_get(account=membership.account, app_id=app_id)
    services.app_delete(actor=membership.user, membership=membership, app_id=app.pk)
    messages.success(request, f"App {app.name} deleted; its containers are being removed.")
    return redirect("apps")


@login_required
def deployment_log(request: HttpRequest, deployment_id: int) -> HttpResponse:
    """A deployment's status and log; htmx polls it until the deployment is finished."""
    membership = current_membership(request)
    require(membership, Action.VIEW)
    deployment = deployment_selectors.deployment_get(account=membership.account,
                                                     deployment_id=deployment_id)
    return render(request, "apps/_deployment.html", {
        "d": deployment, "lines": list(deployment_selectors.deployment_logs(
            deployment=deployment)),
    })


def _deployments(membership: Membership, app: App) -> list[Deployment]:
    """The App page's deployments, newest first, each with why it is stalled (``stall``)."""
    deployments = deployment_selectors.deployments_of_app(account=membership.account,
                                                          app_id=app.pk, limit=20)
    for d in deployments:
        d.stall = deployment_selectors.deployment_stall(d)  # type: ignore[attr-defined]
    return deployments


@login_required
def app_deployments(request: HttpRequest, app_id: int) -> HttpResponse:
    """The Latest deploy card and (out of band) the Deployments table, from one read: the
    App page polls it while a deployment is not finished, so the two always agree."""
    membership = current_membership(request)
    require(membership, Action.VIEW)
    app = selectors.app_get(account=membership.account, app_id=app_id)
    deployments = _deployments(membership, app)
    if not deployments:
        return HttpResponse("")
    context = {"app": app, "deployments": deployments, "latest": deployments[0],
               "polling": any(not d.finished for d in deployments), "oob": True}
    return HttpResponse(render_to_string("apps/_latest.html", context, request)
                        + render_to_string("apps/_history.html", context, request))
