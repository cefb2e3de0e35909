"""The reconcile loop against the FAKE control plane (see ``fakes.py``): snapshot, changes,
acks, retries, refusals and stopping."""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest

from moorage import protocol
from moorage.agent.backoff import RECONNECT_SPREAD, Backoff
from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.errors import AgentAuthError, ConfigurationError
from moorage.agent.replica import Replica
from moorage.agent.sync import Outcome, SyncLoop
from moorage.agent.tests.conftest import Sleeps
from moorage.agent.tests.fakes import TOKEN, FakeControlPlane, FakeCredential, FakeDeployment
from moorage.sealing import generate_key

SECRET = "s3cr3t-registry-password"
MakeLoop = Callable[..., SyncLoop]


def seeded(fake: FakeControlPlane) -> None:
    fake.add_account(1, "acme")
    fake.put_credential(FakeCredential(17, 1, "octo", SECRET, is_default=True))


def test_the_first_run_takes_a_snapshot_and_acknowledges_all_of_it(
    fake: FakeControlPlane, loop: SyncLoop, replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    seeded(fake)
    caplog.set_level(logging.DEBUG, "moorage.agent")
    assert loop.run_once() is Outcome.SYNCED
    assert fake.requests == ["snapshot", "ack"]
    # A snapshot ack proves which region key the agent holds (it completes key rotations).
    assert fake.acks == [{"revision": 2, "snapshot": True, "credentials": {"17": 1},
                          "removed": [], "key_id": fake.key.id,
                          "key_proof": protocol.key_proof(fake.key, region="eu-1")}]
    assert replica.revision() == 2
    assert loop.region == loop.client.region == "eu-1"
    assert replica.open_secret(17).password == SECRET
    assert "took a snapshot at revision 2: 1 accounts, 1 credentials" in caplog.text
    mine = [r for r in caplog.records if r.name == "moorage.agent"]
    assert all(getattr(r, "region", None) == "eu-1" for r in mine)


def test_a_change_is_applied_and_acknowledged(
    fake: FakeControlPlane, loop: SyncLoop, replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    seeded(fake)
    fake.put_credential(FakeCredential(18, 1, "bot", "bot-secret"))
    loop.run_once()
    fake.put_credential(FakeCredential(17, 1, "octo", SECRET + "2", is_default=True))
    fake.delete_credential(18)
    fake.requests.clear()
    caplog.set_level(logging.INFO, "moorage.agent")
    assert loop.run_once() is Outcome.SYNCED
    assert fake.requests == ["changes", "ack"]
    assert fake.acks[-1] == {"revision": 5, "snapshot": False, "credentials": {"17": 2},
                             "removed": [18]}
    assert replica.credentials_held() == {17: 2}
    assert replica.open_secret(17).password == SECRET + "2"
    assert "applied revision 5: 2 changes" in caplog.text

    fake.bump()  # a change elsewhere: the revision moves, nothing to apply, still acked
    assert loop.run_once() is Outcome.SYNCED
    assert replica.revision() == 6
    assert fake.acks[-1] == {"revision": 6, "snapshot": False, "credentials": {},
                             "removed": []}
    acks = len(fake.acks)
    assert loop.run_once() is Outcome.SYNCED  # nothing new at all: no ack
    assert len(fake.acks) == acks
    assert SECRET not in caplog.text and TOKEN not in caplog.text


def test_snapshot_required_takes_a_snapshot(
    fake: FakeControlPlane, loop: SyncLoop, replica: Replica
) -> None:
    seeded(fake)
    loop.run_once()
    fake.add_account(2, "globex")
    fake.remove_account(1)
    fake.compacted_through = fake.revision  # the log was compacted past the agent
    fake.requests.clear()
    assert loop.run_once() is Outcome.SYNCED
    assert fake.requests == ["changes", "snapshot", "ack"]
    assert fake.acks[-1] == {"revision": 4, "snapshot": True, "credentials": {},
                             "removed": [], "key_id": fake.key.id,
                             "key_proof": protocol.key_proof(fake.key, region="eu-1")}
    assert replica.accounts() == {2: "globex"}
    assert replica.credentials_held() == {}


def test_transient_errors_back_off_doubling_and_recover(
    fake: FakeControlPlane, loop: SyncLoop, replica: Replica, sleeps: Sleeps,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seeded(fake)
    refused = httpx.ConnectError("connection refused")
    fake.failures = [503, refused, 502, refused, 500, 500, 500, 500, 500, 500, 500]
    outcomes = [loop.run_once() for _ in range(12)]
    assert outcomes == [Outcome.RETRY] * 11 + [Outcome.SYNCED]
    # rand() is 0.5: half of each window, which doubles from 0.5 s up to 30 s.
    assert sleeps == [0.25, 0.5, 1, 2, 4, 8, 15, 15, 15, 15, 15]
    assert replica.revision() == 2
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 11
    assert lines[0] == "control plane unreachable, retrying in 0.2 s: HTTP 503 server_error: " \
                       "The fake was told to fail."
    assert lines[1] == "control plane unreachable, retrying in 0.5 s: ConnectError: " \
                       "connection refused"
    fake.failures = [503]
    sleeps.clear()
    loop.run_once()
    assert sleeps == [0.25]  # a success resets the backoff


def test_the_jitter_is_full_and_the_first_window_is_the_spread() -> None:
    low, high = Backoff(rand=lambda: 0.0), Backoff(rand=lambda: 0.999999)
    assert [round(low.next_delay(), 2) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert [round(high.next_delay(), 2) for _ in range(3)] == [0.5, 1.0, 2.0]
    spread = Backoff(spread=5.0, rand=lambda: 0.999999)
    assert [round(spread.next_delay(), 1) for _ in range(6)] == [5.0, 5.0, 5.0, 5.0, 8.0, 16.0]
    # A server's Retry-After is a floor, plus up to as much again at random.
    assert Backoff(rand=lambda: 0.0).next_delay(retry_after=2) == 2.0
    assert Backoff(rand=lambda: 0.5).next_delay(retry_after=2) == 3.0


def test_a_restarted_control_plane_sees_the_fleet_come_back_spread_and_all_converge() -> None:
    """1,000 agents lose their long polls at the same instant (the control plane restarts and
    is down for 3 s). Simulated on a clock, with the sync loop's own backoff: reconnections
    spread over seconds, never in a wave, and every agent is back within a minute."""
    rand = random.Random(1234).random
    down_until = 3.0
    agents = [Backoff(spread=RECONNECT_SPREAD, rand=rand) for _ in range(1000)]
    attempts: list[float] = []
    back: list[float] = []
    for backoff in agents:
        now = 0.0
        while True:
            now += backoff.next_delay()
            attempts.append(now)
            if now >= down_until:
                back.append(now)
                break
    assert len(back) == 1000 and max(back) < 60  # everyone converges
    # Spread: no 100 ms window gets more than 5 % of the fleet, before or after the restart,
    # and the returns span several seconds.
    windows = collections.Counter(int(t * 10) for t in attempts)
    assert max(windows.values()) <= 50, windows.most_common(3)
    assert sorted(back)[900] - sorted(back)[100] > 2.0
    # The first attempts alone (a plain blip, no outage) are spread over the whole window.
    first = [Backoff(spread=RECONNECT_SPREAD, rand=rand).next_delay() for _ in range(1000)]
    assert min(first) < 0.1 and max(first) > 4.9
    assert max(collections.Counter(int(t) for t in first).values()) < 250  # ~200 a second


def test_an_ack_that_fails_stays_pending_and_is_resent_before_the_next_poll(
    fake: FakeControlPlane, loop: SyncLoop, replica: Replica
) -> None:
    seeded(fake)
    loop.run_once()
    fake.put_credential(FakeCredential(17, 1, "octo", "new", is_default=True))
    fake.ack_failures = [503]
    fake.requests.clear()
    assert loop.run_once() is Outcome.RETRY
    assert replica.revision() == 3  # applied, not yet acknowledged
    assert loop.pending_ack is not None
    assert loop.run_once() is Outcome.SYNCED
    assert fake.requests == ["changes", "ack", "ack", "changes"]
    assert fake.acks[-1] == {"revision": 3, "snapshot": False, "credentials": {"17": 2},
                             "removed": []}
    assert loop.pending_ack is None


def test_after_a_restart_the_whole_replica_is_acknowledged_first(
    fake: FakeControlPlane, make_loop: MakeLoop, replica: Replica
) -> None:
    seeded(fake)
    make_loop().run_once()
    fake.requests.clear()
    restarted = make_loop()
    assert restarted.region == "eu-1"
    restarted.run_once()
    assert fake.requests == ["ack", "changes"]
    assert fake.acks[-1] == {"revision": 2, "snapshot": True, "credentials": {"17": 1},
                             "removed": [], "key_id": fake.key.id,
                             "key_proof": protocol.key_proof(fake.key, region="eu-1")}


def test_a_tampered_payload_is_refused_not_applied_and_retried(
    fake: FakeControlPlane, loop: SyncLoop, replica: Replica, sleeps: Sleeps,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seeded(fake)
    loop.run_once()
    before = replica.credentials_held()
    fake.delete_credential(17)
    fake.tamper_next = True
    assert loop.run_once() is Outcome.RETRY
    assert replica.credentials_held() == before
    assert replica.revision() == 2
    assert sleeps == [0.25]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0].getMessage().startswith(
        "rejected a payload that failed its integrity check, retrying in 0.2 s")
    assert loop.run_once() is Outcome.SYNCED  # the next, genuine answer is applied
    assert replica.credentials_held() == {}


def test_an_auth_error_stops_the_loop(
    fake: FakeControlPlane, loop: SyncLoop, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    fake.revoked = True
    with pytest.raises(AgentAuthError) as raised:
        loop.run_forever()
    assert raised.value.code == "region_token_revoked"
    assert sleeps == []
    assert "the region token was rotated or the region removed" in caplog.text
    assert "stopping" in caplog.text
    assert TOKEN not in caplog.text


def test_stopping_abandons_a_long_poll_at_once(
    fake: FakeControlPlane, make_loop: MakeLoop
) -> None:
    seeded(fake)
    stop = threading.Event()
    loop = make_loop(stop, sleep=None)
    loop.run_once()
    fake.hang = threading.Event()  # the next changes request does not answer
    started = time.monotonic()
    threading.Timer(0.3, stop.set).start()
    loop.run_forever()
    assert time.monotonic() - started < 1.5
    assert fake.requests[-1] == "changes"
    fake.hang.set()


def test_a_pinned_region_must_match_the_replica(
    fake: FakeControlPlane, make_loop: MakeLoop, config: object, replica: Replica
) -> None:
    seeded(fake)
    make_loop().run_once()
    from dataclasses import replace

    from moorage.agent.client import ControlPlaneClient
    from moorage.agent.config import AgentConfig

    assert isinstance(config, AgentConfig)
    pinned = replace(config, region="us-1")
    with pytest.raises(ConfigurationError, match="belongs to region 'eu-1', not 'us-1'"):
        SyncLoop(pinned, ControlPlaneClient(pinned, transport=fake.transport()), replica,
                 logging.getLogger("moorage.agent"), threading.Event())


class RecordingDeployer:
    """A stand-in for the deployer (test-only): records the replica's revision at each step."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.seen: list[int | None] = []
        self.refresh: Callable[[], None] | None = None
        self.stop_event: threading.Event | None = None

    def step(self) -> None:
        self.seen.append(self.replica.revision())


def test_a_new_region_key_drops_what_the_old_sealed_and_takes_a_snapshot_first(
    fake: FakeControlPlane, loop: SyncLoop, replica: Replica, config: AgentConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seeded(fake)
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, "registry.example/api:1",
                                       secret_env={"DB_PASSWORD": "Env-Secret-1"}))
    loop.run_once()
    old = fake.key
    replica.close()
    # `moorage regions rotate-key` and a restart with the new key file: the control plane
    # answers this agent with the key it names.
    fake.key = generate_key("eu-1-new")
    new_config = replace(config, region_key=fake.key)
    restarted = Replica.in_dir(new_config.data_dir, fake.key)
    deployer = RecordingDeployer(restarted)
    caplog.set_level(logging.INFO, "moorage.agent")
    with ControlPlaneClient(new_config, transport=fake.transport()) as client:
        loop = SyncLoop(new_config, client, restarted, logging.getLogger("moorage.agent"),
                        threading.Event(), sleep=lambda seconds: None,
                        deployer=deployer)  # type: ignore[arg-type]
        assert f"the region key changed from {old.id} to eu-1-new" in caplog.text
        assert restarted.revision() is None and restarted.credentials_held() == {}
        assert [d.state for d in restarted.deployments()] == ["pending"]  # kept
        fake.requests.clear()
        assert loop.run_once() is Outcome.SYNCED
    assert fake.requests == ["snapshot", "ack"]
    assert deployer.seen == [fake.revision]  # nothing ran before the snapshot
    assert fake.acks[-1]["key_id"] == "eu-1-new"
    assert fake.acks[-1]["key_proof"] == protocol.key_proof(fake.key, region="eu-1")
    assert restarted.open_secret(17).password == SECRET
    [deployment] = restarted.deployments()
    assert restarted.open_env(deployment) == {"DB_PASSWORD": "Env-Secret-1"}
    restarted.close()


def test_an_ack_refused_with_a_4xx_is_dropped_not_resent_forever(
    fake: FakeControlPlane, loop: SyncLoop, caplog: pytest.LogCaptureFixture
) -> None:
    seeded(fake)
    fake.ack_failures = [422]
    caplog.set_level(logging.ERROR, "moorage.agent")
    assert loop.run_once() is Outcome.SYNCED
    assert loop.pending_ack is None
    assert "the control plane refused the acknowledgement of revision 2; dropped" \
        in caplog.text
    fake.requests.clear()
    assert loop.run_once() is Outcome.SYNCED
    assert fake.requests == ["changes"]


class AckWatchingDeployer(RecordingDeployer):
    """Notes how many acks the control plane had when the deployer first saw ``revision``,
    then lets the held ack through."""

    def __init__(self, replica: Replica, fake: FakeControlPlane, gate: threading.Event) -> None:
        super().__init__(replica)
        self.fake, self.gate = fake, gate
        self.revision = 0
        self.acks_then: int | None = None

    def step(self) -> None:
        super().step()
        if self.replica.revision() == self.revision and self.acks_then is None:
            self.acks_then = len(self.fake.acks)
            self.gate.set()


def test_a_batchs_ack_leaves_while_the_deployer_runs_what_it_brought(
    fake: FakeControlPlane, make_loop: MakeLoop, replica: Replica
) -> None:
    """A deploy does not wait for the ack of the batch that brought it; the step still ends
    with the ack taken."""
    seeded(fake)
    gate = threading.Event()
    deployer = AckWatchingDeployer(replica, fake, gate)
    loop = make_loop(deployer=deployer)
    loop.run_once()
    acks = len(fake.acks)
    fake.ack_gate = gate  # the ack is held until the deployer has seen the batch
    deployer.revision = fake.put_deployment(
        FakeDeployment(41, 1, 3, "api", 1, "registry.example/api:1"))
    began = time.monotonic()
    assert loop.run_once() is Outcome.SYNCED
    assert deployer.acks_then == acks  # the deployer ran before the ack was taken
    assert time.monotonic() - began < 4  # not after the fake's 5 s gave up waiting
    assert fake.acks[-1]["revision"] == deployer.revision and loop.pending_ack is None


def test_a_background_ack_that_fails_stays_pending_and_is_resent_first(
    fake: FakeControlPlane, make_loop: MakeLoop, replica: Replica
) -> None:
    seeded(fake)
    deployer = RecordingDeployer(replica)
    loop = make_loop(deployer=deployer)
    loop.run_once()
    revision = fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, "registry.example/api:1"))
    fake.ack_failures = [503]
    fake.requests.clear()
    assert loop.run_once() is Outcome.RETRY
    assert deployer.seen[-1] == revision  # the deployer ran meanwhile
    assert loop.pending_ack is not None and loop.pending_ack.revision == revision
    assert loop.run_once() is Outcome.SYNCED
    assert fake.requests == ["changes", "ack", "ack", "changes"]
    assert fake.acks[-1]["revision"] == revision and loop.pending_ack is None
