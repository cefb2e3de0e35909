"""The Regions page, and the account's choice of regions."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from moorage.accounts.forms import add_application_error
from moorage.accounts.middleware import current_membership
from moorage.accounts.permissions import Action, require, require_platform_staff
from moorage.errors import ApplicationError
from moorage.regions import selectors, services
from moorage.regions.forms import RegionForm


def _page(request: HttpRequest, *, form: RegionForm | None = None, status: int = 200,
          created: services.RegionCredentials | None = None,
          rotated: tuple[str, str] | None = None) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.VIEW)
    return render(request, "regions/list.html", {
        "states": selectors.region_states(account=membership.account),
        "redeployable": services.account_regions_redeployable(account=membership.account),
        "form": form or RegionForm(),
        "created": created,
        "rotated": rotated,
    }, status=status)


@login_required
def region_list(request: HttpRequest) -> HttpResponse:
    return _page(request)


@login_required
@require_POST
def region_add(request: HttpRequest) -> HttpResponse:
    require_platform_staff(request.user)  # type: ignore[arg-type]
    form = RegionForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        registry = None
        if data["registry"] or data["registry_username"] or data["registry_password"]:
            registry = services.RegistryInput(host=data["registry"],
                                              username=data["registry_username"],
                                              password=data["registry_password"])
        try:
            created = services.region_create(
                actor=request.user,  # type: ignore[arg-type]
                slug=data["slug"], name=data["name"], runtime=data["runtime"],
                enabled_for_new_accounts=data["for_new_accounts"],
                enable_for_existing_accounts=data["for_all_accounts"], registry=registry,
            )
        except ApplicationError as exc:
            if exc.status == 403:
                raise
            add_application_error(form, exc)
        else:
            # Rendered, not redirected: the token and key must not survive a reload.
            return _page(request, created=created)
    return _page(request, form=form, status=422)


@login_required
@require_POST
def region_rotate_token(request: HttpRequest, slug: str) -> HttpResponse:
    token = services.region_rotate_token(actor=request.user, slug=slug)  # type: ignore[arg-type]
    return _page(request, rotated=(slug, token))


@login_required
@require_POST
def region_remove(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        result = services.region_remove(actor=request.user,  # type: ignore[arg-type]
                                        slug=slug, drain=request.POST.get("drain") == "1")
    except ApplicationError as exc:
        if exc.status == 403:
            raise
        messages.error(request, exc.message)
        return redirect("regions")
    if result.removed:
        messages.success(request, f"Region {slug} removed.")
    else:
        messages.info(request, f"Region {slug} is draining: its agent stops and removes "
                               f"{', '.join(result.apps) or 'what runs there'}. Press "
                               "“Drain and remove” again once it has reported.")
    return redirect("regions")


@login_required
@require_POST
def account_regions(request: HttpRequest) -> HttpResponse:
    """Save the account's regions. Disabling a region where apps run shows which apps stop
    and asks to confirm first (a second, server-rendered step: no script needed)."""
    membership = current_membership(request)
    slugs = request.POST.getlist("regions")
    try:
        change = services.account_regions_change(
            actor=membership.user, membership=membership, slugs=slugs,
            confirm=request.POST.get("confirm") == "1")
    except ApplicationError as exc:
        if exc.status == 403:
            raise
        if exc.code != "region_disable_stops_apps":
            messages.error(request, exc.message)
            return redirect("regions")
        require(membership, Action.VIEW)
        return render(request, "regions/confirm_disable.html", {
            "slugs": slugs,
            "apps": services.account_regions_stopping(account=membership.account,
                                                      slugs=slugs),
        })
    names = ", ".join(r.slug for r in change.regions) or "none"
    messages.success(request, f"{membership.account.name} deploys to: {names}.")
    if change.stopped:
        messages.info(request, "Stopped: " + ", ".join(
            f"{a.app} in {a.region}" for a in change.stopped) + ".")
    return redirect("regions")


@login_required
@require_POST
def account_apps_redeploy(request: HttpRequest) -> HttpResponse:
    """“Deploy again”: one app (``app``) or every app stopped when a region was disabled."""
    membership = current_membership(request)
    app_ids = [int(v) for v in request.POST.getlist("app") if v.isdigit()] or None
    try:
        created = services.account_apps_redeploy(actor=membership.user, membership=membership,
                                                 app_ids=app_ids)
    except ApplicationError as exc:
        if exc.status == 403:
            raise
        messages.error(request, exc.message)
    else:
        messages.success(request, "Deploying again: " + ", ".join(
            sorted({f"{d.app.name} in {d.region.slug}" for d in created})) + ".")
    return redirect("regions")
