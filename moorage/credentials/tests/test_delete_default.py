"""Deleting the account default that apps reach through "Use account default" (issue 13,
item 5): refused with a stable code naming them, unless confirmed; the promotion audited."""

from __future__ import annotations

import pytest
from django.test import Client

from moorage.apps.services import BuildInput, app_create
from moorage.audit.models import AuditEvent
from moorage.credentials.models import Credential
from moorage.testing import factories
from moorage.testing.api_checks import API, assert_api_error
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner() -> Member:
    return factories.make_account("Default Co")


def _app(owner: Member, name: str, image: str, **fields: object) -> None:
    app_create(actor=owner.user, membership=owner.membership, name=name, image=image,
               **fields)  # type: ignore[arg-type]


def _world(owner: Member) -> tuple[Credential, Credential]:
    hub = make_credential(owner, name="hub", server="https://index.docker.io/v1/")
    ghcr = make_credential(owner, name="ghcr", server="ghcr.io")
    assert hub.is_default
    _app(owner, "web", "nginx:1.27")  # docker.io, "Use account default": pulls with hub
    _app(owner, "api", "docker.io/acme/api:2")  # the same registry, spelt otherwise
    _app(owner, "tool", "ghcr.io/acme/tool:1")  # another registry: anonymous today
    _app(owner, "pub", "nginx:1.27", runtime_pull="none")
    app_create(actor=owner.user, membership=owner.membership, name="built", source="build",
               build=BuildInput(git_url="https://github.com/acme/built.git"))
    return hub, ghcr


def _delete(client: Client, owner: Member, credential: Credential, query: str = "") -> object:
    return client.delete(f"{API}/credentials/{credential.pk}{query}", headers=owner.auth)


def _actions(owner: Member) -> list[str]:
    return list(AuditEvent.objects.filter(account=owner.account).order_by("id")
                .values_list("action", flat=True))


def test_deleting_the_default_apps_pull_with_is_refused_naming_them(
    client: Client, owner: Member
) -> None:
    hub, _ = _world(owner)
    before = _actions(owner)
    body = assert_api_error(_delete(client, owner, hub), 409, "credential_default_in_use")
    assert body["detail"] == {"apps": ["api", "web"], "successor": "ghcr"}
    assert body["message"] == (
        "'hub' is the account default, and 2 apps on \"Use account default\" pull with it "
        "from docker.io: api, web. After the deletion they would pull "
        "anonymously: the next default, 'ghcr', is for ghcr.io. Confirm the deletion to go "
        "ahead.")
    hub.refresh_from_db()
    assert hub.is_default and _actions(owner) == before  # nothing changed, nothing audited
    # "false" is no confirmation either.
    assert_api_error(_delete(client, owner, hub, "?confirm=false"), 409,
                     "credential_default_in_use")


def test_a_confirmed_deletion_promotes_the_successor_and_audits_it(
    client: Client, owner: Member
) -> None:
    hub, ghcr = _world(owner)
    assert _delete(client, owner, hub, "?confirm=true").status_code == 204  # type: ignore[attr-defined]
    ghcr.refresh_from_db()
    assert ghcr.is_default and not Credential.objects.filter(pk=hub.pk).exists()
    *_, deleted, promoted = AuditEvent.objects.filter(account=owner.account).order_by("id")
    assert (deleted.action, deleted.details) == ("credential.deleted", {
        "name": "hub", "type": "container_registry", "was_default": True,
        "promoted": "ghcr", "apps_through_default": ["api", "web"]})
    assert (promoted.action, promoted.target_id) == ("credential.default_promoted",
                                                     str(ghcr.pk))
    assert promoted.details["previous"] == "hub"
    # Now "tool" (ghcr.io) pulls with the new default, the last one: the same question.
    body = assert_api_error(_delete(client, owner, ghcr), 409, "credential_default_in_use")
    assert body["detail"] == {"apps": ["tool"], "successor": None}
    assert "it would pull anonymously: no registry credential would be left" in \
        body["message"]


def test_a_successor_on_the_same_registry_is_named_as_what_they_pull_with(
    client: Client, owner: Member
) -> None:
    hub = make_credential(owner, name="hub", server="docker.io")
    make_credential(owner, name="hub-2", server="registry-1.docker.io")
    _app(owner, "web", "nginx:1.27")
    body = assert_api_error(_delete(client, owner, hub), 409, "credential_default_in_use")
    assert "After the deletion it would pull with 'hub-2', the next default." in \
        body["message"]


def test_a_default_no_app_pulls_with_is_deleted_without_confirmation(
    client: Client, owner: Member
) -> None:
    hub = make_credential(owner, name="hub", server="docker.io")
    ghcr = make_credential(owner, name="ghcr", server="ghcr.io")
    _app(owner, "tool", "ghcr.io/acme/tool:1")  # on the default: another registry
    _app(owner, "pinned", "nginx:1.27", runtime_pull="none")
    assert _delete(client, owner, hub).status_code == 204  # type: ignore[attr-defined]
    ghcr.refresh_from_db()
    assert ghcr.is_default
    assert _actions(owner)[-2:] == ["credential.deleted", "credential.default_promoted"]


def test_confirm_does_not_override_an_app_that_names_the_credential(
    client: Client, owner: Member
) -> None:
    hub = make_credential(owner, name="hub", server="docker.io")
    _app(owner, "named", "nginx:1.27", runtime_pull="credential",
         runtime_pull_credential_id=hub.pk)
    body = assert_api_error(_delete(client, owner, hub, "?confirm=true"), 409,
                            "credential_in_use")
    assert body["detail"] == {"apps": ["named"]}
