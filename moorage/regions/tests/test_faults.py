"""Region sync under faults, with real processes: a control plane under uvicorn (its own
SQLite file, or a fresh PostgreSQL database when the suite runs on PostgreSQL) and three
``moorage agent`` processes long-polling it (``--wait 2``). Agent ``r3`` talks through a
man-in-the-middle proxy that can tamper with its answers.

State is set up with the CLI and small Django snippets against the control plane's database;
credentials change through the real REST API. Convergence is read from each agent's replica
(opened beside the running agent) and from the API. The module shares one control plane and
its agents; the tests run in file order and each leaves every agent running and in sync.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from moorage import protocol
from moorage.agent.replica import Replica
from moorage.private_files import write_private
from moorage.sealing import Keyring, SealedDataError, open_sealed, parse_keys
from moorage.testing.ports import LOOPBACK
from moorage.testing.processes import (
    AgentProcess,
    ControlPlane,
    database_like_this_session,
    wait_until,
)
from moorage.testing.secrets_search import files_containing

SLUGS = ("r1", "r2", "r3")
OWNER_PASSWORD = "Faults-Owner-Password-7c1e"
SECRET_PREFIX = "Faults-Pw-"
CONVERGE = 20.0  # seconds: a change reaches every agent in well under one; slack for CI

# The control plane's side, read from its database: the change log's revision, and per
# region the enabled accounts, their credentials and what the region's agent acknowledged.
PLANE_STATE = """
from moorage.credentials.models import Credential
from moorage.regions import changelog
from moorage.regions.models import AccountRegion, CredentialReplica, Region

result = {"revision": changelog.current_revision()[0], "regions": {}}
for region in Region.objects.all():
    ids = sorted(AccountRegion.objects.filter(region=region)
                 .values_list("account_id", flat=True))
    result["regions"][region.slug] = {
        "accounts": ids,
        "credentials": {c.pk: [c.revision, c.is_default, c.account_id]
                        for c in Credential.objects.filter(account_id__in=ids)},
        "held": dict(CredentialReplica.objects.filter(region=region)
                     .values_list("credential_id", "revision")),
    }
"""

MAKE_ACCOUNT = """
from moorage.accounts import services
from moorage.accounts.models import Membership
from moorage.regions.services import account_regions_set

user, _ = services.user_create(actor=None, email=data["email"])
account = services.account_create(actor=user, name=data["name"])
membership = Membership.objects.get(user=user, account=account)
account_regions_set(actor=user, membership=membership, slugs=data["regions"])
_, token = services.api_token_create(actor=user, membership=membership, name="faults")
result = {"id": account.pk, "token": token}
"""

REGION_KEYS = """
from moorage.regions.models import Region

result = {r.slug: [r.key_id, r.next_key_id] for r in Region.objects.all()}
"""

# In a fresh process: open every sealed value, and check that the app still deploys: its
# deployment, made and rolled back here so no agent runs it, reaches region r1 with its
# secret env value sealed for the region. Secrets come in on standard input, never out.
OPENS_AND_DEPLOYS = """
from django.db import transaction

from moorage.accounts.models import Membership
from moorage.apps.models import App
from moorage.apps.services import open_env
from moorage.deployments.services import deployment_create
from moorage.keys.registry import SEALED_FIELDS
from moorage.keys.services import keyring_usage
from moorage.regions import sync
from moorage.regions.models import Region

opened = {s.label: len([s.open(row) for row in s.rows()]) for s in SEALED_FIELDS}
app = App.objects.get(name=data["app"])
env_opens = all(open_env(v) == data["env"][v.name] for v in app.env.select_related("app"))


class Rollback(Exception):
    pass


try:
    with transaction.atomic():
        owner = Membership.objects.select_related("user", "account").get(
            account=app.account, role="owner")
        [deployment] = deployment_create(actor=owner.user, membership=owner,
                                         app_id=app.pk)
        envelope = sync.snapshot(region=Region.objects.get(slug="r1"), nonce="rotation-check")
        raise Rollback
except Rollback:
    pass
result = {"opened": opened, "env_opens": env_opens, "unknown": keyring_usage().unknown,
          "envelope": envelope, "deployment": deployment.pk}
"""

SET_REGIONS = """
from moorage.accounts.models import Membership
from moorage.regions.services import account_regions_set

membership = Membership.objects.select_related("user", "account").get(
    account_id=data["account"])
account_regions_set(actor=membership.user, membership=membership, slugs=data["regions"])
"""


class TamperingProxy:
    """A man in the middle (test-only): forwards an agent's requests to the control plane and,
    while ``mode`` is set, spoils every ``changes`` answer: ``"flip"`` flips one byte of the
    signed payload, ``"garble"`` cuts the answer in half. It records what it spoiled."""

    def __init__(self, upstream: str) -> None:
        self.mode: str | None = None
        self.spoiled: list[dict[str, Any]] = []  # the original payloads
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=upstream, trust_env=False, timeout=80.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._forward(self)

            def do_POST(self) -> None:
                proxy._forward(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def tamper(self, mode: str | None) -> None:
        with self._lock:
            self.mode = mode

    def spoiled_count(self) -> int:
        with self._lock:
            return len(self.spoiled)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {name: value for name in ("Authorization", "Content-Type", "Accept",
                                            "User-Agent")
                   if (value := handler.headers.get(name))}
        try:
            answer = self._http.request(handler.command, handler.path, content=body,
                                        headers=headers)
            status, content = answer.status_code, answer.content
            kind = answer.headers.get("content-type", "application/json")
        except httpx.TransportError as exc:
            status, kind = 502, "application/json"
            content = json.dumps({"code": "bad_gateway", "message": type(exc).__name__,
                                  "detail": {}}).encode()
        if status == 200 and handler.path.startswith("/api/v1/agent/changes"):
            content = self._spoil(content)
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", kind)
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            if content:
                handler.wfile.write(content)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent was stopped while it waited

    def _spoil(self, content: bytes) -> bytes:
        with self._lock:
            mode = self.mode
            if mode is None:
                return content
            envelope = json.loads(content)
            body = bytearray(base64.urlsafe_b64decode(envelope["payload"]))
            self.spoiled.append(json.loads(body))
        if mode == "garble":
            return content[: len(content) // 2]
        body[len(body) // 2] ^= 0x01
        envelope["payload"] = base64.urlsafe_b64encode(bytes(body)).decode()
        return json.dumps(envelope).encode()


@dataclass
class World:
    """The control plane, its agents, an API client of the owner's account, and every
    password the tests used (searched for at the end)."""

    plane: ControlPlane
    agents: dict[str, AgentProcess]
    proxy: TamperingProxy
    api: httpx.Client
    passwords: list[str] = field(default_factory=lambda: [OWNER_PASSWORD])

    def password(self) -> str:
        value = SECRET_PREFIX + secrets.token_hex(8)
        self.passwords.append(value)
        return value

    def plane_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.plane.django(PLANE_STATE)
        for region in state["regions"].values():  # JSON keys are strings
            region["credentials"] = {int(k): v for k, v in region["credentials"].items()}
            region["held"] = {int(k): v for k, v in region["held"].items()}
        return state


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("faults")
    with ExitStack() as stack:
        database_url = stack.enter_context(database_like_this_session())
        plane = ControlPlane(root / "control-plane", database_url=database_url)
        plane.moorage("init", "--email", "owner@example.com", "--account", "Harbour",
                      "--password-stdin", input=OWNER_PASSWORD + "\n")
        # `init` makes the embedded `local` region; these tests run their own three.
        plane.moorage("regions", "remove", "local", "--yes")
        for slug in SLUGS:
            plane.moorage("regions", "add", slug, "--agent-dir", str(root / "agent-files" / slug),
                          "--for-all-accounts")
        token = plane.moorage("tokens", "create", "--name", "faults").stdout.strip()
        # On the session's database engine: PostgreSQL when DATABASE_URL says so.
        assert (plane.data_dir / "moorage.sqlite3").exists() == (database_url is None)
        stack.callback(plane.stop)
        plane.start()
        proxy = TamperingProxy(plane.url)
        stack.callback(proxy.close)
        agents = {}
        for slug in SLUGS:
            agents[slug] = AgentProcess(root / "agents" / slug,
                                        agent_dir=root / "agent-files" / slug,
                                        url=proxy.url if slug == "r3" else plane.url,
                                        env=plane.env, wait=2)
            stack.callback(agents[slug].stop)
            agents[slug].start()
        api = stack.enter_context(httpx.Client(
            base_url=plane.url + "/api/v1", headers={"Authorization": f"Bearer {token}"},
            trust_env=False, timeout=30.0))
        world = World(plane=plane, agents=agents, proxy=proxy, api=api)
        wait_each(agents.values(), lambda a: replica_view(a) is not None, "the first snapshot")
        yield world


# -- reading the two sides ---------------------------------------------------------------------

def replica_view(agent: AgentProcess) -> dict[str, Any] | None:
    """What the agent's replica holds, read consistently (``None`` before its snapshot, or
    when a batch landed between the reads)."""
    if not (agent.data_dir / "replica.sqlite3").exists():
        return None
    with agent.replica() as replica:
        before = replica.revision()
        if before is None:
            return None
        credentials = {}
        for credential_id in replica.credentials_held():
            c = replica.get_credential(credential_id)
            credentials[c.id] = [c.revision, c.is_default, c.account_id]
        view = {"revision": before, "accounts": sorted(replica.accounts()),
                "credentials": credentials}
        return view if replica.revision() == before else None


def held(agent: AgentProcess) -> dict[int, list[Any]]:
    view = replica_view(agent)
    return view["credentials"] if view else {}


def create(api: httpx.Client, name: str, password: str) -> dict[str, Any]:
    response = api.post("/credentials", json={"name": name, "server": "registry.example.com",
                                              "username": "robot", "secret": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def rotate(api: httpx.Client, credential_id: int, password: str) -> dict[str, Any]:
    response = api.patch(f"/credentials/{credential_id}", json={"secret": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sync_state(api: httpx.Client, credential_id: int) -> dict[str, Any]:
    response = api.get(f"/credentials/{credential_id}/sync")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_synced(world: World, credential: dict[str, Any], regions: int = 3,
                api: httpx.Client | None = None) -> None:
    """Until ``/credentials/{id}/sync`` says ``regions`` regions hold its current revision."""
    def synced() -> dict[str, Any] | None:
        state = sync_state(api or world.api, credential["id"])
        done = state["revision"] == credential["revision"] \
            and state["synced_regions"] == state["enabled_regions"] == regions
        return state if done else None

    wait_until(synced, timeout=CONVERGE, what=f"credential {credential['id']} r"
               f"{credential['revision']} in {regions} regions")


def wait_caught_up(world: World) -> dict[str, Any]:
    """Until every agent's replica is at the control plane's revision; returns the plane's
    state (read once, after: nothing changes meanwhile)."""
    def caught_up() -> bool:
        regions = {r["slug"]: r for r in world.api.get("/regions").json()}
        for slug, agent in world.agents.items():
            view = replica_view(agent)
            region = regions[slug]
            if view is None or region["lag_revisions"] != 0 \
                    or view["revision"] != region["applied_revision"]:
                return False
        return True

    wait_until(caught_up, timeout=CONVERGE, what="every agent at the latest revision")
    return world.plane_state()


def assert_replicas_equal_the_plane(world: World, plane: dict[str, Any]) -> None:
    for slug, agent in world.agents.items():
        view = replica_view(agent)
        expected = plane["regions"][slug]
        assert view is not None
        assert view["revision"] == plane["revision"], slug
        assert view["accounts"] == expected["accounts"], slug
        assert view["credentials"] == expected["credentials"], slug
        # ... and the control plane knows it: the acks got through.
        assert expected["held"] == {k: v[0] for k, v in view["credentials"].items()}, slug


def wait_each(agents: Iterable[AgentProcess], check: Callable[[AgentProcess], object],
              what: str) -> None:
    """Until ``check(agent)`` is truthy for every agent, one after the other."""
    for agent in agents:
        wait_until(partial(check, agent), timeout=CONVERGE, what=f"{what} in {agent.root.name}")


def log_since(agent: AgentProcess, offset: int) -> str:
    return agent.log()[offset:]


# -- the tests ----------------------------------------------------------------------------------

def test_three_agents_converge_on_create_rotate_set_default_delete(world: World) -> None:
    first_password, second_password = world.password(), world.password()
    first = create(world.api, "converge-first", first_password)
    second = create(world.api, "converge-second", second_password)
    assert first["is_default"] and not second["is_default"]
    for credential in (first, second):
        wait_synced(world, credential)
    for agent in world.agents.values():
        assert held(agent)[first["id"]][:2] == [1, True]
        assert held(agent)[second["id"]][:2] == [1, False]
        with agent.replica() as replica:
            assert replica.open_secret(first["id"]).password == first_password

    rotated_password = world.password()
    rotated = rotate(world.api, first["id"], rotated_password)
    assert rotated["revision"] == 2
    wait_synced(world, rotated)
    for agent in world.agents.values():
        assert held(agent)[first["id"]][0] == 2
        with agent.replica() as replica:  # the new secret, not the old one
            assert replica.open_secret(first["id"]).password == rotated_password

    response = world.api.post(f"/credentials/{second['id']}/set-default")
    assert response.status_code == 200 and response.json()["is_default"]
    wait_each(world.agents.values(), lambda a: held(a).get(second["id"], [0, False])[1]
              and not held(a)[first["id"]][1], "the new default")

    assert world.api.delete(f"/credentials/{first['id']}").status_code == 204
    wait_each(world.agents.values(), lambda a: first["id"] not in held(a), "the deletion")
    for agent in world.agents.values():  # becoming the default is a revision of its own
        assert held(agent)[second["id"]][:2] == [2, True]
    assert world.api.get(f"/credentials/{first['id']}/sync").status_code == 404
    assert_replicas_equal_the_plane(world, wait_caught_up(world))


def test_an_agent_killed_mid_sync_catches_up_with_nothing_lost_or_doubled(world: World) -> None:
    victim = world.agents["r1"]
    start = replica_view(victim)
    assert start is not None
    made: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def burst() -> None:  # 30 changes: 10 creates, 10 rotations, 5 defaults, 5 deletions
        try:
            for n in range(10):
                made.append(create(world.api, f"burst-{n}", world.password()))
            for credential in made:
                rotate(world.api, credential["id"], world.password())
            for credential in made[:5]:
                assert world.api.post(
                    f"/credentials/{credential['id']}/set-default").status_code == 200
            for credential in made[5:]:
                assert world.api.delete(f"/credentials/{credential['id']}").status_code == 204
        except BaseException as exc:  # re-raised in the test's thread
            failures.append(exc)

    changes = threading.Thread(target=burst)
    changes.start()
    try:
        # Kill it as soon as it is applying the burst: mid-sync, with more on the way.
        wait_until(lambda: (replica_view(victim) or start)["revision"] > start["revision"],
                   timeout=CONVERGE, what="the victim to start applying the burst",
                   interval=0.02)
        victim.kill()
        at_kill = replica_view(victim)
    finally:
        changes.join()
    assert not failures, failures
    assert at_kill is not None
    assert victim.process is not None and victim.process.returncode == -9

    restarted_at = len(victim.log())
    victim.start()
    plane = wait_caught_up(world)
    assert at_kill["revision"] < plane["revision"]  # it was killed behind
    assert_replicas_equal_the_plane(world, plane)
    for n, credential in enumerate(made[:5]):
        state = sync_state(world.api, credential["id"])
        # created 1, rotated 2, made default 3, then (but the last) no longer default 4
        assert state["revision"] == (4 if n < 4 else 3), state
        assert state["synced_regions"] == 3, state
    after = log_since(victim, restarted_at)
    # It resumed from the revision it held (no snapshot: nothing was lost to force one).
    assert "took a snapshot" not in after
    assert "applied revision" in after


def test_a_tampered_or_garbled_payload_is_rejected_logged_and_not_applied(
    world: World
) -> None:
    target = world.agents["r3"]  # the one behind the proxy
    wait_caught_up(world)
    before = replica_view(target)
    offset = len(target.log())
    world.proxy.tamper("flip")
    try:
        credential = create(world.api, "tamper-me", world.password())

        def spoiled_with_it() -> bool:
            return any(change.get("credential", {}).get("id") == credential["id"]
                       for payload in world.proxy.spoiled for change in payload["changes"])

        wait_until(spoiled_with_it, timeout=CONVERGE, what="a tampered answer with the change")
        wait_until(lambda: "rejected a payload that failed its integrity check, retrying in"
                   in log_since(target, offset),
                   timeout=CONVERGE, what="the rejection in the agent's log")
        # The change is there to take...
        wait_each([world.agents["r1"], world.agents["r2"]],
                  lambda a: credential["id"] in held(a), "the change")
        assert replica_view(target) == before  # ... but not from a tampered answer

        garbled_from = world.proxy.spoiled_count()
        world.proxy.tamper("garble")
        wait_until(lambda: world.proxy.spoiled_count() > garbled_from, timeout=CONVERGE,
                   what="a garbled answer")
        wait_until(lambda: "the answer is not JSON" in log_since(target, offset),
                   timeout=CONVERGE, what="the garbled answer's rejection in the log")
        assert replica_view(target) == before
    finally:
        world.proxy.tamper(None)

    log = log_since(target, offset)
    assert "rejected a payload that failed its integrity check, retrying in" in log
    assert "the payload failed its integrity check" in log
    assert target.process is not None and target.process.poll() is None  # still running
    wait_synced(world, credential)
    assert credential["id"] in held(target)
    assert_replicas_equal_the_plane(world, wait_caught_up(world))


def test_regions_are_isolated(world: World) -> None:
    r1, r2, r3 = (world.agents[s] for s in SLUGS)
    # The control plane answers r1's token with r1's data only, signed with r1's key.
    token = (r1.agent_dir / "token").read_text().strip()
    for path in ("/agent/snapshot?nonce=isolation-1",
                 "/agent/changes?since=0&wait=0&nonce=isolation-2"):
        answer = httpx.get(world.plane.url + "/api/v1" + path, trust_env=False,
                           headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert protocol.verify(answer.json(), r1.key)["region"] == "r1"
        with pytest.raises(protocol.TamperedPayload):
            protocol.verify(answer.json(), r2.key)
    # With another region's key, none of r1's sealed secrets opens.
    some_id = next(iter(held(r1)))
    foreign = Replica(r1.data_dir / "replica.sqlite3", r2.key)
    try:
        with pytest.raises(SealedDataError):
            foreign.open_secret(some_id)
    finally:
        foreign.close()

    # An account enabled only in r2 reaches r2 only.
    other = world.plane.django(MAKE_ACCOUNT, {"email": "globex@example.com", "name": "Globex",
                                              "regions": ["r2"]})
    globex = httpx.Client(base_url=world.plane.url + "/api/v1", trust_env=False,
                          headers={"Authorization": f"Bearer {other['token']}"})
    with globex:
        password = world.password()
        credential = create(globex, "globex-hub", password)
        wait_synced(world, credential, regions=1, api=globex)
        assert sync_state(globex, credential["id"])["regions"][0]["region"] == "r2"
        wait_until(lambda: credential["id"] in held(r2), timeout=CONVERGE, what="r2 holds it")
        with r2.replica() as replica:
            assert replica.open_secret(credential["id"]).password == password
        plane = wait_caught_up(world)
        assert_replicas_equal_the_plane(world, plane)
        for agent in (r1, r3):  # at the latest revision, and nothing of Globex
            view = replica_view(agent)
            assert view is not None and other["id"] not in view["accounts"]
            assert all(c[2] != other["id"] for c in view["credentials"].values())

        # Disabling the account for r2 removes it from r2's replica.
        world.plane.django(SET_REGIONS, {"account": other["id"], "regions": []})
        wait_until(lambda: other["id"] not in (replica_view(r2) or {"accounts": [other["id"]]})
                   ["accounts"], timeout=CONVERGE, what="Globex gone from r2")
        assert credential["id"] not in held(r2)
        state = sync_state(globex, credential["id"])
        assert state["enabled_regions"] == 0 and state["regions"] == []
        plane = wait_caught_up(world)
        assert plane["regions"]["r2"]["held"].get(credential["id"]) is None
        assert_replicas_equal_the_plane(world, plane)


def test_agents_ride_out_a_control_plane_restart(world: World) -> None:
    offsets = {slug: len(agent.log()) for slug, agent in world.agents.items()}
    port = world.plane.port
    world.plane.kill()
    wait_each(world.agents.values(), lambda a: "control plane unreachable, retrying in"
              in log_since(a, offsets[a.root.name]), "the outage logged")
    world.plane.start(port=port)
    assert world.plane.port == port
    credential = create(world.api, "after-restart", world.password())
    wait_synced(world, credential)
    for agent in world.agents.values():
        assert agent.process is not None and agent.process.poll() is None
    assert_replicas_equal_the_plane(world, wait_caught_up(world))


def test_a_revoked_token_stops_the_agent_with_exit_code_3(world: World) -> None:
    agent = world.agents["r2"]
    offset = len(agent.log())
    # The new token goes to the agent's token file; the running agent still holds the old.
    world.plane.moorage("regions", "rotate-token", "r2", "--agent-dir", str(agent.agent_dir))
    assert agent.wait_exit(timeout=CONVERGE) == 3
    log = log_since(agent, offset)
    assert "the region token was rotated or the region removed" in log
    assert "The token of region 'r2' was rotated; give the agent the new one." in log
    assert "stopping" in log

    agent.start()  # with the new token it carries on from its replica
    credential = create(world.api, "after-rotation", world.password())
    wait_synced(world, credential)
    assert "took a snapshot" not in log_since(agent, offset)


def test_a_region_key_rotation_reaches_the_running_agent_without_losing_anything(
    world: World,
) -> None:
    agent = world.agents["r1"]
    old = agent.key
    offset = len(agent.log())
    rotated = world.plane.moorage("regions", "rotate-key", "r1", "--agent-dir",
                                  str(agent.agent_dir))
    assert "keeps the current key" in rotated.stderr
    new = agent.key  # the agent's key file now holds the new key; the agent still the old
    assert new.id != old.id
    assert world.plane.django(REGION_KEYS)["r1"] == [old.id, new.id]

    # The running agent carries on undisturbed with the old key.
    before_password = world.password()
    before = create(world.api, "before-key-switch", before_password)
    wait_synced(world, before)

    # Restarted with the new key file, it drops what the old key sealed, takes a fresh
    # snapshot sealed with the new key and proves it holds it: the old key is forgotten.
    agent.stop()
    agent.start()
    wait_until(lambda: world.plane.django(REGION_KEYS)["r1"] == [new.id, ""], timeout=CONVERGE,
               what="the control plane to take r1's new key", interval=0.5)
    log = log_since(agent, offset)
    assert f"the region key changed from {old.id} to {new.id}" in log
    assert "took a snapshot" in log
    after_password = world.password()
    after = create(world.api, "after-key-switch", after_password)
    wait_synced(world, after)
    with agent.replica() as replica:  # opened with the new key
        assert replica.open_secret(before["id"]).password == before_password
        assert replica.open_secret(after["id"]).password == after_password

    # An agent still holding the old key is told so, by name, and stops (exit 3).
    stale_files = agent.root.parent / "r1-stale-files"
    stale_files.mkdir()
    write_private(stale_files / "token", (agent.agent_dir / "token").read_text())
    write_private(stale_files / "key", old.encoded() + "\n")
    stale = AgentProcess(agent.root.parent / "r1-stale", agent_dir=stale_files,
                         url=world.plane.url, env=world.plane.env, wait=0)
    stale.start()
    try:
        assert stale.wait_exit(timeout=CONVERGE) == 3
    finally:
        stale.stop()
    assert f"The agent holds region key {old.id!r}, which is not a key of region 'r1'" \
        in stale.log()
    assert_replicas_equal_the_plane(world, wait_caught_up(world))


def test_keys_rotate_retire_and_a_restart_lose_no_secret(world: World) -> None:
    env_password = world.password()
    app = world.api.post("/apps", json={
        "name": "rotated", "image": "registry.example.com/acme/web:1", "regions": ["r1"],
        "env": [{"name": "DB_PASSWORD", "value": env_password, "secret": True},
                {"name": "LOG_LEVEL", "value": "info"}]})
    assert app.status_code == 201, app.text
    old = parse_keys((world.plane.data_dir / "keys").read_text())[0].id
    rotated = world.plane.moorage("keys", "rotate")
    new = parse_keys((world.plane.data_dir / "keys").read_text())[0].id
    assert new != old
    world.plane.moorage("keys", "retire", old)
    port = world.plane.port
    world.plane.kill()
    world.plane.start(port=port)

    checked = world.plane.django(OPENS_AND_DEPLOYS, {
        "app": "rotated", "env": {"DB_PASSWORD": env_password, "LOG_LEVEL": "info"}})
    resealed = sum(checked["opened"].values())
    assert f"Re-sealed {resealed} secret(s) with {new}." in rotated.stdout
    assert checked["opened"]["apps.EnvVar.sealed"] == 1
    assert checked["opened"]["regions.Region.key_sealed"] == 3
    assert checked["env_opens"] is True and checked["unknown"] == 0
    snapshot = protocol.verify(checked["envelope"], world.agents["r1"].key)
    [sent] = [d for d in snapshot["deployments"] if d["id"] == checked["deployment"]]
    assert sent["status"] == "queued"
    [secret] = [item["secret"] for item in sent["env"] if item["name"] == "DB_PASSWORD"]
    aad = protocol.region_env_aad(region="r1", account_id=sent["account_id"],
                                  app_id=sent["app_id"], deployment_id=sent["id"],
                                  name="DB_PASSWORD")
    assert open_sealed(Keyring([world.agents["r1"].key]), secret, aad).decode() == env_password
    # The agents kept going through the restart, on region keys the new key now seals.
    credential = create(world.api, "after-keyring-rotation", world.password())
    wait_synced(world, credential)
    assert_replicas_equal_the_plane(world, wait_caught_up(world))


def test_no_password_is_left_in_any_file_log_or_process_argument(world: World) -> None:
    assert len(world.passwords) > 20  # the owner's and every credential's
    places: list[Path] = [world.plane.log, world.plane.data_dir]
    for agent in world.agents.values():
        places += [agent.data_dir, agent.agent_dir, agent.stdout, agent.stderr]
    for path in places:
        assert path.exists(), path
    processes = [world.plane.process] + [a.process for a in world.agents.values()]
    arguments = [Path(f"/proc/{p.pid}/cmdline").read_bytes() for p in processes
                 if p is not None and p.poll() is None]
    assert len(arguments) == 4  # the control plane and its agents are running
    hits: list[tuple[str, object]] = []
    for password in world.passwords:
        for path in places:
            if path.is_dir():
                hits += [(password, found) for found in files_containing(path, password)]
            elif password.encode() in path.read_bytes():
                hits.append((password, path))
        hits += [(password, "argv") for args in arguments if password.encode() in args]
    assert hits == []
