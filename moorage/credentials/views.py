"""The Credentials pages (My Account → Credentials)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from moorage.accounts.forms import add_application_error
from moorage.accounts.middleware import current_membership
from moorage.accounts.permissions import Action, require
from moorage.credentials import logins, selectors, services
from moorage.credentials.choices import CredentialType, LoginSource
from moorage.credentials.forms import CredentialEditForm, CredentialForm, SecretForm, TestForm
from moorage.credentials.models import Credential
from moorage.credentials.presets import BY_KEY, PRESETS
from moorage.errors import ApplicationError
from moorage.regions.selectors import sync_summary
from moorage.registry.logins import login_source


def _form_error(form: Any, exc: ApplicationError) -> None:
    # Services call the secret "secret"; the forms too, so errors land on the right field.
    add_application_error(form, exc)


@login_required
def credential_list(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.VIEW)
    credentials = list(selectors.credentials_of(account=membership.account))
    usage = selectors.usage_counts(account=membership.account)
    region_count, replicas = sync_summary(account=membership.account)
    now = timezone.now()
    for credential in credentials:
        token = logins.token_of(credential)
        credential.token_state = (  # type: ignore[attr-defined]
            None if token is None else logins.token_state(credential.login_source, token, now))
        credential.used_by = usage.get(credential.id, 0)  # type: ignore[attr-defined]
        states = replicas.get(credential.id, [])
        credential.sync_states = states  # type: ignore[attr-defined]
        credential.synced = sum(1 for s in states if s.in_sync)  # type: ignore[attr-defined]
        credential.services = sum(s.services for s in states)  # type: ignore[attr-defined]
        credential.services_applied = sum(  # type: ignore[attr-defined]
            s.services_applied for s in states)
    return render(request, "credentials/list.html",
                  {"credentials": credentials, "region_count": region_count})


def _fields_context(kind: str, preset_key: str, form: CredentialForm,
                    source_name: str = "") -> dict[str, Any]:
    preset = BY_KEY.get(preset_key) or BY_KEY["generic"]
    kind = kind if kind in CredentialType.values else CredentialType.CONTAINER_REGISTRY
    if kind != CredentialType.CONTAINER_REGISTRY or source_name not in LoginSource.values:
        source_name = preset.login_source if kind == CredentialType.CONTAINER_REGISTRY \
            else LoginSource.STATIC
    source = login_source(source_name)
    if kind == CredentialType.CONTAINER_REGISTRY and preset.login_source != source.name:
        # A source chosen against the preset: take the preset that speaks of that source.
        preset = next((p for p in PRESETS if p.login_source == source.name), BY_KEY["generic"])
    return {
        "form": form,
        "kind": kind,
        "preset": preset,
        "presets": PRESETS,
        "source": source,
        "sources": LoginSource.choices,
        "multiline": (source.name == LoginSource.GCP_SERVICE_ACCOUNT
                      or (source.name == LoginSource.STATIC
                          and (preset.multiline_secret
                               or form["username"].value() == "_json_key"))),
    }


@login_required
def credential_new(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.MANAGE_CREDENTIALS)
    if request.method == "POST":
        form = CredentialForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                credential = services.credential_create(
                    actor=membership.user, membership=membership, type=data["type"],
                    name=data["name"], server=data["server"], username=data["username"],
                    secret=data["secret"], email=data["email"],
                    login_source=data["login_source"] or LoginSource.STATIC,
                    aws_access_key_id=data["aws_access_key_id"], aws_region=data["aws_region"],
                )
            except ApplicationError as exc:
                if exc.status == 403:
                    raise
                _form_error(form, exc)
            else:
                suffix = " It is the account default." if credential.is_default else ""
                messages.success(request, f"Credential {credential.name!r} added.{suffix}")
                return redirect("credentials")
        context = _fields_context(
            str(request.POST.get("type", "")), str(request.POST.get("preset", "")), form,
            str(request.POST.get("login_source", "")),
        )
        return render(request, "credentials/new.html", context, status=422)
    kind = request.GET.get("type", CredentialType.CONTAINER_REGISTRY)
    preset = BY_KEY.get(request.GET.get("preset", "generic")) or BY_KEY["generic"]
    initial = {"type": kind, "preset": preset.key}
    if kind == CredentialType.CONTAINER_REGISTRY:
        initial |= {"server": preset.server, "username": preset.username}
    form = CredentialForm(initial=initial)
    # The login-source select sends its choice; the preset picker does not (its preset
    # decides the source).
    context = _fields_context(kind, preset.key, form, request.GET.get("login_source", ""))
    # The type and preset pickers ask htmx for the fields alone.
    template = "credentials/_fields.html" if request.htmx else "credentials/new.html"  # type: ignore[attr-defined]
    return render(request, template, context)


@login_required
def credential_edit(request: HttpRequest, credential_id: int) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.MANAGE_CREDENTIALS)
    credential = selectors.credential_get(account=membership.account, credential_id=credential_id)
    form = CredentialEditForm(request.POST or None, initial=_edit_initial(credential))
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            data = form.cleaned_data
            exchanged = logins.source_of(credential).exchanged
            try:
                services.credential_update(
                    actor=membership.user, membership=membership, credential_id=credential.id,
                    name=data["name"], server=data["server"],
                    username=None if exchanged else data["username"],
                    email=data["email"], secret=data["secret"] or None,
                    aws_access_key_id=data["aws_access_key_id"] if exchanged else None,
                    aws_region=data["aws_region"] if exchanged else None,
                )
            except ApplicationError as exc:
                if exc.status in (403, 404):
                    raise
                _form_error(form, exc)
            else:
                messages.success(request, f"Credential {data['name']!r} saved.")
                return redirect("credentials")
    return render(request, "credentials/edit.html", _edit_context(credential, form, SecretForm()),
                  status=status)


def _edit_initial(credential: Credential) -> dict[str, str]:
    return {"name": credential.name, "server": credential.server,
            "username": credential.username, "email": credential.email,
            "aws_access_key_id": credential.aws_access_key_id,
            "aws_region": credential.aws_region}


def _edit_context(credential: Credential, form: CredentialEditForm,
                  secret_form: SecretForm) -> dict[str, Any]:
    token = logins.token_of(credential)
    return {
        "credential": credential, "form": form, "secret_form": secret_form,
        "test_form": TestForm(), "source": logins.source_of(credential),
        "token_state": (None if token is None
                        else logins.token_state(credential.login_source, token, timezone.now())),
    }


@login_required
@require_POST
def credential_replace_secret(request: HttpRequest, credential_id: int) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.MANAGE_CREDENTIALS)
    credential = selectors.credential_get(account=membership.account, credential_id=credential_id)
    secret_form = SecretForm(request.POST)
    if secret_form.is_valid():
        try:
            updated = services.credential_update(
                actor=membership.user, membership=membership, credential_id=credential.id,
                secret=secret_form.cleaned_data["secret"],
            )
        except ApplicationError as exc:
            if exc.status in (403, 404):
                raise
            _form_error(secret_form, exc)
        else:
            label = ("Token" if updated.type == CredentialType.GIT
                     else "Key" if logins.source_of(updated).exchanged else "Password")
            messages.success(
                request, f"{label} of {updated.name!r} replaced (revision {updated.revision})."
            )
            return redirect("credentials")
    form = CredentialEditForm(initial=_edit_initial(credential))
    return render(request, "credentials/edit.html",
                  _edit_context(credential, form, secret_form), status=422)


@login_required
@require_POST
def credential_set_default(request: HttpRequest, credential_id: int) -> HttpResponse:
    membership = current_membership(request)
    credential = services.credential_set_default(
        actor=membership.user, membership=membership, credential_id=credential_id
    )
    messages.success(request, f"{credential.name!r} is now the account default.")
    return redirect("credentials")


@login_required
def credential_delete(request: HttpRequest, credential_id: int) -> HttpResponse:
    """The delete confirmation. Deleting the default that apps pull with through "Use
    account default" needs the box ticked (the API's ``confirm=true``)."""
    membership = current_membership(request)
    require(membership, Action.MANAGE_CREDENTIALS)
    credential = selectors.credential_get(account=membership.account, credential_id=credential_id)
    error: ApplicationError | None = None
    if request.method == "POST":
        try:
            deleted = services.credential_delete(
                actor=membership.user, membership=membership, credential_id=credential.id,
                confirm=request.POST.get("confirm") == "on",
            )
        except ApplicationError as exc:
            if exc.status in (403, 404):
                raise
            error = exc
        else:
            messages.success(request, _deleted_message(deleted))
            return redirect("credentials")
    successor = (
        services.successor_of_default(membership.account, excluding=credential.id)
        if credential.is_default else None
    )
    through_default = selectors.apps_through_default(credential=credential)
    return render(request, "credentials/delete.html", {
        "credential": credential, "successor": successor, "error": error,
        "used_by": selectors.usage_counts(account=membership.account).get(credential.id, 0),
        "naming": selectors.apps_naming(credential=credential),
        "through_default": through_default,
        "default_warning": services.default_in_use(credential, through_default, successor)
        if through_default else None,
    }, status=error.status if error else 200)


def _deleted_message(deleted: services.Deleted) -> str:
    text = f"Credential {deleted.name!r} deleted."
    if deleted.promoted is not None:
        text += f" {deleted.promoted.name!r} is now the account default."
    elif deleted.was_default:
        text += (" No default left: apps on \"Use account default\" pull without a "
                 "credential.")
    return text


@login_required
@require_POST
def credential_refresh(request: HttpRequest, credential_id: int) -> HttpResponse:
    membership = current_membership(request)
    try:
        credential = services.credential_refresh_request(
            actor=membership.user, membership=membership, credential_id=credential_id)
    except ApplicationError as exc:
        if exc.status in (403, 404):
            raise
        messages.error(request, exc.message)
    else:
        messages.success(request, f"The token of {credential.name!r} is refreshed within a "
                                  "few seconds (by the background worker).")
    return redirect("credentials")


@login_required
@require_POST
def credential_test(request: HttpRequest, credential_id: int) -> HttpResponse:
    membership = current_membership(request)
    form = TestForm(request.POST)
    image = form.cleaned_data["image"] if form.is_valid() else None
    outcome: services.TestOutcome | None = None
    error: str | None = None
    try:
        outcome = services.credential_test(
            actor=membership.user, membership=membership, credential_id=credential_id,
            image=image or None,
        )
    except ApplicationError as exc:
        if exc.status in (403, 404):
            raise
        error = exc.message
    credential = selectors.credential_get(account=membership.account, credential_id=credential_id)
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "credentials/_test_result.html",
                      {"credential": credential, "error": error})
    if outcome is None:
        messages.error(request, error or "The test could not run.")
    elif outcome.ok:
        messages.success(request, f"{credential.name}: {outcome.message}")
    else:
        messages.error(request, f"{credential.name}: {outcome.message}")
    return redirect("credentials")
