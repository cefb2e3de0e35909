"""The Activity page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from moorage.accounts.permissions import Action, require
from moorage.audit.selectors import audit_events_for_account
from moorage.errors import NotFound

PAGE_SIZE = 50


@login_required
def activity(request: HttpRequest) -> HttpResponse:
    membership = getattr(request, "membership", None)
    if membership is None:
        raise NotFound("You do not belong to any account yet.", code="no_account")
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
