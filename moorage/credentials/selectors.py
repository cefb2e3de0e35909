"""Reads of credentials, always scoped to one account."""

from __future__ import annotations

from django.db.models import Count, F, Q, QuerySet

from moorage.accounts.models import Account
from moorage.apps.choices import RuntimePull, SourceMode
from moorage.apps.models import App
from moorage.credentials.choices import CredentialType
from moorage.credentials.models import Credential
from moorage.errors import NotFound, ValidationFailed
from moorage.registry.hosts import hosts_match
from moorage.registry.reference import InvalidReference, parse_reference


def credentials_of(*, account: Account, type: str | None = None) -> QuerySet[Credential]:
    """The account's credentials, by name; optionally of one type."""
    credentials = Credential.objects.filter(account=account).select_related(
        "created_by", "login_token")
    if type is not None:
        try:
            kind = CredentialType(type)
        except ValueError:
            raise ValidationFailed(
                f"Unknown credential type {type!r}; use container_registry or git.",
                code="credential_type_invalid",
                detail={"fields": {"type": "invalid"}},
            ) from None
        credentials = credentials.filter(type=kind)
    return credentials.order_by("type", "name", "id")


LIST_FIELDS = (
    "id", "type", "name", "server", "username", "email", "is_default", "revision",
    "created_at", "updated_at", "last_tested_at", "last_test_result", "last_test_message",
    "login_source", "aws_access_key_id", "aws_region",
)
#: The token columns a listing shows (``token_<field>``), read in the same query.
TOKEN_FIELDS = ("refreshed_at", "expires_at", "refresh_due_at", "failing_since",
                "failure_code", "failure_message")


def credential_rows(*, account: Account, type: str | None = None) -> list[dict[str, object]]:
    """The account's credentials as plain rows for listings: one query, no secret column,
    no model instances (a 1,000-row list is mostly object construction otherwise)."""
    rows = credentials_of(account=account, type=type).values(
        *LIST_FIELDS, created_by_email=F("created_by__email"),
        **{f"token_{name}": F(f"login_token__{name}") for name in TOKEN_FIELDS},
    )
    return list(rows)


def credential_get(*, account: Account, credential_id: int) -> Credential:
    """One credential of the account; :class:`NotFound` for another account's."""
    credential = (
        Credential.objects.filter(account=account, id=credential_id)
        .select_related("created_by", "login_token")
        .first()
    )
    if credential is None:
        raise NotFound("No such credential in this account.", code="credential_not_found")
    return credential


def credential_by_name(*, account: Account, name: str, type: str | None = None) -> Credential:
    """A credential of the account by name (the CLI's handle)."""
    credentials = Credential.objects.filter(account=account, name=name)
    if type is not None:
        credentials = credentials.filter(type=type)
    found = list(credentials[:2])
    if not found:
        raise NotFound(f"No credential named {name!r} in this account.",
                       code="credential_not_found")
    if len(found) > 1:
        raise ValidationFailed(
            f"Both a registry and a git credential are named {name!r}; say which type.",
            code="credential_name_ambiguous",
        )
    return found[0]


def default_credential(*, account: Account) -> Credential | None:
    """The account's default container-registry credential, if any."""
    return Credential.objects.filter(account=account, is_default=True).first()


def usage_counts(*, account: Account) -> dict[int, int]:
    """How many apps use each credential: by name (to pull, to pull base images, to clone),
    or through "Use account default" (image apps whose image is on the default's registry:
    builds never use the default, and an image elsewhere is pulled anonymously)."""
    counts: dict[int, int] = {}
    apps = App.objects.filter(account=account)
    for field in ("runtime_pull_credential", "build_pull_credential", "git_credential"):
        for row in (apps.filter(**{f"{field}__isnull": False}).values(field)
                    .annotate(n=Count("id"))):
            counts[row[field]] = counts.get(row[field], 0) + row["n"]
    default = default_credential(account=account)
    if default is not None:
        counts[default.pk] = counts.get(default.pk, 0) + len(apps_through_default(
            credential=default))
    return counts


def apps_through_default(*, credential: Credential) -> list[str]:
    """Names of the apps that pull with ``credential`` because it is the account default:
    image apps on "Use account default" whose image is on its registry (I5; an image
    elsewhere is pulled anonymously, and builds never use the default). Empty when it is
    not the default."""
    if not credential.is_default:
        return []
    apps = App.objects.filter(account_id=credential.account_id, source=SourceMode.IMAGE,
                              runtime_pull=RuntimePull.ACCOUNT_DEFAULT).values_list(
        "name", "image")
    return sorted(name for name, image in apps if _on_registry(image, credential.server))


def apps_naming(*, credential: Credential) -> list[str]:
    """Names of the apps that use ``credential`` by name (not via the default): to pull,
    to pull base images, or to clone."""
    return sorted(
        App.objects.filter(
            Q(runtime_pull_credential=credential) | Q(build_pull_credential=credential)
            | Q(git_credential=credential)
        ).values_list("name", flat=True).distinct()
    )


def _on_registry(image: str, server: str) -> bool:
    """Whether ``image`` is on the registry ``server`` (an invalid image is on none)."""
    try:
        return hosts_match(server, parse_reference(image).domain)
    except InvalidReference:
        return False
