"""Rotating a region key through the real sync API (``docs/sync.md``, "Rotating a region key"):
the new key waits beside the old one, answers use the key the agent says it holds, and the
new key replaces the old only when the agent proves it holds it. Real agent processes go
through the same rotation in ``test_faults.py``."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from django.test import Client

from moorage import protocol
from moorage.audit.models import AuditEvent
from moorage.errors import NotFound
from moorage.regions import services
from moorage.regions.models import Region
from moorage.sealing import Key, Keyring, open_sealed
from moorage.testing.api_checks import assert_api_error
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, make_region
from moorage.testing.secrets_search import database_text

pytestmark = pytest.mark.django_db


def _get(client: Client, view: AgentView, key_id: str | None, path: str) -> Any:
    headers = dict(view.auth)
    if key_id is not None:
        headers[protocol.KEY_HEADER] = key_id
    nonce = secrets.token_urlsafe(12)
    separator = "&" if "?" in path else "?"
    return client.get(f"{path}{separator}nonce={nonce}", headers=headers)


def _snapshot(client: Client, view: AgentView, key: Key) -> dict[str, Any]:
    response = _get(client, view, key.id, "/api/v1/agent/snapshot")
    assert response.status_code == 200, response.content
    return protocol.verify(response.json(), key)


def _ack(client: Client, view: AgentView, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/agent/ack", json.dumps(body), content_type="application/json",
                       headers=view.auth)


def test_a_rotation_waits_for_the_agent_then_replaces_the_key(
    client: Client, owner: Member
) -> None:
    eu = make_region("eu-1")
    services.account_regions_set(actor=owner.user, membership=owner.membership, slugs=["eu-1"])
    credential = make_credential(owner, secret="Rotating-Region-Pw")
    rotation = services.region_rotate_key(actor=None, slug="eu-1")
    new = rotation.key
    assert new.id != eu.key.id and rotation.replaced is None
    region = Region.objects.get(slug="eu-1")
    assert (region.key_id, region.next_key_id) == (eu.key.id, new.id)

    # The running agent carries on with the old key, with or without saying which it holds.
    assert eu.snapshot(client)["revision"] >= 1
    _snapshot(client, eu, eu.key)
    # Restarted with the new key file, it gets answers signed and sealed with the new key.
    snapshot = _snapshot(client, eu, new)
    [sent] = snapshot["credentials"]
    aad = protocol.region_secret_aad(region="eu-1", account_id=owner.account.pk,
                                     credential_id=credential.pk, revision=1)
    assert open_sealed(Keyring([new]), sent["secret"], aad) == b"Rotating-Region-Pw"
    changes = _get(client, eu, new.id, f"/api/v1/agent/changes?since={snapshot['revision']}"
                                       "&wait=0")
    assert protocol.verify(changes.json(), new)["snapshot_required"] is False

    # A snapshot ack with a wrong proof changes nothing...
    body = {"revision": snapshot["revision"], "snapshot": True,
            "credentials": {str(credential.pk): 1}, "key_id": new.id,
            "key_proof": protocol.key_proof(eu.key, region="eu-1")}
    assert_api_error(_ack(client, eu, body), 422, "region_key_proof_invalid")
    assert Region.objects.get(slug="eu-1").key_id == eu.key.id
    # ...the right one completes the rotation: the old key is forgotten.
    body["key_proof"] = protocol.key_proof(new, region="eu-1")
    assert _ack(client, eu, body).status_code == 204
    region = Region.objects.get(slug="eu-1")
    assert (region.key_id, region.next_key_id, region.next_key_sealed) == (new.id, "", "")
    assert _ack(client, eu, body).status_code == 204  # idempotent
    assert [e.details for e in AuditEvent.objects.filter(
        action__startswith="region.key_").order_by("id")] == [
        {"slug": "eu-1", "current_key_id": eu.key.id, "new_key_id": new.id,
         "replaced_key_id": None},
        {"slug": "eu-1", "key_id": new.id, "retired_key_id": eu.key.id},
    ]

    # The old key is refused by name, so an agent still holding it stops and says why.
    refused = assert_api_error(_get(client, eu, eu.key.id, "/api/v1/agent/snapshot"), 409,
                               "region_key_unknown")
    assert f"The agent holds region key {eu.key.id!r}, which is not a key of region " \
        "'eu-1'" in refused["message"]
    assert refused["detail"] == {"region": "eu-1", "key_id": new.id, "next_key_id": None}
    # An agent that says nothing is answered with the region's key: the new one.
    plain = _get(client, eu, None, "/api/v1/agent/snapshot")
    assert protocol.verify(plain.json(), new)["region"] == "eu-1"
    assert new.encoded().split(":")[1] not in database_text()


def test_rotating_again_replaces_a_key_the_agent_never_took(client: Client) -> None:
    eu = make_region("eu-1")
    first = services.region_rotate_key(actor=None, slug="eu-1").key
    second = services.region_rotate_key(actor=None, slug="eu-1")
    assert second.replaced == first.id
    assert Region.objects.get(slug="eu-1").next_key_id == second.key.id
    assert_api_error(_get(client, eu, first.id, "/api/v1/agent/snapshot"), 409,
                     "region_key_unknown")
    _snapshot(client, eu, second.key)
    _snapshot(client, eu, eu.key)


def test_key_ids_the_agent_sends_are_checked(client: Client) -> None:
    eu = make_region("eu-1")
    for bad in ("Not A Key", "x" * 40, "../key"):
        assert_api_error(_get(client, eu, bad, "/api/v1/agent/snapshot"), 422,
                         "region_key_id_invalid")
    assert_api_error(_get(client, eu, "other-key", "/api/v1/agent/changes?since=0&wait=0"),
                     409, "region_key_unknown")
    ack = {"revision": 0, "snapshot": True, "key_id": "other-key", "key_proof": "x"}
    assert_api_error(_ack(client, eu, ack), 409, "region_key_unknown")
    ack_without_proof = {"revision": 0, "snapshot": False, "key_id": "other-key"}
    assert_api_error(_ack(client, eu, ack_without_proof), 409, "region_key_unknown")
    with pytest.raises(NotFound) as missing:
        services.region_rotate_key(actor=None, slug="nowhere")
    assert missing.value.code == "region_not_found"
