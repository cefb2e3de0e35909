"""The Activity page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from moorage.accounts.middleware import current_membership
from moorage.accounts.permissions import Action, require
from moorage.audit.selectors import audit_events_for_account

PAGE_SIZE = 50


@login_required
def activity(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    require(membership, Action.VIEW)
    before = request.GET.get("before")
    before_id = int(before) if before and before.isdigit() else None
    events = audit_events_for_account(
        account=membership.account, before_id=before_id, limit=PAGE_SIZE
    )
    context = {"events": events, "more": len(events) == PAGE_SIZE}
    # "Load more" asks with htmx for the next rows only.
    template = "audit/_rows.html" if request.htmx else "audit/activity.html"  # type: ignore[attr-defined]
    return render(request, template, context)
