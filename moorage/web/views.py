"""Pages of the shell: the account overview and the sections still to come."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from moorage.accounts import selectors
from moorage.accounts.middleware import current_membership
from moorage.accounts.permissions import Action, require
from moorage.audit.selectors import audit_events_for_account


@login_required
def home(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.VIEW)
    return render(
        request,
        "web/home.html",
        {
            "members": selectors.account_members(account=membership.account),
            "recent_events": audit_events_for_account(account=membership.account, limit=5),
        },
    )


@login_required
def section(request: HttpRequest, name: str) -> HttpResponse:
    """Apps, Credentials and Regions: the navigation is in place before the features are."""
    membership = current_membership(request)
    require(membership, Action.VIEW)
    title, text = _SECTIONS[name]
    return render(request, "web/section.html", {"title": title, "text": text})


_SECTIONS = {
    "apps": (
        "Apps",
        "Apps and deploys are not available in this version of Moorage yet. "
        "They come with image deploys through the region agents.",
    ),
}
