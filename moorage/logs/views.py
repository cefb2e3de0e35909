"""The Logs panel of the App page: ask the app's regions, then poll each answer with htmx.

``app_logs`` (POST) creates the requests and answers one ``<pre>`` per region holding a poller;
``app_log_lines`` (GET) answers the new lines and the next poller, or, once the answer is
finished, what went wrong and — when following — a poller that asks for the next window from
the cursor. Lines are the app's own output: escaped like any text, never marked safe.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from moorage.accounts.middleware import current_membership
from moorage.errors import ApplicationError
from moorage.logs import services
from moorage.logs.forms import LogsForm
from moorage.protocol.logs import DEFAULT_TAIL, FOLLOW_WINDOW, MAX_ANSWER_BYTES, MAX_TAIL

#: A page follows for at most this many windows (30 minutes), then says so and stops.
MAX_WINDOWS = 90


@login_required
@require_POST
def app_logs(request: HttpRequest, app_id: int) -> HttpResponse:
    membership = current_membership(request)
    form = LogsForm(request.POST)
    if not form.is_valid():
        return render(request, "logs/_note.html", {
            "note": "Ask for between 0 and 1000 lines.", "error": True})
    data = form.cleaned_data
    chain = data["chain"]
    if chain and not data["follow"]:
        return render(request, "logs/_note.html", {"note": "Stopped following."})
    windows = (data["windows"] or 0) + 1 if chain else 0
    if windows > MAX_WINDOWS:
        return render(request, "logs/_note.html", {
            "note": f"Stopped following after {MAX_WINDOWS * FOLLOW_WINDOW // 60} minutes; "
                    "show the logs again to go on."})
    try:
        created = services.log_request_create(
            actor=membership.user, membership=membership, app_id=app_id,
            region=data["region"] or None,
            tail=None if chain and data["since"] else data["tail"],
            since=(data["since"] or None) if chain else None,
            follow=FOLLOW_WINDOW if data["follow"] else 0)
    except ApplicationError as exc:
        if exc.status in (403, 404):
            raise
        return render(request, "logs/_note.html", {"note": exc.message, "error": True})
    context = {"app_id": app_id, "follow": data["follow"], "windows": windows,
               "tail": data["tail"]}
    if chain:  # the next window of one region: only its poller, inside that region's <pre>
        return render(request, "logs/_poll.html", context | {"request_id": created[0].pk,
                                                             "after": 0})
    return render(request, "logs/_started.html", context | {"requests": created})


@login_required
@require_GET
def app_log_lines(request: HttpRequest, app_id: int, request_id: int) -> HttpResponse:
    membership = current_membership(request)
    try:
        after = max(int(request.GET.get("after", "0")), 0)
        windows = max(int(request.GET.get("windows", "0")), 0)
        tail = min(max(int(request.GET.get("tail", str(DEFAULT_TAIL))), 0), MAX_TAIL)
    except ValueError:
        after, windows, tail = 0, 0, DEFAULT_TAIL
    answer = services.log_request_collect(membership=membership, app_id=app_id,
                                          request_id=request_id, after=after)
    return render(request, "logs/_lines.html", {
        "answer": answer, "app_id": app_id, "follow": request.GET.get("follow") == "1",
        "windows": windows, "tail": tail, "limit_kib": MAX_ANSWER_BYTES // 1024,
    })
