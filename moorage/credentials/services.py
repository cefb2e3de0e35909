"""Every change to credentials: create, update (rotate), set default, delete, test, export.

The default rule (invariant I1): an account with at least one container-registry credential
has exactly one default. The database allows at most one (a partial unique index); these
services make it at least one, under a lock on the account row so concurrent changes queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from moorage.accounts.models import Account, Membership, User
from moorage.accounts.permissions import Action, require
from moorage.audit.choices import AuditAction
from moorage.audit.services import audit_record
from moorage.credentials import selectors, validation, vault
from moorage.credentials.choices import CredentialType, TestResult
from moorage.credentials.models import Credential
from moorage.errors import Conflict, NotFound, ValidationFailed
from moorage.regions.changelog import record_change
from moorage.regions.choices import ChangeKind
from moorage.registry.access import AccessResult, check_access, check_login
from moorage.registry.auth import RegistryLogin
from moorage.registry.hosts import hosts_match
from moorage.registry.reference import InvalidReference, parse_reference


def _lock_account(account: Account) -> None:
    """Serialise default changes of one account (a no-op lock on SQLite, which serialises
    every write transaction anyway)."""
    Account.objects.select_for_update().filter(pk=account.pk).first()


def _get_for_update(membership: Membership, credential_id: int) -> Credential:
    credential = (
        Credential.objects.select_for_update()
        .filter(account=membership.account, id=credential_id)
        .first()
    )
    if credential is None:
        raise NotFound("No such credential in this account.", code="credential_not_found")
    return credential


def _changed(credential: Credential) -> None:
    """Tell the regions: their agents re-read this credential on the next sync."""
    record_change(account_id=credential.account_id, kind=ChangeKind.CREDENTIAL,
                  object_id=credential.pk)


def _name_taken(account: Account, kind: str, name: str, exclude: int | None = None) -> bool:
    """Whether another credential of this type has the name, whatever its case.

    Compared with Python's ``casefold()``: SQLite's ``lower()`` (behind the database's
    ``credential_name_unique_ci`` constraint) folds only ASCII, so "CAFÉ" and "café" would
    pass it there. An account holds few credentials; the caller holds the account lock.
    """
    others = Credential.objects.filter(account=account, type=kind)
    if exclude is not None:
        others = others.exclude(id=exclude)
    key = name.casefold()
    return any(other.casefold() == key for other in others.values_list("name", flat=True))


def _duplicate(name: str) -> Conflict:
    return Conflict(
        f"A credential named {name!r} (in any case) of this type already exists in this "
        "account.",
        code="credential_name_taken",
        detail={"fields": {"name": "taken"}},
    )


@transaction.atomic
def credential_create(
    *,
    actor: User,
    membership: Membership,
    type: str,
    name: str,
    server: str,
    username: str,
    secret: str,
    email: str = "",
) -> Credential:
    """Add a credential; the account's first container-registry credential becomes default."""
    require(membership, Action.MANAGE_CREDENTIALS)
    kind = validation.clean_type(type)
    name = validation.clean_name(name)
    server = validation.clean_server(kind, server)
    username = validation.clean_username(username)
    email = validation.clean_email(email)
    secret = validation.clean_secret(kind, username, secret)
    account = membership.account
    _lock_account(account)
    if _name_taken(account, kind, name):
        raise _duplicate(name)
    is_default = (
        kind is CredentialType.CONTAINER_REGISTRY
        and not Credential.objects.filter(account=account, is_default=True).exists()
    )
    try:
        with transaction.atomic():
            credential = Credential.objects.create(
                account=account, type=kind, name=name, server=server, username=username,
                email=email, secret="", is_default=is_default, created_by=actor,
            )
    except IntegrityError:
        raise _duplicate(name) from None
    # The id is part of the associated data, so the secret is sealed once the row exists,
    # in the same transaction: no committed row ever lacks its secret.
    credential.secret = vault.seal_secret(credential, secret)
    credential.save(update_fields=["secret"])
    _changed(credential)
    audit_record(
        account=account, actor=actor, action=AuditAction.CREDENTIAL_CREATED, target=credential,
        details={"name": name, "type": kind.value, "server": server, "username": username,
                 "default": is_default},
    )
    return credential


@transaction.atomic
def credential_update(
    *,
    actor: User,
    membership: Membership,
    credential_id: int,
    name: str | None = None,
    server: str | None = None,
    username: str | None = None,
    email: str | None = None,
    secret: str | None = None,
) -> Credential:
    """Change a credential; ``None`` leaves a field as it is.

    A new secret is a rotation: every app using the credential gets it from the next sync on.
    Any change to what the credential sends (server, username, e-mail, secret) increments
    its revision.
    """
    require(membership, Action.MANAGE_CREDENTIALS)
    credential = _get_for_update(membership, credential_id)
    kind = CredentialType(credential.type)
    changed: list[str] = []
    if name is not None:
        name = validation.clean_name(name)
        if name != credential.name:
            _lock_account(membership.account)  # two renames to one name queue here
            if _name_taken(credential.account, kind, name, exclude=credential.pk):
                raise _duplicate(name)
            credential.name = name
            changed.append("name")
    new_values = {
        "server": None if server is None else validation.clean_server(kind, server),
        "username": None if username is None else validation.clean_username(username),
        "email": None if email is None else validation.clean_email(email),
    }
    for field, value in new_values.items():
        if value is not None and value != getattr(credential, field):
            setattr(credential, field, value)
            changed.append(field)
    if secret is not None and secret != "":
        cleaned = validation.clean_secret(kind, credential.username, secret)
        credential.secret = vault.seal_secret(credential, cleaned)
        changed.append("password" if kind is CredentialType.CONTAINER_REGISTRY else "token")
    elif "username" in changed and credential.username == validation.GCP_JSON_KEY_USER:
        validation.clean_secret(kind, credential.username, vault.open_secret(credential))
    if not changed:
        return credential
    if set(changed) - {"name"}:
        credential.revision += 1
    credential.save()
    _changed(credential)
    audit_record(
        account=credential.account, actor=actor, action=AuditAction.CREDENTIAL_UPDATED,
        target=credential,
        details={"name": credential.name, "changed": changed, "revision": credential.revision},
    )
    return credential


@transaction.atomic
def credential_set_default(
    *, actor: User, membership: Membership, credential_id: int
) -> Credential:
    """Make a container-registry credential the account default, atomically."""
    require(membership, Action.MANAGE_CREDENTIALS)
    _lock_account(membership.account)
    credential = _get_for_update(membership, credential_id)
    if credential.type != CredentialType.CONTAINER_REGISTRY:
        raise ValidationFailed(
            "Only a container-registry credential can be the account default.",
            code="credential_type_mismatch",
            detail={"expected": CredentialType.CONTAINER_REGISTRY.value, "got": credential.type},
        )
    if credential.is_default:
        return credential
    previous = Credential.objects.filter(account=membership.account, is_default=True).first()
    # Unset first: the partial unique index allows one default at every moment.
    Credential.objects.filter(account=membership.account, is_default=True).update(
        is_default=False, revision=F("revision") + 1
    )
    credential.is_default = True
    credential.revision += 1
    credential.save(update_fields=["is_default", "revision", "updated_at"])
    if previous is not None:
        _changed(previous)
    _changed(credential)
    audit_record(
        account=membership.account, actor=actor, action=AuditAction.CREDENTIAL_SET_DEFAULT,
        target=credential,
        details={"name": credential.name, "previous": previous.name if previous else None},
    )
    return credential


@dataclass(frozen=True)
class Deleted:
    """A deleted credential's name, and the credential promoted to default in its place."""

    name: str
    promoted: Credential | None


@transaction.atomic
def credential_delete(*, actor: User, membership: Membership, credential_id: int) -> Deleted:
    """Delete a credential; deleting the default promotes the oldest remaining one."""
    require(membership, Action.MANAGE_CREDENTIALS)
    _lock_account(membership.account)
    credential = _get_for_update(membership, credential_id)
    naming = selectors.apps_naming(credential=credential)
    if naming:
        raise Conflict(
            f"{credential.name!r} is the pull credential of {', '.join(naming)}; choose "
            "another for them first.",
            code="credential_in_use", detail={"apps": naming},
        )
    promoted: Credential | None = None
    was_default = credential.is_default
    name = credential.name
    audit_record(
        account=membership.account, actor=actor, action=AuditAction.CREDENTIAL_DELETED,
        target=credential,
        details={"name": name, "type": credential.type, "was_default": was_default},
    )
    _changed(credential)
    credential.delete()
    if was_default:
        promoted = successor_of_default(membership.account)
        if promoted is not None:
            promoted.is_default = True
            promoted.revision += 1
            promoted.save(update_fields=["is_default", "revision", "updated_at"])
            _changed(promoted)
            audit_record(
                account=membership.account, actor=actor,
                action=AuditAction.CREDENTIAL_SET_DEFAULT, target=promoted,
                details={"name": promoted.name, "previous": name, "reason": "default deleted"},
            )
    return Deleted(name=name, promoted=promoted)


def successor_of_default(account: Account, *, excluding: int | None = None) -> Credential | None:
    """The credential that becomes default when the default goes: the oldest remaining one."""
    remaining = Credential.objects.filter(
        account=account, type=CredentialType.CONTAINER_REGISTRY
    ).order_by("created_at", "id")
    if excluding is not None:
        remaining = remaining.exclude(id=excluding)
    return remaining.first()


@dataclass(frozen=True)
class TestOutcome:
    """What "Test connection" found, in the user's words (never holding the secret)."""

    __test__ = False  # not a pytest test class, despite the name

    result: TestResult
    message: str

    @property
    def ok(self) -> bool:
        return self.result is TestResult.OK


def credential_test(
    *, actor: User, membership: Membership, credential_id: int, image: str | None = None
) -> TestOutcome:
    """Log in to the credential's registry and, with ``image``, check pull access to it.

    The registry is asked outside any transaction (it may be slow); the result is recorded
    afterwards, with the time, never the secret.
    """
    require(membership, Action.DEPLOY)
    credential = Credential.objects.filter(account=membership.account, id=credential_id).first()
    if credential is None:
        raise NotFound("No such credential in this account.", code="credential_not_found")
    if credential.type != CredentialType.CONTAINER_REGISTRY:
        raise ValidationFailed(
            "Test connection works for container-registry credentials; git credentials are "
            "checked when a build clones with them.",
            code="credential_type_mismatch",
            detail={"expected": CredentialType.CONTAINER_REGISTRY.value, "got": credential.type},
        )
    login = RegistryLogin(credential.username, vault.open_secret(credential))
    if image:
        try:
            reference = parse_reference(image.strip())
        except InvalidReference as exc:
            raise ValidationFailed(
                f"The image reference is not valid: {exc}", code="image_invalid",
                detail={"fields": {"image": str(exc)}},
            ) from None
        if not hosts_match(credential.server, reference.domain):
            # I4: a credential is only ever sent to the host it was made for.
            outcome = TestOutcome(
                TestResult.HOST_MISMATCH,
                f"The image is on {reference.domain}, but {credential.name!r} is for "
                f"{credential.server}; it was not sent there.",
            )
        else:
            outcome = _outcome(
                check_access(login, reference, policy=settings.REGISTRY_PROBE_POLICY)
            )
    else:
        outcome = _outcome(
            check_login(login, credential.server, policy=settings.REGISTRY_PROBE_POLICY)
        )
    _record_test(actor=actor, membership=membership, credential=credential, outcome=outcome,
                 image=image)
    return outcome


def _outcome(result: AccessResult) -> TestOutcome:
    return TestOutcome(TestResult(str(result.status)), result.message)


@transaction.atomic
def _record_test(
    *, actor: User, membership: Membership, credential: Credential, outcome: TestOutcome,
    image: str | None,
) -> None:
    Credential.objects.filter(pk=credential.pk).update(
        last_tested_at=timezone.now(),
        last_test_result=outcome.result,
        last_test_message=outcome.message[:500],
    )
    audit_record(
        account=membership.account, actor=actor, action=AuditAction.CREDENTIAL_TESTED,
        target=credential,
        details={"name": credential.name, "result": outcome.result.value, "image": image or ""},
    )


@dataclass(frozen=True)
class ExportEntry:
    """One registry login to write into a docker config or a Kubernetes secret."""

    name: str
    server: str
    login: RegistryLogin
    email: str


@transaction.atomic
def credentials_export(
    *, actor: User, membership: Membership, names: list[str]
) -> list[ExportEntry]:
    """Open the named container-registry credentials for an export file (audited).

    Only for the server-side ``moorage credentials export``: the API never returns secrets.
    """
    require(membership, Action.MANAGE_CREDENTIALS)
    if not names:
        raise ValidationFailed("Name at least one credential to export.", code="names_required")
    found = {
        c.name: c
        for c in Credential.objects.filter(
            account=membership.account, type=CredentialType.CONTAINER_REGISTRY, name__in=names
        )
    }
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFound(
            f"No container-registry credential named {', '.join(map(repr, missing))} in this "
            "account.",
            code="credential_not_found",
        )
    entries = []
    for name in dict.fromkeys(names):
        credential = found[name]
        entries.append(ExportEntry(
            name=name, server=credential.server, email=credential.email,
            login=RegistryLogin(credential.username, vault.open_secret(credential)),
        ))
        audit_record(
            account=membership.account, actor=actor, action=AuditAction.CREDENTIAL_EXPORTED,
            target=credential, details={"name": name, "server": credential.server},
        )
    return entries
