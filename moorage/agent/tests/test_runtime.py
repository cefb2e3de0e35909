"""The docker runtime against a REAL dockerd and REAL registries (Basic and Bearer token).

Each test uses its own repository and user names; the ``docker_client`` fixture removes the
containers and images a test made, so every pull really goes to the registry.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from moorage.agent.errors import DeployError
from moorage.agent.runtime import AppSpec, DockerRuntime, PullProgress
from moorage.agent.runtime.docker import (
    is_start_failure,
    ready_pauses,
    start_failure_reason,
)
from moorage.registry import RegistryLogin
from moorage.testing.dockerd import Dockerd
from moorage.testing.fixtures import BusyboxImageFactory
from moorage.testing.ports import free_port
from moorage.testing.registry import RegistryServer

PASSWORD = "pw-Runtime-7f3kq"


@pytest.fixture
def runtime(dockerd: Dockerd, docker_client: docker.DockerClient) -> DockerRuntime:
    # docker_client: its teardown removes what the test left on the engine.
    return DockerRuntime(dockerd.base_url, region="eu-1", pull_timeout=60, ready_timeout=15,
                         stop_timeout=1)


def user_for(registry: RegistryServer, name: str) -> RegistryLogin:
    registry.add_user(name, PASSWORD)
    return RegistryLogin(name, PASSWORD)


def test_a_pull_with_the_right_credential_returns_the_registry_digest(
    runtime: DockerRuntime, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory, docker_client: docker.DockerClient,
) -> None:
    image = busybox_image(registry_basic, "rt-pull/app", "1.0")
    login = user_for(registry_basic, "rt-pull")
    events: list[PullProgress] = []
    result = runtime.pull(image, login, events.append)
    repo_digests = docker_client.api.inspect_image(image)["RepoDigests"]
    assert repo_digests == [f"{registry_basic.host}/rt-pull/app@{result.digest}"]
    assert result.by_digest == repo_digests[0]
    assert any(e.layer and e.status == "Pull complete" for e in events)
    assert any(e.status.startswith("Digest: sha256:") for e in events)


def test_a_wrong_password_is_registry_unauthorized(
    runtime: DockerRuntime, registry_basic: RegistryServer, busybox_image: BusyboxImageFactory
) -> None:
    image = busybox_image(registry_basic, "rt-wrong/app")
    registry_basic.add_user("rt-wrong", PASSWORD)
    with pytest.raises(DeployError) as raised:
        runtime.pull(image, RegistryLogin("rt-wrong", "not-" + PASSWORD), None,
                     credential_label="'prod' (revision 2)")
    assert raised.value.code == "registry_unauthorized"
    assert raised.value.message.startswith(
        f"The registry {registry_basic.host} rejected the credential 'prod' (revision 2). "
        "The registry said: unauthorized")
    assert PASSWORD not in raised.value.message


def test_no_access_to_the_repository_is_registry_forbidden(
    runtime: DockerRuntime, registry_token: RegistryServer, busybox_image: BusyboxImageFactory
) -> None:
    image = busybox_image(registry_token, "rt-forbidden/app")
    login = user_for(registry_token, "rt-forbidden")
    registry_token.grant("rt-forbidden", "rt-forbidden/other")
    with pytest.raises(DeployError) as raised:
        runtime.pull(image, login, None, credential_label="'ci'")
    assert raised.value.code == "registry_forbidden"
    assert f"The registry {registry_token.host} refused access to rt-forbidden/app" \
        in raised.value.message
    assert "requested access to the resource is denied" in raised.value.message


def test_a_missing_tag_is_image_not_found(
    runtime: DockerRuntime, registry_token: RegistryServer, busybox_image: BusyboxImageFactory
) -> None:
    image = busybox_image(registry_token, "rt-missing/app", "1.0")
    login = user_for(registry_token, "rt-missing")
    registry_token.grant("rt-missing", "rt-missing/app")
    runtime.pull(image, login)  # the credential works for the tag that exists
    with pytest.raises(DeployError) as raised:
        runtime.pull(image.replace(":1.0", ":2.0"), login)
    assert raised.value.code == "image_not_found"
    assert raised.value.message.startswith(
        f"The registry {registry_token.host} has no image {registry_token.host}/rt-missing/"
        "app:2.0")


def test_a_stopped_registry_is_registry_unreachable(runtime: DockerRuntime) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(DeployError) as raised:
        runtime.pull(f"{host}/nothing/here:1", RegistryLogin("u", PASSWORD))
    assert raised.value.code == "registry_unreachable"
    assert f"The registry {host} could not be reached" in raised.value.message
    assert "connection refused" in raised.value.message


def test_an_engine_that_does_not_answer_is_engine_unreachable(tmp_path: Path) -> None:
    runtime = DockerRuntime(f"unix://{tmp_path}/none.sock")
    with pytest.raises(DeployError) as raised:
        runtime.pull("127.0.0.1:5000/a/b:1", None)
    assert raised.value.code == "engine_unreachable"


def test_the_hosts_docker_login_is_never_used(
    runtime: DockerRuntime, dockerd: Dockerd, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = busybox_image(registry_basic, "rt-hostlogin/app")
    admin = f"{registry_basic.admin_username}:{registry_basic.admin_password}"
    config = {"auths": {registry_basic.host: {"auth": base64.b64encode(admin.encode()).decode()}}}
    for place in (tmp_path / "home" / ".docker", tmp_path / "dockerconfig"):
        place.mkdir(parents=True)
        (place / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockerconfig"))

    # The trap is real: plain docker-py, made now, would pull with the host's admin login.
    naive = docker.APIClient(base_url=dockerd.base_url, version="auto")
    try:
        naive.pull(image.rsplit(":", 1)[0], tag="latest")
        naive.remove_image(image)
    finally:
        naive.close()

    with pytest.raises(DeployError) as raised:
        runtime.pull(image, None)
    assert raised.value.code == "registry_unauthorized"
    assert "this app pulls anonymously" in raised.value.message
    assert runtime.client()._auth_configs.get("auths") == {}


def test_a_cached_image_is_not_an_authorization(
    runtime: DockerRuntime, registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
    docker_client: docker.DockerClient,
) -> None:
    image = busybox_image(registry_basic, "rt-cache/app")
    runtime.pull(image, user_for(registry_basic, "rt-cache"))
    assert docker_client.api.inspect_image(image)  # cached on the engine now
    with pytest.raises(DeployError) as raised:
        runtime.pull(image, None)
    assert raised.value.code == "registry_unauthorized"
    with pytest.raises(DeployError) as raised:
        runtime.pull(image, RegistryLogin("rt-cache", "wrong"))
    assert raised.value.code == "registry_unauthorized"


def spec(deployment_id: int, port: int, command: list[str], **env: str) -> AppSpec:
    return AppSpec(region="eu-1", account_id=1, account="acme", app_id=3, app="api",
                         deployment_id=deployment_id, port=port, command=command, env=env)


def serving(port: int, timeout: float = 10.0) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def test_a_container_becomes_ready_and_replaces_the_old_one_and_a_failed_one_does_not(
    runtime: DockerRuntime, registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
    docker_client: docker.DockerClient,
) -> None:
    image = busybox_image(registry_basic, "rt-run/app")
    login = user_for(registry_basic, "rt-run")
    pulled = runtime.pull(image, login)
    port = free_port()
    httpd = ["httpd", "-f", "-p", str(port)]

    first = runtime.run(spec(41, port, httpd, GREETING="hello"), pulled.by_digest)
    assert first.name == "moorage-acme-api-41" and first.removed == []
    container = docker_client.containers.get(first.container_id)
    assert container.status == "running"
    assert container.labels == {"moorage.account": "1", "moorage.app": "3",
                                "moorage.deployment": "41", "moorage.region": "eu-1",
                                "moorage.port": str(port)}
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    assert "GREETING=hello" in container.attrs["Config"]["Env"]

    # The next deployment on the same port takes over; the old container is removed.
    second = runtime.run(spec(42, port, httpd), pulled.by_digest)
    assert second.removed == [first.container_id]
    assert serving(port)
    assert [c["Id"] for c in runtime.containers(1, 3)] == [second.container_id]

    # A deployment whose command exits fails with its last log lines (one stream: stdout and
    # stderr lines may interleave in any order); the previous one
    # is serving again and is the app's only container.
    with pytest.raises(DeployError) as raised:
        runtime.run(spec(43, port, ["sh", "-c", "echo starting up; echo boom; exit 3"]),
                    pulled.by_digest)
    assert raised.value.code == "container_exited"
    assert raised.value.logs == ["starting up", "boom"]
    assert raised.value.message == ("The container exited (code 3) before it was ready. "
                                    "Last log lines: starting up | boom")
    assert [c["Id"] for c in runtime.containers(1, 3)] == [second.container_id]
    assert serving(port)
    assert docker_client.containers.get(second.container_id).status == "running"

    # Nothing of the registry password in any container's environment or arguments.
    for c in docker_client.containers.list(all=True):
        assert PASSWORD not in json.dumps(c.attrs)

    assert runtime.remove_app(1, 3) == 1
    assert runtime.containers(1, 3) == []


def test_a_container_that_never_listens_is_not_ready(
    dockerd: Dockerd, runtime: DockerRuntime, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    image = busybox_image(registry_basic, "rt-notready/app")
    pulled = runtime.pull(image, user_for(registry_basic, "rt-notready"))
    quick = DockerRuntime(dockerd.base_url, region="eu-1", ready_timeout=1.5, stop_timeout=1)
    with pytest.raises(DeployError) as raised:
        quick.run(spec(51, free_port(), ["sleep", "60"]), pulled.by_digest)
    assert raised.value.code == "container_not_ready"
    assert quick.containers(1, 3) == []


class Probe:
    """Connects to 127.0.0.1:port every 50 ms in a thread and keeps when it could."""

    def __init__(self, port: int) -> None:
        import threading

        self.port = port
        self.seen: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.3):
                    up = True
            except OSError:
                up = False
            self.seen.append((time.monotonic(), up))
            self._stop.wait(0.05)

    def longest_gap(self) -> float:
        """The longest stretch, in seconds, during which nothing answered."""
        longest, down_since = 0.0, None
        for at, up in self.seen:
            if not up and down_since is None:
                down_since = at
            elif up and down_since is not None:
                longest, down_since = max(longest, at - down_since), None
        if down_since is not None:
            longest = max(longest, self.seen[-1][0] - down_since)
        return longest


_restore_names = itertools.count()


@pytest.fixture
def serving_first(
    runtime: DockerRuntime, registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
) -> tuple[str, int, str]:
    """An app serving on a port: (image by digest, port, its container id)."""
    name = f"rt-restore-{next(_restore_names)}"
    image = busybox_image(registry_basic, f"{name}/app")
    pulled = runtime.pull(image, user_for(registry_basic, name))
    port = free_port()
    first = runtime.run(spec(61, port, ["httpd", "-f", "-p", str(port)]), pulled.by_digest)
    assert serving(port)
    return pulled.by_digest, port, first.container_id


def test_a_command_that_cannot_start_is_container_start_failed_and_the_old_one_serves(
    runtime: DockerRuntime, serving_first: tuple[str, int, str],
    docker_client: docker.DockerClient,
) -> None:
    image, port, first = serving_first
    with pytest.raises(DeployError) as raised:
        runtime.run(spec(62, port, ["nosuchcmd", "--flag"]), image)
    assert raised.value.code == "container_start_failed"
    # The engine's own words, the cause first, and what to check.
    assert raised.value.message.startswith(
        'The container could not start: exec: "nosuchcmd": executable file not found in '
        "$PATH. Check the command nosuchcmd --flag and the image. The engine said: ")
    # The previous version serves again and is the app's only container.
    assert serving(port)
    assert [c["Id"] for c in runtime.containers(1, 3)] == [first]
    assert docker_client.containers.get(first).status == "running"


def test_the_old_version_answers_again_at_once_when_the_new_one_exits(
    runtime: DockerRuntime, serving_first: tuple[str, int, str],
) -> None:
    """Host networking, same port: the old container stops for the new one, which exits
    after 2 s without ever listening. The old one is back right then, not at the end of the
    readiness timeout (30 s here)."""
    image, port, first = serving_first
    with Probe(port) as probe:
        began = time.monotonic()
        with pytest.raises(DeployError) as raised:
            runtime.run(spec(63, port, ["sh", "-c", "sleep 2; exit 4"]), image)
        failed_after = time.monotonic() - began
        assert serving(port, timeout=5.0)
        time.sleep(0.3)
    assert raised.value.code == "container_exited"
    assert failed_after < 10.0  # the exit ended the wait (ready timeout: 30 s)
    # Down while the old one stopped and the new one ran its 2 s, then back at once.
    assert 1.5 < probe.longest_gap() < 8.0, probe.longest_gap()
    assert [c["Id"] for c in runtime.containers(1, 3)] == [first]


def test_an_apps_readiness_timeout_bounds_the_gap_of_a_version_that_never_listens(
    runtime: DockerRuntime, serving_first: tuple[str, int, str],
) -> None:
    """A new version that runs but never listens is given up after the app's own
    readiness timeout (2 s), not the runtime's (15 s), and the old one serves again."""
    image, port, first = serving_first
    assert runtime.ready_timeout == 15
    with Probe(port) as probe:
        with pytest.raises(DeployError) as raised:
            runtime.run(replace(spec(64, port, ["sleep", "60"]), ready_timeout=2), image)
        assert serving(port, timeout=5.0)
        time.sleep(0.3)
    assert raised.value.code == "container_not_ready"
    assert raised.value.message == (f"The container did not accept connections on port {port}"
                                    " within 2 s (the app's readiness timeout).")
    assert 1.5 < probe.longest_gap() < 9.0, probe.longest_gap()
    assert [c["Id"] for c in runtime.containers(1, 3)] == [first]


@pytest.mark.parametrize(("said", "reason"), [
    # runc before 1.1 (Debian's 20.10), and a swarm task's Err around it
    ('OCI runtime create failed: container_linux.go:380: starting container process caused: '
     'exec: "nosuchcmd": executable file not found in $PATH: unknown',
     'exec: "nosuchcmd": executable file not found in $PATH'),
    ('starting container failed: OCI runtime create failed: container_linux.go:380: starting '
     'container process caused: chdir to cwd ("/nope") set in config.json failed: no such '
     'file or directory: unknown',
     'chdir to cwd ("/nope") set in config.json failed: no such file or directory'),
    # runc 1.1+
    ('failed to create shim task: OCI runtime create failed: runc create failed: unable to '
     'start container process: exec: "/app": permission denied: unknown',
     'exec: "/app": permission denied'),
    # Podman (crun) says it plainly
    ("crun: executable file `nosuchcmd` not found in $PATH: No such file or directory: OCI "
     "runtime attempted to invoke a command that was not found",
     "crun: executable file `nosuchcmd` not found in $PATH: No such file or directory: OCI "
     "runtime attempted to invoke a command that was not found"),
])
def test_the_reason_of_a_start_failure_is_the_runtimes_own_words(said: str, reason: str) -> None:
    assert is_start_failure(said)
    assert start_failure_reason(said) == reason


def test_a_run_left_to_settle_serves_at_once_and_settles_when_asked(
    runtime: DockerRuntime, registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
    docker_client: docker.DockerClient,
) -> None:
    """What a deploy reports before its clean-up: the new container serves, the old one is
    stopped (same port) but still there, and no restart policy yet; ``settle`` does the rest."""
    image = busybox_image(registry_basic, "rt-settle/app")
    pulled = runtime.pull(image, user_for(registry_basic, "rt-settle"))
    port = free_port()
    httpd = ["httpd", "-f", "-p", str(port)]
    first = runtime.run(spec(61, port, httpd), pulled.by_digest)
    assert first.settled
    assert docker_client.containers.get(first.container_id) \
        .attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

    second = runtime.run(spec(62, port, httpd), pulled.by_digest, settle=False)
    assert not second.settled and second.removed == [first.container_id]
    assert serving(port)
    new = docker_client.containers.get(second.container_id)
    assert new.status == "running" and new.attrs["HostConfig"]["RestartPolicy"]["Name"] \
        in ("", "no")
    assert docker_client.containers.get(first.container_id).status == "exited"

    runtime.settle(second)
    new.reload()
    assert new.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert [c["Id"] for c in runtime.containers(1, 3)] == [second.container_id]
    assert serving(port)
    assert runtime.remove_app(1, 3) == 1


def test_readiness_is_looked_at_often_at_first_then_every_fifth_of_a_second() -> None:
    pauses = list(itertools.islice(ready_pauses(), 20))
    assert pauses[0] <= 0.01 and sum(pauses[:5]) < 0.15  # a quick server is seen quickly
    assert pauses == sorted(pauses) and pauses[-1] == 0.2  # then no busier than 5 a second
