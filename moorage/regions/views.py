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
    services.region_remove(actor=request.user, slug=slug)  # type: ignore[arg-type]
    messages.success(request, f"Region {slug} removed.")
    return redirect("regions")


@login_required
@require_POST
def account_regions(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    chosen = services.account_regions_set(actor=membership.user, membership=membership,
                                          slugs=request.POST.getlist("regions"))
    names = ", ".join(r.slug for r in chosen) or "none"
    messages.success(request, f"{membership.account.name} deploys to: {names}.")
    return redirect("regions")
