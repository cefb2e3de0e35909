"""Swarm regions on the control plane: the region's settings in the sync protocol, its
registry (checked, sealed, rotated with the keyring), the agent's runtime report (scoped to
what the region was sent) and the pages that show it."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from moorage import protocol
from moorage.apps.services import app_create
from moorage.deployments.models import Deployment
from moorage.errors import Conflict, ValidationFailed
from moorage.keys.services import keyring_retire, keyring_rotate
from moorage.regions import secrets as region_secrets
from moorage.regions import services
from moorage.regions.models import Region, RunningService
from moorage.regions.services import RegistryInput
from moorage.sealing import Keyring, key_id_of, open_sealed
from moorage.testing.credentials import make_credential
from moorage.testing.factories import PASSWORD, Member
from moorage.testing.regions import AgentView, deploy_one, make_region, member_in
from moorage.testing.registry import RegistryServer
from moorage.testing.secrets_search import database_text

pytestmark = pytest.mark.django_db


def _registry_user(registry: RegistryServer) -> RegistryInput:
    login = RegistryInput(registry.host, "region-" + secrets.token_hex(3),
                          "Region-Registry-Pw-" + secrets.token_hex(6))
    registry.add_user(login.username, login.password)
    return login


def _opened(settings: dict[str, Any], region: AgentView) -> str:
    """The registry password of a ``settings`` object, opened as the region's agent does."""
    registry = settings["registry"]
    aad = protocol.region_registry_aad(region=region.slug, revision=registry["revision"])
    return open_sealed(Keyring([region.key]), registry["secret"], aad).decode()


def test_the_runtime_and_the_registry_travel_in_the_snapshot_and_in_changes(
    client: Client, registry_basic: RegistryServer,
) -> None:
    login = _registry_user(registry_basic)
    plain = make_region("dk-1")
    assert plain.snapshot(client)["settings"] == {"runtime": "docker", "registry": None}

    sw = make_region("sw-1", runtime="swarm", registry=login)
    settings = sw.snapshot(client)["settings"]
    assert settings["runtime"] == "swarm"
    assert (settings["registry"]["host"], settings["registry"]["username"],
            settings["registry"]["revision"]) == (registry_basic.host, login.username, 1)
    assert _opened(settings, sw) == login.password
    assert login.password not in json.dumps(settings)
    assert login.password not in database_text()
    start = sw.snapshot(client)["revision"]

    rotated = RegistryInput(login.host, login.username, "Rotated-" + login.password)
    registry_basic.set_password(login.username, rotated.password)
    services.region_update(actor=None, slug="sw-1", registry=rotated)
    [change] = sw.changes(client, start)["changes"]
    assert change["op"] == "region.upsert" and change["settings"]["registry"]["revision"] == 2
    assert _opened(change["settings"], sw) == rotated.password
    assert plain.changes(client, start)["changes"] == []  # another region's settings

    services.region_update(actor=None, slug="sw-1", clear_registry=True)
    [change] = sw.changes(client, start + 1)["changes"]
    assert change["settings"] == {"runtime": "swarm", "registry": None}


def test_a_registry_is_checked_with_the_registry_before_it_is_saved(
    registry_basic: RegistryServer,
) -> None:
    login = _registry_user(registry_basic)
    make_region("sw-1", runtime="swarm")
    wrong = RegistryInput(login.host, login.username, "not-" + login.password)
    with pytest.raises(ValidationFailed) as raised:
        services.region_update(actor=None, slug="sw-1", registry=wrong)
    assert raised.value.code == "region_registry_rejected"
    assert wrong.password not in raised.value.message
    region = Region.objects.get(slug="sw-1")
    assert (region.registry, region.registry_revision) == ("", 0)  # nothing saved
    with pytest.raises(ValidationFailed) as raised:
        services.region_update(actor=None, slug="sw-1", registry=RegistryInput(
            "127.0.0.1:9", login.username, login.password))
    assert raised.value.code == "region_registry_unreachable"
    with pytest.raises(ValidationFailed) as raised:
        services.region_update(actor=None, slug="sw-1", registry=RegistryInput(
            "not a host", login.username, login.password))
    assert raised.value.code == "region_registry_invalid"
    with pytest.raises(ValidationFailed) as raised:
        services.region_update(actor=None, slug="sw-1", registry=RegistryInput(
            login.host, "", login.password))
    assert raised.value.code == "region_registry_incomplete"
    with pytest.raises(ValidationFailed) as raised:
        services.region_update(actor=None, slug="sw-1", runtime="kubernetes")
    assert raised.value.code == "region_runtime_invalid"


def test_the_runtime_does_not_change_under_deployments() -> None:
    region = make_region("dk-1")
    member = member_in(region, "Deployed")
    app = app_create(actor=member.user, membership=member.membership, name="api",
                     image="registry.example.com/a/b:1", runtime_pull="none")
    deploy_one(member, app.pk)
    with pytest.raises(Conflict) as raised:
        services.region_update(actor=None, slug="dk-1", runtime="swarm")
    assert raised.value.code == "region_runtime_in_use"
    make_region("empty-1")
    assert services.region_update(actor=None, slug="empty-1", runtime="swarm").runtime == "swarm"


def test_key_rotation_reseals_the_region_registry_password(
    key_file: Path, registry_basic: RegistryServer,
) -> None:
    login = _registry_user(registry_basic)
    make_region("sw-1", runtime="swarm", registry=login)
    old = key_id_of(Region.objects.get(slug="sw-1").registry_password_sealed)
    rotation = keyring_rotate()
    region = Region.objects.get(slug="sw-1")
    assert key_id_of(region.registry_password_sealed) == rotation.primary != old
    assert region_secrets.open_registry_password(region) == login.password
    keyring_retire(key_id=old)  # nothing is left sealed with it
    assert region_secrets.open_registry_password(region) == login.password


# ----- the runtime report


def _report(client: Client, region: AgentView, body: dict[str, Any]) -> Any:
    return client.post("/api/v1/agent/runtime", json.dumps(body),
                       content_type="application/json", headers=region.auth)


def _service(app_id: int, account_id: int, *, running: int = 3, desired: int = 3,
             credential: tuple[int, int] | None = None) -> dict[str, Any]:
    return {"account_id": account_id, "app_id": app_id, "deployment_id": 7,
            "name": f"moorage-x-{app_id}", "running": running, "desired": desired,
            "credential_id": credential[0] if credential else None,
            "credential_revision": credential[1] if credential else None}


NODES = [{"id": "n1", "hostname": "a", "address": "10.0.0.1", "role": "manager",
          "state": "ready", "availability": "active", "leader": True},
         {"id": "n2", "hostname": "b", "address": "10.0.0.2", "role": "worker",
          "state": "down", "availability": "active", "leader": False}]


def test_a_runtime_report_is_taken_only_for_what_the_region_was_sent(client: Client) -> None:
    sw, other = make_region("sw-1", runtime="swarm"), make_region("us-1")
    acme, globex = member_in(sw, "Acme"), member_in(other, "Globex")
    mine = make_credential(acme, name="reg", server="registry.example.com")
    theirs = make_credential(globex, name="theirs", server="registry.example.com")
    api = app_create(actor=acme.user, membership=acme.membership, name="api",
                     image="registry.example.com/a/api:1", runtime_pull="none")
    never = app_create(actor=acme.user, membership=acme.membership, name="never",
                       image="registry.example.com/a/never:1", runtime_pull="none")
    elsewhere = app_create(actor=globex.user, membership=globex.membership, name="web",
                           image="registry.example.com/g/web:1", runtime_pull="none")
    deploy_one(acme, api.pk)
    deploy_one(globex, elsewhere.pk)
    body = {"runtime": "swarm", "nodes": NODES, "services": [
        _service(api.pk, acme.account.pk, running=2, credential=(theirs.pk, 1)),
        _service(never.pk, acme.account.pk),  # never deployed in this region
        _service(elsewhere.pk, globex.account.pk),  # an account not enabled here
    ]}
    assert _report(client, sw, body).status_code == 204
    [row] = RunningService.objects.all()
    assert (row.app_id, row.running, row.desired, row.credential_id) == (api.pk, 2, 3, None)
    assert Region.objects.get(slug="sw-1").nodes == NODES

    body["services"] = [_service(api.pk, acme.account.pk, credential=(mine.pk, 1))]
    assert _report(client, sw, body).status_code == 204  # a report replaces the last one
    [row] = RunningService.objects.all()
    assert (row.running, row.credential_id, row.credential_revision) == (3, mine.pk, 1)
    sync = client.get(f"/api/v1/credentials/{mine.pk}/sync", headers=acme.auth).json()
    assert [(r["services"], r["services_applied"]) for r in sync["regions"]] == [(1, 1)]

    bad = _report(client, sw, {"runtime": "swarm", "services": [{"app_id": "x"}]})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    half = _report(client, sw, {"runtime": "swarm", "services": [
        _service(api.pk, acme.account.pk) | {"credential_id": mine.pk}]})
    assert half.status_code == 422 and half.json()["code"] == "runtime_report_invalid"
    assert "a credential without a revision" in half.json()["message"]
    assert _report(client, AgentView("sw-1", "mrr_" + "x" * 43, sw.key),
                   body).status_code == 401
    assert RunningService.objects.count() == 1


def _login(client: Client, member: Member) -> Client:
    client.post("/login/", {"email": member.user.email, "password": PASSWORD})
    return client


def test_pages_show_nodes_replicas_and_the_gap_of_one_replica_with_a_port(
    client: Client, registry_basic: RegistryServer,
) -> None:
    sw = make_region("sw-1", runtime="swarm", registry=_registry_user(registry_basic))
    acme = member_in(sw, "Acme")
    app = app_create(actor=acme.user, membership=acme.membership, name="api",
                     image="registry.example.com/a/api:1", runtime_pull="none", port=8080)
    deployment = deploy_one(acme, app.pk)
    report = {"runtime": "swarm", "nodes": NODES, "services": [
        _service(app.pk, acme.account.pk, running=1, desired=1) | {
            "deployment_id": deployment.pk}]}
    assert _report(Client(), sw, report).status_code == 204

    regions = " ".join(_login(client, acme).get("/regions/").content.decode().split())
    assert "Docker Swarm" in regions and "2 nodes, 1 ready" in regions
    assert re.search(r'data-node="n2">.*?data-testid="node-state">down<', regions)
    assert f"registry <code>{registry_basic.host}</code>" in regions
    page = " ".join(client.get(f"/apps/{app.pk}/").content.decode().split())
    assert re.search(r'data-region="sw-1"><strong>sw-1</strong> <span class="muted">Docker '
                     r'Swarm</span>: <span data-testid="replicas-running">1/1</span>', page)
    assert "One replica with a port in sw-1" in page
    assert 'name="replicas" value="1"' in page

    saved = client.post(f"/apps/{app.pk}/", {
        "name": "api", "source": "image", "image": "registry.example.com/a/api:1",
        "pull": "none", "port": "8080", "replicas": "3", "regions": ["sw-1"]})
    assert saved.status_code == 302, saved.content.decode()[:500]
    app.refresh_from_db()
    assert app.replicas == 3
    page = " ".join(client.get(f"/apps/{app.pk}/").content.decode().split())
    assert "One replica with a port" not in page
    assert Deployment.objects.count() == 1
