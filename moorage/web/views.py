"""Pages of the shell: the account overview."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from moorage.accounts import selectors
from moorage.accounts.middleware import current_membership
from moorage.accounts.permissions import Action, require
from moorage.audit.selectors import audit_events_for_account


@login_required
def home(request: HttpRequest) -> HttpResponse:
    if getattr(request, "membership", None) is None:
        # Not in any account yet: the way in is an invitation.
        return redirect("invitations")
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
