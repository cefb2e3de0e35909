"""Refreshing the tokens of exchanged credentials: the control plane's background work.

:func:`login_tokens_refresh_due` runs in the task worker (``moorage worker``, started by
``moorage up``), never in a web request. It works in batches, each in three steps:

1. **claim** the due tokens in one short transaction: ``SELECT … FOR UPDATE SKIP LOCKED``
   on PostgreSQL (a write lock on SQLite), then a lease (``claimed_until``), so that with
   several control-plane processes each token is refreshed by one of them, once;
2. **exchange** each claimed credential's key with its token service, outside any
   transaction (a slow cloud never holds a database lock), a few at a time;
3. **record** the batch in one transaction: new tokens sealed, each credential's revision
   incremented and a sync change written (regions pick the token up like a rotation), one
   audit row per refresh (never the token); a failed refresh keeps the previous token, is
   tried again with a backoff, and shows on the credential ("refresh failing since 10:42:
   …"). A credential changed by a person meanwhile (a new key) keeps what the person gave.

The queries are O(batches), not O(credentials): nothing is read or written row by row, only
the exchanges themselves are per credential.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from moorage.audit.choices import AuditAction
from moorage.audit.services import audit_event, audit_record_many
from moorage.credentials import logins, vault
from moorage.credentials.models import Credential, LoginToken
from moorage.errors import ApplicationError
from moorage.regions.changelog import record_changes
from moorage.regions.choices import ChangeKind
from moorage.registry.logins import EXCHANGE_TIMEOUT, IssuedLogin, LoginParams, LoginSourceError

logger = logging.getLogger("moorage.credentials.refresh")

#: Tokens claimed per batch, and exchanged at once.
BATCH = 50
CONCURRENCY = 8
#: How long a claim holds: longer than a batch can take (50 / 8 exchanges of at most 20 s).
CLAIM_LEASE = timedelta(seconds=EXCHANGE_TIMEOUT * (BATCH // CONCURRENCY + 2))


@dataclass
class RefreshReport:
    """What one run did."""

    refreshed: int = 0
    failed: int = 0
    skipped: int = 0
    next_due: datetime | None = None
    failures: dict[str, int] = field(default_factory=dict)  # code → how many


@dataclass(frozen=True)
class _Claim:
    credential: Credential
    revision: int
    params: LoginParams | None
    problem: LoginSourceError | None = None


def login_tokens_refresh_due(
    *, batch_size: int = BATCH, concurrency: int = CONCURRENCY
) -> RefreshReport:
    """Refresh every token that is due now; return what happened and when the next is due."""
    report = RefreshReport()
    while True:
        claims = _claim(batch_size)
        if not claims:
            break
        results = _exchange_all(claims, concurrency)
        _record(claims, results, report)
        if len(claims) < batch_size:
            break
    report.next_due = LoginToken.objects.aggregate(due=Min("refresh_due_at"))["due"]
    return report


def _claim(limit: int) -> list[_Claim]:
    """Lease up to ``limit`` due tokens to this process; read what their exchanges need."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            LoginToken.objects.select_for_update(skip_locked=True)
            .filter(refresh_due_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            .order_by("refresh_due_at")
            .values_list("credential_id", flat=True)[:limit]
        )
        if not ids:
            return []
        LoginToken.objects.filter(credential_id__in=ids).update(
            claimed_until=now + CLAIM_LEASE, last_attempt_at=now)
    claims = []
    for credential in Credential.objects.filter(id__in=ids).select_related("login_token"):
        try:
            params = logins.params_of(credential)
        except ApplicationError as exc:  # the key cannot be opened (keyring)
            claims.append(_Claim(credential, credential.revision, None,
                                 LoginSourceError(exc.message, code=exc.code)))
            continue
        claims.append(_Claim(credential, credential.revision, params))
    return claims


def _exchange_one(claim: _Claim) -> IssuedLogin | LoginSourceError:
    if claim.params is None:
        assert claim.problem is not None
        return claim.problem
    try:
        return logins.ask(logins.source_of(claim.credential), claim.params)
    except LoginSourceError as exc:
        return exc
    except Exception as exc:  # a library's bug must not stop the other refreshes
        logger.exception("refreshing the token of credential %d failed unexpectedly",
                         claim.credential.pk)
        return LoginSourceError(f"The exchange failed unexpectedly ({type(exc).__name__}).",
                                code="exchange_failed")


def _exchange_all(claims: list[_Claim],
                  concurrency: int) -> list[IssuedLogin | LoginSourceError]:
    """Every claim's exchange, a few at a time (network only: no database in the threads)."""
    if concurrency <= 1 or len(claims) == 1:
        return [_exchange_one(claim) for claim in claims]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(claims)),
                            thread_name_prefix="token-refresh") as pool:
        return list(pool.map(_exchange_one, claims))


def _record(claims: list[_Claim], results: list[IssuedLogin | LoginSourceError],
            report: RefreshReport) -> None:
    """Write a batch's outcome in one transaction (bulk updates, one change-log append)."""
    now = timezone.now()
    ids = [claim.credential.pk for claim in claims]
    with transaction.atomic():
        current = {
            c.pk: c for c in Credential.objects.select_for_update(of=("self",))
            .filter(id__in=ids).select_related("login_token", "account")
        }
        tokens: list[LoginToken] = []
        credentials: list[Credential] = []
        changes: list[tuple[int, ChangeKind, int]] = []
        events = []
        released: list[int] = []
        for claim, result in zip(claims, results, strict=True):
            credential = current.get(claim.credential.pk)
            token = logins.token_of(credential) if credential is not None else None
            if credential is None or token is None or credential.revision != claim.revision:
                # Deleted, switched to a password, or given a new key by a person meanwhile:
                # what the person did stands.
                report.skipped += 1
                if token is not None:
                    released.append(token.pk)
                continue
            if isinstance(result, IssuedLogin):
                recovered = token.failing_since is not None
                _refreshed(credential, token, result, now)
                credentials.append(credential)
                changes.append((credential.account_id, ChangeKind.CREDENTIAL, credential.pk))
                events.append(audit_event(
                    account=credential.account, actor=None,
                    action=AuditAction.CREDENTIAL_TOKEN_REFRESHED, target=credential,
                    details={"name": credential.name, "login_source": credential.login_source,
                             "revision": credential.revision,
                             "expires_at": token.expires_at.isoformat(),
                             "refresh_due_at": token.refresh_due_at.isoformat(),
                             "recovered": recovered}))
                report.refreshed += 1
            else:
                _failed(token, result, now)
                if token.failures == 1:  # audit the start of a failure, not every retry
                    events.append(audit_event(
                        account=credential.account, actor=None,
                        action=AuditAction.CREDENTIAL_TOKEN_REFRESH_FAILED, target=credential,
                        details={"name": credential.name, "code": result.code,
                                 "message": result.message[:500],
                                 "retry_at": token.refresh_due_at.isoformat()}))
                report.failed += 1
                report.failures[result.code] = report.failures.get(result.code, 0) + 1
            tokens.append(token)
        LoginToken.objects.bulk_update(tokens, [
            "token", "refreshed_at", "expires_at", "refresh_due_at", "claimed_until",
            "failing_since", "failure_code", "failure_message", "failures", "failures_total"])
        Credential.objects.bulk_update(credentials, ["revision", "username", "updated_at"])
        if released:
            LoginToken.objects.filter(credential_id__in=released).update(claimed_until=None)
        record_changes(changes)
        audit_record_many(events)


def _refreshed(credential: Credential, token: LoginToken, issued: IssuedLogin,
               now: datetime) -> None:
    expires = issued.expires_at or now
    token.token = vault.seal_login_token(token, issued.password)
    token.refreshed_at = now
    token.expires_at = expires
    token.refresh_due_at = logins.next_refresh(now, expires)
    token.claimed_until = None
    token.failing_since = None
    token.failure_code = ""
    token.failure_message = ""
    token.failures = 0
    credential.revision += 1
    credential.username = issued.username
    credential.updated_at = now


def _failed(token: LoginToken, error: LoginSourceError, now: datetime) -> None:
    token.failures += 1
    token.failures_total += 1
    token.failing_since = token.failing_since or now
    token.failure_code = error.code[:64]
    token.failure_message = error.message[:500]
    token.refresh_due_at = logins.next_retry(now, token.expires_at, token.failures)
    token.claimed_until = None


@transaction.atomic
def login_token_refresh_soon(*, credential: Credential) -> LoginToken:
    """Make a credential's token due now (an operator's "refresh now"); the worker takes it
    at its next run, which this queues."""
    token = LoginToken.objects.select_for_update().get(credential=credential)
    now = timezone.now()
    LoginToken.objects.filter(pk=token.pk).update(refresh_due_at=now)
    token.refresh_due_at = now
    transaction.on_commit(lambda: refresh_schedule(at=now))
    return token


#: The worker looks at least this often, even when nothing is due (a token changed outside
#: the services, a lost task): cheap, one query.
MAX_SWEEP_INTERVAL = timedelta(minutes=10)


def refresh_schedule(*, at: datetime | None = None) -> None:
    """Make sure a refresh run is queued at or before ``at`` (default: the next due token),
    once: a run already queued early enough is enough, so several processes asking at the
    same time do not pile up runs."""
    from django_tasks_db.models import DBTaskResult

    from moorage.credentials.tasks import refresh_login_tokens

    now = timezone.now()
    if at is None:
        at = LoginToken.objects.aggregate(due=Min("refresh_due_at"))["due"]
    wanted = max(now, min(at or now + MAX_SWEEP_INTERVAL, now + MAX_SWEEP_INTERVAL))
    queued = DBTaskResult.objects.filter(task_path=refresh_login_tokens.module_path,
                                         status="READY", run_after__lte=wanted)
    if queued.exists():
        return
    refresh_login_tokens.using(run_after=wanted).enqueue()


def refresh_runs_prune(*, older_than: timedelta = timedelta(days=1)) -> int:
    """Forget finished refresh runs older than ``older_than`` (one a minute at most)."""
    from django_tasks_db.models import DBTaskResult

    from moorage.credentials.tasks import refresh_login_tokens

    deleted, _ = DBTaskResult.objects.filter(
        task_path=refresh_login_tokens.module_path, finished_at__lt=timezone.now() - older_than,
    ).delete()
    return deleted


def login_refresh_health() -> dict[str, int]:
    """What operators' metrics read: tokens held, tokens whose refresh is failing now, and
    refresh failures counted so far (``/metrics`` can export these)."""
    totals = LoginToken.objects.aggregate(
        tokens=Count("pk"), failing=Count("pk", filter=Q(failing_since__isnull=False)),
        failures_total=Sum("failures_total"))
    return {key: int(value or 0) for key, value in totals.items()}


__all__ = [
    "RefreshReport",
    "login_refresh_health",
    "login_token_refresh_soon",
    "login_tokens_refresh_due",
    "refresh_runs_prune",
    "refresh_schedule",
]
