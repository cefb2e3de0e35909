"""Real OCI registries for tests: Debian's ``docker-registry`` (CNCF distribution 2.8).

Two flavours, like the registries Moorage has to talk to in the wild:

* ``basic``: ``auth.htpasswd`` with a bcrypt file, like ECR or a self-hosted registry.
  Any authenticated user may push and pull anything; anonymous requests are refused.
* ``token``: ``auth.token`` (Bearer) with a :class:`TokenIssuer` of ours, like Docker Hub or
  GHCR. Access is per user and repository; the issuer hands out a token for the *intersection*
  of what was asked and what is granted, so a token is not proof of access — the registry
  decides, exactly as REGISTRY_NOTES.md describes.

Each server runs on a free 127.0.0.1 port with its config, credentials and storage in a temp
dir that :meth:`RegistryServer.stop` removes. Passwords are never logged or put in messages.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

import bcrypt
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from moorage.testing.ports import (
    LOOPBACK,
    ComponentStartError,
    ThreadedHTTPServer,
    die_with_parent,
    free_port,
    log_tail,
    pids_mentioning,
    stop_process,
    wait_for_http,
)
from moorage.testing.programs import require_binary

REGISTRY_BINARY = "docker-registry"

#: Every action distribution knows for a repository; ``*`` stands for all of them.
ALL_ACTIONS: tuple[str, ...] = ("pull", "push", "delete", "*")

AuthKind = Literal["basic", "token"]

_OWNER_FILE = ".moorage-registry-owner"


# --------------------------------------------------------------------------------------------
# Scopes
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scope:
    """One parsed ``scope`` of a token request: ``TYPE:NAME:ACTIONS``.

    ``TYPE`` may carry a class (``repository(plugin)``); ``NAME`` may contain colons
    (``127.0.0.1:5000/x`` in a sloppy client's request), which is why parsing splits the
    actions off the right and the type off the left instead of splitting on every ``:``.
    """

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse one scope string; raise ``ValueError`` when it has no type, name or actions."""
        head, sep, actions = text.rpartition(":")
        kind, sep2, name = head.partition(":")
        if not sep or not sep2 or not kind or not name:
            raise ValueError(f"malformed scope {text!r}")
        parsed = tuple(a for a in (x.strip() for x in actions.split(",")) if a)
        return cls(type=kind, name=name, actions=parsed)

    @property
    def base_type(self) -> str:
        """The resource type without its class: ``repository(plugin)`` → ``repository``."""
        return self.type.split("(", 1)[0]


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Parse every ``scope`` query value; one value may also hold several, space-separated."""
    scopes: list[Scope] = []
    for value in values:
        for item in value.split():
            scopes.append(Scope.parse(item))
    return scopes


# --------------------------------------------------------------------------------------------
# Token issuer
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    """What the issuer saw of one token request (never the password)."""

    method: str
    path: str
    service: str | None
    scopes: tuple[str, ...]
    account: str | None
    username: str | None
    authenticated: bool
    status: int
    granted: tuple[dict[str, Any], ...]
    at: float


@dataclasses.dataclass
class _User:
    salt: bytes
    digest: bytes

    @classmethod
    def with_password(cls, password: str) -> _User:
        salt = secrets.token_bytes(16)
        return cls(salt=salt, digest=_digest(salt, password))

    def check(self, password: str) -> bool:
        return hmac.compare_digest(self.digest, _digest(self.salt, password))


def _digest(salt: bytes, password: str) -> bytes:
    # Kept in memory only; a salted hash just keeps clear passwords out of heap dumps/reprs.
    return hashlib.sha256(salt + password.encode()).digest()


class TokenIssuer:
    """A small Bearer-token server for distribution's ``auth.token``, in a background thread.

    ``GET /token?service=S&scope=repository:NAME:pull[,push]`` (``scope`` may repeat) with
    optional Basic ``user:password``:

    * bad or unknown credentials → 401;
    * otherwise 200 with ``{"token", "access_token", "expires_in", "issued_at"}``, the token
      granting, per asked scope, the intersection of the asked actions with those granted to
      the user (or to everybody through :meth:`make_public`). The access list may be empty:
      anonymous or unauthorised requests still get a token, and the *registry* refuses them.

    Tokens are RS256 JWTs with an ``x5c`` header holding a self-signed certificate, which the
    registry trusts through its ``rootcertbundle`` (:attr:`certificate_pem`).
    """

    def __init__(
        self,
        *,
        service: str = "moorage-test-registry",
        issuer: str = "moorage-test-issuer",
        expires_in: int = 300,
    ) -> None:
        """Create the signing key and certificate; :meth:`start` serves it."""
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self._lock = threading.Lock()
        self._users: dict[str, _User] = {}
        self._grants: dict[str, dict[str, set[str]]] = {}
        self._public: set[str] = set()
        self._requests: list[TokenRequest] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._certificate = _self_signed_certificate(self._key, "moorage-test-token-issuer")
        self._http: ThreadedHTTPServer | None = None

    # ----- lifecycle

    def start(self) -> TokenIssuer:
        """Listen on a free 127.0.0.1 port in a daemon thread."""
        issuer = self

        class Handler(_TokenHandler):
            owner = issuer

        self._http = ThreadedHTTPServer(Handler, name="moorage-token-issuer")
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._http is not None:
            self._http.stop()
            self._http = None

    @property
    def port(self) -> int:
        """The port the issuer listens on."""
        if self._http is None:
            raise RuntimeError("token issuer is not running")
        return self._http.port

    @property
    def realm(self) -> str:
        """The token endpoint URL the registry sends clients to."""
        return f"http://{LOOPBACK}:{self.port}/token"

    @property
    def certificate_pem(self) -> bytes:
        """The signing certificate, for the registry's ``rootcertbundle``."""
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    # ----- users and grants

    def add_user(self, username: str, password: str) -> None:
        """Add a user; ``ValueError`` if it exists already."""
        with self._lock:
            if username in self._users:
                raise ValueError(f"user {username!r} exists")
            self._users[username] = _User.with_password(password)

    def set_password(self, username: str, password: str) -> None:
        """Change a user's password; the old one is refused from the next request on."""
        with self._lock:
            if username not in self._users:
                raise KeyError(username)
            self._users[username] = _User.with_password(password)

    def remove_user(self, username: str) -> None:
        """Delete a user and its grants."""
        with self._lock:
            self._users.pop(username, None)
            self._grants.pop(username, None)

    def grant(self, username: str, repository: str, actions: Sequence[str] = ("pull",)) -> None:
        """Allow ``username`` the ``actions`` on ``repository`` (``*`` = every repository)."""
        unknown = set(actions) - set(ALL_ACTIONS)
        if unknown:
            raise ValueError(f"unknown actions {sorted(unknown)}")
        with self._lock:
            if username not in self._users:
                raise KeyError(username)
            self._grants.setdefault(username, {}).setdefault(repository, set()).update(actions)

    def revoke(self, username: str, repository: str) -> None:
        """Take back every action ``username`` had on ``repository``."""
        with self._lock:
            self._grants.get(username, {}).pop(repository, None)

    def make_public(self, repository: str) -> None:
        """Let anybody, anonymous included, pull ``repository``."""
        with self._lock:
            self._public.add(repository)

    # ----- what was asked

    @property
    def requests(self) -> list[TokenRequest]:
        """A copy of the token requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests (e.g. at the start of a test)."""
        with self._lock:
            self._requests.clear()

    # ----- issuing

    def authenticate(self, username: str, password: str) -> bool:
        """Whether ``username:password`` is a known user with that password."""
        with self._lock:
            user = self._users.get(username)
        return user is not None and user.check(password)

    def allowed_actions(self, username: str | None, scope: Scope) -> list[str]:
        """The actions of ``scope`` that ``username`` (``None`` = anonymous) may perform."""
        if scope.base_type != "repository":
            # registry:catalog:* and friends: only for a wildcard ("admin") grant.
            with self._lock:
                wildcard = self._grants.get(username or "", {}).get("*", set())
            return list(scope.actions) if "*" in wildcard else []
        with self._lock:
            granted: set[str] = set()
            if scope.name in self._public:
                granted.add("pull")
            if username is not None:
                per_repo = self._grants.get(username, {})
                granted |= per_repo.get(scope.name, set()) | per_repo.get("*", set())
        if "*" in granted:
            return list(scope.actions)
        return [action for action in scope.actions if action in granted]

    def issue(self, username: str | None, scopes: Sequence[Scope]) -> dict[str, Any]:
        """Build the token response for an (already authenticated) user and the asked scopes."""
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        access: list[dict[str, Any]] = []
        for scope in scopes:
            actions = self.allowed_actions(username, scope)
            access.append({"type": scope.type, "name": scope.name, "actions": actions})
        claims = {
            "iss": self.issuer,
            "sub": username or "",
            "aud": self.service,
            "exp": int(now.timestamp()) + self.expires_in,
            "nbf": int(now.timestamp()) - 10,
            "iat": int(now.timestamp()),
            "jti": secrets.token_hex(16),
            "access": access,
        }
        x5c = base64.b64encode(self._certificate.public_bytes(serialization.Encoding.DER))
        token = jwt.encode(
            claims,
            self._key,
            algorithm="RS256",
            headers={"typ": "JWT", "x5c": [x5c.decode()]},
        )
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": now.isoformat().replace("+00:00", "Z"),
        }

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)


class _TokenHandler(BaseHTTPRequestHandler):
    """HTTP side of :class:`TokenIssuer`; ``owner`` is set on a per-issuer subclass."""

    owner: TokenIssuer
    server_version = "moorage-token-issuer"

    def log_message(self, format: str, *args: Any) -> None:
        # Silence the default stderr access log; requests are recorded on the issuer.
        return

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            return
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        raw_scopes = tuple(query.get("scope", []))
        service = query.get("service", [None])[0]
        account = query.get("account", [None])[0]
        username, password = self._basic_credentials()

        def record(status: int, authenticated: bool, granted: Sequence[dict[str, Any]]) -> None:
            self.owner._record(
                TokenRequest(
                    method="GET",
                    path=url.path,
                    service=service,
                    scopes=raw_scopes,
                    account=account,
                    username=username,
                    authenticated=authenticated,
                    status=status,
                    granted=tuple(granted),
                    at=time.time(),
                )
            )

        if username is not None and (
            password is None or not self.owner.authenticate(username, password)
        ):
            record(401, False, ())
            self._send(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
                extra_headers={"WWW-Authenticate": 'Basic realm="moorage-test-issuer"'},
            )
            return
        if service != self.owner.service:
            record(400, username is not None, ())
            self._send(400, {"errors": [{"code": "DENIED", "message": "unknown service"}]})
            return
        try:
            scopes = parse_scopes(raw_scopes)
        except ValueError as exc:
            record(400, username is not None, ())
            self._send(400, {"errors": [{"code": "DENIED", "message": str(exc)}]})
            return
        body = self.owner.issue(username, scopes)
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        record(200, username is not None, claims["access"])
        self._send(200, body)

    def _basic_credentials(self) -> tuple[str | None, str | None]:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None, None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return "", None
        username, sep, password = decoded.partition(":")
        return username, (password if sep else None)

    def _send(
        self, status: int, body: dict[str, Any], extra_headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _self_signed_certificate(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    """A self-signed CA certificate for ``key``, valid from yesterday for 30 days.

    It is its own root: distribution verifies the ``x5c`` chain against its root bundle, and
    a leaf that is itself in the bundle verifies without intermediates.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


# --------------------------------------------------------------------------------------------
# Registry server
# --------------------------------------------------------------------------------------------


class RegistryServer:
    """A real ``docker-registry serve`` on a free 127.0.0.1 port, storage in a temp dir.

    ``auth="basic"`` uses a bcrypt htpasswd file; distribution re-reads it when its mtime
    changes (checked: a changed password works on the next request, the old one is refused),
    so :meth:`add_user` and :meth:`set_password` need no restart. ``auth="token"`` uses a
    :class:`TokenIssuer` (:attr:`issuer`) whose users and grants live in memory.

    An admin user with a random password (:attr:`admin_username`, :attr:`admin_password`)
    is created at start and may push and pull anything. Use as a context manager or call
    :meth:`start` / :meth:`stop`.
    """

    def __init__(self, auth: AuthKind = "basic", *, admin_username: str = "moorage-admin"):
        """Prepare (not start) a registry with the given auth flavour."""
        if auth not in ("basic", "token"):
            raise ValueError(f"unknown auth flavour {auth!r}")
        self.auth: AuthKind = auth
        self.admin_username = admin_username
        self.admin_password = secrets.token_urlsafe(24)
        self.issuer: TokenIssuer | None = None
        self._binary: str | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._htpasswd_users: dict[str, str] = {}
        self._htpasswd_lock = threading.Lock()

    def __repr__(self) -> str:
        """Show flavour and address, never credentials."""
        where = self.host if self._port else "not started"
        return f"<RegistryServer {self.auth} {where}>"

    def __enter__(self) -> RegistryServer:
        """Start the registry."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the registry and remove its files."""
        self.stop()

    # ----- addresses

    @property
    def port(self) -> int:
        """The registry's TCP port on 127.0.0.1."""
        if self._port is None:
            raise RuntimeError("registry is not started")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry host as it appears in image references."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def directory(self) -> Path:
        """The temp dir holding config, credentials, storage and log."""
        if self._dir is None:
            raise RuntimeError("registry is not started")
        return self._dir

    @property
    def log_path(self) -> Path:
        """The registry's log file."""
        return self.directory / "registry.log"

    def logs(self) -> str:
        """The registry's log so far (usernames appear, passwords never do)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # ----- lifecycle

    def start(self) -> RegistryServer:
        """Write the config, start the process and wait until ``/v2/`` answers."""
        self._binary = require_binary(REGISTRY_BINARY)
        sweep_stale_registries()
        self._dir = Path(tempfile.mkdtemp(prefix=f"mrg-reg-{self.auth}-"))
        (self._dir / _OWNER_FILE).write_text(f"{os.getpid()}\n")
        try:
            (self._dir / "data").mkdir()
            if self.auth == "basic":
                self._htpasswd_users[self.admin_username] = _bcrypt_hash(self.admin_password)
                self._write_htpasswd()
            else:
                self.issuer = TokenIssuer().start()
                self.issuer.add_user(self.admin_username, self.admin_password)
                self.issuer.grant(self.admin_username, "*", ALL_ACTIONS)
                (self._dir / "rootcerts.pem").write_bytes(self.issuer.certificate_pem)
            self._launch(port=None)
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self) -> None:
        """Stop and start the process again on the same port with the same storage."""
        if self._process is None:
            raise RuntimeError("registry is not started")
        stop_process(self._process)
        self._process = None
        self._launch(port=self._port)

    def stop(self) -> None:
        """Kill the process, stop the issuer, remove the temp dir. Safe to call twice."""
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self.issuer is not None:
            self.issuer.stop()
            self.issuer = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _launch(self, port: int | None) -> None:
        assert self._dir is not None and self._binary is not None
        attempts = 1 if port is not None else 5
        for attempt in range(attempts):
            chosen = port if port is not None else free_port()
            config = self._dir / "config.yml"
            config.write_text(json.dumps(self._config(chosen), indent=2))  # JSON is YAML
            log = self.log_path
            with log.open("ab") as log_file:
                process = subprocess.Popen(
                    [self._binary, "serve", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                    env=_clean_env(),
                    preexec_fn=die_with_parent(),
                )
            try:
                wait_for_http(
                    f"http://{LOOPBACK}:{chosen}/v2/",
                    ok_statuses=(401,),
                    timeout=20,
                    process=process,
                    log=log,
                )
            except ComponentStartError:
                stop_process(process)
                if "address already in use" in log_tail(log, 5) and attempt + 1 < attempts:
                    continue
                raise
            self._process = process
            self._port = chosen
            return

    def _config(self, port: int) -> dict[str, Any]:
        assert self._dir is not None
        auth: dict[str, Any]
        if self.auth == "basic":
            auth = {"htpasswd": {"realm": "moorage-test-registry", "path": str(self.htpasswd_path)}}
        else:
            assert self.issuer is not None
            auth = {
                "token": {
                    "realm": self.issuer.realm,
                    "service": self.issuer.service,
                    "issuer": self.issuer.issuer,
                    "rootcertbundle": str(self._dir / "rootcerts.pem"),
                }
            }
        return {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self._dir / "data")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"{LOOPBACK}:{port}",
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "health": {"storagedriver": {"enabled": False}},
            "auth": auth,
        }

    # ----- users

    @property
    def htpasswd_path(self) -> Path:
        """The htpasswd file of a ``basic`` registry."""
        return self.directory / "htpasswd"

    def add_user(self, username: str, password: str) -> None:
        """Add a user: on ``basic`` it may push/pull anything; on ``token`` see :meth:`grant`."""
        if ":" in username:
            raise ValueError("a username cannot contain ':'")
        if self.auth == "token":
            self._token_issuer().add_user(username, password)
            return
        with self._htpasswd_lock:
            if username in self._htpasswd_users:
                raise ValueError(f"user {username!r} exists")
            self._htpasswd_users[username] = _bcrypt_hash(password)
            self._write_htpasswd()

    def set_password(self, username: str, password: str) -> None:
        """Change a password; the old one is refused from the next request on."""
        if self.auth == "token":
            self._token_issuer().set_password(username, password)
            return
        with self._htpasswd_lock:
            if username not in self._htpasswd_users:
                raise KeyError(username)
            self._htpasswd_users[username] = _bcrypt_hash(password)
            self._write_htpasswd()

    def remove_user(self, username: str) -> None:
        """Delete a user (a revoked credential)."""
        if self.auth == "token":
            self._token_issuer().remove_user(username)
            return
        with self._htpasswd_lock:
            self._htpasswd_users.pop(username, None)
            self._write_htpasswd()

    def grant(self, username: str, repository: str, actions: Sequence[str] = ("pull",)) -> None:
        """Allow ``username`` the ``actions`` on ``repository`` (``*`` = every repository).

        On a ``basic`` registry every authenticated user already has every action on every
        repository (that is what htpasswd auth means in distribution), so this only checks
        that the user exists.
        """
        if self.auth == "token":
            self._token_issuer().grant(username, repository, actions)
            return
        with self._htpasswd_lock:
            if username not in self._htpasswd_users:
                raise KeyError(username)

    def make_public(self, repository: str) -> None:
        """Allow anonymous pulls of ``repository`` (``token`` registries only).

        Distribution's htpasswd auth has no anonymous access at all, so a ``basic`` registry
        raises instead of pretending.
        """
        if self.auth != "token":
            raise NotImplementedError("a basic (htpasswd) registry cannot serve anonymous pulls")
        self._token_issuer().make_public(repository)

    def _token_issuer(self) -> TokenIssuer:
        if self.issuer is None:
            raise RuntimeError("token registry is not started")
        return self.issuer

    def _write_htpasswd(self) -> None:
        """Replace the htpasswd file atomically, with an mtime the registry sees as changed."""
        path = self.htpasswd_path
        old_mtime = path.stat().st_mtime_ns if path.exists() else None
        text = "".join(f"{user}:{digest}\n" for user, digest in self._htpasswd_users.items())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        os.replace(tmp, path)
        if old_mtime is not None and path.stat().st_mtime_ns <= old_mtime:
            os.utime(path, ns=(old_mtime + 1_000_000, old_mtime + 1_000_000))


def sweep_stale_registries() -> list[Path]:
    """Remove temp dirs of registries whose test process was killed before stopping them.

    A dir is stale when it has our owner file, its owner pid is gone and no process (the
    registry binary, which dies with its parent) still names it.
    """
    swept: list[Path] = []
    for directory in Path(tempfile.gettempdir()).glob("mrg-reg-*"):
        try:
            owner = int((directory / _OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or Path(f"/proc/{owner}").exists():
            continue
        if pids_mentioning(str(directory)):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        swept.append(directory)
    return swept


def _bcrypt_hash(password: str) -> str:
    """A ``$2b$`` bcrypt hash; distribution (Go's bcrypt) accepts ``$2b$`` and ``$2y$``.

    Cost 4 (the minimum) because the registry checks the hash on every request of a push.
    """
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _clean_env() -> dict[str, str]:
    """The environment for child daemons: no proxies (loopback only), nothing inherited."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep}
