"""``moorage agent`` as a process: files, exit codes, signals, against the FAKE control plane
served over loopback HTTP (see ``fakes.py``).

(These live here rather than in ``moorage/cli/tests`` because the agent issue owns only
``moorage/agent`` and ``moorage/cli/agent.py``.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moorage.agent.errors import DeployError
from moorage.agent.replica import Replica
from moorage.agent.runtime import DockerRuntime
from moorage.agent.tests.fakes import (
    TOKEN,
    FakeControlPlane,
    FakeCredential,
    FakeDeployment,
    serve_http,
)
from moorage.cli.agent import stop_on_signal
from moorage.sealing import generate_key
from moorage.testing.dockerd import Dockerd
from moorage.testing.ports import free_port
from moorage.testing.tls import docker_tls_files

SECRET = "cli-secret-password-42"


@pytest.fixture
def files(fake: FakeControlPlane, tmp_path: Path) -> dict[str, Path]:
    token, key = tmp_path / "token", tmp_path / "key"
    token.write_text(TOKEN + "\n")
    key.write_text(fake.key.encoded() + "\n")
    token.chmod(0o600)
    key.chmod(0o600)
    return {"token": token, "key": key, "data": tmp_path / "data"}


@pytest.fixture
def url(fake: FakeControlPlane) -> Iterator[str]:
    fake.add_account(1, "acme")
    fake.put_credential(FakeCredential(17, 1, "octo", SECRET, is_default=True))
    with serve_http(fake) as base:
        yield base


def args(url: str, files: dict[str, Path], *extra: str) -> list[str]:
    return [sys.executable, "-m", "moorage", "agent", "--url", url,
            "--token-file", str(files["token"]), "--key-file", str(files["key"]),
            "--data-dir", str(files["data"]), *extra]


def run(command: list[str], env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                          env=env)


def test_once_syncs_and_exits_0_and_warns_about_readable_files(
    url: str, files: dict[str, Path], fake: FakeControlPlane
) -> None:
    files["token"].chmod(0o644)
    result = run(args(url, files, "--once"))
    assert result.returncode == 0, result.stderr
    assert f"WARNING agent[-] the token file {files['token']} is readable by group or " \
           "others (mode 644); chmod 600 it" in result.stderr
    assert "INFO agent[eu-1] took a snapshot at revision 2: 1 accounts, 1 credentials" \
        in result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout
    replica = Replica.in_dir(files["data"], fake.key)
    assert replica.open_secret(17).password == SECRET
    replica.close()
    assert fake.acks[-1]["snapshot"] is True


@pytest.mark.parametrize(("name", "content", "message"), [
    ("token", None, "The token file {token} does not exist."),
    ("token", "mrr_tooshort\n", "The token file {token} must hold one line"),
    ("token", TOKEN + "\n" + TOKEN + "\n", "The token file {token} must hold one line"),
    ("key", "not a key\n", "The key file {key} is not valid: Entry 1 is not of the form"),
    ("key", "k1:!!!\n", "The key file {key} is not valid: Key 'k1' is not valid base64."),
    ("key", generate_key("a").encoded() + "\n" + generate_key("b").encoded(),
     "The key file {key} must hold exactly one key"),
])
def test_bad_files_exit_2_naming_the_file(
    files: dict[str, Path], name: str, content: str | None, message: str
) -> None:
    if content is None:
        files[name].unlink()
    else:
        files[name].write_text(content)
    result = run(args("http://127.0.0.1:9", files, "--once"))
    assert result.returncode == 2, result.stderr
    flat = " ".join(result.stderr.split())
    assert message.format(token=files["token"], key=files["key"]) in flat
    assert TOKEN not in result.stderr


def test_a_bad_url_exits_2(files: dict[str, Path]) -> None:
    result = run(args("ftp://cp.example", files, "--once"))
    assert result.returncode == 2
    assert "is not an http(s) URL" in result.stderr


def test_a_refused_token_exits_3(url: str, files: dict[str, Path], fake: FakeControlPlane) -> None:
    fake.revoked = True
    result = run(args(url, files))
    assert result.returncode == 3, result.stderr
    assert "the region token was rotated or the region removed" in result.stderr
    assert TOKEN not in result.stderr


def test_an_unreachable_control_plane_with_once_exits_1(files: dict[str, Path]) -> None:
    result = run(args("http://127.0.0.1:9", files, "--once"))
    assert result.returncode == 1, result.stderr
    assert "control plane unreachable: ConnectError" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_a_long_poll_within_2_seconds(
    url: str, files: dict[str, Path], fake: FakeControlPlane, sig: signal.Signals
) -> None:
    fake.hang = threading.Event()
    process = subprocess.Popen(args(url, files, "--wait", "25"), stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 30
        while "changes" not in fake.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "changes" in fake.requests
        time.sleep(0.2)
        started = time.monotonic()
        os.kill(process.pid, sig)
        code = process.wait(timeout=10)
        assert time.monotonic() - started < 2
        assert code == 0
        assert process.stderr is not None
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_once_runs_deployments_on_the_docker_host_given(
    fake: FakeControlPlane, files: dict[str, Path], dockerd: Any, registry_basic: Any,
    docker_client: Any,
) -> None:
    image = f"{registry_basic.host}/cli/private:1"
    fake.add_account(1, "acme")
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, image))  # anonymous
    with serve_http(fake) as base:
        result = run(args(base, files, "--once", "--docker-host", dockerd.base_url))
    assert result.returncode == 0, result.stderr
    assert [body["status"] for _, body in fake.reports] == ["pulling", "failed"]
    assert fake.reports[0][1]["log"] == [
        f"Pulling {image} anonymously from {registry_basic.host}"]
    assert fake.reports[1][1]["error"]["code"] == "registry_unauthorized"


@pytest.mark.docker
def test_the_engine_comes_from_docker_host_and_its_tls_settings(
    fake: FakeControlPlane, files: dict[str, Path], registry_basic: Any, tmp_path: Path,
) -> None:
    """No ``--docker-host``: ``DOCKER_HOST``, ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH``
    choose the engine as they do for docker, here a real dockerd that only accepts clients
    holding a certificate of its CA."""
    tls = docker_tls_files(tmp_path / "tls")
    port = free_port()
    engine = Dockerd(extra_flags=[*tls.dockerd_flags(), f"--host=tcp://127.0.0.1:{port}"])
    image = f"{registry_basic.host}/cli/tls:1"
    fake.add_account(1, "acme")
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, image))  # anonymous
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env |= {"DOCKER_HOST": f"tcp://127.0.0.1:{port}", "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(tls.client_dir)}
    try:
        engine.start()
        # The engine refuses a client without the certificate: TLS is really in force.
        with pytest.raises(DeployError) as refused:
            DockerRuntime(f"tcp://127.0.0.1:{port}").client()
        assert refused.value.code == "engine_unreachable"
        with serve_http(fake) as base:
            result = run(args(base, files, "--once"), env=env)
    finally:
        engine.stop()
    assert result.returncode == 0, result.stderr
    assert f"container engine: tcp://127.0.0.1:{port} (from DOCKER_HOST, TLS verified)" \
        in result.stderr
    # The engine was reached and pulled: the registry (not the engine) refused the anonymous
    # pull of a private image.
    assert [body["status"] for _, body in fake.reports] == ["pulling", "failed"]
    assert fake.reports[1][1]["error"]["code"] == "registry_unauthorized"


@pytest.mark.docker
def test_a_swarm_region_is_driven_as_a_swarm_through_the_manager_given(
    fake: FakeControlPlane, files: dict[str, Path], swarm: Any, swarm_client: Any,
    registry_basic: Any,
) -> None:
    """The region's settings say swarm: ``moorage agent`` drives the manager as a swarm (the
    I9 check refuses the private image before any service exists)."""
    image = f"{registry_basic.host}/cli/swarm-private:1"
    fake.add_account(1, "acme")
    fake.set_settings("swarm")
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, image, replicas=3))  # anonymous
    with serve_http(fake) as base:
        result = run(args(base, files, "--once", "--docker-host", swarm.base_url))
    assert result.returncode == 0, result.stderr
    assert "region eu-1 runs on swarm: the agent drives it" in result.stderr
    [(_, failed)] = [r for r in fake.reports if r[1]["status"] == "failed"]
    assert failed["error"]["code"] == "registry_unauthorized"
    assert "No service was created or changed" in failed["error"]["message"]
    assert not swarm_client.api.services(filters={"label": "moorage.app=3"})
    assert fake.runtime_reports and len(fake.runtime_reports[-1]["nodes"]) == 3



def test_the_stop_handler_never_waits_for_the_lock_its_own_thread_holds() -> None:
    """A signal handler runs in the main thread between any two bytecodes, so also inside
    ``Event.set`` or ``Event.wait`` while they hold the event's lock. `moorage up` stopping
    sends its agent SIGTERM and the parent-death signal sends another: a handler calling
    ``stop.set()`` itself deadlocked there, and the agent was left running for good."""
    stop = threading.Event()
    handler = stop_on_signal(stop)
    returned = threading.Event()

    def interrupted_inside_the_event() -> None:
        with stop._cond:  # type: ignore[attr-defined]  # where the signal lands
            handler(signal.SIGTERM, None)
            handler(signal.SIGTERM, None)  # the second one, as from the parent's death
        returned.set()

    threading.Thread(target=interrupted_inside_the_event, daemon=True).start()
    assert returned.wait(5), "the handler waited for the event's lock"
    assert stop.wait(5)
