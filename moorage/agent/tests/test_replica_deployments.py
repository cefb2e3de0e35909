"""The replica's deployments: applied from changes and snapshots, state kept across re-sends,
env secrets sealed in the file, deleted apps queued for container removal."""

from __future__ import annotations

import copy

import pytest

from moorage.agent.errors import MalformedPayload
from moorage.agent.replica import Replica
from moorage.agent.tests.fakes import FakeControlPlane, FakeCredential, FakeDeployment
from moorage.sealing import SealedDataError

ENV_SECRET = "env-secret-Kp93w"
REGISTRY_SECRET = "registry-secret-Lm28d"


def seeded(fake: FakeControlPlane) -> None:
    fake.add_account(1, "acme")
    fake.add_account(2, "globex")
    fake.put_credential(FakeCredential(17, 1, "octo", REGISTRY_SECRET, is_default=True))
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, "registry.example/acme/api:1",
                                       credential_id=17, port=8080,
                                       env={"LOG_LEVEL": "info"},
                                       secret_env={"DB_PASSWORD": ENV_SECRET}))
    fake.put_deployment(FakeDeployment(50, 2, 9, "web", 1, "registry.example/globex/web:1"))


def test_deployments_arrive_pending_with_env_secrets_sealed_in_the_file(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    (api, web) = replica.deployments(state="pending")
    assert (api.id, api.app, api.number, api.pull["credential_revision"]) == (41, "api", 1, 1)
    assert web.pull["mode"] == "anonymous"
    assert replica.open_env(api) == {"LOG_LEVEL": "info", "DB_PASSWORD": ENV_SECRET}
    replica._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    files = [p for p in replica.path.parent.iterdir() if p.is_file()]
    for path in files:
        data = path.read_bytes()
        assert ENV_SECRET.encode() not in data and REGISTRY_SECRET.encode() not in data


def test_a_sealed_env_value_copied_to_another_name_does_not_open(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    api = replica.deployments()[0]
    item = next(e for e in api.payload["env"] if e["name"] == "DB_PASSWORD")
    api.payload["env"].append({"name": "OTHER", "secret": item["secret"]})
    with pytest.raises(SealedDataError):
        replica.open_env(api)


def test_a_deployment_received_again_keeps_its_state(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    replica.finish_deployment(41, state="done", report={"status": "running"})
    replica.apply_snapshot(fake.snapshot_payload())  # e.g. after snapshot_required
    assert replica.get_deployment(41).state == "done"  # type: ignore[union-attr]
    fake.put_deployment(copy.copy(fake.deployments[41]))  # the same deployment re-sent
    replica.apply_changes(fake.changes_payload(fake.revision - 1))
    assert replica.get_deployment(41).state == "done"  # type: ignore[union-attr]
    assert replica.app_removals() == []


def test_app_delete_and_account_delete_drop_deployments_and_queue_container_removal(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    fake.delete_app(1, 3)
    fake.remove_account(2)
    replica.apply_changes(fake.changes_payload(fake.revision - 2))
    assert replica.deployments() == []
    assert replica.app_removals() == [(1, 3), (2, 9)]
    replica.app_removed(1, 3)
    assert replica.app_removals() == [(2, 9)]


def test_a_snapshot_without_an_app_queues_its_removal(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    del fake.deployments[50]
    replica.apply_snapshot(fake.snapshot_payload())
    assert [d.id for d in replica.deployments()] == [41]
    assert replica.app_removals() == [(2, 9)]


def test_an_env_secret_in_clear_is_refused_and_nothing_of_the_batch_applied(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    fake.put_deployment(FakeDeployment(42, 1, 3, "api", 2, "registry.example/acme/api:2"))
    payload = fake.changes_payload(fake.revision - 1)
    payload["changes"][0]["deployment"]["env"] = [{"name": "X", "secret": ENV_SECRET}]
    with pytest.raises(MalformedPayload, match="not sealed"):
        replica.apply_changes(payload)
    assert replica.get_deployment(42) is None
    assert ENV_SECRET.encode() not in replica.path.read_bytes()


def test_a_deployment_the_control_plane_saw_finish_is_not_run_by_a_fresh_agent(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    payload = fake.snapshot_payload()
    statuses = {41: "running", 50: "failed"}
    for deployment in payload["deployments"]:
        deployment["status"] = statuses[deployment["id"]]
    replica.apply_snapshot(payload)
    assert replica.deployments(state="pending") == []
    assert {d.id: d.state for d in replica.deployments()} == {41: "done", 50: "failed"}
    assert replica.unreported() == []  # nothing owed: the control plane knows already
    queued = fake.snapshot_payload()
    for deployment in queued["deployments"]:
        deployment["status"] = "queued"
    fresh = Replica(replica.path.parent / "other" / "replica.sqlite3", fake.key)
    fresh.apply_snapshot(queued)
    assert len(fresh.deployments(state="pending")) == 2


@pytest.mark.parametrize("value", [0, 601, "30", 2.5, True, [30]])
def test_a_ready_timeout_that_is_not_whole_seconds_within_bounds_is_refused(
    fake: FakeControlPlane, replica: Replica, value: object
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    fake.put_deployment(FakeDeployment(42, 1, 3, "api", 2, "registry.example/acme/api:2"))
    payload = fake.changes_payload(fake.revision - 1)
    payload["changes"][0]["deployment"]["ready_timeout"] = value
    with pytest.raises(MalformedPayload, match="ready_timeout is not a whole number"):
        replica.apply_changes(payload)
    assert replica.get_deployment(42) is None


def test_a_ready_timeout_travels_and_an_older_payload_without_one_is_valid(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)  # deployment 41 has no ready_timeout: an older control plane's
    fake.put_deployment(FakeDeployment(42, 1, 4, "web", 1, "registry.example/acme/web:1",
                                       ready_timeout=90))
    replica.apply_snapshot(fake.snapshot_payload())
    by_id = {d.id: d for d in replica.deployments()}
    assert "ready_timeout" not in by_id[41].payload
    assert by_id[42].payload["ready_timeout"] == 90


def test_region_drain_forgets_every_deployment_queues_every_app_and_owes_a_report(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    replica.finish_deployment(41, state="done", report={"status": "running"})
    assert not replica.drain_pending()
    fake.revision += 1
    fake.log.append({"revision": fake.revision, "op": "region.drain"})
    replica.apply_changes(fake.changes_payload(fake.revision - 1))
    assert replica.deployments() == []
    assert replica.app_removals() == [(1, 3), (2, 9)]
    assert replica.drain_pending()
    replica.drain_reported()
    assert not replica.drain_pending()

    draining = {**fake.snapshot_payload(), "deployments": [], "draining": True}
    replica.apply_snapshot(draining)  # a snapshot while draining asks again
    assert replica.drain_pending()
    replica.apply_snapshot(fake.snapshot_payload())  # no longer draining
    assert not replica.drain_pending()


def test_a_stopped_deployment_is_never_run(fake: FakeControlPlane, replica: Replica) -> None:
    seeded(fake)
    payload = fake.snapshot_payload()
    payload["deployments"][0]["status"] = "stopped"
    replica.apply_snapshot(payload)
    assert [d.id for d in replica.deployments(state="pending")] == [50]
