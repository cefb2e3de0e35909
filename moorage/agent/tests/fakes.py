"""A FAKE control plane for the agent's unit tests — not the real one.

:class:`FakeControlPlane` speaks the agent half of ``docs/sync.md`` (signed snapshots and
changes, acks, the error shapes) from an in-memory state, as an ``httpx.MockTransport`` handler
or, through :func:`serve_http`, over real loopback HTTP for the CLI tests. It exists so the
agent's loop can be tested before and independently of the Django app; it does not coalesce
changes and ignores ``wait`` unless told to hang. The end-to-end tests run the same agent
against the real control plane (``moorage/regions``) under pytest-django's ``live_server``.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from moorage import protocol
from moorage.sealing import Key, generate_key, seal

TOKEN = "mrr_" + "A" * 43


@dataclass
class FakeCredential:
    """A credential with its secret in clear, sealed for the region when sent."""

    id: int
    account_id: int
    username: str
    secret: str
    name: str = ""
    server: str = "registry.example"
    type: str = "container_registry"
    email: str = ""
    is_default: bool = False
    revision: int = 1


@dataclass
class FakeDeployment:
    """A deployment with its secret env values in clear, sealed for the region when sent.

    ``credential_id`` None means an anonymous pull; ``credential_revision`` None means the
    credential's current revision at the time it is put.
    """

    id: int
    account_id: int
    app_id: int
    app: str
    number: int
    image: str | None
    credential_id: int | None = None
    credential_revision: int | None = None
    port: int | None = None
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    #: The protocol's ``build`` object (builds from source; ``image`` is then None).
    build: dict[str, Any] | None = None
    #: The app's readiness timeout; ``None`` leaves the field out, as older control planes do.
    ready_timeout: int | None = None


@dataclass
class FakeControlPlane:
    """In-memory state, a change log and knobs to make it misbehave.

    Knobs: ``failures`` (a queue of HTTP statuses or exceptions for the next requests),
    ``tamper_next`` (flip a byte of the next signed payload), ``revoked``/``token``
    (authentication), ``compacted_through`` (older ``since`` → snapshot_required),
    ``hang`` (an event a changes request waits on, to test stopping mid long poll),
    ``ack_failures`` (statuses for the next acks only), ``report_failures`` (statuses for the
    next deployment reports only), ``sources`` (the uploaded archives it serves).
    ``reports`` records ``(deployment id, body)`` of every
    report taken, ``log_chunks`` every chunk of a logs answer, ``runtime_reports`` every
    runtime report's body. ``settings`` is the region's ``settings`` object (runtime, region
    registry), changed with :meth:`set_settings`.
    """

    region: str = "eu-1"
    key: Key = field(default_factory=lambda: generate_key("eu-1-test"))
    token: str = TOKEN
    revoked: bool = False
    revision: int = 0
    compacted_through: int = 0
    accounts: dict[int, str] = field(default_factory=dict)
    credentials: dict[int, FakeCredential] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    failures: list[int | Exception] = field(default_factory=list)
    ack_failures: list[int] = field(default_factory=list)
    tamper_next: bool = False
    hang: threading.Event | None = None
    #: An event an ack waits on (up to 5 s) before it is taken.
    ack_gate: threading.Event | None = None
    requests: list[str] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    deployments: dict[int, FakeDeployment] = field(default_factory=dict)
    report_failures: list[int] = field(default_factory=list)
    reports: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    #: Uploaded source archives by id, as ``GET /agent/sources/{id}`` serves them.
    sources: dict[int, bytes] = field(default_factory=dict)
    #: Chunks of logs answers taken, ``(request id, body)``; ids in ``logs_gone`` answer 404.
    log_chunks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    logs_gone: set[int] = field(default_factory=set)
    runtime_reports: list[dict[str, Any]] = field(default_factory=list)
    #: Called with ``(deployment id, body)`` as each report is taken (to look at the engine
    #: at that moment).
    on_report: Callable[[int, dict[str, Any]], None] | None = None
    settings: dict[str, Any] = field(default_factory=lambda: {"runtime": "docker",
                                                              "registry": None})

    # -- state changes (each is one revision) ------------------------------------------------

    def add_account(self, account_id: int, slug: str) -> int:
        """Enable an account in the region with its credentials, like ``account.upsert``."""
        self.revision += 1
        self.accounts[account_id] = slug
        self.log.append({"revision": self.revision, "op": "account.upsert",
                         "account": {"id": account_id, "slug": slug}})
        for credential in self.credentials.values():
            if credential.account_id == account_id:
                self.log.append(self._upsert(credential))
        return self.revision

    def put_credential(self, credential: FakeCredential) -> int:
        """Create or change a credential; a change bumps the credential's own revision."""
        self.revision += 1
        if credential.id in self.credentials:
            credential.revision = self.credentials[credential.id].revision + 1
        self.credentials[credential.id] = credential
        self.log.append(self._upsert(credential))
        return self.revision

    def delete_credential(self, credential_id: int) -> int:
        """Delete a credential (``credential.delete``)."""
        self.revision += 1
        credential = self.credentials.pop(credential_id)
        self.log.append({"revision": self.revision, "op": "credential.delete",
                         "account_id": credential.account_id, "credential_id": credential_id})
        return self.revision

    def remove_account(self, account_id: int) -> int:
        """Disable an account for the region (``account.delete``)."""
        self.revision += 1
        self.accounts.pop(account_id)
        self.log.append({"revision": self.revision, "op": "account.delete",
                         "account_id": account_id})
        return self.revision

    def put_deployment(self, deployment: FakeDeployment) -> int:
        """A new deployment of an app (``deployment.upsert``)."""
        self.revision += 1
        if deployment.credential_id is not None and deployment.credential_revision is None:
            deployment.credential_revision = self.credentials[deployment.credential_id].revision
        self.deployments[deployment.id] = deployment
        self.log.append({"revision": self.revision, "op": "deployment.upsert",
                         "deployment": self.deployment_payload(deployment)})
        return self.revision

    def delete_app(self, account_id: int, app_id: int) -> int:
        """Delete an app and its deployments (``app.delete``)."""
        self.revision += 1
        for deployment_id in [d.id for d in self.deployments.values()
                              if (d.account_id, d.app_id) == (account_id, app_id)]:
            del self.deployments[deployment_id]
        self.log.append({"revision": self.revision, "op": "app.delete",
                         "account_id": account_id, "app_id": app_id})
        return self.revision

    def request_logs(self, request: dict[str, Any]) -> int:
        """A member asks for an app's logs (``logs.request``)."""
        self.revision += 1
        self.log.append({"revision": self.revision, "op": "logs.request", "request": request})
        return self.revision

    def deployment_payload(self, d: FakeDeployment) -> dict[str, Any]:
        """The protocol's DEPLOYMENT object, its secret env values sealed for the region."""
        if d.credential_id is None:
            pull: dict[str, Any] = {"mode": "anonymous", "credential_id": None,
                                    "credential_name": None, "credential_revision": None}
        else:
            credential = self.credentials.get(d.credential_id)
            pull = {"mode": "credential", "credential_id": d.credential_id,
                    "credential_name": credential.name if credential else "gone",
                    "credential_revision": d.credential_revision}
        env: list[dict[str, str]] = [{"name": k, "value": v} for k, v in d.env.items()]
        for name, value in d.secret_env.items():
            aad = protocol.region_env_aad(region=self.region, account_id=d.account_id,
                                          app_id=d.app_id, deployment_id=d.id, name=name)
            env.append({"name": name, "secret": seal(self.key, value.encode(), aad)})
        payload = {"id": d.id, "account_id": d.account_id,
                   "account_slug": self.accounts.get(d.account_id), "app_id": d.app_id,
                   "app": d.app, "number": d.number, "image": d.image, "build": d.build,
                   "pull": pull, "port": d.port, "command": d.command,
                   "replicas": d.replicas, "env": env}
        if d.ready_timeout is not None:
            payload["ready_timeout"] = d.ready_timeout
        return payload

    def set_settings(self, runtime: str, registry: tuple[str, str, str, int] | None = None
                     ) -> int:
        """Change the region's runtime and registry (``host, user, password, revision``)."""
        self.revision += 1
        sealed = None
        if registry is not None:
            host, username, password, revision = registry
            aad = protocol.region_registry_aad(region=self.region, revision=revision)
            sealed = {"host": host, "username": username, "revision": revision,
                      "secret": seal(self.key, password.encode(), aad)}
        self.settings = {"runtime": runtime, "registry": sealed}
        self.log.append({"revision": self.revision, "op": "region.upsert",
                         "settings": self.settings})
        return self.revision

    def bump(self) -> int:
        """A change that does not concern this region: only the revision moves."""
        self.revision += 1
        return self.revision

    def credential_payload(self, credential: FakeCredential) -> dict[str, Any]:
        """The protocol's CREDENTIAL object, its secret sealed for the region."""
        aad = protocol.region_secret_aad(region=self.region, account_id=credential.account_id,
                                         credential_id=credential.id,
                                         revision=credential.revision)
        return {
            "id": credential.id, "account_id": credential.account_id, "type": credential.type,
            "name": credential.name or f"cred-{credential.id}", "server": credential.server,
            "username": credential.username, "email": credential.email,
            "is_default": credential.is_default, "revision": credential.revision,
            "secret": seal(self.key, credential.secret.encode(), aad),
        }

    def _upsert(self, credential: FakeCredential) -> dict[str, Any]:
        return {"revision": self.revision, "op": "credential.upsert",
                "credential": self.credential_payload(credential)}

    # -- answers -----------------------------------------------------------------------------

    def snapshot_payload(self) -> dict[str, Any]:
        """The whole state, as the snapshot endpoint's payload."""
        return {
            "kind": "snapshot", "region": self.region, "revision": self.revision,
            "accounts": [{"id": i, "slug": s} for i, s in sorted(self.accounts.items())],
            "credentials": [self.credential_payload(c) for _, c in
                            sorted(self.credentials.items()) if c.account_id in self.accounts],
            "deployments": [self.deployment_payload(d) for d in self._latest_deployments()],
            "settings": self.settings,
        }

    def _latest_deployments(self) -> list[FakeDeployment]:
        latest: dict[tuple[int, int], FakeDeployment] = {}
        for d in self.deployments.values():
            key = (d.account_id, d.app_id)
            if d.account_id in self.accounts and (key not in latest
                                                  or d.number > latest[key].number):
                latest[key] = d
        return sorted(latest.values(), key=lambda d: d.id)

    def changes_payload(self, since: int) -> dict[str, Any]:
        """Changes after ``since``, as the changes endpoint's payload."""
        required = since < self.compacted_through or since > self.revision
        return {
            "kind": "changes", "region": self.region, "since": since,
            "revision": self.revision, "snapshot_required": required,
            "changes": [] if required else [c for c in self.log if c["revision"] > since],
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        """The ``httpx.MockTransport`` handler."""
        path = request.url.path.removeprefix("/api/v1/agent/")
        self.requests.append(path)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return _error(failure, "server_error", "The fake was told to fail.")
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "region_token_invalid", "The region token is not valid.")
        if self.revoked:
            return _error(401, "region_token_revoked", "The token was rotated.")
        nonce = {"nonce": request.url.params.get("nonce")}
        if path == "snapshot" and request.method == "GET":
            return self._signed(self.snapshot_payload() | nonce)
        if path == "changes" and request.method == "GET":
            if self.hang is not None:
                self.hang.wait(30)
            return self._signed(
                self.changes_payload(int(request.url.params["since"])) | nonce)
        if path == "ack" and request.method == "POST":
            if self.ack_gate is not None:
                self.ack_gate.wait(5)
            if self.ack_failures:
                return _error(self.ack_failures.pop(0), "server_error", "Ack failed.")
            self.acks.append(json.loads(request.content))
            return httpx.Response(204)
        if path.startswith("deployments/") and path.endswith("/events") \
                and request.method == "POST":
            if self.report_failures:
                return _error(self.report_failures.pop(0), "server_error", "Report failed.")
            deployment_id = int(path.split("/")[1])
            self.reports.append((deployment_id, json.loads(request.content)))
            if self.on_report is not None:
                self.on_report(deployment_id, self.reports[-1][1])
            return httpx.Response(204)
        if path.startswith("logs/") and request.method == "POST":
            request_id = int(path.split("/")[1])
            if request_id in self.logs_gone:
                return _error(404, "log_request_not_found", "No such logs request.")
            self.log_chunks.append((request_id, json.loads(request.content)))
            return httpx.Response(204)
        if path == "runtime" and request.method == "POST":
            self.runtime_reports.append(json.loads(request.content))
            return httpx.Response(204)
        if path.startswith("sources/") and request.method == "GET":
            archive = self.sources.get(int(path.split("/")[1]))
            if archive is None:
                return _error(404, "source_archive_not_found", "No such source archive.")
            return httpx.Response(200, content=archive,
                                  headers={"Content-Type": "application/gzip"})
        return _error(404, "not_found", "No such endpoint.")

    def transport(self) -> httpx.MockTransport:
        """A transport for :class:`~moorage.agent.client.ControlPlaneClient`."""
        return httpx.MockTransport(self.handle)

    def _signed(self, payload: dict[str, Any]) -> httpx.Response:
        envelope = protocol.sign(payload, self.key)
        if self.tamper_next:
            self.tamper_next = False
            body = json.dumps(payload).replace('"revision"', '"revisiom"', 1).encode()
            envelope["payload"] = base64.urlsafe_b64encode(body).decode()
        return httpx.Response(200, json=envelope)


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "detail": {}})


@contextmanager
def serve_http(fake: FakeControlPlane) -> Iterator[str]:
    """Serve ``fake`` on a loopback port over real HTTP; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = httpx.Request(
                self.command, f"http://fake{parts.path}",
                params=parse_qs(parts.query), headers=dict(self.headers.items()), content=body)
            try:
                response = fake.handle(request)
            except httpx.TransportError:
                self.close_connection = True
                return
            self.send_response(response.status_code)
            content = response.content
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = _any

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if fake.hang is not None:
            fake.hang.set()
        server.shutdown()
        server.server_close()


def always(value: float) -> Callable[[], float]:
    """A 'random' source for deterministic jitter."""
    return lambda: value
