"""Small real HTTP servers that misbehave on purpose, for the registry probes' limits.

A registry is an address a tenant chose, and so is the token ``realm`` it names. These servers
play the hostile or broken ends of that conversation, on a loopback port in a thread:

* :meth:`StubServer.answer`: a fixed answer (a ``/v2/`` challenge naming any realm);
* :meth:`StubServer.drip`: a 200 whose body arrives one byte per interval, for ever;
* :meth:`StubServer.flood`: a 200 of any size, streamed without ``Content-Length`` (or with
  it, declared up front), counting what it managed to send before the client hung up.

Every request is recorded with its headers (:attr:`StubServer.requests`), so a test can prove
that a credential was *not* sent somewhere.
"""

from __future__ import annotations

import dataclasses
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from moorage.testing.ports import LOOPBACK, ThreadedHTTPServer

_CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True)
class SeenRequest:
    """One request as the stub received it (headers with lower-cased names)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]


Behaviour = Callable[["_Handler"], None]


class StubServer:
    """An HTTP/1.1 server on ``127.0.0.1`` whose answers the test sets per path."""

    def __init__(self, host: str = LOOPBACK) -> None:
        """Prepare (not start) a server bound to ``host`` on a free port."""
        self._bind = host
        self._routes: dict[str, Behaviour] = {}
        self._lock = threading.Lock()
        self._requests: list[SeenRequest] = []
        self._stopping = threading.Event()
        self._http: ThreadedHTTPServer | None = None
        #: Body bytes a :meth:`flood` got onto the wire before the client stopped reading.
        self.bytes_sent = 0

    # ----- lifecycle

    def start(self) -> StubServer:
        """Listen on a free port in a daemon thread."""
        owner = self

        class Handler(_Handler):
            stub = owner

        self._http = ThreadedHTTPServer(Handler, name="moorage-stub-http", host=self._bind)
        return self

    def stop(self) -> None:
        """Stop serving (dripping and flooding answers end too) and release the port."""
        self._stopping.set()
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> StubServer:
        """Start the server."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._http is None:
            raise RuntimeError("stub server is not running")
        return self._http.port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as a registry host."""
        return f"{self._bind}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def requests(self) -> list[SeenRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    # ----- behaviours

    def answer(
        self,
        path: str,
        status: int = 200,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        """Answer ``path`` (query ignored) with a fixed status, headers and body."""

        def respond(handler: _Handler) -> None:
            handler.send_response(status)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(body)

        self._routes[path] = respond

    def challenge(self, realm: str, *, service: str = "stub") -> None:
        """Answer ``/v2/`` as a token registry would: 401 naming ``realm``."""
        self.answer(
            "/v2/",
            401,
            headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="{service}"'},
            body=b'{"errors":[{"code":"UNAUTHORIZED"}]}',
        )

    def drip(self, path: str, *, interval: float, length: int = 1_000_000) -> None:
        """A 200 declaring ``length`` bytes, then sending one byte per ``interval`` seconds."""

        def respond(handler: _Handler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(length))
            handler.end_headers()
            handler.wfile.flush()
            for _ in range(length):
                if self._stopping.wait(interval):
                    return
                try:
                    handler.wfile.write(b" ")
                    handler.wfile.flush()
                except OSError:
                    return

        self._routes[path] = respond

    def flood(self, path: str, *, size: int, declare_length: bool = False) -> None:
        """A 200 of ``size`` bytes of JSON-looking text, closed-delimited unless declared."""

        def respond(handler: _Handler) -> None:
            handler.protocol_version = "HTTP/1.0"
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            if declare_length:
                handler.send_header("Content-Length", str(size))
            handler.send_header("Connection", "close")
            handler.end_headers()
            chunk = b'{"token":"' + b"x" * (_CHUNK - 10)
            sent = 0
            try:
                while sent < size and not self._stopping.is_set():
                    piece = chunk[: size - sent]
                    handler.wfile.write(piece)
                    sent += len(piece)
                    with self._lock:
                        self.bytes_sent += len(piece)
            except OSError:
                return

        self._routes[path] = respond

    def raw(self, path: str, behaviour: Behaviour) -> None:
        """Answer ``path`` with any behaviour (it receives the request handler)."""
        self._routes[path] = behaviour

    # ----- used by the handler

    def _record(self, request: SeenRequest) -> Behaviour | None:
        with self._lock:
            self._requests.append(request)
        return self._routes.get(request.path)


class _Handler(BaseHTTPRequestHandler):
    """Records the request and runs the behaviour set for its path (404 when none is)."""

    stub: StubServer
    protocol_version = "HTTP/1.1"
    server_version = "moorage-stub"

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are recorded on the stub, not printed

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        seen = SeenRequest(
            method=self.command,
            path=url.path,
            query=url.query,
            headers={name.lower(): value for name, value in self.headers.items()},
        )
        behaviour = self.stub._record(seen)
        if behaviour is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        behaviour(self)

    do_GET = _serve
    do_HEAD = _serve
    do_POST = _serve
