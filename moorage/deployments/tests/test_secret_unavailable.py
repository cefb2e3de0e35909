"""A deploy whose secrets cannot be opened fails at once, saying which secret and what to do,
instead of waiting forever (issue 9, item 1): refused when it is asked for, or failed when
the region's answer is built, without breaking that answer for the region's other objects.

The "lost key" is the one an operator loses by restoring an older key file: the values sealed
with the newer key no longer open, while those sealed with the older one still do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from moorage.apps import services as app_services
from moorage.apps.models import App
from moorage.audit.models import AuditEvent
from moorage.credentials.models import Credential
from moorage.deployments.models import Deployment
from moorage.private_files import write_private
from moorage.regions import services as region_services
from moorage.sealing import generate_key
from moorage.sealing.keyring import KeyFile
from moorage.testing.api_checks import API, assert_api_error
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, deploy_one, make_region
from moorage.testing.secrets_search import database_text

pytestmark = pytest.mark.django_db

DB_PASSWORD = "Unavailable-Db-Password-5d1"


class KeyLoss:
    """A key file whose newest key can be lost again (the older one stays)."""

    def __init__(self, path: Path) -> None:
        self.file = KeyFile(path)
        self.older = self.file.load().primary
        self.newer = generate_key("newer")

    def add_newer(self) -> None:
        self.file.add_primary(self.newer)

    def lose_newer(self) -> None:
        write_private(self.file.path, self.older.encoded() + "\n")


@pytest.fixture
def keys(key_file: Path) -> KeyLoss:
    return KeyLoss(key_file)


@pytest.fixture
def eu(owner: Member, keys: KeyLoss) -> AgentView:
    """A region made (its key sealed) with the older key, which stays."""
    region = make_region("eu-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-1"])
    return region


def _app(owner: Member, name: str, *, secret: str | None = None, **fields: Any) -> App:
    env = [app_services.EnvInput("LOG_LEVEL", "info")]
    if secret is not None:
        env.append(app_services.EnvInput("DB_PASSWORD", secret, secret=True))
    return app_services.app_create(actor=owner.user, membership=owner.membership, name=name,
                                   image=fields.pop("image", "ghcr.io/acme/web:1"),
                                   regions=["eu-1"], env=env, **fields)


def test_a_deploy_is_refused_at_once_when_an_env_secret_cannot_be_opened(
    client: Client, owner: Member, keys: KeyLoss, eu: AgentView
) -> None:
    keys.add_newer()
    app = _app(owner, "web", secret=DB_PASSWORD)
    keys.lose_newer()
    response = client.post(f"{API}/apps/{app.pk}/deploy", headers=owner.auth)
    body = assert_api_error(response, 409, "secret_unavailable")
    assert body["message"].startswith("The secret value of DB_PASSWORD in app 'web'")
    assert "sealed with key 'newer', which is not in the keyring" in body["message"]
    assert "Put that key back in the keyring" in body["message"]
    assert body["detail"] == {"reason": "sealed_key_unknown", "app_id": app.pk,
                              "variable": "DB_PASSWORD"}
    assert not Deployment.objects.exists()
    # Setting the value again repairs the app.
    app_services.app_update(actor=owner.user, membership=owner.membership, app_id=app.pk,
                            env=[app_services.EnvInput("LOG_LEVEL", "info"),
                                 app_services.EnvInput("DB_PASSWORD", DB_PASSWORD, True)])
    assert client.post(f"{API}/apps/{app.pk}/deploy", headers=owner.auth).status_code == 201


def test_a_deployment_whose_secret_went_missing_fails_and_the_rest_still_syncs(
    client: Client, owner: Member, keys: KeyLoss, eu: AgentView
) -> None:
    steady = _app(owner, "steady")
    kept = make_credential(owner, name="kept", server="ghcr.io", secret="Kept-Pw")
    keys.add_newer()
    broken = _app(owner, "web", secret=DB_PASSWORD)
    queued = deploy_one(owner, broken.pk)
    fine = deploy_one(owner, steady.pk)
    keys.lose_newer()

    snapshot = eu.snapshot(client)  # answered, not a 500
    sent = {d["id"]: d for d in snapshot["deployments"]}
    assert sent[fine.pk]["status"] == "queued"
    assert sent[queued.pk]["status"] == "failed"
    # Sent without the secret it could not open; the agent does not run a failed one.
    assert sent[queued.pk]["env"] == [{"name": "LOG_LEVEL", "value": "info"}]
    assert [c["id"] for c in snapshot["credentials"]] == [kept.pk]

    queued.refresh_from_db()
    assert queued.status == "failed" and queued.error_code == "secret_unavailable"
    assert queued.error_message.startswith("The secret value of DB_PASSWORD in app 'web'")
    assert "Put that key back" in queued.error_message and queued.finished_at is not None
    shown = client.get(f"{API}/deployments/{queued.pk}", headers=owner.auth).json()
    assert (shown["status"], shown["error_code"]) == ("failed", "secret_unavailable")
    logs = client.get(f"{API}/deployments/{queued.pk}/logs", headers=owner.auth).json()
    assert any("The control plane could not send this deployment" in line["line"]
               for line in logs)
    audit = AuditEvent.objects.get(action="deploy.finished")
    assert audit.details["error_code"] == "secret_unavailable"

    # A changes poll carries it the same way, and the failure is recorded once.
    changes = eu.changes(client, 0)
    assert {c["deployment"]["id"]: c["deployment"]["status"] for c in changes["changes"]
            if c["op"] == "deployment.upsert"} == {queued.pk: "failed", fine.pk: "queued"}
    assert AuditEvent.objects.filter(action="deploy.finished").count() == 1
    assert DB_PASSWORD not in database_text() + json.dumps(snapshot) + json.dumps(changes)


def test_a_credential_whose_secret_went_missing_is_left_out_and_its_deploys_fail(
    client: Client, owner: Member, keys: KeyLoss, eu: AgentView
) -> None:
    kept = make_credential(owner, name="kept", server="docker.io")
    keys.add_newer()
    lost = make_credential(owner, name="lost", server="ghcr.io", secret="Lost-Pw")
    app = _app(owner, "web", runtime_pull="credential", runtime_pull_credential_id=lost.pk)
    deployment = deploy_one(owner, app.pk)
    keys.lose_newer()

    snapshot = eu.snapshot(client)
    assert [c["id"] for c in snapshot["credentials"]] == [kept.pk]
    [sent] = snapshot["deployments"]
    assert sent["status"] == "failed"
    deployment.refresh_from_db()
    assert deployment.error_code == "secret_unavailable"
    assert deployment.error_message.startswith(
        f"The secret of credential 'lost' (id {lost.pk}) cannot be opened")
    refused = client.post(f"{API}/apps/{app.pk}/deploy", headers=owner.auth)
    body = assert_api_error(refused, 409, "secret_unavailable")
    assert body["detail"]["credential_id"] == lost.pk
    assert Credential.objects.count() == 2
