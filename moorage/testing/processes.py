"""Moorage as real processes: a control plane under uvicorn and region agents, on loopback.

For the fault tests and the sync benchmark, which need what an in-process test server cannot
give: a control plane that can be killed and started again on the same port and database,
and agents that can be SIGKILLed in the middle of a sync.

* :class:`ControlPlane` owns a data dir (its own SQLite file, or the PostgreSQL database
  given) and serves it with ``moorage up --no-agent``; :meth:`ControlPlane.moorage` runs
  CLI commands and :meth:`ControlPlane.django` runs Python against the same database.
* :class:`AgentProcess` is one ``moorage agent`` with its own data dir and log files.
* :func:`fresh_postgres_database` creates a throw-away database and drops it afterwards.

Every process is stopped by its id (``stop`` or ``kill``); none outlives the test run
(``PR_SET_PDEATHSIG``). Secrets go to child processes on standard input, never as arguments.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from moorage.agent.replica import Replica
from moorage.sealing import Key, parse_keys
from moorage.testing.ports import (
    LOOPBACK,
    ComponentStartError,
    die_with_parent,
    free_port,
    log_tail,
    stop_process,
    wait_for_http,
)

_DJANGO_PRELUDE = """\
import json, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "moorage.config.settings"
import django
django.setup()
data = json.loads(sys.stdin.readline() or "null")
result = None
"""
_DJANGO_EPILOGUE = '\nprint("\\n@@result " + json.dumps(result))\n'
# Reads the script (one JSON string line) from stdin and runs it; the script reads ``data``
# from the next line. Only this fixed text is in the process's arguments.
_BOOTSTRAP = ("import json, sys; "
              "exec(compile(json.loads(sys.stdin.readline()), '<snippet>', 'exec'))")


def child_environment(data_dir: Path, database_url: str | None) -> dict[str, str]:
    """This process's environment without its Moorage and Django settings, pointed at
    ``data_dir`` (and ``database_url``, else the data dir's SQLite file)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MOORAGE_", "DJANGO_")) and k != "DATABASE_URL"}
    env["MOORAGE_DATA_DIR"] = str(data_dir)
    env["HOME"] = str(data_dir.parent / "home")
    env["PYTHONUNBUFFERED"] = "1"
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


@contextmanager
def fresh_postgres_database(url: str) -> Iterator[str]:
    """Create an empty database on the server of ``url``; yield its URL; drop it after."""
    name = f"moorage_proc_{os.getpid()}_{secrets.token_hex(4)}"
    admin_url = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_like_this_session() -> Iterator[str | None]:
    """A fresh PostgreSQL database when ``DATABASE_URL`` points at PostgreSQL, else ``None``
    (the control plane then uses a new SQLite file in its data dir)."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        with fresh_postgres_database(url) as fresh:
            yield fresh
    else:
        yield None


def _popen(command: list[str], env: dict[str, str], log: Path,
           err: Path | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        if err is None:
            return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=die_with_parent())
        with err.open("ab") as errors:
            return subprocess.Popen(command, env=env, stdout=out, stderr=errors,
                                    stdin=subprocess.DEVNULL, preexec_fn=die_with_parent())


class ControlPlane:
    """One control plane: ``root/data`` (data dir), ``root/control-plane.log`` (its output)."""

    def __init__(self, root: Path, *, database_url: str | None = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.database_url = database_url
        self.env = child_environment(self.data_dir, database_url)
        self.log = root / "control-plane.log"
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "start() the control plane first"
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, *, port: int | None = None, timeout: float = 60.0,
              options: tuple[str, ...] = ("--no-agent",)) -> None:
        """Migrate and serve (``moorage up`` with ``options``); wait until the login page
        answers. Again on the same port after :meth:`kill` or :meth:`stop` (a restart), on a
        free one the first time."""
        for attempt in range(3):
            self.port = port or self.port or free_port()
            self.process = _popen(
                [sys.executable, "-m", "moorage", "up", *options, "--host", LOOPBACK,
                 "--port", str(self.port)], self.env, self.log)
            try:
                wait_for_http(f"{self.url}/login/", process=self.process, log=self.log,
                              timeout=timeout)
                return
            except ComponentStartError:
                stop_process(self.process)
                # Someone took the free port between our check and uvicorn's bind.
                if port is not None or attempt == 2 or "in use" not in log_tail(self.log):
                    raise
                self.port = None
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL the server (a crash): no graceful shutdown, open polls are cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Stop the server if it runs (SIGTERM, then SIGKILL); always reaps it."""
        if self.process is not None:
            stop_process(self.process)

    def moorage(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``moorage ARGS`` against this control plane's data dir and database."""
        done = subprocess.run([sys.executable, "-m", "moorage", *args], env=self.env,
                              input=input, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"moorage {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def django(self, code: str, data: Any = None) -> Any:
        """Run ``code`` in a fresh Python process with Django set up on this database.

        ``code`` reads ``data`` (JSON, passed on standard input so no secret appears in a
        process's arguments) and sets ``result`` (JSON-able), which is returned.
        """
        script = _DJANGO_PRELUDE + textwrap.dedent(code) + _DJANGO_EPILOGUE
        done = subprocess.run(
            [sys.executable, "-c", _BOOTSTRAP], env=self.env,
            input=json.dumps(script) + "\n" + json.dumps(data) + "\n",
            capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise AssertionError(f"Django snippet failed ({done.returncode}):\n{done.stderr}")
        marker = done.stdout.rfind("@@result ")
        return json.loads(done.stdout[marker + len("@@result "):])



class AgentProcess:
    """One ``moorage agent`` process: token and key files in ``agent_dir``, replica in
    ``root/data``, standard output and error in ``root/stdout.log`` and ``root/stderr.log``
    (appended to across restarts)."""

    def __init__(self, root: Path, *, agent_dir: Path, url: str, env: dict[str, str],
                 wait: int = 2, docker_host: str | None = None) -> None:
        self.root = root
        #: The Engine API it drives (a swarm region: a manager's); default the agent's own.
        self.docker_host = docker_host
        self.agent_dir = agent_dir
        self.data_dir = root / "data"
        self.url = url
        self.env = env
        self.wait = wait
        self.stdout = root / "stdout.log"
        self.stderr = root / "stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def key(self) -> Key:
        """The region key, as the agent reads it."""
        return parse_keys((self.agent_dir / "key").read_text())[0]

    def start(self) -> None:
        """Start the agent (again, after a stop or a kill, on the same data dir)."""
        self.process = _popen(
            [sys.executable, "-m", "moorage", "agent", "--url", self.url,
             "--token-file", str(self.agent_dir / "token"),
             "--key-file", str(self.agent_dir / "key"),
             "--data-dir", str(self.data_dir), "--wait", str(self.wait),
             *(["--docker-host", self.docker_host] if self.docker_host else [])],
            self.env, self.stdout, self.stderr)

    def kill(self) -> None:
        """SIGKILL the agent: whatever it was doing stops at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Stop the agent if it runs (SIGTERM, then SIGKILL); always reaps it."""
        if self.process is not None:
            stop_process(self.process)

    def wait_exit(self, timeout: float) -> int:
        """The agent's exit code, waiting up to ``timeout`` seconds for it to exit."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        """Everything the agent wrote to standard error (its log) so far."""
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    @contextmanager
    def replica(self) -> Iterator[Replica]:
        """The agent's replica, opened beside the running agent (SQLite WAL allows it)."""
        replica = Replica.in_dir(self.data_dir, self.key)
        try:
            yield replica
        finally:
            replica.close()


def wait_until[T](condition: Callable[[], T], *, timeout: float, what: str,
                  interval: float = 0.1) -> T:
    """Poll ``condition`` until it returns something truthy; return that, or fail naming
    ``what`` (and the last value) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} "
                                 f"(last: {value!r})")
        time.sleep(interval)
