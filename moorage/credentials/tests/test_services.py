"""Credential services: the default rule, rotation, validation, roles and audit."""

from __future__ import annotations

import json

import pytest

from moorage.accounts.choices import Role
from moorage.audit.choices import AuditAction
from moorage.audit.models import AuditEvent
from moorage.credentials import services, vault
from moorage.credentials.models import Credential
from moorage.errors import ApplicationError
from moorage.testing import factories
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.secrets_search import database_text

pytestmark = pytest.mark.django_db

JSON_KEY = json.dumps(
    {"type": "service_account", "client_email": "deployer@proj.iam.gserviceaccount.com",
     "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQ\nabc\n-----END PRIVATE KEY-----\n"},
    indent=2,
)


def _defaults(owner: Member) -> list[str]:
    return list(Credential.objects.filter(account=owner.account, is_default=True)
                .values_list("name", flat=True))


def test_first_registry_credential_becomes_default(owner: Member) -> None:
    git = make_credential(owner, type="git", name="gh", server="github.com")
    assert not git.is_default
    first = make_credential(owner, name="first")
    second = make_credential(owner, name="second")
    assert first.is_default and not second.is_default
    assert _defaults(owner) == ["first"]


def test_set_default_moves_it_and_audits(owner: Member) -> None:
    make_credential(owner, name="first")
    second = make_credential(owner, name="second")
    services.credential_set_default(actor=owner.user, membership=owner.membership,
                                    credential_id=second.id)
    assert _defaults(owner) == ["second"]
    event = AuditEvent.objects.filter(action=AuditAction.CREDENTIAL_SET_DEFAULT).latest("id")
    assert event.details == {"name": "second", "previous": "first"}


def test_deleting_the_default_promotes_the_oldest_remaining(owner: Member) -> None:
    first = make_credential(owner, name="first")
    make_credential(owner, name="second")
    make_credential(owner, name="third")
    deleted = services.credential_delete(actor=owner.user, membership=owner.membership,
                                         credential_id=first.id)
    assert deleted.promoted is not None and deleted.promoted.name == "second"
    assert _defaults(owner) == ["second"]


def test_deleting_the_last_leaves_no_default(owner: Member) -> None:
    only = make_credential(owner, name="only")
    make_credential(owner, type="git", name="gh", server="github.com")
    deleted = services.credential_delete(actor=owner.user, membership=owner.membership,
                                         credential_id=only.id)
    assert deleted.promoted is None
    assert _defaults(owner) == []


def test_git_credentials_cannot_be_default(owner: Member) -> None:
    git = make_credential(owner, type="git", name="gh", server="https://github.com/")
    assert git.server == "github.com"
    with pytest.raises(ApplicationError) as exc:
        services.credential_set_default(actor=owner.user, membership=owner.membership,
                                        credential_id=git.id)
    assert (exc.value.status, exc.value.code) == (422, "credential_type_mismatch")


def test_defaults_are_per_account(owner: Member, other_owner: Member) -> None:
    make_credential(owner, name="a")
    theirs = make_credential(other_owner, name="b")
    assert theirs.is_default
    with pytest.raises(ApplicationError) as exc:
        services.credential_set_default(actor=owner.user, membership=owner.membership,
                                        credential_id=theirs.id)
    assert exc.value.status == 404


def test_rotation_reseals_and_increments_the_revision(owner: Member) -> None:
    credential = make_credential(owner, name="hub", secret="old-password-1")
    sealed_before = credential.secret
    updated = services.credential_update(actor=owner.user, membership=owner.membership,
                                         credential_id=credential.id, secret="new-password-2")
    assert updated.revision == 2
    assert updated.secret != sealed_before
    assert vault.open_secret(Credential.objects.get(id=credential.id)) == "new-password-2"
    event = AuditEvent.objects.filter(action=AuditAction.CREDENTIAL_UPDATED).latest("id")
    assert event.details == {"name": "hub", "changed": ["password"], "revision": 2}


def test_renaming_keeps_the_revision_and_no_change_writes_nothing(owner: Member) -> None:
    credential = make_credential(owner, name="hub")
    renamed = services.credential_update(actor=owner.user, membership=owner.membership,
                                         credential_id=credential.id, name="hub-prod")
    assert (renamed.name, renamed.revision) == ("hub-prod", 1)
    events = AuditEvent.objects.count()
    services.credential_update(actor=owner.user, membership=owner.membership,
                               credential_id=credential.id, name="hub-prod", secret="")
    assert AuditEvent.objects.count() == events


def test_server_is_stored_canonical(owner: Member) -> None:
    for pasted, canonical in [
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://ghcr.io/", "ghcr.io"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("[::1]:5000", "[::1]:5000"),
    ]:
        credential = make_credential(owner, server=pasted)
        assert credential.server == canonical, pasted


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"name": ""}, "name_required"),
        ({"name": "n" * 101}, "name_too_long"),
        ({"name": "two\nlines"}, "name_invalid"),
        ({"type": "ssh_key"}, "credential_type_invalid"),
        ({"server": "https://ghcr.io/org/repo"}, "server_has_path"),
        ({"server": "ftp://ghcr.io"}, "server_scheme_invalid"),
        ({"server": "ghcr .io"}, "server_invalid"),
        ({"server": "ghcr.io?x=1"}, "server_has_query"),
        ({"username": ""}, "username_required"),
        ({"username": "a:b"}, "username_invalid"),
        ({"secret": ""}, "secret_required"),
        ({"secret": "x" * (16 * 1024 + 1)}, "secret_too_long"),
        ({"email": "not-an-email"}, "email_invalid"),
        ({"username": "_json_key", "secret": "{not json"}, "json_key_invalid"),
        ({"username": "_json_key", "secret": '{"type": "user"}'}, "json_key_invalid"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    owner: Member, overrides: dict[str, str], code: str
) -> None:
    before = (Credential.objects.count(), AuditEvent.objects.count())
    with pytest.raises(ApplicationError) as exc:
        make_credential(owner, **overrides)
    assert exc.value.code == code, exc.value.message
    assert exc.value.status == 422
    assert (Credential.objects.count(), AuditEvent.objects.count()) == before


def test_duplicate_names_are_per_type(owner: Member) -> None:
    make_credential(owner, name="shared")
    make_credential(owner, name="shared", type="git", server="github.com")
    with pytest.raises(ApplicationError) as exc:
        make_credential(owner, name="shared")
    assert (exc.value.status, exc.value.code) == (409, "credential_name_taken")


def test_json_keys_keep_their_newlines(owner: Member) -> None:
    credential = make_credential(owner, server="europe-docker.pkg.dev", username="_json_key",
                                 secret=JSON_KEY)
    assert vault.open_secret(credential) == JSON_KEY


def test_a_trailing_newline_of_a_pasted_token_is_dropped(owner: Member) -> None:
    credential = make_credential(owner, secret="ghp_token123\n")
    assert vault.open_secret(credential) == "ghp_token123"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER])
def test_only_admins_and_owners_change_credentials(owner: Member, role: Role) -> None:
    limited = factories.add_member(owner, role)
    credential = make_credential(owner)
    calls = [
        lambda: make_credential(limited),
        lambda: services.credential_update(actor=limited.user, membership=limited.membership,
                                           credential_id=credential.id, secret="xx"),
        lambda: services.credential_set_default(actor=limited.user,
                                                membership=limited.membership,
                                                credential_id=credential.id),
        lambda: services.credential_delete(actor=limited.user, membership=limited.membership,
                                           credential_id=credential.id),
    ]
    for call in calls:
        with pytest.raises(ApplicationError) as exc:
            call()
        assert (exc.value.status, exc.value.code) == (403, "permission_denied")


def test_audit_rows_never_hold_the_secret(owner: Member) -> None:
    credential = make_credential(owner, secret="Distinctive-Secret-0451")
    services.credential_update(actor=owner.user, membership=owner.membership,
                               credential_id=credential.id, secret="Distinctive-Secret-0452")
    services.credential_delete(actor=owner.user, membership=owner.membership,
                               credential_id=credential.id)
    trail = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert "Distinctive-Secret-045" not in trail
    assert "Distinctive-Secret-045" not in database_text()
