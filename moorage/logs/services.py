"""Asking a region's agent for an app's logs, taking its answer, handing it to the reader.

The control plane never calls an agent (``docs/sync.md``): :func:`log_request_create` writes
a request row and a change-log row in one transaction, so the region's waiting long poll
wakes and the agent receives a ``logs.request`` op. The agent uploads the lines in numbered
chunks (:func:`log_chunk_receive`), and the member reads them with
:func:`log_request_collect`, which deletes the row once its final chunk has been read.

Nothing here is audited: asking for logs changes nothing (it is a read, like viewing a
deployment's log), and an audit row per follow window would drown the account's activity.
Nothing here logs a line of the app's output either. Rows do not outlive ``expires_at`` for
long: every create, chunk and read first deletes the expired ones, and so does the regions'
changes feed once a minute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from moorage.accounts.models import Membership, User
from moorage.accounts.permissions import Action, require
from moorage.apps.models import App
from moorage.errors import Conflict, NotFound, RateLimited, ValidationFailed
from moorage.logs.choices import LogStatus
from moorage.logs.models import LogRequest
from moorage.protocol.logs import (
    DEFAULT_TAIL,
    MAX_ANSWER_BYTES,
    MAX_FOLLOW_SECONDS,
    MAX_TAIL,
    LogLine,
    cut_line,
    timestamp_ns,
)
from moorage.regions.changelog import record_change
from moorage.regions.choices import ChangeKind
from moorage.regions.models import Region

#: The agent's first chunk must come this soon (it is woken at once; it may be busy with a
#: deploy, which it runs inline), and its final one this long after the follow window.
ANSWER_WITHIN = timedelta(seconds=20)
FINISH_GRACE = timedelta(seconds=15)
#: An answer nobody reads is deleted this long after it is complete.
KEEP_UNREAD = timedelta(seconds=60)
#: Requests of one app still open at once (a follow holds one per region).
MAX_OPEN_PER_APP = 10
#: How often the changes feed deletes expired requests (per control-plane process).
SWEEP_INTERVAL = 60.0
_swept_at = float("-inf")


@dataclass(frozen=True)
class LogAnswer:
    """What a read of a log request returns: the lines after the reader's index, the index to
    ask from next, and — once ``finished`` — the cursor to continue from and what went wrong."""

    id: int
    region: str
    status: str
    follow: int
    lines: list[LogLine] = field(default_factory=list)
    next: int = 0
    cursor: str | None = None
    truncated: bool = False
    error_code: str = ""
    error_message: str = ""

    @property
    def finished(self) -> bool:
        return self.status in LogStatus.finished()


def _is_timestamp(text: str) -> bool:
    try:
        timestamp_ns(text)
    except ValueError:
        return False
    return True


def log_requests_expire() -> int:
    """Delete every log request past its ``expires_at``; return how many."""
    global _swept_at
    _swept_at = time.monotonic()
    deleted, _ = LogRequest.objects.filter(expires_at__lt=timezone.now()).delete()
    return deleted


def log_requests_expire_due() -> int:
    """:func:`log_requests_expire`, at most every :data:`SWEEP_INTERVAL` seconds in this
    process: the changes feed calls it, so an answer nobody read (its reader died) is gone
    within a minute of its expiry even when nobody asks for logs again."""
    if time.monotonic() - _swept_at < SWEEP_INTERVAL:
        return 0
    return log_requests_expire()


def _check_bounds(tail: int | None, since: str | None, follow: int) -> None:
    if tail is not None and not 0 <= tail <= MAX_TAIL:
        raise ValidationFailed(f"Ask for between 0 and {MAX_TAIL} lines.",
                               code="logs_tail_invalid", detail={"fields": {"tail": "range"}})
    if since is not None and not _is_timestamp(since):
        raise ValidationFailed(
            "since is an RFC 3339 timestamp such as 2026-11-29T10:11:12.123456789Z (the "
            "cursor of a previous answer).", code="logs_since_invalid",
            detail={"fields": {"since": "timestamp"}})
    if tail is None and since is None:
        raise ValidationFailed("Ask for a tail, or for the lines after a cursor (since).",
                               code="logs_tail_invalid", detail={"fields": {"tail": "missing"}})
    if not 0 <= follow <= MAX_FOLLOW_SECONDS:
        raise ValidationFailed(
            f"follow is between 0 and {MAX_FOLLOW_SECONDS} seconds; follow longer by asking "
            "again from the cursor.", code="logs_follow_invalid",
            detail={"fields": {"follow": "range"}})


@transaction.atomic
def log_request_create(
    *, actor: User, membership: Membership, app_id: int, region: str | None = None,
    tail: int | None = DEFAULT_TAIL, since: str | None = None, follow: int = 0,
) -> list[LogRequest]:
    """Ask the agents of the app's regions (or of ``region`` only) for its logs.

    Anyone who may view the account may read its apps' logs (the README's roles). Regions are
    the app's regions the account deploys to, as for a deploy. Raises ``app_not_found``,
    ``region_not_enabled``, ``app_has_no_region``, ``logs_*_invalid`` and ``logs_busy`` (429:
    too many requests of this app still open).
    """
    require(membership, Action.VIEW)
    _check_bounds(tail, since, follow)
    app = App.objects.filter(account=membership.account, id=app_id).first()
    if app is None:
        raise NotFound("No such app in this account.", code="app_not_found")
    regions = list(app.regions.filter(account_links__account=app.account).order_by("slug"))
    if region is not None:
        regions = [r for r in regions if r.slug == region]
        if not regions:
            raise ValidationFailed(
                f"The app {app.name} does not run in a region {region!r} of this account.",
                code="region_not_enabled", detail={"fields": {"region": "not the app's"}})
    if not regions:
        raise ValidationFailed(
            "The app runs in no region the account deploys to; it has no logs anywhere.",
            code="app_has_no_region")
    log_requests_expire()
    now = timezone.now()
    open_ = LogRequest.objects.filter(app=app, expires_at__gte=now).exclude(
        status__in=LogStatus.finished()).count()
    if open_ + len(regions) > MAX_OPEN_PER_APP:
        raise RateLimited(f"Too many logs requests of {app.name} are still open; try again in "
                          "a moment.", code="logs_busy", detail={"retry_after": 2})
    window = timedelta(seconds=follow)
    created = []
    for target in regions:
        request = LogRequest.objects.create(
            app=app, region=target, requested_by=actor, tail=tail, since=since or "",
            follow=follow, answer_by=now + ANSWER_WITHIN,
            finish_by=now + ANSWER_WITHIN + window + FINISH_GRACE,
            expires_at=now + ANSWER_WITHIN + window + FINISH_GRACE + KEEP_UNREAD,
        )
        record_change(account_id=app.account_id, kind=ChangeKind.LOGS, object_id=request.pk,
                      region_id=target.pk)
        request.region = target
        created.append(request)
    return created


@dataclass(frozen=True)
class Chunk:
    """One upload of an agent (``POST /agent/logs/{id}``)."""

    seq: int
    lines: list[tuple[str, str]]
    final: bool = False
    cursor: str | None = None
    truncated: bool = False
    error_code: str = ""
    error_message: str = ""


@transaction.atomic
def log_chunk_receive(*, region: Region, request_id: int, chunk: Chunk) -> None:
    """Take one chunk of an agent's answer, at most once, in order, within the bounds.

    A request of another region, of an account no longer enabled there, expired or deleted
    (read) answers 404 ``log_request_not_found``: the agent stops sending. A chunk already
    taken (``seq`` below the next) is ignored, so retrying one is safe; one after a gap is a
    409 ``log_chunk_out_of_order``, one after the final a 409 ``log_request_closed``. Lines
    are cut again here and the answer stops at its byte limit, whatever the agent sent.
    """
    log_requests_expire()
    request = (LogRequest.objects.select_for_update(of=("self",))
               .filter(pk=request_id, region=region,
                       app__account__region_links__region=region).first())
    if request is None:
        raise NotFound("No such logs request for this region (it was read, or it expired).",
                       code="log_request_not_found")
    if chunk.seq < request.chunks:
        return
    if request.finished:
        raise Conflict("This logs request is already answered.", code="log_request_closed")
    if chunk.seq > request.chunks:
        raise Conflict(f"Chunk {chunk.seq} came before chunk {request.chunks}.",
                       code="log_chunk_out_of_order")
    if chunk.cursor and not _is_timestamp(chunk.cursor):
        raise ValidationFailed("The cursor is not an RFC 3339 timestamp.",
                               code="logs_cursor_invalid")
    lines: list[Any] = list(request.lines)
    size, truncated = request.size, request.truncated
    for at, text in chunk.lines:
        text = cut_line(text)  # as the agent did already: the same text again
        at = at if _is_timestamp(at) else ""
        cost = len(text.encode("utf-8")) + 1
        if size + cost > MAX_ANSWER_BYTES:
            truncated = True
            break
        lines.append([at, text])
        size += cost
    request.lines, request.size = lines, size
    request.truncated = truncated or chunk.truncated
    request.chunks += 1
    request.status = LogStatus.STREAMING
    if chunk.final:
        request.status = LogStatus.FAILED if chunk.error_code else LogStatus.DONE
        request.cursor = chunk.cursor or request.since
        request.error_code = cut_line(chunk.error_code)[:64]
        request.error_message = cut_line(chunk.error_message)[:1000]
        request.expires_at = min(request.expires_at, timezone.now() + KEEP_UNREAD)
    request.save()


@transaction.atomic
def log_request_collect(
    *, membership: Membership, app_id: int, request_id: int, after: int = 0
) -> LogAnswer:
    """The lines of a log request from index ``after`` on; once it is finished, the row is
    deleted (everything is delivered). A request the agent has not answered in time is
    finished as failed ``agent_timeout``."""
    require(membership, Action.VIEW)
    log_requests_expire()
    request = (LogRequest.objects.select_for_update(of=("self",)).select_related("region")
               .filter(pk=request_id, app_id=app_id, app__account=membership.account).first())
    if request is None:
        raise NotFound("No such logs request of this app (it was read, or it expired).",
                       code="log_request_not_found")
    now = timezone.now()
    if not request.finished and (
            (request.status == LogStatus.PENDING and now > request.answer_by)
            or now > request.finish_by):
        request.status = LogStatus.FAILED
        request.error_code = "agent_timeout"
        request.error_message = (
            f"The agent of region {request.region.slug} did not answer in time: it may be "
            "offline, or busy with a deploy (see the Regions page)." if request.chunks == 0
            else f"The agent of region {request.region.slug} stopped sending lines.")
        request.cursor = request.cursor or request.since
    answer = LogAnswer(
        id=request.pk, region=request.region.slug, status=request.status,
        follow=request.follow,
        lines=[LogLine(at=at, text=text) for at, text in request.lines[max(after, 0):]],
        next=len(request.lines), cursor=(request.cursor or None) if request.finished else None,
        truncated=request.truncated, error_code=request.error_code,
        error_message=request.error_message,
    )
    if answer.finished:
        request.delete()
    return answer
