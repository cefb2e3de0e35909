"""Every change to credentials: create, update (rotate), set default, delete, test, export.

The default rule (invariant I1): an account with at least one container-registry credential
has exactly one default. The database allows at most one (a partial unique index); these
services make it at least one, under a lock on the account row so concurrent changes queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from moorage.accounts.models import Account, Membership, User
from moorage.accounts.permissions import Action, require
from moorage.audit.choices import AuditAction
from moorage.audit.services import audit_record
from moorage.credentials import logins, selectors, validation, vault
from moorage.credentials.choices import CredentialType, LoginSource, TestResult
from moorage.credentials.models import Credential, LoginToken
from moorage.credentials.refresh import login_token_refresh_soon, refresh_schedule
from moorage.errors import Conflict, NotFound, ValidationFailed
from moorage.regions.changelog import record_change
from moorage.regions.choices import ChangeKind
from moorage.registry.access import AccessResult, check_access, check_login
from moorage.registry.auth import RegistryLogin
from moorage.registry.hosts import hosts_match
from moorage.registry.logins import IssuedLogin, LoginSourceError
from moorage.registry.logins import LoginSource as RegistryLoginSource
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


def credential_create(
    *,
    actor: User,
    membership: Membership,
    type: str,
    name: str,
    server: str = "",
    username: str = "",
    secret: str,
    email: str = "",
    login_source: str = LoginSource.STATIC,
    aws_access_key_id: str = "",
    aws_region: str = "",
) -> Credential:
    """Add a credential; the account's first container-registry credential becomes default.

    An exchanged login source (``aws_ecr``, ``gcp_service_account``) is exchanged once first,
    outside any transaction: a key the cloud refuses is never stored, the server defaults to
    the registry the exchange names, and the credential is saved with its first token.
    """
    require(membership, Action.MANAGE_CREDENTIALS)
    kind = validation.clean_type(type)
    name = validation.clean_name(name)
    source = validation.clean_login_source(kind, login_source)
    email = validation.clean_email(email)
    issued: IssuedLogin | None = None
    if source.exchanged:
        params = validation.clean_exchanged(
            source, server=server, username=username, secret=secret,
            aws_access_key_id=aws_access_key_id, aws_region=aws_region)
        if _name_taken(membership.account, kind, name):
            raise _duplicate(name)  # before asking the cloud for anything
        issued = logins.exchange(source, params)
        server = params.server or _server_named_by(issued)
        username, secret = issued.username, params.secret
        aws_access_key_id, aws_region = params.aws_access_key_id, params.aws_region
    else:
        server = validation.clean_server(kind, server)
        username = validation.clean_username(username)
        secret = validation.clean_secret(kind, username, secret)
    with transaction.atomic():
        return _create_row(
            actor=actor, membership=membership, kind=kind, name=name, server=server,
            username=username, email=email, secret=secret, source=source, issued=issued,
            aws_access_key_id=aws_access_key_id, aws_region=aws_region,
        )


def _server_named_by(issued: IssuedLogin) -> str:
    if not issued.server:
        raise ValidationFailed(
            "The token service named no registry host; give the server.",
            code="server_required", detail={"fields": {"server": "required"}},
        )
    return issued.server


def _create_row(
    *, actor: User, membership: Membership, kind: CredentialType, name: str, server: str,
    username: str, email: str, secret: str, source: RegistryLoginSource,
    issued: IssuedLogin | None, aws_access_key_id: str, aws_region: str,
) -> Credential:
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
                login_source=source.name.value, aws_access_key_id=aws_access_key_id,
                aws_region=aws_region,
            )
    except IntegrityError:
        raise _duplicate(name) from None
    # The id is part of the associated data, so the secret is sealed once the row exists,
    # in the same transaction: no committed row ever lacks its secret.
    credential.secret = vault.seal_secret(credential, secret)
    credential.save(update_fields=["secret"])
    if issued is not None:
        _store_token(credential, issued)
    _changed(credential)
    details: dict[str, object] = {"name": name, "type": kind.value, "server": server,
                                  "username": username, "default": is_default}
    if source.exchanged:
        details |= {"login_source": source.name.value, **_token_details(credential)}
    audit_record(
        account=account, actor=actor, action=AuditAction.CREDENTIAL_CREATED, target=credential,
        details=details,
    )
    return credential


def _store_token(credential: Credential, issued: IssuedLogin) -> LoginToken:
    """Keep a fresh token for ``credential`` (sealed), due for refresh at half its life."""
    now = timezone.now()
    expires = issued.expires_at or now
    token, _ = LoginToken.objects.update_or_create(
        credential=credential,
        defaults={
            "token": vault.seal_login_token(LoginToken(credential=credential), issued.password),
            "refreshed_at": now, "expires_at": expires,
            "refresh_due_at": logins.next_refresh(now, expires), "claimed_until": None,
            "last_attempt_at": now, "failing_since": None, "failure_code": "",
            "failure_message": "", "failures": 0,
        },
    )
    credential.login_token = token
    due = token.refresh_due_at
    transaction.on_commit(lambda: refresh_schedule(at=due))
    return token


def _token_details(credential: Credential) -> dict[str, object]:
    """What the audit trail says about a token: its expiry, never the token."""
    token = logins.token_of(credential)
    if token is None:
        return {}
    return {"expires_at": token.expires_at.isoformat(),
            "refresh_due_at": token.refresh_due_at.isoformat()}


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
    login_source: str | None = None,
    aws_access_key_id: str | None = None,
    aws_region: str | None = None,
) -> Credential:
    """Change a credential; ``None`` leaves a field as it is.

    A new secret is a rotation: every app using the credential gets it from the next sync on.
    Any change to what the credential sends (server, username, e-mail, secret, login source)
    increments its revision. A change to what an exchange uses (the login source, the secret,
    the AWS key id or region) exchanges again first, outside any transaction: a key the cloud
    refuses changes nothing, and the previous token stays in use.
    """
    require(membership, Action.MANAGE_CREDENTIALS)
    current = selectors.credential_get(account=membership.account, credential_id=credential_id)
    kind = CredentialType(current.type)
    source = (logins.source_of(current) if login_source is None
              else validation.clean_login_source(kind, login_source))
    switching = source.name.value != current.login_source
    issued: IssuedLogin | None = None
    exchange_fields: dict[str, str] = {}
    if source.exchanged:
        # A form that sends the fields unchanged is not a new key: no exchange for it.
        rekey = (switching or bool(secret)
                 or aws_access_key_id not in (None, current.aws_access_key_id)
                 or aws_region not in (None, current.aws_region))
        if switching and not secret:
            raise ValidationFailed(
                f"Give the {'secret access key' if source.name == 'aws_ecr' else 'key'} of the "
                f"new login source {source.name}.", code="secret_required",
                detail={"fields": {"secret": "required"}})
        if rekey or server is not None or username is not None:
            params = validation.clean_exchanged(
                source,
                server=current.server if server is None else server,
                username="" if switching else (username or ""),
                secret=secret or vault.open_secret(current),
                aws_access_key_id=(current.aws_access_key_id if aws_access_key_id is None
                                   else aws_access_key_id),
                aws_region=current.aws_region if aws_region is None else aws_region,
            )
            if rekey:
                issued = logins.exchange(source, params)
                exchange_fields = {"aws_access_key_id": params.aws_access_key_id,
                                   "aws_region": params.aws_region,
                                   "username": issued.username}
                if secret:
                    exchange_fields["secret"] = params.secret
            server = params.server or (None if issued is None or not switching
                                       else _server_named_by(issued))
            username = None
            secret = None
    elif switching:
        if not secret or username is None:
            raise ValidationFailed(
                "Give the username and password the credential logs in with from now on.",
                code="secret_required", detail={"fields": {"secret": "required"}})
        exchange_fields = {"aws_access_key_id": "", "aws_region": ""}
    with transaction.atomic():
        return _update_row(
            actor=actor, membership=membership, credential_id=credential_id,
            revision=current.revision, name=name, server=server, username=username,
            email=email, secret=secret, source=source, issued=issued,
            exchange_fields=exchange_fields,
        )


def _update_row(
    *, actor: User, membership: Membership, credential_id: int, revision: int,
    name: str | None, server: str | None, username: str | None, email: str | None,
    secret: str | None, source: RegistryLoginSource, issued: IssuedLogin | None,
    exchange_fields: dict[str, str],
) -> Credential:
    credential = _get_for_update(membership, credential_id)
    if issued is not None and credential.revision != revision:
        raise Conflict(f"{credential.name!r} changed while its new key was being exchanged; "
                       "try again.", code="credential_changed")
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
    if source.name.value != credential.login_source:
        credential.login_source = source.name.value
        changed.append("login_source")
    for field in ("aws_access_key_id", "aws_region", "username"):
        if field in exchange_fields and exchange_fields[field] != getattr(credential, field):
            setattr(credential, field, exchange_fields[field])
            changed.append(field)
    if "secret" in exchange_fields:
        credential.secret = vault.seal_secret(credential, exchange_fields["secret"])
        changed.append("key")
    elif secret is not None and secret != "":
        cleaned = validation.clean_secret(kind, credential.username, secret)
        credential.secret = vault.seal_secret(credential, cleaned)
        changed.append("password" if kind is CredentialType.CONTAINER_REGISTRY else "token")
    elif "username" in changed and credential.username == validation.GCP_JSON_KEY_USER:
        validation.clean_secret(kind, credential.username, vault.open_secret(credential))
    if issued is not None:
        _store_token(credential, issued)
        changed.append("token")
    elif not source.exchanged:
        LoginToken.objects.filter(credential=credential).delete()
    if not changed:
        return credential
    if set(changed) - {"name"}:
        credential.revision += 1
    credential.save()
    _changed(credential)
    details: dict[str, object] = {"name": credential.name, "changed": changed,
                                  "revision": credential.revision}
    if issued is not None:
        details |= _token_details(credential)
    audit_record(
        account=credential.account, actor=actor, action=AuditAction.CREDENTIAL_UPDATED,
        target=credential, details=details,
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


@transaction.atomic
def credential_refresh_request(
    *, actor: User, membership: Membership, credential_id: int
) -> Credential:
    """Ask the background worker to refresh an exchanged credential's token now (after
    fixing the key's permissions, say); the worker's refresh is audited as usual."""
    require(membership, Action.DEPLOY)
    credential = _get_for_update(membership, credential_id)
    if not logins.source_of(credential).exchanged or logins.token_of(credential) is None:
        raise ValidationFailed(
            f"{credential.name!r} logs in with a password; only credentials exchanged for "
            "tokens (aws_ecr, gcp_service_account) are refreshed.",
            code="credential_not_exchanged",
        )
    login_token_refresh_soon(credential=credential)
    audit_record(
        account=membership.account, actor=actor,
        action=AuditAction.CREDENTIAL_TOKEN_REFRESH_REQUESTED, target=credential,
        details={"name": credential.name},
    )
    return selectors.credential_get(account=membership.account, credential_id=credential.pk)


@dataclass(frozen=True)
class Deleted:
    """A deleted credential's name, whether it was the account default, and the credential
    promoted to default in its place (``None`` with ``was_default``: no default is left)."""

    name: str
    promoted: Credential | None
    was_default: bool = False


@transaction.atomic
def credential_delete(*, actor: User, membership: Membership, credential_id: int,
                      confirm: bool = False) -> Deleted:
    """Delete a credential; deleting the default promotes the oldest remaining one.

    Refused while an app names it (``credential_in_use``). Deleting the default that apps
    reach through "Use account default" changes what they pull with (the successor when it
    is for the same registry, else nothing): refused with ``credential_default_in_use``,
    naming them, unless ``confirm``.
    """
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
    was_default = credential.is_default
    name = credential.name
    successor = (successor_of_default(membership.account, excluding=credential.pk)
                 if was_default else None)
    through_default = selectors.apps_through_default(credential=credential)
    if through_default and not confirm:
        raise default_in_use(credential, through_default, successor)
    audit_record(
        account=membership.account, actor=actor, action=AuditAction.CREDENTIAL_DELETED,
        target=credential,
        details={"name": name, "type": credential.type, "was_default": was_default,
                 "promoted": successor.name if successor else None,
                 "apps_through_default": through_default},
    )
    _changed(credential)
    credential.delete()
    if successor is not None:
        successor.is_default = True
        successor.revision += 1
        successor.save(update_fields=["is_default", "revision", "updated_at"])
        _changed(successor)
        audit_record(
            account=membership.account, actor=actor,
            action=AuditAction.CREDENTIAL_DEFAULT_PROMOTED, target=successor,
            details={"name": successor.name, "previous": name, "reason": "default deleted",
                     "apps_through_default": through_default},
        )
    return Deleted(name=name, promoted=successor, was_default=was_default)


def default_in_use(credential: Credential, apps: list[str],
                   successor: Credential | None) -> Conflict:
    """The refusal to delete the default that ``apps`` pull with, saying what they would
    pull with afterwards."""
    one = len(apps) == 1
    they = "it" if one else "they"
    if successor is not None and hosts_match(successor.server, credential.server):
        after = f"{they} would pull with {successor.name!r}, the next default"
    elif successor is not None:
        after = (f"{they} would pull anonymously: the next default, {successor.name!r}, is "
                 f"for {successor.server}")
    else:
        after = f"{they} would pull anonymously: no registry credential would be left"
    return Conflict(
        f"{credential.name!r} is the account default, and {len(apps)} "
        f"app{'' if one else 's'} on \"Use account default\" pull{'s' if one else ''} with it "
        f"from {credential.server}: {', '.join(apps)}. After the deletion {after}. Confirm the "
        "deletion to go ahead.",
        code="credential_default_in_use",
        detail={"apps": apps, "successor": successor.name if successor else None},
    )


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
    # Exchanged sources ask their token service first (a fresh token, not stored: the
    # refresh worker owns the stored one); a static source gives its password.
    source = logins.source_of(credential)
    try:
        login = logins.ask(source, logins.params_of(credential)).login
    except LoginSourceError as exc:
        outcome = TestOutcome(TestResult.EXCHANGE_FAILED, exc.message)
        _record_test(actor=actor, membership=membership, credential=credential,
                     outcome=outcome, image=image)
        return outcome
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
    if source.exchanged and outcome.result is not TestResult.HOST_MISMATCH:
        outcome = TestOutcome(outcome.result,
                              f"Exchanged the key for a fresh {source.label}. {outcome.message}")
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
    #: When the login stops working (an exchanged credential's current token), else None.
    expires_at: datetime | None = None
    #: "password", "ECR token", "Google access token".
    label: str = "password"


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
        for c in Credential.objects.select_related("login_token").filter(
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
        # The current login: an exchanged credential exports its short-lived token (and says
        # until when it works), never the long-lived key.
        entries.append(ExportEntry(
            name=name, server=credential.server, email=credential.email,
            login=logins.current_login(credential), expires_at=logins.expires_at(credential),
            label=logins.source_of(credential).label,
        ))
        audit_record(
            account=membership.account, actor=actor, action=AuditAction.CREDENTIAL_EXPORTED,
            target=credential, details={"name": name, "server": credential.server},
        )
    return entries
