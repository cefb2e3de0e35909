"""Loopback ports, readiness checks, and the lifecycle of the local processes behind them.

Every real component the tests start (registry, token issuer, dockerd) listens on 127.0.0.1 or
on a unix socket in a temp dir, is waited for with a real request before it is handed to a test,
and is stopped by its process id. These helpers are the shared part of that plumbing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"

_PR_SET_PDEATHSIG = 1


class ComponentStartError(RuntimeError):
    """A real component did not come up; the message carries the tail of its log."""


class ThreadedHTTPServer:
    """A ``ThreadingHTTPServer`` on a free port of ``host``, served from a daemon thread.

    The plumbing the tests' small HTTP servers share (token issuer, git server, the hostile
    stubs): each request in its own daemon thread, :meth:`stop` releases the port within a
    tenth of a second.
    """

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], *, name: str, host: str = LOOPBACK
    ) -> None:
        """Bind and start serving at once."""
        server = ThreadingHTTPServer((host, 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.1), name=name, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on ``host`` a moment ago.

    The port is released before returning, so another process may take it before the caller
    binds it; callers that start a server on it retry on "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_alive(process: subprocess.Popen[bytes] | None, what: str, log: Path | None) -> None:
    if process is not None and process.poll() is not None:
        raise ComponentStartError(
            f"{what} exited with code {process.returncode} while starting"
            + (f"; log tail:\n{log_tail(log)}" if log else "")
        )


def wait_for_port(
    port: int,
    host: str = LOOPBACK,
    *,
    timeout: float = 30.0,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Wait until a TCP connection to ``host:port`` succeeds.

    When ``process`` is given, fail fast (with ``log``'s tail) if it exits instead of waiting
    out the timeout: a server that crashed at start will never listen.
    """
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(process, f"process for port {port}", log)
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ComponentStartError(
                    f"nothing listened on {host}:{port} within {timeout:.0f}s"
                    + (f"; log tail:\n{log_tail(log)}" if log else "")
                ) from None
            time.sleep(0.05)


def wait_for_http(
    url: str,
    *,
    ok_statuses: Collection[int] = (200,),
    timeout: float = 30.0,
    uds: str | None = None,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> httpx.Response:
    """Poll ``GET url`` until it answers with one of ``ok_statuses``; return that response.

    ``uds`` sends the request over a unix socket (dockerd's ``/_ping``). Proxy variables of the
    environment are ignored: these are loopback-only checks.
    """
    transport = httpx.HTTPTransport(uds=uds) if uds else None
    deadline = time.monotonic() + timeout
    last_problem = "no answer"
    with httpx.Client(transport=transport, trust_env=False, timeout=2.0) as client:
        while True:
            _check_alive(process, url, log)
            try:
                response = client.get(url)
                if response.status_code in ok_statuses:
                    return response
                last_problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last_problem = type(exc).__name__
            if time.monotonic() > deadline:
                raise ComponentStartError(
                    f"{url} did not answer {sorted(ok_statuses)} within {timeout:.0f}s "
                    f"(last: {last_problem})" + (f"; log tail:\n{log_tail(log)}" if log else "")
                )
            time.sleep(0.05)


def log_tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def die_with_parent() -> Callable[[], None]:
    """Return a ``preexec_fn`` that makes the child get SIGTERM when its parent dies.

    Session fixtures stop their processes in teardown, but a test run killed with SIGKILL
    never gets there; ``PR_SET_PDEATHSIG`` keeps a registry or dockerd from outliving it.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def _preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return _preexec


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """Stop a child process by its id: SIGTERM, wait up to ``grace`` seconds, then SIGKILL.

    Always reaps the child, so no zombie is left behind.
    """
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
        except ProcessLookupError:
            pass
    process.wait()


def kill_pid(pid: int, *, grace: float = 5.0) -> None:
    """Stop a process that is not our direct child (so cannot be waited for) by its id."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie ("Z") has exited; its parent will reap it.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def pids_mentioning(text: str) -> list[int]:
    """Return the ids of processes whose command line contains ``text``.

    Used with a unique temp-dir path to find processes our own daemons started (containerd
    shims), never with a generic program name.
    """
    needle = text.encode()
    found: list[int] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found
