"""The replica: atomic, idempotent batches; purges; sealed secrets that open only in place."""

from __future__ import annotations

import copy
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from moorage import protocol
from moorage.agent.errors import CredentialNotFound, MalformedPayload, ReplicaError
from moorage.agent.replica import Replica
from moorage.agent.tests.fakes import FakeControlPlane, FakeCredential
from moorage.registry import RegistryLogin
from moorage.sealing import SealedDataError, generate_key, seal

SECRET = "hunter2-plaintext-Zq7"


def state(replica: Replica) -> tuple[Any, ...]:
    """Everything observable about a replica, secrets (sealed) included."""
    rows = replica._db.execute("SELECT * FROM credentials ORDER BY id").fetchall()
    return replica.revision(), replica.region(), replica.accounts(), rows


def seeded(fake: FakeControlPlane) -> None:
    fake.put_credential(FakeCredential(17, 1, "octo", SECRET, is_default=True))
    fake.put_credential(FakeCredential(18, 1, "bot", "other-secret"))
    fake.put_credential(FakeCredential(30, 3, "third", "third-secret"))
    fake.add_account(1, "acme")
    fake.add_account(3, "initech")


def test_snapshot_replaces_everything_and_sets_revision_and_region(
    fake: FakeControlPlane, replica: Replica
) -> None:
    assert replica.revision() is None
    replica._db.execute("INSERT INTO accounts VALUES (99, 'stale')")
    seeded(fake)
    result = replica.apply_snapshot(fake.snapshot_payload())
    assert (result.revision, result.region, result.accounts) == (5, "eu-1", 2)
    assert replica.revision() == 5
    assert replica.region() == "eu-1"
    assert replica.accounts() == {1: "acme", 3: "initech"}
    assert replica.credentials_held() == result.credentials == {17: 1, 18: 1, 30: 1}
    credential = replica.get_credential(17)
    assert (credential.username, credential.is_default, credential.revision) == ("octo", True, 1)
    assert not hasattr(credential, "secret")
    assert replica.default_credential(1) == credential
    assert replica.default_credential(3) is None


def test_changes_are_applied_in_order_and_a_batch_applied_twice_changes_nothing(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    fake.put_credential(FakeCredential(17, 1, "octo2", "rotated", is_default=True))
    fake.delete_credential(18)
    fake.put_credential(FakeCredential(19, 1, "new", "new-secret"))
    fake.put_credential(FakeCredential(19, 1, "newer", "newer-secret"))  # same object twice
    batch = fake.changes_payload(5)

    first = replica.apply_changes(batch)
    after_first = state(replica)
    assert (first.previous, first.revision, first.changes, first.applied) == (5, 9, 4, 4)
    assert first.upserted == {17: 2, 19: 2}
    assert first.removed == [18]
    assert replica.credentials_held() == {17: 2, 19: 2, 30: 1}
    assert replica.get_credential(19).username == "newer"

    again = replica.apply_changes(copy.deepcopy(batch))
    assert state(replica) == after_first
    assert (again.revision, again.applied, again.upserted, again.removed) == (9, 0, {}, [])


def test_a_malformed_last_change_rolls_back_the_whole_batch(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    before = state(replica)
    fake.delete_credential(17)
    fake.remove_account(3)
    batch = fake.changes_payload(5)
    batch["changes"].append({"revision": 7, "op": "credential.upsert",
                             "credential": {"id": 40, "account_id": 1}})
    with pytest.raises(MalformedPayload, match="change 2 credential"):
        replica.apply_changes(batch)
    assert state(replica) == before
    assert replica.revision() == 5


def test_an_agent_killed_in_the_middle_of_a_batch_applied_nothing(
    fake: FakeControlPlane, replica: Replica, tmp_path: Path
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    before = state(replica)
    fake.delete_credential(17)
    fake.remove_account(3)
    batch = fake.changes_payload(5)
    # A real kill: the process dies (no exception handling, no rollback) after one change.
    script = f"""
import json, os, sys
from pathlib import Path
from moorage.agent.replica import Replica
from moorage.sealing import parse_keys
replica = Replica(Path({str(replica.path)!r}), parse_keys({fake.key.encoded()!r})[0])
original = replica._apply_change
calls = []
def dying(*args, **kwargs):
    if calls:
        os._exit(9)
    calls.append(1)
    original(*args, **kwargs)
replica._apply_change = dying
replica.apply_changes(json.loads(sys.stdin.read()))
"""
    import json

    result = subprocess.run([sys.executable, "-c", script], input=json.dumps(batch),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 9, result.stderr
    reopened = Replica(replica.path, fake.key)
    assert state(reopened) == before
    reopened.apply_changes(batch)  # applying it now works, and completely
    assert reopened.credentials_held() == {18: 1}
    assert reopened.revision() == 7
    reopened.close()


def test_account_delete_purges_the_account_and_all_its_credentials(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    fake.remove_account(1)
    result = replica.apply_changes(fake.changes_payload(5))
    assert replica.accounts() == {3: "initech"}
    assert replica.credentials_held() == {30: 1}
    assert result.removed == [17, 18]
    with pytest.raises(CredentialNotFound):
        replica.get_credential(17)


def test_a_credential_of_an_account_not_held_is_not_kept(
    fake: FakeControlPlane, replica: Replica
) -> None:
    """docs/sync.md never makes credential.upsert create an account: without the account,
    the credential is dropped at the end of the batch; with account.upsert later in the same
    batch it stays."""
    fake.add_account(1, "acme")
    replica.apply_snapshot(fake.snapshot_payload())
    fake.put_credential(FakeCredential(50, 2, "orphan", "orphan-secret"))
    result = replica.apply_changes(fake.changes_payload(1))
    assert replica.credentials_held() == {}
    assert replica.accounts() == {1: "acme"}
    assert result.upserted == {}
    assert result.removed == [50]

    fake.add_account(2, "globex")  # enabling it now re-sends its credentials
    result = replica.apply_changes(fake.changes_payload(2))
    assert replica.credentials_held() == {50: 1}
    assert result.upserted == {50: 1}


def test_a_batch_after_a_gap_or_for_another_region_is_refused(
    fake: FakeControlPlane, replica: Replica
) -> None:
    with pytest.raises(ReplicaError, match="needs a snapshot"):
        replica.apply_changes(fake.changes_payload(0))
    fake.add_account(1, "acme")
    replica.apply_snapshot(fake.snapshot_payload())
    fake.bump()
    fake.bump()
    with pytest.raises(ReplicaError, match="some would be missed"):
        replica.apply_changes(fake.changes_payload(2))
    other = fake.snapshot_payload() | {"region": "us-1"}
    with pytest.raises(ReplicaError, match="belongs to region 'eu-1'"):
        replica.apply_snapshot(other)
    assert replica.region() == "eu-1"


def test_a_secret_in_clear_is_never_stored(fake: FakeControlPlane, replica: Replica) -> None:
    fake.add_account(1, "acme")
    payload = fake.snapshot_payload()
    payload["credentials"] = [{"id": 1, "account_id": 1, "type": "container_registry",
                               "name": "n", "server": "s", "username": "u", "email": "",
                               "is_default": False, "revision": 1, "secret": SECRET}]
    with pytest.raises(MalformedPayload, match="not sealed") as raised:
        replica.apply_snapshot(payload)
    assert SECRET not in str(raised.value)
    assert SECRET.encode() not in b"".join(
        p.read_bytes() for p in replica.path.parent.iterdir())


def _payload_with(fake: FakeControlPlane, *, sealed: str, revision: int = 3) -> dict[str, Any]:
    """A snapshot built by hand with protocol.sign/verify, not by the fake's helpers."""
    payload = {
        "kind": "snapshot", "region": "eu-1", "revision": 7,
        "accounts": [{"id": 1, "slug": "acme"}],
        "credentials": [{"id": 17, "account_id": 1, "type": "container_registry",
                         "name": "ghcr-prod", "server": "ghcr.io", "username": "octo",
                         "email": "", "is_default": True, "revision": revision,
                         "secret": sealed}],
    }
    return protocol.verify(protocol.sign(payload, fake.key), fake.key)


def test_open_secret_round_trip(fake: FakeControlPlane, replica: Replica) -> None:
    aad = protocol.region_secret_aad(region="eu-1", account_id=1, credential_id=17, revision=3)
    replica.apply_snapshot(_payload_with(fake, sealed=seal(fake.key, SECRET.encode(), aad)))
    login = replica.open_secret(17)
    assert login == RegistryLogin("octo", SECRET)
    assert SECRET not in repr(login)


@pytest.mark.parametrize("aad", [
    {"region": "eu-1", "account_id": 1, "credential_id": 17, "revision": 2},  # older revision
    {"region": "us-1", "account_id": 1, "credential_id": 17, "revision": 3},  # other region
    {"region": "eu-1", "account_id": 2, "credential_id": 17, "revision": 3},  # other account
    {"region": "eu-1", "account_id": 1, "credential_id": 18, "revision": 3},  # other credential
], ids=["revision", "region", "account", "credential"])
def test_a_secret_sealed_for_another_place_does_not_open(
    fake: FakeControlPlane, replica: Replica, aad: dict[str, Any]
) -> None:
    sealed = seal(fake.key, SECRET.encode(), protocol.region_secret_aad(**aad))
    replica.apply_snapshot(_payload_with(fake, sealed=sealed))
    with pytest.raises(SealedDataError) as raised:
        replica.open_secret(17)
    assert raised.value.code == "sealed_tampered"
    assert SECRET not in str(raised.value)


def test_a_secret_sealed_with_another_key_does_not_open(
    fake: FakeControlPlane, replica: Replica
) -> None:
    aad = protocol.region_secret_aad(region="eu-1", account_id=1, credential_id=17, revision=3)
    sealed = seal(generate_key("other"), SECRET.encode(), aad)
    replica.apply_snapshot(_payload_with(fake, sealed=sealed))
    with pytest.raises(SealedDataError) as raised:
        replica.open_secret(17)
    assert raised.value.code == "sealed_key_unknown"


def test_the_replica_files_hold_no_plaintext_and_only_the_owner_can_read_them(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    replica.apply_snapshot(fake.snapshot_payload())
    fake.put_credential(FakeCredential(17, 1, "octo", SECRET + "-rotated", is_default=True))
    replica.apply_changes(fake.changes_payload(5))
    assert replica.open_secret(17).password == SECRET + "-rotated"
    files = sorted(replica.path.parent.iterdir())
    assert {p.name for p in files} >= {"replica.sqlite3", "replica.sqlite3-wal"}
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data, path
        assert b"other-secret" not in data, path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(replica.path.parent.stat().st_mode) == 0o700
    assert replica._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ----- the region's settings (runtime, region registry)


def test_a_snapshot_without_settings_is_a_docker_region_without_registry(
    fake: FakeControlPlane, replica: Replica
) -> None:
    fake.add_account(1, "acme")
    payload = fake.snapshot_payload()
    del payload["settings"]  # a control plane from before swarm regions
    replica.apply_snapshot(payload)
    assert replica.settings().runtime == "docker"
    assert replica.settings().registry is None
    assert replica.open_registry_secret() is None


def test_the_runtime_and_the_region_registry_come_with_the_snapshot_and_its_changes(
    fake: FakeControlPlane, replica: Replica
) -> None:
    seeded(fake)
    fake.set_settings("swarm", ("registry.eu.test:5000", "pusher", SECRET, 1))
    replica.apply_snapshot(fake.snapshot_payload())
    settings = replica.settings()
    assert (settings.runtime, settings.registry and settings.registry.host) == (
        "swarm", "registry.eu.test:5000")
    assert replica.open_registry_secret() == RegistryLogin("pusher", SECRET)
    assert replica.registry_defaults() == {1: 17}
    assert SECRET.encode() not in b"".join(
        p.read_bytes() for p in replica.path.parent.iterdir())

    held = replica.revision() or 0
    fake.set_settings("swarm", ("registry.eu.test:5000", "pusher", "rotated-" + SECRET, 2))
    replica.apply_changes(fake.changes_payload(held))
    assert replica.open_registry_secret() == RegistryLogin("pusher", "rotated-" + SECRET)
    fake.set_settings("kubernetes")  # unknown here: kept, said so by the deployer
    replica.apply_changes(fake.changes_payload(held + 1))
    assert replica.settings().runtime == "kubernetes"
    assert replica.settings().known_runtime is None
    assert replica.open_registry_secret() is None


def test_a_region_registry_password_in_clear_or_sealed_elsewhere_is_refused(
    fake: FakeControlPlane, replica: Replica
) -> None:
    fake.add_account(1, "acme")
    payload = fake.snapshot_payload()
    payload["settings"] = {"runtime": "swarm", "registry": {
        "host": "r.test", "username": "u", "revision": 1, "secret": SECRET}}
    with pytest.raises(MalformedPayload, match="not sealed") as raised:
        replica.apply_snapshot(payload)
    assert SECRET not in str(raised.value)
    # Sealed for another revision: stored (it is sealed) but does not open.
    aad = protocol.region_registry_aad(region="eu-1", revision=1)
    payload["settings"]["registry"] |= {"revision": 2,
                                        "secret": seal(fake.key, SECRET.encode(), aad)}
    replica.apply_snapshot(payload)
    with pytest.raises(SealedDataError):
        replica.open_registry_secret()
