"""The control plane's side of region sync: snapshots, long-polled changes, acks.

See ``docs/sync.md``. Answers are built from the *current* state of the objects the change
log names, re-sealed for the asking region, and signed with the region's MAC key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from moorage.accounts.models import Account
from moorage.credentials import logins
from moorage.credentials.models import Credential
from moorage.deployments.choices import DeploymentStatus
from moorage.deployments.models import Deployment
from moorage.deployments.payloads import deployment_payload, latest_deployments
from moorage.deployments.services import Report, deployment_report
from moorage.errors import ApplicationError, AuthenticationFailed, ValidationFailed
from moorage.keys.errors import SecretUnavailable
from moorage.logs.payloads import log_request_payload
from moorage.logs.selectors import log_requests_waiting
from moorage.logs.services import log_requests_expire_due
from moorage.protocol.constants import MAX_WAIT
from moorage.protocol.credential import format_expiry
from moorage.protocol.enums import Op
from moorage.protocol.envelopes import sign
from moorage.protocol.region import RegionRegistry, RegionSettings
from moorage.regions import changelog, wakeup
from moorage.regions import secrets as region_secrets
from moorage.regions.batching import Batcher
from moorage.regions.choices import ChangeKind
from moorage.regions.models import AccountRegion, Change, CredentialReplica, Region, RegionToken
from moorage.regions.services import region_key_adopt
from moorage.sealing import Key

# How often a region's last-seen time is written: every poll would be a write per request.
SEEN_WRITE_INTERVAL = 5.0

#: The threads a long poll's database work runs in, set by the ASGI entry point
#: (``moorage.config.asgi.LongPolls``). Unset (the test client, WSGI), that work runs
#: thread-sensitively, like any Django code: in the request's own thread.
db_executor: ContextVar[ThreadPoolExecutor | None] = ContextVar("moorage_long_poll_db",
                                                         default=None)


def in_db_thread[**P, R](function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``function`` made awaitable for a long poll, run where :data:`db_executor` says."""
    executor = db_executor.get()
    if executor is None:
        return sync_to_async(function)
    return sync_to_async(function, thread_sensitive=False, executor=executor)

logger = logging.getLogger(__name__)


def agent_authenticate(*, token: str) -> Region:
    """The region a bearer token belongs to, or :class:`AuthenticationFailed`."""
    [found] = agent_authenticate_many([token])
    if isinstance(found, Exception):
        raise found
    return found


def agent_authenticate_many(tokens: list[str]) -> list[Region | Exception]:
    """For each bearer token, its region or the :class:`AuthenticationFailed` it gets: one
    query for all of them (agents re-poll together after a change), and one write for the
    regions whose last-seen time is due."""
    digests = [region_secrets.token_digest(t) if region_secrets.is_well_formed(t) else None
               for t in tokens]
    rows = {row.digest: row for row in RegionToken.objects.select_related("region").filter(
        digest__in={d for d in digests if d is not None})}
    now = timezone.now()
    results: list[Region | Exception] = []
    seen: dict[int, Region] = {}
    for digest in digests:
        found = rows.get(digest) if digest is not None else None
        if digest is None:
            results.append(AuthenticationFailed(
                "The region token is malformed; it starts with 'mrr_'.",
                code="region_token_invalid"))
        elif found is None:
            results.append(AuthenticationFailed(
                "The region token is not valid (or its region was removed).",
                code="region_token_invalid"))
        elif found.revoked_at is not None:
            results.append(AuthenticationFailed(
                f"The token of region {found.region.slug!r} was rotated; give the agent the "
                "new one.", code="region_token_revoked"))
        else:
            region = found.region
            if region.last_seen_at is None \
                    or (now - region.last_seen_at).total_seconds() > SEEN_WRITE_INTERVAL:
                seen[region.pk] = region
            results.append(region)
    if seen:
        Region.objects.filter(pk__in=seen).update(last_seen_at=now)
        for result in results:
            if isinstance(result, Region) and result.pk in seen:
                result.last_seen_at = now
    return results


def agent_authenticate_many_and_give_back(tokens: list[str]) -> list[Region | Exception]:
    """:func:`agent_authenticate_many` for long polls: the connection goes back to the pool
    at once, since the polls may then wait for a minute."""
    try:
        return agent_authenticate_many(tokens)
    finally:
        give_back_connection()


_tokens: Batcher[str, Region] = Batcher(agent_authenticate_many_and_give_back,
                                        lambda run: in_db_thread(run))


async def agent_authenticate_batched(token: str) -> Region:
    """:func:`agent_authenticate` for a long poll, batched with the polls arriving with it."""
    return await _tokens.call(token)


def _enabled_account_ids(region: Region) -> set[int]:
    return set(AccountRegion.objects.filter(region=region).values_list("account_id", flat=True))


def _credential_payload(
    region: Region, key: Key, credential: Credential
) -> dict[str, Any] | None:
    """The credential as the region receives it, or ``None`` when its secret cannot be
    opened: it is then left out (logged for the operator), and the rest of the answer still
    reaches the agent. Deployments that need it fail with ``secret_unavailable``."""
    try:
        secret = region_secrets.seal_for_region(region, key, credential)
    except SecretUnavailable as exc:
        logger.error("not sent to region %s: %s", region.slug, exc.message)
        return None
    return {
        "id": credential.pk,
        "account_id": credential.account_id,
        "type": credential.type,
        "name": credential.name,
        "server": credential.server,
        "username": credential.username,
        "email": credential.email,
        "is_default": credential.is_default,
        "revision": credential.revision,
        "secret": secret,
        "expires_at": format_expiry(logins.expires_at(credential)),
    }


def _deployment_payload(region: Region, key: Key, deployment: Deployment) -> dict[str, Any]:
    """The deployment as the region receives it. One whose secrets cannot be opened (an env
    value or credential sealed with a key no longer in the keyring) fails now with
    ``secret_unavailable`` instead of breaking the answer for the region's other objects or
    waiting for an agent that can never run it; it is sent as failed, without secrets."""
    try:
        return deployment_payload(region, key, deployment)
    except SecretUnavailable as exc:
        logger.error("deployment %s in region %s: %s", deployment.pk, region.slug, exc.message)
        if not deployment.finished:
            deployment = deployment_report(
                region=region, deployment_id=deployment.pk, report=Report(
                    status=DeploymentStatus.FAILED, error_code=exc.code,
                    error_message=exc.message,
                    log=[f"The control plane could not send this deployment: {exc.message}"]))
        return deployment_payload(region, key, deployment, secrets=False)


def region_settings(region: Region, key: Key) -> dict[str, Any]:
    """The region's ``settings`` object: its runtime and registry, the password re-sealed
    for the region's agent. A registry password the keyring cannot open is left out (the
    agent then refuses builds, naming the missing registry) rather than breaking the answer."""
    registry = None
    if region.registry:
        try:
            secret = region_secrets.registry_for_region(region, key)
        except SecretUnavailable as exc:
            logger.error("region %s: %s", region.slug, exc.message)
        else:
            registry = RegionRegistry(host=region.registry, username=region.registry_username,
                                      revision=region.registry_revision, secret=secret)
    return RegionSettings(runtime=region.runtime, registry=registry).to_payload()


def snapshot(*, region: Region, nonce: str, key_id: str | None = None) -> dict[str, str]:
    """The whole state for ``region``, signed, echoing the agent's ``nonce``, with the region
    key ``key_id`` the agent holds (the region's key when ``None``)."""
    with transaction.atomic():
        # One transaction: the revision and the rows are read as of the same moment on
        # PostgreSQL (repeatable enough: the counter is read first, rows may only be newer,
        # and newer rows are re-sent by the changes after this revision anyway).
        revision, _ = changelog.current_revision()
        account_ids = _enabled_account_ids(region)
        accounts = list(Account.objects.filter(id__in=account_ids).order_by("id"))
        credentials = list(Credential.objects.filter(account_id__in=account_ids)
                           .select_related("login_token").order_by("id"))
        current = Region.objects.get(pk=region.pk)
        deployments = latest_deployments(current, account_ids)
    key = region_secrets.region_key_for(region, key_id)
    payload = {
        "kind": "snapshot",
        "region": region.slug,
        "nonce": nonce,
        "revision": revision,
        "accounts": [{"id": a.pk, "slug": a.slug} for a in accounts],
        "credentials": [entry for c in credentials
                        if (entry := _credential_payload(region, key, c)) is not None],
        "deployments": [_deployment_payload(region, key, d) for d in deployments],
        "settings": region_settings(current, key),
        # Being removed: the agent removes every app and says so (``region.drain``).
        "draining": current.draining_since is not None and current.drained_at is None,
    }
    return sign(payload, key)


@dataclass(frozen=True)
class _Objects:
    """The current state of the objects some log rows name, read once for many answers."""

    credentials: dict[int, Credential]
    accounts: dict[int, Account]
    deployments: dict[int, Deployment]

    @classmethod
    def of(cls, wanted: Iterable[tuple[list[Change], set[int]]]) -> _Objects:
        """For each ``(rows, enabled accounts)`` of an answer to give: what it names."""
        credential_ids: set[int] = set()
        upserted_accounts: set[int] = set()
        deployment_ids: set[int] = set()
        for rows, enabled in wanted:
            for c in rows:
                if c.kind == ChangeKind.CREDENTIAL:
                    credential_ids.add(c.object_id)
                elif c.kind == ChangeKind.ACCOUNT and c.account_id in enabled:
                    upserted_accounts.add(c.account_id)
                elif c.kind == ChangeKind.DEPLOYMENT:
                    deployment_ids.add(c.object_id)
        credentials = {c.pk: c for c in Credential.objects.filter(
            Q(id__in=credential_ids) | Q(account_id__in=upserted_accounts))
            .select_related("login_token")} if credential_ids or upserted_accounts else {}
        accounts = {a.pk: a for a in Account.objects.filter(id__in=upserted_accounts)} \
            if upserted_accounts else {}
        deployments = {d.pk: d for d in Deployment.objects.filter(id__in=deployment_ids)
                       .select_related("app__account", "credential")
                       .prefetch_related("app__env")} if deployment_ids else {}
        return cls(credentials, accounts, deployments)


def _ops(region: Region, key: Key, rows: list[Change], enabled: set[int],
         objects: _Objects) -> list[dict[str, Any]]:
    """Turn log rows into protocol operations with current content, coalesced per object."""
    credentials, accounts = objects.credentials, objects.accounts
    log_ids = [c.object_id for c in rows if c.kind == ChangeKind.LOGS]
    log_requests = log_requests_waiting(region=region, ids=log_ids) if log_ids else {}
    ops: dict[tuple[str, int], tuple[int, int, dict[str, Any]]] = {}
    sequence = 0
    draining_now: list[bool] = []

    def draining() -> bool:
        """Whether the region drains (read once per answer, only when a row needs it)."""
        if not draining_now:
            current = Region.objects.filter(pk=region.pk).values_list(
                "draining_since", "drained_at").first()
            draining_now.append(current is not None and current[0] is not None
                                and current[1] is None)
        return draining_now[0]

    def put(key_: tuple[str, int], revision: int, op: dict[str, Any]) -> None:
        nonlocal sequence
        sequence += 1
        ops.pop(key_, None)
        ops[key_] = (revision, sequence, op)

    for change in rows:
        if change.kind == ChangeKind.ACCOUNT:
            if change.account_id in enabled and change.account_id in accounts:
                account = accounts[change.account_id]
                put(("account", account.pk), change.revision,
                    {"op": Op.ACCOUNT_UPSERT, "account": {"id": account.pk, "slug": account.slug}})
                for credential in credentials.values():
                    if credential.account_id == account.pk:
                        sent = _credential_payload(region, key, credential)
                        if sent is not None:
                            put(("credential", credential.pk), change.revision,
                                {"op": Op.CREDENTIAL_UPSERT, "credential": sent})
            else:
                put(("account", change.account_id), change.revision,
                    {"op": Op.ACCOUNT_DELETE, "account_id": change.account_id})
        elif change.kind == ChangeKind.DEPLOYMENT:
            deployment = objects.deployments.get(change.object_id)
            if deployment is not None and deployment.region_id == region.pk \
                    and deployment.app.account_id in enabled and not draining() \
                    and deployment.status != DeploymentStatus.STOPPED:
                put(("deployment", deployment.app_id), change.revision,
                    {"op": Op.DEPLOYMENT_UPSERT,
                     "deployment": _deployment_payload(region, key, deployment)})
        elif change.kind == ChangeKind.DRAIN:
            if change.region_id == region.pk and draining():
                put(("drain", region.pk), change.revision, {"op": Op.REGION_DRAIN})
        elif change.kind == ChangeKind.REGION:
            if change.region_id == region.pk:
                current_region = Region.objects.get(pk=region.pk)
                put(("region", region.pk), change.revision,
                    {"op": Op.REGION_UPSERT, "settings": region_settings(current_region, key)})
        elif change.kind == ChangeKind.APP:
            put(("deployment", change.object_id), change.revision,
                {"op": Op.APP_DELETE, "account_id": change.account_id,
                 "app_id": change.object_id})
        elif change.kind == ChangeKind.LOGS:
            # Work, not state: only while the request still waits for its answer.
            request = log_requests.get(change.object_id)
            if request is not None and request.app.account_id in enabled:
                put(("logs", request.pk), change.revision,
                    {"op": Op.LOGS_REQUEST, "request": log_request_payload(request)})
        elif change.kind == ChangeKind.CREDENTIAL:
            current = credentials.get(change.object_id)
            if current is not None and current.account_id in enabled:
                sent = _credential_payload(region, key, current)
                if sent is not None:
                    put(("credential", current.pk), change.revision,
                        {"op": Op.CREDENTIAL_UPSERT, "credential": sent})
            else:
                put(("credential", change.object_id), change.revision,
                    {"op": Op.CREDENTIAL_DELETE, "account_id": change.account_id,
                     "credential_id": change.object_id})
    ordered = sorted(ops.values(), key=lambda item: (item[0], item[1]))
    return [{"revision": revision, **op} for revision, _, op in ordered]


def _concerns(change: Change, region: Region, enabled: set[int]) -> bool:
    """The rule of ``docs/sync.md``: a change of the region, or of an account enabled there."""
    if change.region_id is not None:
        return change.region_id == region.pk
    return change.account_id in enabled


@dataclass(frozen=True)
class LookFor:
    """One poll's question: changes for ``region`` after ``since``, answered now if ``final``."""

    region: Region
    since: int
    nonce: str
    final: bool
    first: bool
    key_id: str | None = None  # the region key the agent holds (None: the region's)


@dataclass(frozen=True)
class Look:
    """One look at the log for a poll: the signed answer if there is one to give now, else
    the accounts enabled in the region (which changes concern the poll while it waits)."""

    answer: dict[str, str] | None
    accounts: frozenset[int]


def changes_look(requests: list[LookFor]) -> list[Look | Exception]:
    """Look once at the log for several polls at the same time, in a handful of queries.

    A poll gets its answer when there are changes for its region, when it needs a snapshot,
    or when its look is ``final`` (its wait is over: it answers with none). A first look also
    records that the agent applied ``since``. The connection goes back to the pool afterwards:
    a poll holds none while it waits.
    """
    try:
        revision, compacted = changelog.current_revision()
        looks: dict[int, Look | Exception] = {}
        keys: dict[int, Key] = {}
        open_: list[tuple[int, LookFor]] = []
        for n, request in enumerate(requests):
            try:  # a key the agent does not hold fails its poll, not the batch
                keys[n] = region_secrets.region_key_for(request.region, request.key_id)
            except ApplicationError as exc:
                looks[n] = exc
                continue
            if request.first and request.since <= revision:
                _record_progress(request.region, request.since)
            if request.since > revision or request.since < compacted:
                looks[n] = Look(_changes_answer(request.region, request.since, revision, [],
                                                request.nonce, keys[n], snapshot_required=True),
                                frozenset())
            else:
                open_.append((n, request))
        if open_:
            enabled: dict[int, set[int]] = {request.region.pk: set() for _, request in open_}
            for region_id, account_id in AccountRegion.objects.filter(
                    region_id__in=enabled).values_list("region_id", "account_id"):
                enabled[region_id].add(account_id)
            accounts = set().union(*enabled.values())
            rows = list(
                Change.objects.filter(revision__gt=min(r.since for _, r in open_),
                                      revision__lte=revision)
                .filter(Q(region_id__in=enabled)
                        | Q(region_id__isnull=True, account_id__in=accounts))
                .order_by("revision"))
            relevant = {n: [c for c in rows if c.revision > request.since
                            and _concerns(c, request.region, enabled[request.region.pk])]
                        for n, request in open_}
            answering = [(n, request) for n, request in open_ if relevant[n] or request.final]
            if answering:
                log_requests_expire_due()  # an unread answer goes even if nobody asks again
            objects = _Objects.of((relevant[n], enabled[request.region.pk])
                                  for n, request in answering)
            for n, request in open_:
                region_enabled = enabled[request.region.pk]
                if not (relevant[n] or request.final):
                    looks[n] = Look(None, frozenset(region_enabled))
                    continue
                ops = _ops(request.region, keys[n], relevant[n], region_enabled, objects)
                looks[n] = Look(_changes_answer(request.region, request.since, revision, ops,
                                                request.nonce, keys[n]),
                                frozenset(region_enabled))
        return [looks[n] for n in range(len(requests))]
    finally:
        give_back_connection()


_looks: Batcher[LookFor, Look] = Batcher(changes_look, lambda run: in_db_thread(run))


async def changes(*, region: Region, since: int, wait: int, nonce: str,
                  key_id: str | None = None) -> dict[str, str]:
    """Changes after ``since`` for ``region``, waiting up to ``wait`` seconds for one.

    Waiting holds no thread and no database connection: the poll awaits its
    :class:`~moorage.regions.wakeup.Waiter`, which the process's listener wakes when a change
    concerning the region commits (``docs/sync.md``). The signed answer echoes ``nonce`` so the
    agent can tell it from a replayed old one, and is signed and sealed with the region key
    ``key_id`` the agent holds (a key it does not hold fails at the first look, before any
    wait).
    """
    if since < 0 or not 0 <= wait <= MAX_WAIT:
        raise ValidationFailed(f"Use since ≥ 0 and 0 ≤ wait ≤ {MAX_WAIT}.",
                               code="sync_parameters_invalid")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    async with wakeup.hub.waiter(region.pk) as waiter:
        first = True
        while True:
            final = loop.time() >= deadline or wakeup.hub.stopping
            look = await _looks.call(LookFor(region=region, since=since, nonce=nonce,
                                             final=final, first=first, key_id=key_id))
            if look.answer is not None:
                return look.answer
            first = False
            waiter.scope(look.accounts)
            await waiter.wait(deadline - loop.time())


def give_back_connection() -> None:
    """Return this thread's database connection to the pool (PostgreSQL) or close it
    (SQLite), unless a transaction is open on it (a test's, or a caller's)."""
    if not connection.in_atomic_block:
        connection.close()


def _changes_answer(
    region: Region, since: int, revision: int, ops: list[dict[str, Any]], nonce: str, key: Key,
    *, snapshot_required: bool = False,
) -> dict[str, str]:
    payload = {
        "kind": "changes", "region": region.slug, "nonce": nonce, "since": since,
        "revision": revision,
        "snapshot_required": snapshot_required, "changes": ops,
    }
    return sign(payload, key)


def _record_progress(region: Region, applied: int) -> None:
    """A poll for changes after ``applied`` says the agent applied everything up to it."""
    if applied > region.applied_revision:
        Region.objects.filter(pk=region.pk, applied_revision__lt=applied).update(
            applied_revision=applied, applied_at=timezone.now()
        )
        region.applied_revision = applied


@transaction.atomic
def ack(
    *, region: Region, revision: int, credentials: dict[int, int], removed: list[int],
    snapshot: bool, key_id: str | None = None, key_proof: str | None = None,
) -> None:
    """Record what the agent holds now. Idempotent.

    Only what the region was sent is recorded: a credential of an account enabled in the
    region, at a revision it has had. An ack naming anything else is refused whole, before
    anything is written (:class:`~moorage.errors.ValidationFailed`). Credentials deleted
    since, or whose account was disabled for the region since they were sent (the ack
    crossed that change), are skipped: the agent drops them at its next poll.

    A snapshot ack with ``key_id`` and ``key_proof`` of the region's waiting key completes a
    rotation of the region key (:func:`~moorage.regions.services.region_key_adopt`).
    """
    _check_credentials(region, credentials)
    if key_id is not None and key_id != region.key_id:
        if not snapshot or key_proof is None:
            region_secrets.region_key_for(region, key_id)  # refuses a key that is neither
        else:
            region_key_adopt(region=region, key_id=key_id, proof=key_proof)
    now = timezone.now()
    _record_progress(region, min(revision, changelog.current_revision()[0]))
    if snapshot:
        CredentialReplica.objects.filter(region=region).delete()
    enabled = _enabled_account_ids(region)
    current = set(Credential.objects.filter(id__in=credentials, account_id__in=enabled)
                  .values_list("id", flat=True))
    rows = [CredentialReplica(region=region, credential_id=cid, revision=rev, applied_at=now)
            for cid, rev in credentials.items() if cid in current]
    CredentialReplica.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["region", "credential"],
        update_fields=["revision", "applied_at"],
    )
    if removed:
        CredentialReplica.objects.filter(region=region, credential_id__in=removed).delete()


def _check_credentials(region: Region, acked: dict[int, int]) -> None:
    """Refuse an ack naming a credential this region was never sent, or a revision the
    credential never had (both with the offending ids in ``detail``)."""
    if not acked:
        return
    enabled = _enabled_account_ids(region)
    found = dict(Credential.objects.filter(id__in=acked).values_list("id", "account_id"))
    elsewhere = {cid: account for cid, account in found.items() if account not in enabled}
    if elsewhere:
        # An account disabled for this region after its credentials were sent has a
        # region-specific entry in the change log; one never enabled here has none.
        was_enabled = set(Change.objects.filter(
            kind=ChangeKind.ACCOUNT, region_id=region.pk,
            account_id__in=set(elsewhere.values())).values_list("account_id", flat=True))
        never = sorted(cid for cid, account in elsewhere.items() if account not in was_enabled)
        if never:
            raise ValidationFailed(
                f"Credential {never[0]} was never sent to region {region.slug!r}: its account "
                "is not enabled there.",
                code="credential_not_in_region", detail={"credentials": never},
            )
    revisions = dict(Credential.objects.filter(id__in=acked, account_id__in=enabled)
                     .values_list("id", "revision"))
    ahead = sorted(cid for cid, revision in revisions.items() if acked[cid] > revision)
    if ahead:
        first = ahead[0]
        raise ValidationFailed(
            f"Credential {first} has no revision {acked[first]} (its revision is "
            f"{revisions[first]}).",
            code="credential_revision_unknown", detail={"credentials": ahead},
        )
