"""The agent's local replica: a SQLite file of the region's accounts and sealed credentials.

A snapshot or a batch of changes is applied together with its revision in ONE SQLite
transaction, so an agent killed in the middle either applied the batch and its revision or
nothing, and applying it again changes nothing (``docs/sync.md``, "Agent replica").

Secrets stay sealed with the region key in the file; :meth:`Replica.open_secret` opens one
only at the moment of use and hands it straight to the caller. The file is created mode 0600
in a 0700 directory, and SQLite gives its WAL files the database file's mode.

Deployments (``docs/sync.md``, "Deployments") are kept with their payload as received — secret
env values still sealed — and a ``state``: ``pending`` until the deployer has run it, then
``done`` or ``failed`` with the final report it owes the control plane (``reported`` once the
control plane took it). A deployment received again keeps its state, so a restarted agent or a
re-sent snapshot never runs a finished deployment twice. When an app's last deployment row
goes (``app.delete``, ``account.delete``, a snapshot without the app) the app is queued in
``app_removals`` in the same transaction, so its containers are removed even if the agent
dies right after.

A ``logs.request`` op (``docs/sync.md``, "App logs") is work, not state: nothing of it is
stored; :meth:`Replica.apply_changes` hands it back (for accounts the replica holds only) and
the sync loop passes it to the agent's log server. An agent that dies before answering leaves
the request to expire on the control plane.

The region's own settings (``settings`` in a snapshot or a ``region.upsert``: the runtime the
agent drives, and the region registry with its password sealed like a credential's) are kept
as one JSON value in ``meta``, written in the same transaction as everything else.

Invariant kept after every transaction: each credential belongs to an account the replica
holds. The protocol only sends credentials of accounts enabled in the region and follows an
``account.upsert`` with every credential of that account, so a credential whose account is
not (or no longer) held is dropped at the end of the batch rather than kept orphaned.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from moorage import protocol
from moorage.agent.errors import CredentialNotFound, MalformedPayload, ReplicaError
from moorage.agent.masking import secret_env_values
from moorage.protocol.build import BuildSpec
from moorage.protocol.credential import format_expiry, parse_expiry
from moorage.protocol.enums import Op, PullMode
from moorage.protocol.logs import LogRequestSpec
from moorage.protocol.readiness import ready_timeout_from
from moorage.protocol.region import RegionSettings
from moorage.registry import RegistryLogin
from moorage.sealing import Key, Keyring, SealedDataError, key_id_of, open_sealed

SCHEMA_VERSION = "2"  # 2: credentials.expires_at
REGISTRY_TYPE = "container_registry"
#: The ``drain`` meta value: asked to remove every app, not reported yet / reported.
DRAIN_PENDING = "pending"
DRAIN_REPORTED = "reported"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, slug TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    server TEXT NOT NULL,
    username TEXT NOT NULL,
    email TEXT NOT NULL,
    is_default INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    secret TEXT NOT NULL,
    expires_at TEXT
);
CREATE INDEX IF NOT EXISTS credentials_account ON credentials (account_id);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    app_id INTEGER NOT NULL,
    app TEXT NOT NULL,
    number INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    final_report TEXT,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deployments_app ON deployments (account_id, app_id);
CREATE TABLE IF NOT EXISTS app_removals (
    account_id INTEGER NOT NULL,
    app_id INTEGER NOT NULL,
    PRIMARY KEY (account_id, app_id)
);
"""

_COLUMNS = ("id", "account_id", "type", "name", "server", "username", "email", "is_default",
            "revision", "expires_at", "secret")
_PUBLIC = ", ".join(c for c in _COLUMNS if c != "secret")


@dataclass(frozen=True)
class ReplicaCredential:
    """A credential as the replica holds it, without its secret (see ``open_secret``)."""

    id: int
    account_id: int
    type: str
    name: str
    server: str
    username: str
    email: str
    is_default: bool
    revision: int
    #: When the login stops working, as its issuer said (a short-lived token the control
    #: plane refreshes); None for a password. Informative: the login is still tried after it.
    expires_at: datetime | None = None


@dataclass(frozen=True)
class ReplicaDeployment:
    """A deployment as the replica holds it: the protocol's DEPLOYMENT (``payload``, env
    secrets sealed) and how far the agent got with it."""

    id: int
    account_id: int
    app_id: int
    app: str
    number: int
    payload: dict[str, Any]
    state: str
    final_report: dict[str, Any] | None
    reported: bool

    @property
    def image(self) -> str:
        """The image reference as the user wrote it."""
        return str(self.payload["image"])

    @property
    def build(self) -> dict[str, Any] | None:
        """The ``build`` object of a build-from-source deployment, else ``None``."""
        build = self.payload.get("build")
        return dict(build) if isinstance(build, dict) else None

    @property
    def pull(self) -> dict[str, Any]:
        """``{"mode": "credential"|"anonymous", "credential_id", ...}``."""
        return dict(self.payload["pull"])


@dataclass(frozen=True)
class AppliedSnapshot:
    """What a snapshot left in the replica: the ack reports ``credentials`` in full."""

    revision: int
    region: str
    accounts: int
    credentials: dict[int, int]


@dataclass(frozen=True)
class AppliedChanges:
    """What a batch did, for the log line and the ack.

    ``upserted`` maps the credentials this batch wrote (and the replica still holds) to their
    revisions; ``removed`` lists those it dropped (including ones it was told to delete but
    did not hold, so the control plane's view converges). ``applied`` counts the changes
    newer than the replica's revision, which is all of them except when a batch is replayed.
    """

    previous: int
    revision: int
    changes: int
    applied: int
    upserted: dict[int, int]
    removed: list[int]
    #: ``logs.request`` ops of this batch, for accounts the replica holds: work to hand on,
    #: not state (nothing of them is stored).
    log_requests: list[LogRequestSpec] = field(default_factory=list)


class Replica:
    """The replica file of one agent; one instance per process, used from one thread."""

    def __init__(self, path: Path, region_key: Key) -> None:
        self.path = path
        self._keyring = Keyring([region_key])
        self._key_id = region_key.id
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file ourselves so it is never, even briefly, readable by others.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            _add_missing_columns(self._db)
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                             (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as exc:
            raise ReplicaError(f"Cannot open the replica {path}: {exc}") from None

    @classmethod
    def in_dir(cls, data_dir: Path, region_key: Key) -> Replica:
        """The replica at its usual place, ``replica.sqlite3`` in the data dir."""
        return cls(data_dir / "replica.sqlite3", region_key)

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        self._db.close()

    def take_key(self) -> str | None:
        """Make the replica's region key the one it was opened with; return the key it held
        before, when that was another (the region key was rotated: ``docs/sync.md``).

        Secrets sealed with the old key no longer open, so the credentials go, and the
        revision with them: the sync loop then takes a fresh snapshot, sealed with the new
        key, before it runs anything. Deployments keep their state; the snapshot replaces
        their payloads. Only the agent calls this, when it starts; a reader beside it does
        not.
        """
        key_id = self._key_id
        held = self._meta("key")
        if held is None:  # a replica from before the key was noted: look at what it holds
            found = self._sealed_key_ids()
            held = next(iter(found - {key_id}), None) or (key_id if found else None)
        with self._transaction():
            if held is not None and held != key_id:
                self._db.execute("DELETE FROM credentials")
                self._db.execute("DELETE FROM meta WHERE key = 'revision'")
            self._set_meta("key", key_id)
        return held if held != key_id else None

    def _sealed_key_ids(self) -> set[str]:
        """The ids of the keys that sealed the secrets held (credentials, env values)."""
        values = [r[0] for r in self._db.execute("SELECT secret FROM credentials")]
        for (payload,) in self._db.execute("SELECT payload FROM deployments"):
            values += [item["secret"] for item in json.loads(payload).get("env") or []
                       if isinstance(item, dict) and isinstance(item.get("secret"), str)]
        found = set()
        for value in values:
            try:
                found.add(key_id_of(value))
            except SealedDataError:
                continue
        return found

    # -- reads -------------------------------------------------------------------------------

    def revision(self) -> int | None:
        """The revision applied last, or ``None`` before the first snapshot."""
        value = self._meta("revision")
        return None if value is None else int(value)

    def region(self) -> str | None:
        """The region slug learned from the first snapshot."""
        return self._meta("region")

    def drain_pending(self) -> bool:
        """The region is being removed (``region.drain``) and the control plane has not been
        told yet that every app is gone."""
        return self._meta("drain") == DRAIN_PENDING

    def drain_reported(self) -> None:
        """The control plane took the drained report."""
        if self.drain_pending():
            self._set_meta("drain", DRAIN_REPORTED)

    def settings(self) -> RegionSettings:
        """The region's runtime and registry (a docker region without one before the first
        snapshot)."""
        value = self._meta("settings")
        return RegionSettings() if value is None else RegionSettings.from_payload(
            json.loads(value))

    def open_registry_secret(self) -> RegistryLogin | None:
        """The region registry's login, opened now for one push or pull; ``None`` without a
        region registry. Raises :class:`~moorage.sealing.SealedDataError` like
        :meth:`open_secret`."""
        registry = self.settings().registry
        region = self.region()
        if registry is None or region is None:
            return None
        aad = protocol.region_registry_aad(region=region, revision=registry.revision)
        try:
            password = open_sealed(self._keyring, registry.secret, aad).decode("utf-8")
        except UnicodeDecodeError:
            raise SealedDataError("The opened secret is not UTF-8 text.",
                                  code="sealed_malformed") from None
        return RegistryLogin(registry.username, password)

    def registry_defaults(self) -> dict[int, int]:
        """Account id → the id of its default container-registry credential."""
        return dict(self._db.execute(
            "SELECT account_id, MIN(id) FROM credentials WHERE is_default = 1 AND type = ? "
            "GROUP BY account_id", (REGISTRY_TYPE,)))

    def accounts(self) -> dict[int, str]:
        """Account id → slug of the accounts enabled in this region."""
        return dict(self._db.execute("SELECT id, slug FROM accounts ORDER BY id").fetchall())

    def credentials_held(self) -> dict[int, int]:
        """Credential id → revision: what a full ack reports."""
        return dict(self._db.execute("SELECT id, revision FROM credentials ORDER BY id"))

    def get_credential(self, credential_id: int) -> ReplicaCredential:
        """One credential without its secret, or :class:`CredentialNotFound`."""
        row = self._db.execute(f"SELECT {_PUBLIC} FROM credentials WHERE id = ?",  # noqa: S608
                               (credential_id,)).fetchone()
        if row is None:
            raise CredentialNotFound(f"No credential {credential_id} in this region's replica.")
        return _credential(row)

    def default_credential(self, account_id: int) -> ReplicaCredential | None:
        """The account's default registry credential, if it has one."""
        row = self._db.execute(
            f"SELECT {_PUBLIC} FROM credentials WHERE account_id = ? AND is_default = 1 "  # noqa: S608
            "AND type = ? ORDER BY id LIMIT 1", (account_id, REGISTRY_TYPE)).fetchone()
        return None if row is None else _credential(row)

    def open_secret(self, credential_id: int) -> RegistryLogin:
        """The credential's login, opened now for one use (a pull, a build).

        The secret opens only for this region, credential and revision: a sealed value copied
        to another row, or left over from an older revision, raises
        :class:`~moorage.sealing.SealedDataError` (whose message holds nothing secret). The
        plaintext is not cached or written anywhere.
        """
        row = self._db.execute(
            "SELECT account_id, revision, username, secret FROM credentials WHERE id = ?",
            (credential_id,)).fetchone()
        if row is None:
            raise CredentialNotFound(f"No credential {credential_id} in this region's replica.")
        account_id, revision, username, sealed = row
        region = self.region()
        if region is None:  # a credential without a snapshot cannot happen; be explicit
            raise ReplicaError("The replica has no region yet.")
        aad = protocol.region_secret_aad(region=region, account_id=account_id,
                                         credential_id=credential_id, revision=revision)
        plaintext = open_sealed(self._keyring, sealed, aad)
        try:
            password = plaintext.decode("utf-8")
        except UnicodeDecodeError:
            # The codec's message would quote a byte of the secret.
            raise SealedDataError("The opened secret is not UTF-8 text.",
                                  code="sealed_malformed") from None
        return RegistryLogin(username, password)

    def deployments(self, *, state: str | None = None) -> list[ReplicaDeployment]:
        """Deployments held (optionally in one state), oldest first."""
        query = f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments"  # noqa: S608
        args: tuple[Any, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            args = (state,)
        return [_deployment(r) for r in self._db.execute(query + " ORDER BY id", args)]

    def get_deployment(self, deployment_id: int) -> ReplicaDeployment | None:
        """One deployment, or ``None`` (never received, or its app was deleted)."""
        row = self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?",  # noqa: S608
            (deployment_id,)).fetchone()
        return None if row is None else _deployment(row)

    def app_removals(self) -> list[tuple[int, int]]:
        """``(account_id, app_id)`` of deleted apps whose containers are still to remove."""
        return [(a, b) for a, b in self._db.execute(
            "SELECT account_id, app_id FROM app_removals ORDER BY account_id, app_id")]

    def open_env(self, deployment: ReplicaDeployment) -> dict[str, str]:
        """The deployment's environment with its secret values opened, for one container.

        Opened at the moment of use and handed straight to the runtime; a sealed value copied
        to another app, deployment or variable name does not open.
        """
        region = self.region()
        if region is None:
            raise ReplicaError("The replica has no region yet.")
        env: dict[str, str] = {}
        for item in deployment.payload.get("env") or []:
            name = item["name"]
            if "secret" in item:
                aad = protocol.region_env_aad(region=region, account_id=deployment.account_id,
                                              app_id=deployment.app_id,
                                              deployment_id=deployment.id, name=name)
                plaintext = open_sealed(self._keyring, item["secret"], aad)
                try:
                    env[name] = plaintext.decode("utf-8")
                except UnicodeDecodeError:
                    raise SealedDataError(f"The secret value of {name} is not UTF-8 text.",
                                          code="sealed_malformed") from None
            else:
                env[name] = item["value"]
        return env

    def app_secret_values(self, account_id: int, app_id: int) -> list[str]:
        """The secret env values of every deployment of the app held, longest first: what
        its logs are masked with. A value that does not open is skipped (it cannot be in a
        container this agent started either)."""
        values: set[str] = set()
        for row in self._db.execute(
                f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments "  # noqa: S608
                "WHERE account_id = ? AND app_id = ? ORDER BY id", (account_id, app_id)):
            deployment = _deployment(row)
            try:
                env = self.open_env(deployment)
            except (SealedDataError, ReplicaError):
                continue
            values.update(secret_env_values(deployment.payload, env))
        return sorted(values, key=len, reverse=True)

    # -- deployment bookkeeping (the deployer's writes) --------------------------------------

    def finish_deployment(self, deployment_id: int, *, state: str,
                          report: dict[str, Any]) -> None:
        """Record a deployment's outcome and the final report owed to the control plane."""
        if state not in (DEPLOYMENT_DONE, DEPLOYMENT_FAILED):
            raise ValueError(f"not a final state: {state!r}")
        self._db.execute(
            "UPDATE deployments SET state = ?, final_report = ?, reported = 0 WHERE id = ?",
            (state, json.dumps(report, sort_keys=True), deployment_id))

    def mark_reported(self, deployment_id: int) -> None:
        """The control plane took the final report."""
        self._db.execute("UPDATE deployments SET reported = 1 WHERE id = ?", (deployment_id,))

    def unreport_finished(self) -> int:
        """Owe every final report again (at start-up: the control plane may have lost one)."""
        cursor = self._db.execute(
            "UPDATE deployments SET reported = 0 WHERE final_report IS NOT NULL AND reported = 1")
        return cursor.rowcount

    def unreported(self) -> list[ReplicaDeployment]:
        """Finished deployments whose final report the control plane has not taken yet."""
        return [_deployment(r) for r in self._db.execute(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments "  # noqa: S608
            "WHERE final_report IS NOT NULL AND reported = 0 ORDER BY id")]

    def app_removed(self, account_id: int, app_id: int) -> None:
        """The deleted app's containers are gone."""
        self._db.execute("DELETE FROM app_removals WHERE account_id = ? AND app_id = ?",
                         (account_id, app_id))

    # -- writes ------------------------------------------------------------------------------

    def apply_snapshot(self, payload: dict[str, Any]) -> AppliedSnapshot:
        """Replace everything with the snapshot and its revision, in one transaction.

        A snapshot may carry a lower revision than the replica holds (the control plane was
        restored from a backup and asked for it): it is the truth and is taken as is. A
        snapshot for another region than the one this replica holds is refused.
        """
        region = _text(payload, "region", where="snapshot")
        revision = _int(payload, "revision", where="snapshot")
        accounts = [_account(a, where=f"snapshot account {i}")
                    for i, a in enumerate(_list(payload, "accounts", where="snapshot"))]
        credentials = [_credential_row(c, where=f"snapshot credential {i}")
                       for i, c in enumerate(_list(payload, "credentials", where="snapshot"))]
        # Without the key (a control plane from before deployments) the deployments held are
        # left alone: reading "none" would remove every app's containers.
        deployments = None if "deployments" not in payload else [
            _deployment_row(d, where=f"snapshot deployment {i}")
            for i, d in enumerate(_list(payload, "deployments", where="snapshot"))]
        settings = _settings(payload.get("settings"), where="snapshot")
        with self._transaction():
            self._check_region(region)
            apps_before = self._apps()
            if deployments is not None:
                keep = [row[0] for row in deployments]
                self._db.execute(
                    f"DELETE FROM deployments WHERE id NOT IN ({','.join('?' * len(keep))})",  # noqa: S608
                    keep)
                for row in deployments:
                    self._upsert_deployment(row)
            self._db.execute("DELETE FROM credentials")
            self._db.execute("DELETE FROM accounts")
            self._db.executemany("INSERT OR REPLACE INTO accounts (id, slug) VALUES (?, ?)",
                                 accounts)
            self._db.executemany(_UPSERT, credentials)
            if payload.get("draining") is True:
                if not self.drain_pending():
                    self._drain()
            else:
                self._db.execute("DELETE FROM meta WHERE key = 'drain'")
            self._drop_orphans()
            self._queue_removals(apps_before)
            self._set_meta("settings", settings)
            self._set_meta("region", region)
            self._set_meta("revision", str(revision))
            held = self.credentials_held()
            count = self._db.execute("SELECT COUNT(*) FROM accounts").fetchone()[0]
        return AppliedSnapshot(revision=revision, region=region, accounts=count,
                               credentials=held)

    def apply_changes(self, payload: dict[str, Any]) -> AppliedChanges:
        """Apply every change in order and set the revision, in one transaction.

        Idempotent: changes at or below the held revision were applied already and are
        skipped, and the revision never goes back, so a batch applied twice (an agent killed
        before its ack, a replayed answer) changes nothing. A batch that starts after the held
        revision would skip changes and is refused; so is one asking for a snapshot. Any
        malformed change rolls the whole batch back (:class:`MalformedPayload`).
        """
        region = _text(payload, "region", where="changes")
        since = _int(payload, "since", where="changes")
        revision = _int(payload, "revision", where="changes")
        changes = _list(payload, "changes", where="changes")
        if payload.get("snapshot_required") is not False:
            raise ReplicaError("This answer asks for a snapshot; it has no changes to apply.")
        with self._transaction():
            self._check_region(region)
            held = self.revision()
            if held is None:
                raise ReplicaError("The replica needs a snapshot before it can apply changes.")
            if since > held:
                raise ReplicaError(
                    f"These changes start after revision {since}; the replica holds {held}, "
                    "so some would be missed.")
            upserted: set[int] = set()
            removed: set[int] = set()
            log_requests: list[LogRequestSpec] = []
            apps_before = self._apps()
            applied = 0
            last = since
            for index, change in enumerate(changes):
                where = f"change {index}"
                if not isinstance(change, dict):
                    raise MalformedPayload(f"{where} is not an object")
                at = _int(change, "revision", where=where)
                if not last <= at <= revision or at <= since:
                    raise MalformedPayload(f"{where} has revision {at}, out of order")
                last = at
                if at <= held:
                    continue
                if change.get("op") == Op.LOGS_REQUEST:
                    request = _log_request(change.get("request"), where=where)
                    if self._db.execute("SELECT 1 FROM accounts WHERE id = ?",
                                        (request.account_id,)).fetchone() is not None:
                        log_requests.append(request)  # else: not an account of this region
                else:
                    self._apply_change(change, where=where, upserted=upserted,
                                       removed=removed)
                applied += 1
            removed |= self._drop_orphans()
            self._queue_removals(apps_before)
            held_now = self.credentials_held()
            new_revision = max(held, revision)
            self._set_meta("revision", str(new_revision))
        return AppliedChanges(
            previous=held, revision=new_revision, changes=len(changes), applied=applied,
            upserted={i: held_now[i] for i in sorted(upserted) if i in held_now},
            removed=sorted(removed - set(held_now)), log_requests=log_requests,
        )

    def _apply_change(
        self, change: dict[str, Any], *, where: str, upserted: set[int], removed: set[int]
    ) -> None:
        op = change.get("op")
        if op == Op.CREDENTIAL_UPSERT:
            row = _credential_row(change.get("credential"), where=f"{where} credential")
            self._db.execute(_UPSERT, row)
            upserted.add(row[0])
            removed.discard(row[0])
        elif op == Op.CREDENTIAL_DELETE:
            credential_id = _int(change, "credential_id", where=where)
            self._db.execute("DELETE FROM credentials WHERE id = ?", (credential_id,))
            removed.add(credential_id)
            upserted.discard(credential_id)
        elif op == Op.ACCOUNT_UPSERT:
            account = _account(change.get("account"), where=f"{where} account")
            self._db.execute("INSERT OR REPLACE INTO accounts (id, slug) VALUES (?, ?)",
                             account)
        elif op == Op.ACCOUNT_DELETE:
            account_id = _int(change, "account_id", where=where)
            dropped = [r[0] for r in self._db.execute(
                "SELECT id FROM credentials WHERE account_id = ?", (account_id,))]
            self._db.execute("DELETE FROM credentials WHERE account_id = ?", (account_id,))
            self._db.execute("DELETE FROM deployments WHERE account_id = ?", (account_id,))
            self._db.execute("DELETE FROM accounts WHERE id = ?", (account_id,))
            removed.update(dropped)
            upserted.difference_update(dropped)
        elif op == Op.DEPLOYMENT_UPSERT:
            self._upsert_deployment(
                _deployment_row(change.get("deployment"), where=f"{where} deployment"))
        elif op == Op.REGION_UPSERT:
            self._set_meta("settings", _settings(change.get("settings"), where=where))
        elif op == Op.REGION_DRAIN:
            self._drain()
        elif op == Op.APP_DELETE:
            account_id = _int(change, "account_id", where=where)
            app_id = _int(change, "app_id", where=where)
            self._db.execute("DELETE FROM deployments WHERE account_id = ? AND app_id = ?",
                             (account_id, app_id))
            # Queued even when no deployment was held: containers may exist all the same.
            self._db.execute("INSERT OR IGNORE INTO app_removals VALUES (?, ?)",
                             (account_id, app_id))
        else:
            raise MalformedPayload(f"{where} has an unknown op {op!r}")

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE: take the write lock up front, so nothing can interleave with the batch.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _check_region(self, region: str) -> None:
        held = self.region()
        if held is not None and held != region:
            raise ReplicaError(
                f"The replica in {self.path.parent} belongs to region {held!r}, not "
                f"{region!r}; give each region's agent its own data dir.")

    def _drain(self) -> None:
        """The region is being removed: forget every deployment (the batch's end queues
        their apps for removal, and what runs for an app not held is removed too), and owe
        the control plane the report that all is gone. A repeated op asks again."""
        self._db.execute("DELETE FROM deployments")
        self._set_meta("drain", DRAIN_PENDING)

    def _apps(self) -> set[tuple[int, int]]:
        return {(a, b) for a, b in self._db.execute(
            "SELECT DISTINCT account_id, app_id FROM deployments")}

    def _queue_removals(self, apps_before: set[tuple[int, int]]) -> None:
        """Apps whose deployments all went in this transaction get their containers removed;
        an app that has deployments again is not removed."""
        apps_now = self._apps()
        self._db.executemany("INSERT OR IGNORE INTO app_removals VALUES (?, ?)",
                             sorted(apps_before - apps_now))
        self._db.executemany(
            "DELETE FROM app_removals WHERE account_id = ? AND app_id = ?", sorted(apps_now))

    def _upsert_deployment(self, row: tuple[Any, ...]) -> None:
        # A deployment received again (coalesced change, new snapshot) keeps its state: a
        # finished deployment is never run twice. One first seen already finished on the
        # control plane's side (an agent with a fresh data dir) is not run again either.
        # Any status past the ones of a deployment still to run (``replaced``,
        # ``superseded``, or one this agent does not know) is finished too.
        status = json.loads(row[5]).get("status")
        if status is None or status in _TO_RUN:
            state, reported = DEPLOYMENT_PENDING, 0
        elif status in ("running", "replaced"):
            state, reported = DEPLOYMENT_DONE, 1
        else:
            state, reported = DEPLOYMENT_FAILED, 1
        self._db.execute(
            "INSERT INTO deployments (id, account_id, app_id, app, number, payload, state, "
            "reported) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "account_id = excluded.account_id, app_id = excluded.app_id, app = excluded.app, "
            "number = excluded.number, payload = excluded.payload", (*row, state, reported))

    def _drop_orphans(self) -> set[int]:
        orphans = {r[0] for r in self._db.execute(
            "SELECT id FROM credentials WHERE account_id NOT IN (SELECT id FROM accounts)")}
        if orphans:
            self._db.execute(
                "DELETE FROM credentials WHERE account_id NOT IN (SELECT id FROM accounts)")
        self._db.execute(
            "DELETE FROM deployments WHERE account_id NOT IN (SELECT id FROM accounts)")
        return orphans


_UPSERT = (
    "INSERT OR REPLACE INTO credentials (" + ", ".join(_COLUMNS) + ") "
    "VALUES (" + ", ".join("?" for _ in _COLUMNS) + ")"
)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a replica written by an older agent up to this schema (columns only grow)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(credentials)")}
    if "expires_at" not in columns:
        db.execute("ALTER TABLE credentials ADD COLUMN expires_at TEXT")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema' AND value < ?",
               (SCHEMA_VERSION, SCHEMA_VERSION))


def _credential(row: tuple[Any, ...]) -> ReplicaCredential:
    return ReplicaCredential(id=row[0], account_id=row[1], type=row[2], name=row[3],
                             server=row[4], username=row[5], email=row[6],
                             is_default=bool(row[7]), revision=row[8],
                             expires_at=parse_expiry(row[9]))


def _credential_row(value: Any, *, where: str) -> tuple[Any, ...]:
    """A credential object checked field by field, as a row for ``_UPSERT``."""
    if not isinstance(value, dict):
        raise MalformedPayload(f"{where} is not an object")
    row = (
        _int(value, "id", where=where),
        _int(value, "account_id", where=where),
        _text(value, "type", where=where),
        _text(value, "name", where=where),
        _text(value, "server", where=where, empty=True),
        _text(value, "username", where=where, empty=True),
        _text(value, "email", where=where, empty=True),
        _bool(value, "is_default", where=where),
        _int(value, "revision", where=where),
        _expiry(value, where=where),
        _text(value, "secret", where=where),
    )
    try:
        key_id_of(row[-1])
    except SealedDataError:
        # Never store what may be a secret in clear: only sealed values go in the file.
        raise MalformedPayload(f"{where} has a secret that is not sealed") from None
    return row


def _expiry(value: dict[str, Any], *, where: str) -> str | None:
    """``expires_at`` checked, kept as the text it came as (None for a password)."""
    try:
        return format_expiry(parse_expiry(value.get("expires_at")))
    except ValueError as exc:
        raise MalformedPayload(f"{where}: {exc}") from None


DEPLOYMENT_PENDING = "pending"
#: The control plane's statuses of a deployment its agent is still to run (or finish).
_TO_RUN = frozenset({"queued", "building", "pulling", "starting"})
DEPLOYMENT_DONE = "done"
DEPLOYMENT_FAILED = "failed"
_DEPLOYMENT_COLUMNS = ("id, account_id, app_id, app, number, payload, state, final_report, "
                       "reported")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _deployment(row: tuple[Any, ...]) -> ReplicaDeployment:
    return ReplicaDeployment(id=row[0], account_id=row[1], app_id=row[2], app=row[3],
                             number=row[4], payload=json.loads(row[5]), state=row[6],
                             final_report=None if row[7] is None else json.loads(row[7]),
                             reported=bool(row[8]))


def _deployment_row(value: Any, *, where: str) -> tuple[Any, ...]:
    """A DEPLOYMENT checked field by field, as ``(id, account_id, app_id, app, number,
    payload JSON)``. Secret env values must be sealed: only sealed values go in the file."""
    if not isinstance(value, dict):
        raise MalformedPayload(f"{where} is not an object")
    deployment_id = _int(value, "id", where=where)
    account_id = _int(value, "account_id", where=where)
    app_id = _int(value, "app_id", where=where)
    app = _text(value, "app", where=where)
    number = _int(value, "number", where=where)
    if value.get("build") is not None:
        try:
            BuildSpec.from_payload(value["build"])
        except ValueError as exc:
            raise MalformedPayload(f"{where}: {exc}") from None
        if value.get("image") is not None:
            _text(value, "image", where=where)
    else:
        _text(value, "image", where=where)
    pull = value.get("pull")
    if not isinstance(pull, dict) or pull.get("mode") not in tuple(PullMode):
        raise MalformedPayload(f"{where}: pull.mode is not 'credential' or 'anonymous'")
    if pull["mode"] == PullMode.CREDENTIAL:
        _int(pull, "credential_id", where=f"{where} pull")
        _int(pull, "credential_revision", where=f"{where} pull")
    port = value.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)
                             or not 1 <= port <= 65535):
        raise MalformedPayload(f"{where}: port is not a TCP port")
    command = value.get("command")
    if command is not None and (not isinstance(command, list)
                                or not all(isinstance(c, str) for c in command)):
        raise MalformedPayload(f"{where}: command is not a list of strings")
    try:
        ready_timeout_from(value)
    except ValueError as exc:
        raise MalformedPayload(f"{where}: {exc}") from None
    env = value.get("env") or []
    if not isinstance(env, list):
        raise MalformedPayload(f"{where}: env is not a list")
    for index, item in enumerate(env):
        here = f"{where} env {index}"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not _ENV_NAME.match(item["name"]):
            raise MalformedPayload(f"{here} has no valid name")
        if "secret" in item:
            try:
                key_id_of(_text(item, "secret", where=here))
            except SealedDataError:
                raise MalformedPayload(f"{here} has a secret that is not sealed") from None
        elif not isinstance(item.get("value"), str):
            raise MalformedPayload(f"{here} has neither a value nor a secret")
    payload = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return deployment_id, account_id, app_id, app, number, payload


def _log_request(value: Any, *, where: str) -> LogRequestSpec:
    try:
        return LogRequestSpec.from_payload(value)
    except ValueError as exc:
        raise MalformedPayload(f"{where}: {exc}") from None


def _settings(value: Any, *, where: str) -> str:
    """A ``settings`` object checked, as the JSON kept in ``meta``; its registry password
    must be sealed: only sealed values go in the file."""
    try:
        settings = RegionSettings.from_payload(value)
    except ValueError as exc:
        raise MalformedPayload(f"{where}: {exc}") from None
    if settings.registry is not None:
        try:
            key_id_of(settings.registry.secret)
        except SealedDataError:
            raise MalformedPayload(f"{where}: the region registry's password is not sealed") \
                from None
    return json.dumps(settings.to_payload(), sort_keys=True)


def _account(value: Any, *, where: str) -> tuple[int, str]:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{where} is not an object")
    return _int(value, "id", where=where), _text(value, "slug", where=where)


def _int(obj: dict[str, Any], name: str, *, where: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedPayload(f"{where}: {name} is not a non-negative integer")
    return value


def _text(obj: dict[str, Any], name: str, *, where: str, empty: bool = False) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or (not value and not empty):
        raise MalformedPayload(f"{where}: {name} is not {'' if empty else 'non-empty '}text")
    return value


def _bool(obj: dict[str, Any], name: str, *, where: str) -> bool:
    value = obj.get(name)
    if not isinstance(value, bool):
        raise MalformedPayload(f"{where}: {name} is not true or false")
    return value


def _list(obj: dict[str, Any], name: str, *, where: str) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise MalformedPayload(f"{where}: {name} is not a list")
    return value
