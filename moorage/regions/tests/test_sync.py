"""The control plane's side of the sync protocol, through the real API."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from django.db import close_old_connections, connection
from django.test import Client

from moorage import protocol
from moorage.credentials import services as credential_services
from moorage.regions import changelog, services
from moorage.regions.models import CredentialReplica, Region
from moorage.sealing import SealedDataError, open_sealed
from moorage.sealing.keyring import Keyring
from moorage.testing import factories
from moorage.testing.api_checks import assert_api_error
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, make_region
from moorage.testing.secrets_search import database_text

pytestmark = pytest.mark.django_db


def _enable(member: Member, *slugs: str) -> None:
    services.account_regions_set(actor=member.user, membership=member.membership,
                                 slugs=list(slugs))


def _open(agent: AgentView, credential: dict[str, Any]) -> str:
    aad = protocol.region_secret_aad(region=agent.slug, account_id=credential["account_id"],
                                     credential_id=credential["id"],
                                     revision=credential["revision"])
    return open_sealed(Keyring([agent.key]), credential["secret"], aad).decode()


def test_snapshot_holds_enabled_accounts_sealed_for_the_region(
    client: Client, owner: Member, other_owner: Member
) -> None:
    eu = make_region("eu-1")
    _enable(owner, "eu-1")
    credential = make_credential(owner, name="hub", secret="Region-Secret-1")
    make_credential(other_owner, name="theirs")  # account not enabled in eu-1
    snapshot = eu.snapshot(client)
    assert snapshot["kind"] == "snapshot" and snapshot["region"] == "eu-1"
    assert snapshot["accounts"] == [{"id": owner.account.pk, "slug": "acme"}]
    [sent] = snapshot["credentials"]
    assert sent["id"] == credential.pk and sent["is_default"] is True
    assert "Region-Secret-1" not in json.dumps(snapshot)
    assert _open(eu, sent) == "Region-Secret-1"
    assert snapshot["revision"] == changelog.current_revision()[0]


def test_a_region_secret_does_not_open_elsewhere(client: Client, owner: Member) -> None:
    eu, us = make_region("eu-1"), make_region("us-1")
    _enable(owner, "eu-1", "us-1")
    make_credential(owner, secret="Region-Secret-2")
    sent = eu.snapshot(client)["credentials"][0]
    with pytest.raises(SealedDataError) as exc:
        _open(us, sent)
    assert exc.value.code == "sealed_key_unknown"
    with pytest.raises(SealedDataError) as exc:
        _open(eu, sent | {"revision": sent["revision"] + 1})
    assert exc.value.code == "sealed_tampered"


def test_changes_follow_create_rotate_default_and_delete(client: Client, owner: Member) -> None:
    eu = make_region("eu-1")
    _enable(owner, "eu-1")
    start = eu.snapshot(client)["revision"]
    first = make_credential(owner, name="first", secret="v1-secret")
    second = make_credential(owner, name="second")
    batch = eu.changes(client, start)
    assert [c["op"] for c in batch["changes"]] == ["credential.upsert", "credential.upsert"]
    revision = batch["revision"]

    credential_services.credential_update(actor=owner.user, membership=owner.membership,
                                          credential_id=first.id, secret="v2-secret")
    rotated = eu.changes(client, revision)
    [change] = rotated["changes"]
    assert change["credential"]["revision"] == 2
    assert _open(eu, change["credential"]) == "v2-secret"

    credential_services.credential_set_default(actor=owner.user, membership=owner.membership,
                                               credential_id=second.id)
    moved = eu.changes(client, rotated["revision"])
    defaults = {c["credential"]["name"]: c["credential"]["is_default"] for c in moved["changes"]}
    assert defaults == {"first": False, "second": True}

    credential_services.credential_delete(actor=owner.user, membership=owner.membership,
                                          credential_id=second.id)
    gone = eu.changes(client, moved["revision"])
    ops = [(c["op"], c.get("credential_id") or c["credential"]["name"]) for c in gone["changes"]]
    assert ops == [("credential.delete", second.id), ("credential.upsert", "first")]
    assert eu.changes(client, gone["revision"])["changes"] == []


def test_changes_coalesce_to_the_current_state(client: Client, owner: Member) -> None:
    eu = make_region("eu-1")
    _enable(owner, "eu-1")
    start = eu.snapshot(client)["revision"]
    credential = make_credential(owner, secret="one")
    for n in range(3):
        credential_services.credential_update(actor=owner.user, membership=owner.membership,
                                              credential_id=credential.id, secret=f"next-{n}")
    [change] = eu.changes(client, start)["changes"]
    assert change["credential"]["revision"] == 4
    assert _open(eu, change["credential"]) == "next-2"


def test_a_region_sees_only_its_accounts(
    client: Client, owner: Member, other_owner: Member
) -> None:
    eu, us = make_region("eu-1"), make_region("us-1")
    _enable(owner, "eu-1")
    _enable(other_owner, "us-1")
    start = changelog.current_revision()[0]
    make_credential(owner, name="acme-cred")
    make_credential(other_owner, name="globex-cred")
    eu_names = [c["credential"]["name"] for c in eu.changes(client, start)["changes"]]
    us_names = [c["credential"]["name"] for c in us.changes(client, start)["changes"]]
    assert eu_names == ["acme-cred"] and us_names == ["globex-cred"]
    assert [a["slug"] for a in us.snapshot(client)["accounts"]] == ["globex"]


def test_enabling_and_disabling_a_region_for_an_account(client: Client, owner: Member) -> None:
    eu = make_region("eu-1")
    make_credential(owner, name="a")
    make_credential(owner, name="b")
    start = eu.snapshot(client)["revision"]
    _enable(owner, "eu-1")
    added = eu.changes(client, start)
    assert [c["op"] for c in added["changes"]] == [
        "account.upsert", "credential.upsert", "credential.upsert"]
    _enable(owner)  # none
    removed = eu.changes(client, added["revision"])
    assert removed["changes"] == [{"revision": removed["revision"], "op": "account.delete",
                                   "account_id": owner.account.pk}]


def test_compacted_log_asks_for_a_snapshot(client: Client, owner: Member) -> None:
    eu = make_region("eu-1")
    _enable(owner, "eu-1")
    start = eu.snapshot(client)["revision"]
    for n in range(5):
        make_credential(owner, name=f"c{n}")
    assert changelog.compact(keep=2) > 0
    behind = eu.changes(client, start)
    assert behind["snapshot_required"] is True and behind["changes"] == []
    assert eu.changes(client, behind["revision"])["snapshot_required"] is False
    future = eu.changes(client, behind["revision"] + 100)
    assert future["snapshot_required"] is True  # the control plane's log was reset


def test_ack_records_replicas_and_progress(client: Client, owner: Member) -> None:
    eu = make_region("eu-1")
    _enable(owner, "eu-1")
    credential = make_credential(owner)
    snapshot = eu.snapshot(client)
    body = {"revision": snapshot["revision"], "snapshot": True,
            "credentials": {str(credential.id): 1}, "removed": []}
    for _ in range(2):  # idempotent
        response = client.post("/api/v1/agent/ack", json.dumps(body),
                               content_type="application/json", headers=eu.auth)
        assert response.status_code == 204
    replica = CredentialReplica.objects.get(region__slug="eu-1", credential=credential)
    assert replica.revision == 1
    region = Region.objects.get(slug="eu-1")
    assert region.applied_revision == snapshot["revision"] and region.last_seen_at is not None
    sync_state = client.get(f"/api/v1/credentials/{credential.id}/sync",
                            headers=owner.auth).json()
    assert sync_state["synced_regions"] == 1 and sync_state["enabled_regions"] == 1
    credential_services.credential_update(actor=owner.user, membership=owner.membership,
                                          credential_id=credential.id, secret="rotated")
    stale = client.get(f"/api/v1/credentials/{credential.id}/sync", headers=owner.auth).json()
    assert stale["synced_regions"] == 0 and stale["regions"][0]["revision"] == 1


SNAPSHOT = "/api/v1/agent/snapshot?nonce=test-nonce-1"


def test_region_tokens(client: Client) -> None:
    eu = make_region("eu-1")
    assert client.get(SNAPSHOT, headers=eu.auth).status_code == 200
    new_token = services.region_rotate_token(actor=None, slug="eu-1")
    assert_api_error(client.get(SNAPSHOT, headers=eu.auth), 401,
                     "region_token_revoked")
    assert client.get(SNAPSHOT,
                      headers={"Authorization": f"Bearer {new_token}"}).status_code == 200
    assert_api_error(client.get(SNAPSHOT,
                                headers={"Authorization": "Bearer mrr_" + "x" * 43}), 401,
                     "region_token_invalid")
    assert_api_error(client.get(SNAPSHOT), 401, "not_authenticated")
    services.region_remove(actor=None, slug="eu-1")
    assert_api_error(client.get(SNAPSHOT,
                                headers={"Authorization": f"Bearer {new_token}"}), 401,
                     "region_token_invalid")
    assert eu.token not in database_text() and new_token not in database_text()


def test_an_account_token_is_not_a_region_token(client: Client, owner: Member) -> None:
    assert_api_error(client.get(SNAPSHOT, headers=owner.auth), 401,
                     "region_token_invalid")
    eu = make_region("eu-1")
    assert_api_error(client.get("/api/v1/credentials", headers=eu.auth), 401, "token_invalid")


def test_bad_parameters_are_clear_errors(client: Client) -> None:
    eu = make_region("eu-1")
    for query in ("since=-1", "since=0&wait=61", "since=x", ""):
        response = client.get(f"/api/v1/agent/changes?{query}", headers=eu.auth)
        assert_api_error(response, 422, "validation_error")


@pytest.mark.django_db(transaction=True)
def test_a_waiting_poll_wakes_on_a_change() -> None:
    owner = factories.make_account("Waker")
    eu = make_region("eu-1")
    _enable(owner, "eu-1")
    start = changelog.current_revision()[0]
    answer: dict[str, Any] = {}

    def poll() -> None:
        try:
            began = time.monotonic()
            answer["payload"] = eu.changes(Client(), start, wait=20)
            answer["seconds"] = time.monotonic() - began
        finally:
            close_old_connections()
            connection.close()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(1.0)
    make_credential(owner, name="wake-up")
    thread.join(timeout=30)
    assert [c["credential"]["name"] for c in answer["payload"]["changes"]] == ["wake-up"]
    assert answer["seconds"] < 5, answer["seconds"]  # woken, not timed out after 20 s


def test_an_idle_poll_answers_after_the_wait(client: Client) -> None:
    eu = make_region("eu-1")
    start = changelog.current_revision()[0]
    began = time.monotonic()
    payload = eu.changes(client, start, wait=1)
    assert 0.9 <= time.monotonic() - began < 5
    assert payload["changes"] == [] and payload["revision"] == start


def test_regions_api_shows_status_and_lag(client: Client, owner: Member) -> None:
    eu = make_region("eu-1")
    make_region("us-1")
    _enable(owner, "eu-1")
    eu.snapshot(client)
    regions = {r["slug"]: r for r in client.get("/api/v1/regions", headers=owner.auth).json()}
    assert regions["eu-1"]["status"] == "online" and regions["eu-1"]["enabled"] is True
    assert regions["us-1"]["status"] == "never_seen" and regions["us-1"]["enabled"] is False
    assert regions["us-1"]["lag_revisions"] == changelog.current_revision()[0]
