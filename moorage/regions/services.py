"""Every change to regions: add, change, remove, rotate a token or a key, enable for an
account.

Regions are managed by platform staff; which regions an account deploys to is chosen by the
account's admins and owners. Enabling or disabling writes a region-specific change, so the
agent of that region takes or drops the account's data on its next sync; so does a change
of the region's own settings (its runtime, its registry).

A ``swarm`` region may have its own registry: images built there are pushed to it and every
node pulls them from it. Its login is checked with the registry before it is saved (a
registry that refuses it is refused here, with nothing saved), its password is sealed like
region keys, and it is only ever sent to that registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils import timezone

from moorage import names
from moorage.accounts.models import Account, Membership, User
from moorage.accounts.permissions import Action, require, require_platform_staff
from moorage.apps.models import App
from moorage.audit.choices import AuditAction
from moorage.audit.services import audit_record
from moorage.deployments.choices import DeploymentStatus
from moorage.deployments.models import Deployment, DeploymentLog
from moorage.errors import Conflict, NotFound, ValidationFailed
from moorage.private_files import write_private
from moorage.protocol.envelopes import key_proof_valid
from moorage.regions import changelog
from moorage.regions import secrets as region_secrets
from moorage.regions.choices import ChangeKind, Runtime
from moorage.regions.models import AccountRegion, Region, RegionToken, RunningService
from moorage.registry import RegistryLogin
from moorage.registry.access import AccessStatus, check_login
from moorage.registry.hosts import InvalidRegistryHost, normalize_registry_host
from moorage.sealing import Key

LOCAL_REGION = "local"
_SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


@dataclass(frozen=True)
class RegionCredentials:
    """What an agent needs, shown once: its token and the region key (``id:base64``)."""

    region: Region
    token: str
    key: Key


def _issue_token(region: Region) -> str:
    token = region_secrets.new_region_token()
    RegionToken.objects.create(region=region, digest=region_secrets.token_digest(token),
                               prefix=token[:12])
    return token


@dataclass(frozen=True)
class RegistryInput:
    """A region registry as the operator gives it: ``HOST[:PORT]``, a user and a password."""

    host: str
    username: str
    password: str = field(repr=False)


def _clean_runtime(runtime: str) -> Runtime:
    try:
        return Runtime(runtime)
    except ValueError:
        raise ValidationFailed(
            f"Unknown runtime {runtime!r}; use docker or swarm.", code="region_runtime_invalid",
            detail={"fields": {"runtime": "invalid"}},
        ) from None


def _clean_registry(runtime: Runtime, registry: RegistryInput) -> RegistryInput:
    """Check a region registry, and its login with the registry itself (nothing is saved
    when the registry refuses it). Raises :class:`ValidationFailed`."""
    if runtime is not Runtime.SWARM:
        raise ValidationFailed(
            "A region registry is for swarm regions, whose nodes pull the images built there; "
            "a docker region keeps its builds on its one engine.",
            code="region_registry_requires_swarm", detail={"fields": {"registry": "invalid"}})
    if not (registry.host.strip() and registry.username.strip() and registry.password):
        raise ValidationFailed(
            "A region registry needs a host, a username and a password.",
            code="region_registry_incomplete", detail={"fields": {"registry": "incomplete"}})
    try:
        host = normalize_registry_host(registry.host.strip())
    except InvalidRegistryHost as exc:
        raise ValidationFailed(f"The region registry is not valid: {exc}",
                               code="region_registry_invalid",
                               detail={"fields": {"registry": "invalid"}}) from None
    checked = RegistryInput(host=host, username=registry.username.strip(),
                            password=registry.password)
    result = check_login(RegistryLogin(checked.username, checked.password), host)
    if result.ok:
        return checked
    codes = {AccessStatus.UNAUTHORIZED: "region_registry_rejected",
             AccessStatus.UNREACHABLE: "region_registry_unreachable"}
    raise ValidationFailed(
        f"{result.message} The region registry was not saved.",
        code=codes.get(result.status, "region_registry_check_failed"),
        detail={"fields": {"registry": result.status.value}, "registry": host})


def _set_registry(region: Region, registry: RegistryInput | None) -> None:
    """Put ``registry`` (checked) on the region, sealed; a new revision of its settings."""
    if registry is None:
        region.registry = region.registry_username = region.registry_password_sealed = ""
    else:
        region.registry, region.registry_username = registry.host, registry.username
        region.registry_password_sealed = region_secrets.seal_registry_password(
            region, registry.password)
    region.registry_revision += 1


def region_create(
    *, actor: User | None, slug: str, name: str = "", runtime: str = Runtime.DOCKER,
    enabled_for_new_accounts: bool = False, enable_for_existing_accounts: bool = False,
    registry: RegistryInput | None = None,
) -> RegionCredentials:
    """Add a region (platform staff). Returns its agent token and key, shown once.

    A ``registry`` (swarm regions only) is checked with the registry first: nothing is
    saved when the registry refuses its login or cannot be reached.
    """
    if actor is not None:
        require_platform_staff(actor)
    slug = slug.strip().lower()
    if not _SLUG.match(slug):
        raise ValidationFailed(
            "A region slug is 1-32 lower-case letters, digits and hyphens, like eu-1.",
            code="region_slug_invalid", detail={"fields": {"slug": "invalid"}},
        )
    kind = _clean_runtime(runtime)
    name = names.clean_name(name or slug, max_length=100)
    if Region.objects.filter(slug=slug).exists():
        raise Conflict(f"A region {slug!r} already exists.", code="region_exists")
    # Checked before the transaction: a network call does not hold the database.
    checked = _clean_registry(kind, registry) if registry is not None else None
    return _region_create(actor=actor, slug=slug, name=name, kind=kind, registry=checked,
                          enabled_for_new_accounts=enabled_for_new_accounts,
                          enable_for_existing_accounts=enable_for_existing_accounts)


@transaction.atomic
def _region_create(
    *, actor: User | None, slug: str, name: str, kind: Runtime,
    enabled_for_new_accounts: bool, enable_for_existing_accounts: bool,
    registry: RegistryInput | None,
) -> RegionCredentials:
    key = region_secrets.new_region_key(slug)
    try:
        with transaction.atomic():
            region = Region.objects.create(slug=slug, name=name, runtime=kind, key_id=key.id,
                                           key_sealed="",
                                           enabled_for_new_accounts=enabled_for_new_accounts)
    except IntegrityError:
        raise Conflict(f"A region {slug!r} already exists.", code="region_exists") from None
    region.key_sealed = region_secrets.seal_region_key(region, key)
    fields = ["key_sealed", "key_id"]
    if registry is not None:
        _set_registry(region, registry)
        fields += ["registry", "registry_username", "registry_password_sealed",
                   "registry_revision"]
    region.save(update_fields=fields)
    token = _issue_token(region)
    if enable_for_existing_accounts:
        for account in Account.objects.all():
            _enable(account, region)
    audit_record(account=None, actor=actor, action=AuditAction.REGION_CREATED, target=region,
                 details={"slug": slug, "runtime": kind.value,
                          "registry": registry.host if registry else None})
    return RegionCredentials(region=region, token=token, key=key)


def region_update(
    *, actor: User | None, slug: str, runtime: str | None = None,
    registry: RegistryInput | None = None, clear_registry: bool = False,
) -> Region:
    """Change a region's runtime or registry (platform staff); its agent follows.

    The runtime changes only while nothing was ever deployed there (what runs on one
    engine is not carried to another). A new registry login is checked with the registry
    first; nothing is saved when it is refused.
    """
    if actor is not None:
        require_platform_staff(actor)
    region = _region(slug)
    if registry is not None and clear_registry:
        raise ValidationFailed("Give a registry or remove it, not both.",
                               code="region_registry_conflict")
    kind = _clean_runtime(runtime) if runtime is not None else Runtime(region.runtime)
    if kind != region.runtime and Deployment.objects.filter(region=region).exists():
        raise Conflict(
            f"Region {slug!r} has deployments on {region.runtime}; its runtime cannot change "
            "under them. Add a new region for the new runtime.",
            code="region_runtime_in_use")
    if kind is not Runtime.SWARM and region.registry and not clear_registry:
        clear_registry = True  # a registry is for swarm regions only
    checked = _clean_registry(kind, registry) if registry is not None else None
    return _region_update(actor=actor, slug=slug, kind=kind, registry=checked,
                          clear_registry=clear_registry)


@transaction.atomic
def _region_update(*, actor: User | None, slug: str, kind: Runtime,
                   registry: RegistryInput | None, clear_registry: bool) -> Region:
    region = Region.objects.select_for_update().get(slug=slug)
    changed: dict[str, object] = {}
    if kind != region.runtime:
        changed["runtime"] = kind.value
        region.runtime = kind
    if registry is not None or (clear_registry and region.registry):
        _set_registry(region, registry)
        changed["registry"] = registry.host if registry is not None else None
    if not changed:
        return region
    region.save()
    changelog.record_change(account_id=0, kind=ChangeKind.REGION, object_id=region.pk,
                            region_id=region.pk)
    audit_record(account=None, actor=actor, action=AuditAction.REGION_UPDATED, target=region,
                 details={"slug": slug, **changed})
    return region


def _region(slug: str) -> Region:
    region = Region.objects.filter(slug=slug).first()
    if region is None:
        raise NotFound(f"No region {slug!r}.", code="region_not_found")
    return region


@transaction.atomic
def region_rotate_token(*, actor: User | None, slug: str) -> str:
    """Revoke the region's token(s) and issue a new one; the running agent stops."""
    if actor is not None:
        require_platform_staff(actor)
    region = _region(slug)
    RegionToken.objects.filter(region=region, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token = _issue_token(region)
    audit_record(account=None, actor=actor, action=AuditAction.REGION_TOKEN_ROTATED,
                 target=region, details={"slug": slug})
    return token


@dataclass(frozen=True)
class KeyRotation:
    """A started region-key rotation: the new key (shown once) and any pending key it
    replaced, which the agent had not taken yet."""

    region: Region
    key: Key
    replaced: str | None


@transaction.atomic
def region_rotate_key(*, actor: User | None, slug: str) -> KeyRotation:
    """Start rotating the region key: a new key waits beside the current one.

    Answers keep using the key the agent says it holds, so the running agent carries on
    undisturbed; restarted with the new key file, it takes a fresh snapshot sealed with the
    new key and proves it holds it, and only then does the new key replace the old
    (:func:`region_key_adopt`). Rotating again before that replaces the waiting key.
    """
    if actor is not None:
        require_platform_staff(actor)
    region = Region.objects.select_for_update().filter(slug=slug).first()
    if region is None:
        raise NotFound(f"No region {slug!r}.", code="region_not_found")
    replaced = region.next_key_id or None
    key = region_secrets.new_region_key(region.slug)
    while key.id in (region.key_id, replaced):
        key = region_secrets.new_region_key(region.slug)
    region.next_key_sealed = region_secrets.seal_next_region_key(region, key)
    region.save(update_fields=["next_key_id", "next_key_sealed"])
    audit_record(account=None, actor=actor, action=AuditAction.REGION_KEY_ROTATED,
                 target=region, details={"slug": slug, "current_key_id": region.key_id,
                                         "new_key_id": key.id, "replaced_key_id": replaced})
    return KeyRotation(region=region, key=key, replaced=replaced)


@transaction.atomic
def region_key_adopt(*, region: Region, key_id: str, proof: str) -> bool:
    """The agent proved it holds ``key_id``: if that is the waiting key, it replaces the old
    one, which is forgotten. Returns whether it did.

    Called with an agent's snapshot acknowledgement, so the agent's whole replica is sealed
    with the new key by then; nothing it holds needs the old one any more.
    """
    locked = Region.objects.select_for_update().get(pk=region.pk)
    if key_id == locked.key_id:
        return False
    if not locked.next_key_id or key_id != locked.next_key_id:
        raise region_secrets.unknown_key(locked, key_id)
    key = region_secrets.open_next_region_key(locked)
    assert key is not None
    if not key_proof_valid(key, region=locked.slug, proof=proof):
        raise ValidationFailed(
            f"The proof that the agent holds region key {key_id!r} does not check out.",
            code="region_key_proof_invalid")
    previous = locked.key_id
    # The same associated data (region, key id) binds both fields: the sealed key moves as is.
    locked.key_id, locked.key_sealed = locked.next_key_id, locked.next_key_sealed
    locked.next_key_id, locked.next_key_sealed = "", ""
    locked.save(update_fields=["key_id", "key_sealed", "next_key_id", "next_key_sealed"])
    region.key_id, region.key_sealed = locked.key_id, locked.key_sealed
    region.next_key_id, region.next_key_sealed = "", ""
    audit_record(account=None, actor=None, action=AuditAction.REGION_KEY_ADOPTED, target=locked,
                 details={"slug": locked.slug, "key_id": locked.key_id,
                          "retired_key_id": previous})
    return True


#: A deployment in one of these statuses runs nothing (any more).
_NOT_RUNNING = frozenset({DeploymentStatus.FAILED, DeploymentStatus.STOPPED,
                          DeploymentStatus.SUPERSEDED, DeploymentStatus.REPLACED})


@dataclass(frozen=True)
class RegionRemoval:
    """What :func:`region_remove` did: ``removed`` the region, or left it ``draining``
    (its agent was asked to remove ``apps`` and has not said it did yet)."""

    slug: str
    removed: bool
    draining: bool = False
    apps: list[str] = field(default_factory=list)
    draining_since: datetime | None = None


def region_apps(region: Region) -> list[str]:
    """The apps that run (or are being deployed) in ``region``, as ``account/app``.

    An app runs there when its newest deployment in the region, for an account still
    enabled there, did not fail or stop, or when the region's agent reported it running.
    """
    found: dict[int, str] = {}
    seen: set[int] = set()
    for d in (Deployment.objects.filter(region=region,
                                        app__account__region_links__region=region)
              .select_related("app__account").order_by("app_id", "-number")):
        if d.app_id in seen:
            continue
        seen.add(d.app_id)
        if d.status not in _NOT_RUNNING:
            found[d.app_id] = f"{d.app.account.slug}/{d.app.name}"
    for service in RunningService.objects.filter(region=region).select_related("app__account"):
        found.setdefault(service.app_id, f"{service.app.account.slug}/{service.app.name}")
    return sorted(found.values())


def _region_in_use(region: Region, apps: list[str]) -> Conflict:
    return Conflict(
        f"Region {region.slug!r} runs {len(apps)} app{'s' if len(apps) != 1 else ''}: "
        f"{', '.join(apps)}. Removing it now would leave their containers running with "
        "nothing to stop them. Drain it first (moorage regions remove "
        f"{region.slug} --drain; API: ?drain=true): its agent stops and removes them, then "
        "the region goes.",
        code="region_in_use", detail={"region": region.slug, "apps": apps})


def region_draining_error(region: Region) -> Conflict:
    """The region is draining and its agent has not reported yet: what the operator can do."""
    seen = (f"last seen {timezone.localtime(region.last_seen_at):%Y-%m-%d %H:%M:%S}"
            if region.last_seen_at else "never seen")
    return Conflict(
        f"Region {region.slug!r} is draining: its agent ({seen}) has not reported yet that it "
        "removed every app. Make sure the agent runs and retry (moorage regions remove "
        f"{region.slug} --drain), or remove it with --force, which leaves its containers "
        "behind.",
        code="region_draining", detail={"region": region.slug})


@transaction.atomic
def region_remove(*, actor: User | None, slug: str, drain: bool = False,
                  force: bool = False) -> RegionRemoval:
    """Remove a region: its agent's token stops working and no account deploys there.

    Refused (409 ``region_in_use``, naming the apps) while apps run there, unless:

    * ``drain``: the region is marked draining and its agent is sent ``region.drain``; it
      stops and removes every app and reports (:func:`region_drained`). The region goes
      at the next call once that report arrived; until then the answer says ``draining``
      (without ``drain``: 409 ``region_draining``). An agent that was down meanwhile finds
      the op in the log, or ``draining`` in its snapshot, when it comes back.
    * ``force``: the region goes now, its containers are left behind (audited with them).
    """
    if actor is not None:
        require_platform_staff(actor)
    region = Region.objects.select_for_update().filter(slug=slug).first()
    if region is None:
        raise NotFound(f"No region {slug!r}.", code="region_not_found")
    apps = region_apps(region)
    # With --drain the agent removes everything of the region it finds, even what the
    # control plane does not know of; only a region whose agent never connected has none.
    drainable = drain and region.last_seen_at is not None
    if region.drained_at is not None or force \
            or (not apps and region.draining_since is None and not drainable):
        audit_record(account=None, actor=actor, action=AuditAction.REGION_REMOVED,
                     target=region,
                     details={"slug": slug, "drained": region.drained_at is not None,
                              "force": force, "left_behind": apps if force else []})
        region.delete()
        return RegionRemoval(slug=slug, removed=True, apps=apps if force else [])
    if region.draining_since is None and not drain:
        raise _region_in_use(region, apps)
    if region.draining_since is None:
        region.draining_since = timezone.now()
        region.save(update_fields=["draining_since"])
        changelog.record_change(account_id=0, kind=ChangeKind.DRAIN, object_id=region.pk,
                                region_id=region.pk)
        audit_record(account=None, actor=actor, action=AuditAction.REGION_DRAIN_STARTED,
                     target=region, details={"slug": slug, "apps": apps})
    elif not drain:
        raise region_draining_error(region)
    # Draining already: the op is in the log (or in the snapshot's "draining"), so an agent
    # that comes back picks it up; asking again only reports where it stands.
    return RegionRemoval(slug=slug, removed=False, draining=True, apps=apps,
                         draining_since=region.draining_since)


@transaction.atomic
def region_drained(*, region: Region) -> bool:
    """The region's agent reports that it stopped and removed every app; whether this was
    news (a report for a region that is not draining, or a repeat, changes nothing)."""
    locked = Region.objects.select_for_update().get(pk=region.pk)
    if locked.draining_since is None or locked.drained_at is not None:
        return False
    locked.drained_at = timezone.now()
    locked.save(update_fields=["drained_at"])
    RunningService.objects.filter(region=locked).delete()
    audit_record(account=None, actor=None, action=AuditAction.REGION_DRAINED, target=locked,
                 details={"slug": locked.slug,
                          "seconds": round((locked.drained_at
                                            - locked.draining_since).total_seconds(), 1)})
    return True


def region_drain_state(*, slug: str) -> Region:
    """The region as it is now (a removal waiting for its drain reads it)."""
    return _region(slug)


def _enable(account: Account, region: Region) -> bool:
    _, created = AccountRegion.objects.get_or_create(account=account, region=region)
    if created:
        changelog.record_change(account_id=account.pk, kind=ChangeKind.ACCOUNT,
                                object_id=account.pk, region_id=region.pk)
    return created


def enable_default_regions(account: Account) -> None:
    """Give a new account the regions marked for new accounts (the embedded local one)."""
    for region in Region.objects.filter(enabled_for_new_accounts=True):
        _enable(account, region)


@dataclass(frozen=True)
class AppInRegion:
    """One app in one region: one that a region change stops, or that can be deployed again
    there (its newest deployment there was stopped when the region was disabled)."""

    app_id: int
    app: str
    region: str
    deployment_id: int
    number: int


@dataclass(frozen=True)
class AccountRegionsChange:
    """What :func:`account_regions_change` did."""

    regions: list[Region]
    enabled: list[str]
    disabled: list[str]
    stopped: list[AppInRegion]
    redeployable: list[AppInRegion]
    redeployed: list[Deployment]


def _running_in(account: Account, region_ids: Iterable[int]) -> list[Deployment]:
    """The deployments an app of ``account`` runs (or is being deployed) with in these
    regions: its newest there unless it failed or stopped, and any older one still going."""
    found: list[Deployment] = []
    newest: set[tuple[int, int]] = set()
    for d in (Deployment.objects.filter(app__account=account, region_id__in=list(region_ids))
              .select_related("app", "region").order_by("app_id", "region_id", "-number")):
        key = (d.app_id, d.region_id)
        first = key not in newest
        newest.add(key)
        if d.status in _NOT_RUNNING:
            continue
        if first or not d.finished:
            found.append(d)
    return found


def _as_apps(deployments: Iterable[Deployment]) -> list[AppInRegion]:
    seen: dict[tuple[int, str], AppInRegion] = {}
    for d in deployments:
        seen.setdefault((d.app_id, d.region.slug), AppInRegion(
            app_id=d.app_id, app=d.app.name, region=d.region.slug, deployment_id=d.pk,
            number=d.number))
    return sorted(seen.values(), key=lambda a: (a.region, a.app))


def account_regions_stopping(*, account: Account, slugs: Iterable[str]) -> list[AppInRegion]:
    """The apps that would stop if ``account`` deployed to ``slugs`` only (nothing changes)."""
    wanted = {s.strip() for s in slugs if s.strip()}
    leaving = AccountRegion.objects.filter(account=account).exclude(region__slug__in=wanted)
    return _as_apps(_running_in(account, leaving.values_list("region_id", flat=True)))


def account_regions_redeployable(*, account: Account) -> list[AppInRegion]:
    """Apps whose newest deployment in a region the account deploys to was stopped when
    that region was disabled, and that still run there by their settings: they can be
    deployed again."""
    enabled = set(AccountRegion.objects.filter(account=account)
                  .values_list("region_id", flat=True))
    newest: set[tuple[int, int]] = set()
    found = []
    for d in (Deployment.objects.filter(app__account=account, region_id__in=enabled)
              .select_related("app", "region").order_by("app_id", "region_id", "-number")):
        key = (d.app_id, d.region_id)
        if key in newest:
            continue
        newest.add(key)
        if d.status == DeploymentStatus.STOPPED:
            found.append(d)
    listed = {(a, r) for a, r in App.regions.through.objects.filter(
        app_id__in={d.app_id for d in found}).values_list("app_id", "region_id")}
    return _as_apps(d for d in found if (d.app_id, d.region_id) in listed)


def _stop(deployments: list[Deployment], *, message: str) -> None:
    """Record that these deployments' containers were stopped (a terminal status)."""
    now = timezone.now()
    for d in deployments:
        d.status = DeploymentStatus.STOPPED
        d.finished_at = now
        d.progress = {}
        d.error_code = "region_disabled"
        d.error_message = message[:1000]
        d.save(update_fields=["status", "finished_at", "progress", "error_code",
                              "error_message"])
        DeploymentLog.objects.create(deployment=d, line=message[:1000])


@transaction.atomic
def account_regions_change(
    *, actor: User, membership: Membership, slugs: list[str], confirm: bool = False,
    redeploy: bool = False,
) -> AccountRegionsChange:
    """Choose the regions the account deploys to (admins and owners).

    Disabling a region stops the account's apps there: its agent drops the account and
    removes their containers. That is refused (409 ``region_disable_stops_apps``, naming
    the apps) unless ``confirm``; confirmed, each stopped app's deployment there ends as
    ``stopped``, saying which region was disabled and by whom. The answer lists the apps
    that can be deployed again (stopped earlier, in a region enabled now); ``redeploy``
    deploys them (it needs the deploy right too).
    """
    require(membership, Action.CHOOSE_REGIONS)
    account = membership.account
    wanted = {s.strip() for s in slugs if s.strip()}
    regions = {r.slug: r for r in Region.objects.filter(slug__in=wanted)}
    unknown = sorted(wanted - set(regions))
    if unknown:
        raise ValidationFailed(
            f"No region {', '.join(map(repr, unknown))}.", code="region_not_found",
            detail={"fields": {"regions": unknown}},
        )
    current = {link.region.slug: link for link in
               AccountRegion.objects.select_related("region").filter(account=account)}
    draining = sorted(slug for slug in wanted - set(current)
                      if regions[slug].draining_since is not None)
    if draining:
        raise Conflict(f"Region {', '.join(draining)} is being removed; no new app goes "
                       "there.", code="region_draining", detail={"regions": draining})
    leaving = [link for slug, link in sorted(current.items()) if slug not in wanted]
    stopping = _running_in(account, [link.region_id for link in leaving])
    if stopping and not confirm:
        apps = _as_apps(stopping)
        names = ", ".join(f"{a.app} in {a.region}" for a in apps)
        raise Conflict(
            f"Disabling {', '.join(link.region.slug for link in leaving)} stops "
            f"{len(apps)} app{'s' if len(apps) != 1 else ''}: {names}. Their containers "
            "are removed; you can deploy them again when the region is enabled again. "
            "Confirm to go on.", code="region_disable_stops_apps",
            detail={"apps": [{"app": a.app, "region": a.region} for a in apps]})
    added = [slug for slug in sorted(wanted) if _enable(account, regions[slug])]
    removed = []
    for link in leaving:
        link.delete()
        changelog.record_change(account_id=account.pk, kind=ChangeKind.ACCOUNT,
                                object_id=account.pk, region_id=link.region_id)
        removed.append(link.region.slug)
        theirs = [d for d in stopping if d.region_id == link.region_id]
        _stop(theirs, message=f"stopped: region {link.region.slug} disabled for the account "
                              f"by {actor.email}")
        audit_record(account=account, actor=actor, action=AuditAction.ACCOUNT_REGION_DISABLED,
                     target=account, details={"region": link.region.slug,
                                              "stopped": sorted({d.app.name for d in theirs})})
    for slug in added:
        audit_record(account=account, actor=actor, action=AuditAction.ACCOUNT_REGION_ENABLED,
                     target=account, details={"region": slug})
    if added or removed:
        audit_record(account=account, actor=actor, action=AuditAction.ACCOUNT_REGIONS_CHANGED,
                     target=account, details={"enabled": added, "disabled": removed})
    redeployable = account_regions_redeployable(account=account)
    redeployed: list[Deployment] = []
    if redeploy and redeployable:
        redeployed = account_apps_redeploy(actor=actor, membership=membership)
        redeployable = []
    return AccountRegionsChange(
        regions=list(Region.objects.filter(account_links__account=account).order_by("slug")),
        enabled=added, disabled=removed, stopped=_as_apps(stopping),
        redeployable=redeployable, redeployed=redeployed)


@transaction.atomic
def account_apps_redeploy(*, actor: User, membership: Membership,
                          app_ids: Iterable[int] | None = None) -> list[Deployment]:
    """Deploy again the apps stopped when a region was disabled (all, or ``app_ids``), in
    the regions where they were stopped and that the account deploys to again."""
    from moorage.deployments.services import deployment_create

    require(membership, Action.DEPLOY)
    wanted = None if app_ids is None else set(app_ids)
    per_app: dict[int, list[str]] = {}
    for item in account_regions_redeployable(account=membership.account):
        if wanted is None or item.app_id in wanted:
            per_app.setdefault(item.app_id, []).append(item.region)
    if wanted is not None and not per_app:
        raise NotFound("None of these apps waits to be deployed again.",
                       code="app_not_redeployable")
    created: list[Deployment] = []
    for app_id, slugs in sorted(per_app.items()):
        created += deployment_create(actor=actor, membership=membership, app_id=app_id,
                                     only_regions=slugs)
    return created


def account_regions_set(
    *, actor: User, membership: Membership, slugs: list[str]
) -> list[Region]:
    """:func:`account_regions_change` for callers that already confirmed (set-up, tests)."""
    return account_regions_change(actor=actor, membership=membership, slugs=slugs,
                                  confirm=True).regions


@transaction.atomic
def local_region_ensure(*, agent_dir: Path) -> Region | None:
    """Create the embedded ``local`` region and its agent's files, once.

    Writes ``token`` and ``key`` (mode 0600) into ``agent_dir`` for ``moorage up``. Returns
    the region when it was created now, ``None`` when it already existed.
    """
    if Region.objects.filter(slug=LOCAL_REGION).exists():
        return None
    created = region_create(actor=None, slug=LOCAL_REGION, name="Local (this machine)",
                            runtime=Runtime.DOCKER, enabled_for_new_accounts=True,
                            enable_for_existing_accounts=True)
    write_agent_files(agent_dir, token=created.token, key=created.key)
    return created.region


def write_agent_files(directory: Path, *, token: str, key: Key) -> None:
    """Write an agent's token and key files, readable by their owner only."""
    write_token_file(directory, token)
    write_key_file(directory, key)


def write_key_file(directory: Path, key: Key) -> Path:
    """Write (or replace) an agent's key file; return its path. A running agent read its
    key when it started: it picks the new one up when restarted."""
    return write_private(directory / "key", key.encoded() + "\n")


def write_token_file(directory: Path, token: str) -> Path:
    """Write (or replace) an agent's token file; return its path."""
    return write_private(directory / "token", token + "\n")
