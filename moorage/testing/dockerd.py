"""A private, real Docker Engine (Debian's ``docker.io`` dockerd) for tests.

What works in this sandbox (a Firecracker VM, cgroup v1, root, no internet), found by trying:

* ``dockerd --storage-driver vfs --iptables=false --ip6tables=false --bridge=none
  --ip-forward=false --ip-masq=false --userland-proxy=false`` plus its own ``--data-root``,
  ``--exec-root``, ``--pidfile``, ``--config-file`` (an empty one, so the host's
  ``/etc/docker/daemon.json`` — mirrors, proxies, insecure registries — does not apply) and a
  unix socket ``-H``. No network is created; containers must use ``network_mode="host"``.
* containerd: with ``--containerd`` unset dockerd starts and supervises its own containerd
  (under ``EXEC_ROOT/containerd``, state under ``DATA_ROOT/containerd``) and stops it on
  shutdown — *unless* ``/run/containerd/containerd.sock`` exists (even stale), in which case it
  silently shares the system's. So: managed containerd by default, and when that socket exists
  we start our own ``containerd`` with a config rooted in our temp dir and pass
  ``--containerd`` (checked to work too). Managed is preferred because it dies *after*
  dockerd: if the test process is SIGKILLed, every daemon gets SIGTERM (``PR_SET_PDEATHSIG``),
  and a dockerd whose separate containerd died at the same moment hangs on shutdown, leaving
  its containers running.
* A killed test run leaves its temp dir (and an ``nsfs`` mount) behind; the next
  :meth:`Dockerd.start` sweeps such dirs when their owner process and daemons are gone.
* dockerd bind-mounts the data root onto itself and mounts an ``nsfs`` under
  ``EXEC_ROOT/netns``; the latter survives even a clean shutdown, so :meth:`Dockerd.stop`
  unmounts everything under the temp dir (deepest first) before removing it, and refuses to
  ``rm -rf`` while anything is still mounted there.
* ``docker swarm init --advertise-addr 127.0.0.1`` works on this daemon.

Paths live under ``/tmp/mrg-XXXXXXXX/`` because unix socket paths are limited to 108 bytes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import docker
import docker.errors

from moorage.testing.ports import (
    ComponentStartError,
    die_with_parent,
    kill_pid,
    log_tail,
    pids_mentioning,
    stop_process,
    wait_for_http,
)
from moorage.testing.programs import require_binary

#: The daemon flags, besides the per-instance paths. See the module docstring for why.
DOCKERD_FLAGS: tuple[str, ...] = (
    "--storage-driver=vfs",
    "--iptables=false",
    "--ip6tables=false",
    "--bridge=none",
    "--ip-forward=false",
    "--ip-masq=false",
    "--userland-proxy=false",
    "--shutdown-timeout=3",
    "--log-level=info",
)

#: Where dockerd looks for a system containerd; if it exists dockerd would share it.
SYSTEM_CONTAINERD_SOCKET = Path("/run/containerd/containerd.sock")

#: Temp dirs of our engines are ``/tmp/mrg-*`` holding this file (the owner's pid).
_OWNER_FILE = ".moorage-dockerd-owner"

_CLIENT_LOCK = threading.Lock()


class Dockerd:
    """A real ``dockerd`` (with its own ``containerd``) in a temp dir, as root.

    ``start()`` waits until ``GET /_ping`` answers OK; :attr:`base_url` is the
    ``unix:///…`` address; :meth:`client` makes fresh docker-py clients; :meth:`stop` stops
    everything by process id and removes the temp dir. Containers must use
    ``network_mode="host"`` (there is no bridge).
    """

    def __init__(self, *, own_containerd: bool | None = None,
                 extra_flags: Sequence[str] = ()) -> None:
        """Prepare (not start) an engine.

        ``own_containerd``: start a separate containerd and pass ``--containerd`` (True), let
        dockerd supervise its own (False), or decide by whether a system containerd socket
        exists (None, the default; see the module docstring). ``extra_flags`` are added to
        dockerd's command line (e.g. a TLS-verified ``--host=tcp://…`` besides the socket).
        """
        if own_containerd is None:
            own_containerd = os.path.lexists(SYSTEM_CONTAINERD_SOCKET)
        self.own_containerd = own_containerd
        self.extra_flags = tuple(extra_flags)
        self._dir: Path | None = None
        self._containerd: subprocess.Popen[bytes] | None = None
        self._dockerd: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        """Show where the engine listens."""
        return f"<Dockerd {self._dir or 'not started'}>"

    def __enter__(self) -> Dockerd:
        """Start the engine."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the engine and remove its files."""
        self.stop()

    # ----- paths

    @property
    def directory(self) -> Path:
        """The temp dir holding everything of this engine."""
        if self._dir is None:
            raise RuntimeError("dockerd is not started")
        return self._dir

    @property
    def socket_path(self) -> Path:
        """The Engine API unix socket."""
        return self.directory / "docker.sock"

    @property
    def base_url(self) -> str:
        """``unix:///tmp/mrg-…/docker.sock``, for docker-py and ``DOCKER_HOST``."""
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        """dockerd's log (a managed containerd logs into it; our own logs beside it)."""
        return self.directory / "dockerd.log"

    @property
    def pid(self) -> int:
        """The process id of dockerd (for freezing it: :meth:`freeze`)."""
        if self._dockerd is None:
            raise RuntimeError("dockerd is not started")
        return self._dockerd.pid

    def freeze(self) -> None:
        """Stop dockerd with SIGSTOP: its API and swarm heartbeats go silent, its containers
        (supervised by containerd) keep running. :meth:`thaw` resumes it."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a dockerd stopped by :meth:`freeze` (harmless when it is not)."""
        os.kill(self.pid, signal.SIGCONT)

    def logs(self) -> str:
        """dockerd's log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # ----- lifecycle

    def start(self, *, timeout: float = 60.0) -> Dockerd:
        """Start containerd and dockerd and wait until the Engine API answers ``/_ping``."""
        dockerd_bin = require_binary("dockerd")
        containerd_bin = require_binary("containerd")
        require_binary("runc")
        require_binary("containerd-shim-runc-v2")
        if os.geteuid() != 0:
            raise ComponentStartError("the dockerd fixture needs root (it mounts and uses cgroups)")
        sweep_stale_engines()
        self._dir = Path(tempfile.mkdtemp(prefix="mrg-", dir="/tmp"))
        (self._dir / _OWNER_FILE).write_text(f"{os.getpid()}\n")
        atexit.register(self.stop)
        try:
            if self.own_containerd:
                self._start_containerd(containerd_bin, timeout)
            self._start_dockerd(dockerd_bin, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_containerd(self, binary: str, timeout: float) -> None:
        d = self.directory
        for sub in ("containerd/root", "containerd/state"):
            (d / sub).mkdir(parents=True)
        config = d / "containerd.toml"
        config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{d}/containerd/root"',
                    f'state = "{d}/containerd/state"',
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                    "[grpc]",
                    f'  address = "{d}/containerd.sock"',
                    "[ttrpc]",
                    f'  address = "{d}/containerd.sock.ttrpc"',
                    "[debug]",
                    '  address = ""',
                    "[metrics]",
                    '  address = ""',
                    "",
                ]
            )
        )
        log = d / "containerd.log"
        with log.open("ab") as log_file:
            self._containerd = subprocess.Popen(
                [binary, "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=_daemon_env(),
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        deadline = time.monotonic() + timeout
        sock = d / "containerd.sock"
        while not sock.exists():
            if self._containerd.poll() is not None or time.monotonic() > deadline:
                raise ComponentStartError(f"containerd did not start; log tail:\n{log_tail(log)}")
            time.sleep(0.05)

    def _start_dockerd(self, binary: str, timeout: float) -> None:
        d = self.directory
        (d / "data").mkdir()
        (d / "exec").mkdir()
        (d / "daemon.json").write_text("{}\n")
        command = [
            binary,
            *DOCKERD_FLAGS,
            f"--config-file={d / 'daemon.json'}",
            f"--data-root={d / 'data'}",
            f"--exec-root={d / 'exec'}",
            f"--pidfile={d / 'dockerd.pid'}",
            f"--host=unix://{self.socket_path}",
            *self.extra_flags,
        ]
        if self.own_containerd:
            command.append(f"--containerd={d / 'containerd.sock'}")
        with self.log_path.open("ab") as log_file:
            self._dockerd = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=_daemon_env(),
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        wait_for_http(
            "http://docker/_ping",
            uds=str(self.socket_path),
            timeout=timeout,
            process=self._dockerd,
            log=self.log_path,
        )

    def stop(self) -> None:
        """Stop dockerd, then containerd, then leftover shims; unmount; remove the temp dir.

        dockerd gets SIGTERM (it stops its containers within ``--shutdown-timeout``), then
        SIGKILL after a grace period. Safe to call twice.
        """
        if self._dockerd is not None:
            if self._dockerd.poll() is None:
                self.thaw()  # a frozen daemon would ignore SIGTERM until SIGKILL
            self._kill_running_containers()
            stop_process(self._dockerd, grace=20)
            self._dockerd = None
        if self._containerd is not None:
            stop_process(self._containerd, grace=10)
            self._containerd = None
        if self._dir is None:
            return
        directory, self._dir = self._dir, None
        atexit.unregister(self.stop)
        _remove_engine_dir(directory)

    def _kill_running_containers(self) -> None:
        """SIGKILL running containers so shutdown does not wait their stop timeout (10 s each).

        Best effort: a dead or wedged daemon is dealt with by the signals that follow.
        """
        if self._dockerd is None or self._dockerd.poll() is not None:
            return
        try:
            client = self.client(timeout=10)
        except (docker.errors.DockerException, OSError):
            return
        try:
            for container in client.containers.list():
                try:
                    container.kill()
                except docker.errors.APIError:
                    pass
        except docker.errors.DockerException:
            pass
        finally:
            client.close()

    # ----- clients

    def client(self, *, timeout: int = 120) -> docker.DockerClient:
        """A fresh ``docker.DockerClient`` for this engine, API version negotiated.

        It is built with ``DOCKER_CONFIG`` pointing at an empty config of ours, so docker-py
        does not read the host's ``~/.docker/config.json`` while constructing it (it would
        load credentials, proxies — injected into every container's environment — and HTTP
        headers from there).

        Caveat the callers must handle: docker-py 7 reloads the config file from the host
        (``DOCKER_CONFIG`` or ``~/.docker/config.json``) *at pull time* whenever ``pull`` is
        called with ``auth_config=None`` and its in-memory auth set is empty, and ``build()``
        sends every credential it holds. A control plane must pass explicit auth (or none,
        knowingly) per operation; this client does not hide that behaviour.
        """
        empty_config = self.directory / "docker-client-config"
        empty_config.mkdir(exist_ok=True)
        (empty_config / "config.json").write_text("{}\n")
        with _CLIENT_LOCK:
            previous = os.environ.get("DOCKER_CONFIG")
            os.environ["DOCKER_CONFIG"] = str(empty_config)
            try:
                return docker.DockerClient(base_url=self.base_url, version="auto", timeout=timeout)
            finally:
                if previous is None:
                    os.environ.pop("DOCKER_CONFIG", None)
                else:
                    os.environ["DOCKER_CONFIG"] = previous

    def info(self) -> dict[str, object]:
        """``GET /info`` of the engine (storage driver, cgroup version, swarm state...)."""
        client = self.client()
        try:
            return dict(client.info())
        finally:
            client.close()


def _daemon_env() -> dict[str, str]:
    """Environment for the daemons: PATH with sbin, no proxies, no inherited docker settings."""
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return {
        "PATH": f"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{path}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }


def _remove_engine_dir(directory: Path) -> None:
    """Kill our leftover processes, unmount, and remove an engine's temp dir.

    Shims (``containerd-shim-runc-v2``) outlive containerd by design, and after a SIGKILL a
    daemon may linger; they are ours when their command line names our unique temp dir.
    """
    for pid in pids_mentioning(str(directory)):
        kill_pid(pid)
    _unmount_below(directory)
    still_mounted = _mounts_below(directory)
    if still_mounted:
        raise RuntimeError(
            f"refusing to remove {directory}: still mounted: {', '.join(still_mounted)}"
        )
    shutil.rmtree(directory, ignore_errors=True)


def sweep_stale_engines() -> list[Path]:
    """Remove the temp dirs of engines whose test process died without stopping them.

    A dir is stale when it is ours (``/tmp/mrg-*`` with the owner file) and its owner pid is
    gone; engines of live test runs, this one's or another's, are left alone.
    """
    swept: list[Path] = []
    for directory in Path("/tmp").glob("mrg-*"):
        owner_file = directory / _OWNER_FILE
        try:
            owner = int(owner_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or Path(f"/proc/{owner}").exists():
            continue
        try:
            _remove_engine_dir(directory)
        except RuntimeError:
            continue
        swept.append(directory)
    return swept


def _mounts_below(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    points: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point == prefix or mount_point.startswith(prefix + "/"):
                points.append(mount_point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _unmount_below(root: Path) -> None:
    """Unmount everything mounted at or below ``root``: plain first, lazily if busy."""
    umount = require_binary("umount")
    for _ in range(3):
        points = _mounts_below(root)
        if not points:
            return
        for point in points:
            done = subprocess.run([umount, point], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run([umount, "--lazy", point], capture_output=True, check=False)
