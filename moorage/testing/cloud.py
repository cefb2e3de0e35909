"""Cloud token services for tests, offline: AWS ECR through moto, and a Google OAuth endpoint.

* :class:`MotoEcr` — moto's real server (``ThreadedMotoServer``) on a free loopback port,
  counting the requests it answers. boto3 reaches it through ``AWS_ENDPOINT_URL``. Its ECR
  token is ``AWS:<account>-auth-token`` with ``expiresAt`` fixed in 2015.
* :class:`GoogleTokenEndpoint` — a small OAuth token endpoint, the ``token_uri`` of keys made
  by :meth:`GoogleTokenEndpoint.new_key`. It checks the JWT assertion's RS256 signature
  against the public key of the service account that claims to sign it, its audience and
  times, then answers an access token. It is a fake of Google's service (which cannot run
  here); what it unlocks is still the real ``docker-registry``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from moorage.testing.ports import LOOPBACK, free_port

#: moto's default account: its ECR token decodes to ``AWS:<this>-auth-token``.
MOTO_ACCOUNT = "123456789012"
MOTO_ECR_PASSWORD = f"{MOTO_ACCOUNT}-auth-token"
#: The audience google-auth puts in every assertion, whatever the key's ``token_uri``.
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"


class MotoEcr:
    """moto's server in a thread, counting the ECR token requests it answered.

    ``stop()`` closes the port (exchanges then fail as "unreachable"); ``start()`` opens it
    again on the same port, with moto's state kept (it lives in this process).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._server: ThreadedMotoServer | None = None
        self._lock = threading.Lock()
        self._token_requests = 0

    @property
    def url(self) -> str:
        """The ``AWS_ENDPOINT_URL`` that points boto3 here."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def stopped(self) -> bool:
        """Whether the port is closed now."""
        return self._server is None

    @property
    def token_requests(self) -> int:
        """How many ``GetAuthorizationToken`` requests it answered so far."""
        with self._lock:
            return self._token_requests

    def _count(self, environ: dict[str, Any]) -> None:
        if "GetAuthorizationToken" in str(environ.get("HTTP_X_AMZ_TARGET", "")):
            with self._lock:
                self._token_requests += 1

    def start(self) -> MotoEcr:
        """Serve (again) on :attr:`port`."""
        outer = self

        class Counting(ThreadedMotoServer):
            def _server_entry(self) -> None:
                inner = DomainDispatcherApplication(create_backend_app)

                def app(environ: dict[str, Any], start_response: Any) -> Any:
                    outer._count(environ)
                    return inner(environ, start_response)

                self._server = make_server(self._ip_address, self._port, app, True,
                                           request_handler=_QuietHandler)
                self._server_ready_event.set()
                self._server.serve_forever()

        self._server = Counting(ip_address=LOOPBACK, port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        """Close the port; exchanges fail until :meth:`start`."""
        if self._server is not None:
            self._server.stop()
            self._server = None


class _QuietHandler(MotoRequestHandler):
    """moto's request handler without an access-log line per request."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return


@dataclass
class TokenGrant:
    """An access token the Google fake issued, and to whom."""

    client_email: str
    token: str
    at: float


@dataclass
class _Account:
    client_email: str
    public_pem: bytes


@dataclass
class GoogleTokenEndpoint:
    """A fake of Google's OAuth token endpoint (``POST /token``, JWT bearer grant).

    ``mode`` changes its answers for bad-input tests: ``ok``, ``garbage`` (HTTP 200, not
    JSON), ``no_token`` (JSON without ``access_token``), ``lying_expiry`` (``expires_in`` of
    ten years), ``error`` (HTTP 503). ``expires_in`` is what an ``ok`` answer says.
    """

    expires_in: int = 3600
    mode: str = "ok"
    grants: list[TokenGrant] = field(default_factory=list)
    rejected: int = 0
    port: int = 0
    _accounts: dict[str, _Account] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def stopped(self) -> bool:
        """Whether the port is closed now."""
        return self._server is None

    @property
    def token_uri(self) -> str:
        """What the keys' ``token_uri`` says."""
        return f"http://{LOOPBACK}:{self.port}/token"

    def start(self) -> GoogleTokenEndpoint:
        """Serve on a free loopback port (or the same one again)."""
        self.port = self.port or free_port()
        owner = self

        class Handler(_TokenHandler):
            endpoint = owner

        self._server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def new_key(self, name: str = "deployer", project: str = "moorage-test") -> str:
        """A service-account key JSON (RSA 2048, made now) whose ``token_uri`` is this
        endpoint, which then trusts its public key."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        email = f"{name}-{secrets.token_hex(3)}@{project}.iam.gserviceaccount.com"
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        with self._lock:
            self._accounts[email] = _Account(email, public)
        return json.dumps({
            "type": "service_account", "project_id": project,
            "private_key_id": secrets.token_hex(20), "private_key": pem,
            "client_email": email, "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        }, indent=2)

    def forget(self, client_email: str) -> None:
        """Stop trusting an account's key (as when the key is deleted in Google IAM)."""
        with self._lock:
            self._accounts.pop(client_email, None)

    def tokens_for(self, client_email: str) -> list[str]:
        """Access tokens issued to ``client_email``, oldest first."""
        with self._lock:
            return [g.token for g in self.grants if g.client_email == client_email]

    def answer(self, form: dict[str, list[str]]) -> tuple[int, bytes]:
        """Check a token request; the answer's status and body."""
        if self.mode == "error":
            return 503, b'{"error": "backendError"}'
        if self.mode == "garbage":
            return 200, b"<html>Service temporarily moved</html>"
        assertion = (form.get("assertion") or [""])[0]
        if (form.get("grant_type") or [""])[0] != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, b'{"error": "unsupported_grant_type"}'
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            with self._lock:
                account = self._accounts.get(str(unverified.get("iss")))
            if account is None:
                raise jwt.InvalidTokenError("unknown issuer")
            claims = jwt.decode(assertion, account.public_pem, algorithms=["RS256"],
                                audience=GOOGLE_AUDIENCE, issuer=account.client_email,
                                options={"require": ["exp", "iat", "aud", "iss"]})
        except jwt.InvalidTokenError:
            with self._lock:
                self.rejected += 1
            return 400, json.dumps({"error": "invalid_grant",
                                    "error_description": "Invalid JWT Signature."}).encode()
        if self.mode == "no_token":
            return 200, b'{"token_type": "Bearer", "expires_in": 3600}'
        token = "ya29." + secrets.token_urlsafe(48)
        with self._lock:
            self.grants.append(TokenGrant(str(claims["iss"]), token, time.time()))
        expires_in = 10 * 365 * 86400 if self.mode == "lying_expiry" else self.expires_in
        return 200, json.dumps({"access_token": token, "expires_in": expires_in,
                                "token_type": "Bearer"}).encode()


class _TokenHandler(BaseHTTPRequestHandler):
    endpoint: GoogleTokenEndpoint

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        if urllib.parse.urlsplit(self.path).path != "/token":
            status, data = 404, b'{"error": "not_found"}'
        else:
            status, data = self.endpoint.answer(urllib.parse.parse_qs(body))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
