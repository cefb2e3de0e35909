"""A real git HTTP server for tests: ``git http-backend`` behind HTTP Basic auth.

:class:`GitServer` listens on a free 127.0.0.1 port in a daemon thread, checks
``Authorization: Basic user:token`` against its users (a repository may be made public), and
runs Debian git's ``git http-backend`` as a CGI program for every request (smart HTTP,
protocol v2 included) over bare repositories in a temp dir. It records every request's line
and headers, so a test can prove where a token travelled (only in ``Authorization``).

:meth:`GitServer.create_repo` makes a repository from a dict of files: one commit on
``main`` and a tag; :meth:`GitServer.add_commit` adds another commit on ``main``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from moorage.testing.ports import LOOPBACK, ThreadedHTTPServer
from moorage.testing.programs import require_binary

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
REALM = "moorage-test-git"


@dataclasses.dataclass(frozen=True)
class GitRequest:
    """One request the server received: its request line, headers, and who it was."""

    request_line: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    username: str | None
    status: int


@dataclasses.dataclass(frozen=True)
class GitRepo:
    """A repository on the server: its clone URL, its ``main`` tip and the tag made with it."""

    name: str
    url: str
    commit: str
    tag: str


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd or "/"),
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_AUTHOR_NAME": "Moorage Test", "GIT_AUTHOR_EMAIL": "test@moorage.invalid",
           "GIT_COMMITTER_NAME": "Moorage Test", "GIT_COMMITTER_EMAIL": "test@moorage.invalid"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip()


class GitServer:
    """Smart-HTTP git over Basic auth; see the module docstring. Thread-safe."""

    def __init__(self) -> None:
        """Prepare (not start) a server; :meth:`start` serves it."""
        self._lock = threading.Lock()
        self._users: dict[str, str] = {}
        self._public: set[str] = set()
        self._requests: list[GitRequest] = []
        self._dir: Path | None = None
        self._http: ThreadedHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> GitServer:
        """Check the programs exist, make the temp dir and listen on a free port."""
        require_binary("git")
        require_binary(HTTP_BACKEND)
        self._dir = Path(tempfile.mkdtemp(prefix="moorage-git-"))
        (self._dir / "repos").mkdir()
        (self._dir / "work").mkdir()
        owner = self

        class Handler(_GitHandler):
            server_owner = owner

        self._http = ThreadedHTTPServer(Handler, name="moorage-git-server")
        return self

    def stop(self) -> None:
        """Stop serving and remove the repositories."""
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> GitServer:
        """Start; stop on exit."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop and clean up."""
        self.stop()

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        if self._http is None:
            raise RuntimeError("the git server is not running")
        return f"{LOOPBACK}:{self._http.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def root(self) -> Path:
        """The directory of the bare repositories (``GIT_PROJECT_ROOT``)."""
        if self._dir is None:
            raise RuntimeError("the git server is not running")
        return self._dir / "repos"

    # -- users and repositories ----------------------------------------------------------------

    def add_user(self, username: str, token: str | None = None) -> str:
        """Add (or reset) a user; return its token (a fresh random one unless given)."""
        token = token or secrets.token_urlsafe(24)
        with self._lock:
            self._users[username] = token
        return token

    def make_public(self, name: str) -> None:
        """Let anybody clone ``name`` without credentials."""
        with self._lock:
            self._public.add(name.removesuffix(".git"))

    def create_repo(self, name: str, files: dict[str, str | bytes], *, tag: str = "v1",
                    message: str = "first") -> GitRepo:
        """A bare repository ``NAME.git`` with ``files`` committed on ``main`` and tagged."""
        work = self._work(name)
        work.mkdir(parents=True)
        _git("init", "-q", "-b", "main", cwd=work)
        self._write(work, files)
        _git("add", "-A", cwd=work)
        _git("commit", "-q", "-m", message, cwd=work)
        _git("tag", tag, cwd=work)
        bare = self.root / f"{name}.git"
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git("clone", "-q", "--bare", str(work), str(bare))
        return GitRepo(name=name, url=f"{self.url}/{name}.git", commit=self.tip(name), tag=tag)

    def add_commit(self, name: str, files: dict[str, str | bytes], *,
                   message: str = "next") -> str:
        """Commit ``files`` on top of ``main`` and publish it; return the new commit."""
        work = self._work(name)
        self._write(work, files)
        _git("add", "-A", cwd=work)
        _git("commit", "-q", "-m", message, cwd=work)
        _git("push", "-q", str(self.root / f"{name}.git"), "main", cwd=work)
        return self.tip(name)

    def tip(self, name: str) -> str:
        """The commit ``main`` points at."""
        return _git("rev-parse", "main", cwd=self._work(name))

    def _work(self, name: str) -> Path:
        if self._dir is None:
            raise RuntimeError("the git server is not running")
        return self._dir / "work" / name

    @staticmethod
    def _write(work: Path, files: dict[str, str | bytes]) -> None:
        for path, content in files.items():
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)

    # -- what was received ---------------------------------------------------------------------

    @property
    def requests(self) -> list[GitRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def _record(self, request: GitRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _authorized(self, repo: str, header: str | None) -> tuple[bool, str | None]:
        """Whether the request may read ``repo``, and the authenticated user name."""
        username: str | None = None
        if header and header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False, None
            user, _, token = decoded.partition(":")
            with self._lock:
                expected = self._users.get(user)
            if expected is None or not secrets.compare_digest(expected, token):
                return False, None
            username = user
        with self._lock:
            public = repo in self._public
        return (username is not None or public), username


class _GitHandler(BaseHTTPRequestHandler):
    """One request: authenticate, then hand it to ``git http-backend`` as CGI."""

    server_owner: GitServer
    server_version = "moorage-git"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        """Ref advertisement (``info/refs``) and dumb-protocol files."""
        self._handle()

    def do_POST(self) -> None:
        """``git-upload-pack`` / ``git-receive-pack`` requests."""
        self._handle()

    def _handle(self) -> None:
        owner = self.server_owner
        split = urlsplit(self.path)
        repo = split.path.lstrip("/").split(".git/", 1)[0].removesuffix(".git")
        body = self._body()
        allowed, username = owner._authorized(repo, self.headers.get("Authorization"))
        status = 200
        if not allowed:
            status = 401
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Basic realm="{REALM}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            status = self._cgi(split.path, split.query, body, username)
        owner._record(GitRequest(request_line=self.requestline, method=self.command,
                                 path=self.path, headers=tuple(self.headers.items()),
                                 username=username, status=status))

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _cgi(self, path: str, query: str, body: bytes, username: str | None) -> int:
        owner = self.server_owner
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(owner.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
        }
        if username:
            env["REMOTE_USER"] = username
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        done = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True,
                              check=False, timeout=60)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status, reason = 200, "OK"
        headers: list[tuple[str, str]] = []
        for raw in head.decode("latin-1").splitlines():
            name, _, value = raw.partition(":")
            if name.lower() == "status":
                code, _, reason = value.strip().partition(" ")
                status = int(code)
            elif name:
                headers.append((name.strip(), value.strip()))
        if done.returncode != 0 and not head:
            status, reason, payload = 500, "Internal Server Error", b""
        self.send_response(status, reason or None)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        return status
