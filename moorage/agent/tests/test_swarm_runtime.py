"""The swarm runtime against a REAL three-node swarm and REAL registries (Basic and Bearer).

The session's swarm is shared; ``swarm_client`` removes each test's services and puts every
node back. Every test pushes its own repository, so what a node has cached comes only from
the test itself. The three nodes share 127.0.0.1 (one machine): an app with a port is served
by whichever of its tasks binds it, so port tests run one replica per port.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

import docker
import httpx
import pytest

from moorage.agent.errors import DeployError, LogsError
from moorage.agent.runtime import AppSpec, ImageSource, PullProgress, SwarmRuntime
from moorage.registry import RegistryLogin
from moorage.testing.fixtures import BusyboxImageFactory
from moorage.testing.ports import free_port
from moorage.testing.registry import RegistryServer
from moorage.testing.swarm import Swarm

pytestmark = pytest.mark.docker


@dataclass
class Events:
    """A DeployEvents that records."""

    lines: list[str] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)

    def line(self, text: str) -> None:
        self.lines.append(text)

    def phase(self, status: str) -> None:
        self.phases.append(status)

    def progress(self, event: PullProgress) -> None:
        pass

    def pulled(self, digest: str) -> None:
        self.digests.append(digest)


@pytest.fixture
def runtime(swarm: Swarm, swarm_client: docker.DockerClient) -> SwarmRuntime:
    # swarm_client: its teardown removes the test's services and puts the nodes back.
    return SwarmRuntime(swarm.base_url, region="eu-1", ready_timeout=30, monitor=1.0,
                        stop_timeout=1, api_timeout=10)


@pytest.fixture(params=["basic", "token"])
def registry(request: pytest.FixtureRequest) -> RegistryServer:
    """Each test that takes it runs against the Basic and the Bearer-token registry."""
    server: RegistryServer = request.getfixturevalue(f"registry_{request.param}")
    return server


def _user(registry: RegistryServer, repository: str) -> RegistryLogin:
    login = RegistryLogin("u" + secrets.token_hex(4), "Swarm-Pw-" + secrets.token_hex(8))
    registry.add_user(login.username, login.password)
    registry.grant(login.username, repository)
    return login


def _spec(deployment_id: int, *, app_id: int = 1, replicas: int = 3, port: int | None = None,
          command: list[str] | None = None) -> AppSpec:
    return AppSpec(region="eu-1", account_id=1, account="acme", app_id=app_id, app="api",
                   deployment_id=deployment_id, replicas=replicas, port=port,
                   command=command or ["sleep", "600"])


def _source(image: str, login: RegistryLogin | None, revision: int = 1) -> ImageSource:
    if login is None:
        return ImageSource(image)
    return ImageSource(image, login=login, credential_label=f"'reg' (revision {revision})",
                       credential_id=7, credential_revision=revision)


def _tasks(client: docker.DockerClient, service_id: str) -> list[dict[str, Any]]:
    return [t for t in client.api.tasks(filters={"service": service_id,
                                                 "desired-state": "running"})
            if t["Status"]["State"] == "running"]


def _serve(port: int, text: str) -> list[str]:
    # The page says which version answers; httpd serves /www.
    return ["/bin/sh", "-c", f"mkdir -p /www && echo {text} > /www/v && "
            f"exec httpd -f -p {port} -h /www"]


def _fetch(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/v", timeout=2).text.strip()


def test_three_replicas_land_on_three_nodes_with_the_tenants_login_only(
    runtime: SwarmRuntime, swarm: Swarm, swarm_client: docker.DockerClient,
    registry: RegistryServer, busybox_image: BusyboxImageFactory,
) -> None:
    repository = f"sw-three-{registry.auth}/api"
    image = busybox_image(registry, repository, "1.0", marker=repository)
    login = _user(registry, repository)
    events = Events()
    result = runtime.deploy(_spec(11), _source(image, login), events)

    [service_id] = result.ids
    tasks = _tasks(swarm_client, service_id)
    assert sorted(t["NodeID"] for t in tasks) == sorted(n.node_id for n in swarm.nodes)
    assert result.replicas == 3 and result.digest and result.digest.startswith("sha256:")
    assert events.phases == ["starting"] and events.digests == [result.digest]
    assert "3/3 replica(s) of deployment 11 running" in events.lines
    service = swarm_client.api.inspect_service(service_id)
    spec = service["Spec"]
    assert spec["Name"] == "moorage-acme-api"
    assert spec["Labels"]["moorage.credential"] == "7:1"
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == f"{image}@{result.digest}"
    [network] = spec["TaskTemplate"]["Networks"]  # the engine stores the network's id
    assert swarm_client.api.inspect_network(network["Target"])["Name"] == "host"
    assert spec["UpdateConfig"]["FailureAction"] == "rollback"
    assert spec["UpdateConfig"]["Order"] == "start-first"
    # No secret in what `docker service inspect` and `docker inspect` of a task show.
    shown = json.dumps(service) + json.dumps(tasks)
    assert login.password not in shown
    [running] = runtime.running()
    assert (running.app_id, running.deployment_id, running.running, running.desired,
            running.credential) == (1, 11, 3, 3, (7, 1))
    nodes = runtime.nodes()
    assert sorted(n.state for n in nodes) == ["ready"] * 3
    assert [n.role for n in nodes] == ["manager", "worker", "worker"]

    # Deployed again (same image, another deployment): the same service, updated in place.
    again = runtime.deploy(_spec(12), _source(image, login), Events())
    assert again.ids == [service_id]
    assert len(swarm_client.api.services(filters={"label": "moorage.app=1"})) == 1
    assert {t["Spec"]["ContainerSpec"]["Labels"]["moorage.deployment"]
            for t in _tasks(swarm_client, service_id)} == {"12"}


def test_a_cached_image_is_refused_for_another_account_before_any_service_exists(
    runtime: SwarmRuntime, swarm_client: docker.DockerClient, registry_token: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    """I9: a worker whose pull fails would run its cached copy; the check comes first."""
    repository = "sw-i9/secret-app"
    image = busybox_image(registry_token, repository, "1.0", marker=repository)
    alice = _user(registry_token, repository)
    theirs = runtime.deploy(_spec(21, app_id=21), _source(image, alice), Events())
    assert len(_tasks(swarm_client, theirs.ids[0])) == 3  # cached on every node now

    bob = RegistryLogin("bob" + secrets.token_hex(3), "Bob-Pw-" + secrets.token_hex(6))
    registry_token.add_user(bob.username, bob.password)  # valid login, no grant
    for login, code in ((bob, "registry_forbidden"), (None, "registry_unauthorized")):
        with pytest.raises(DeployError) as raised:
            runtime.deploy(AppSpec(region="eu-1", account_id=2, account="bob", app_id=22,
                                   app="copycat", deployment_id=22, replicas=3,
                                   command=["sleep", "600"]),
                           _source(image, login), Events())
        assert raised.value.code == code, raised.value.message
        assert "sw-i9/secret-app" in raised.value.message
        assert "No service was created or changed" in raised.value.message
        assert not swarm_client.api.services(filters={"label": "moorage.app=22"})
        if login is not None:
            assert "'reg' (revision 1)" in raised.value.message
            assert login.password not in raised.value.message


def test_a_rotated_login_reaches_the_service_without_restarting_its_tasks(
    runtime: SwarmRuntime, swarm: Swarm, swarm_client: docker.DockerClient,
    registry: RegistryServer, busybox_image: BusyboxImageFactory,
) -> None:
    """I12: tasks keep running; a task rescheduled after the old password was revoked pulls
    with the new one on a node that never had the image."""
    repository = f"sw-rotate-{registry.auth}/api"
    image = busybox_image(registry, repository, "1.0", marker=repository)
    login = _user(registry, repository)
    result = runtime.deploy(_spec(31, replicas=2), _source(image, login), Events())
    service_id = result.ids[0]
    before = {t["ID"]: t["NodeID"] for t in _tasks(swarm_client, service_id)}
    idle = [n.node_id for n in swarm.nodes if n.node_id not in before.values()]
    assert len(before) == 2 and len(idle) == 1

    rotated = RegistryLogin(login.username, "Rotated-" + secrets.token_hex(8))
    registry.set_password(login.username, rotated.password)  # the old password is revoked
    if registry.issuer is not None:
        registry.issuer.clear_requests()
    assert runtime.refresh_auth(1, 1, _source(image, rotated, revision=2)) is True
    assert runtime.refresh_auth(1, 1, _source(image, rotated, revision=2)) is False  # done
    time.sleep(2)  # give the swarm the time it would take to restart anything
    assert {t["ID"]: t["NodeID"] for t in _tasks(swarm_client, service_id)} == before
    spec = swarm_client.api.inspect_service(service_id)["Spec"]
    assert spec["Labels"]["moorage.credential"] == "7:2"
    assert [r.credential for r in runtime.running()] == [(7, 2)]

    drained = next(iter(before.values()))
    swarm.set_availability(drained, "drain")
    deadline = time.monotonic() + 60
    while True:
        now = {t["ID"]: t["NodeID"] for t in _tasks(swarm_client, service_id)}
        if len(now) == 2 and idle[0] in now.values():
            break
        assert time.monotonic() < deadline, swarm_client.api.tasks(
            filters={"service": service_id})
        time.sleep(0.3)
    if registry.issuer is not None:
        pulls = [r for r in registry.issuer.requests
                 if r.username == login.username and any(repository in s for s in r.scopes)]
        assert pulls and all(r.authenticated and r.status == 200 for r in pulls), pulls


def test_a_failing_update_rolls_back_and_the_old_version_keeps_serving(
    runtime: SwarmRuntime, swarm_client: docker.DockerClient, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    repository = "sw-rollback/api"
    image = busybox_image(registry_basic, repository, "1.0", marker=repository)
    login = _user(registry_basic, repository)
    port = free_port()
    first = runtime.deploy(_spec(41, replicas=1, port=port, command=_serve(port, "one")),
                           _source(image, login), Events())
    assert _fetch(port) == "one"
    events = Events()
    with pytest.raises(DeployError) as raised:
        runtime.deploy(_spec(42, replicas=1, port=port,
                             command=["/bin/sh", "-c", "echo starting; sleep 0.3; exit 3"]),
                       _source(image, login), events)
    assert raised.value.code == "update_rolled_back", raised.value.message
    assert "deployment 41 keeps serving" in raised.value.message
    assert "non-zero exit (3)" in raised.value.message
    assert any("does not serve while its task is replaced" in line for line in events.lines)
    assert _fetch(port) == "one"
    spec = swarm_client.api.inspect_service(first.ids[0])["Spec"]
    assert spec["Labels"]["moorage.deployment"] == "41"


def test_a_first_version_that_cannot_run_leaves_no_service(
    runtime: SwarmRuntime, swarm_client: docker.DockerClient, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    repository = "sw-badstart/api"
    image = busybox_image(registry_basic, repository, "1.0", marker=repository)
    login = _user(registry_basic, repository)
    with pytest.raises(DeployError) as raised:
        runtime.deploy(_spec(51, app_id=51, command=["/bin/sh", "-c", "echo boom; exit 4"]),
                       _source(image, login), Events())
    assert raised.value.code == "container_exited", raised.value.message
    assert "non-zero exit (4)" in raised.value.message
    assert not swarm_client.api.services(filters={"label": "moorage.app=51"})


def test_a_first_version_whose_command_cannot_start_says_so_and_leaves_no_service(
    runtime: SwarmRuntime, swarm_client: docker.DockerClient, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    repository = "sw-nocmd/api"
    image = busybox_image(registry_basic, repository, "1.0", marker=repository)
    login = _user(registry_basic, repository)
    with pytest.raises(DeployError) as raised:
        runtime.deploy(_spec(55, app_id=55, replicas=1, command=["nosuchcmd"]),
                       _source(image, login), Events())
    assert raised.value.code == "container_start_failed", raised.value.message
    assert raised.value.message.startswith(
        'A task of api could not start: exec: "nosuchcmd": executable file not found in '
        "$PATH. No service was left behind. A task said: ")
    assert not swarm_client.api.services(filters={"label": "moorage.app=55"})


def test_an_update_that_cannot_start_or_never_listens_is_rolled_back_in_the_apps_time(
    runtime: SwarmRuntime, swarm_client: docker.DockerClient, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    repository = "sw-norun/api"
    image = busybox_image(registry_basic, repository, "1.0", marker=repository)
    login = _user(registry_basic, repository)
    port = free_port()
    first = runtime.deploy(_spec(61, app_id=61, replicas=1, port=port,
                                 command=_serve(port, "one")), _source(image, login), Events())
    assert _fetch(port) == "one"

    # A command the engine cannot start: classified, in the engine's words, rolled back.
    with pytest.raises(DeployError) as raised:
        runtime.deploy(_spec(62, app_id=61, replicas=1, port=port, command=["nosuchcmd"]),
                       _source(image, login), Events())
    assert raised.value.code == "container_start_failed", raised.value.message
    assert raised.value.message.startswith(
        'The new version of api could not start: exec: "nosuchcmd": executable file not found '
        "in $PATH. Swarm rolled the service back: deployment 61 keeps serving.")
    assert _fetch(port) == "one"

    # A version that runs but never listens: given up after the app's readiness timeout
    # (3 s), not the runtime's (30 s), and rolled back.
    began = time.monotonic()
    with pytest.raises(DeployError) as raised:
        runtime.deploy(replace(_spec(63, app_id=61, replicas=1, port=port,
                                     command=["sleep", "600"]), ready_timeout=3),
                       _source(image, login), Events())
    assert time.monotonic() - began < 25
    assert raised.value.code == "update_stalled", raised.value.message
    assert raised.value.message == (
        f"Every replica of deployment 63 runs, but port {port} did not accept connections on "
        "every node within 3 s (the app's readiness timeout). Moorage rolled the service back: "
        "the previous version serves.")
    assert _fetch(port) == "one"
    spec = swarm_client.api.inspect_service(first.ids[0])["Spec"]
    assert spec["Labels"]["moorage.deployment"] == "61"


def test_a_node_that_goes_down_mid_update_stalls_it_and_the_agent_rolls_back(
    runtime: SwarmRuntime, swarm: Swarm, swarm_client: docker.DockerClient,
    registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
) -> None:
    """With a port (one replica per node) a replica whose node went down has nowhere to go:
    the update cannot finish, the agent rolls back and says why; nothing is half recorded."""
    repository = "sw-nodedown/api"
    image = busybox_image(registry_basic, repository, "1.0", marker=repository)
    login = _user(registry_basic, repository)
    port = free_port()
    # Three replicas share the port on one machine: one serves, the others wait for it.
    command = ["/bin/sh", "-c", f"httpd -f -p {port} -h /; sleep 600"]
    first = runtime.deploy(_spec(61, port=port, command=command), _source(image, login),
                           Events())
    worker = swarm.nodes[2]

    class FreezeOnUpdate(Events):
        def phase(self, status: str) -> None:  # the update was just handed to the swarm
            super().phase(status)
            worker.engine.freeze()

    runtime.ready_timeout, runtime.task_slack = 4, 1.0
    try:
        with pytest.raises(DeployError) as raised:
            runtime.deploy(_spec(62, port=port, command=command), _source(image, login),
                           FreezeOnUpdate())
    finally:
        worker.engine.thaw()
    assert raised.value.code == "update_stalled", raised.value.message
    assert "Moorage rolled the service back" in raised.value.message
    assert "of 3 replica(s) of deployment 62 ran" in raised.value.message
    spec = swarm_client.api.inspect_service(first.ids[0])["Spec"]
    assert spec["Labels"]["moorage.deployment"] == "61"

    # Asked for more replicas with a port than there are ready nodes: refused up front.
    with swarm.frozen(worker.engine):
        deadline = time.monotonic() + 30
        while swarm.node_states()[worker.node_id][0] != "down":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with pytest.raises(DeployError) as raised:
            runtime.deploy(_spec(63, port=port, command=command), _source(image, login),
                           Events())
    assert raised.value.code == "not_enough_nodes", raised.value.message
    assert "the swarm has 2 ready node(s)" in raised.value.message


def test_a_manager_that_does_not_answer_is_engine_unreachable_and_nothing_changes(
    swarm: Swarm, swarm_client: docker.DockerClient, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    repository = "sw-frozen/api"
    image = busybox_image(registry_basic, repository, "1.0", marker=repository)
    login = _user(registry_basic, repository)
    runtime = SwarmRuntime(swarm.base_url, region="eu-1", ready_timeout=30, monitor=1.0,
                           stop_timeout=1, api_timeout=10)
    first = runtime.deploy(_spec(71, replicas=2), _source(image, login), Events())
    quick = SwarmRuntime(swarm.base_url, region="eu-1", api_timeout=2)
    started = time.monotonic()
    with swarm.frozen(swarm.manager), pytest.raises(DeployError) as raised:
        quick.deploy(_spec(72, replicas=2), _source(image, login), Events())
    assert raised.value.code == "engine_unreachable", raised.value.message
    assert time.monotonic() - started < 20
    spec = swarm_client.api.inspect_service(first.ids[0])["Spec"]
    assert spec["Labels"]["moorage.deployment"] == "71"
    # A manager frozen for seconds may, once thawed, briefly count a node's heartbeats as
    # missed and reschedule a task: Swarm's doing, not a change of ours. Both tasks of
    # deployment 71 run again within a few heartbeats.
    deadline = time.monotonic() + 30
    while len(running := _tasks(swarm_client, first.ids[0])) != 2:
        assert time.monotonic() < deadline, swarm_client.api.tasks(
            filters={"service": first.ids[0]})
        time.sleep(0.3)
    assert {t["Spec"]["ContainerSpec"]["Labels"]["moorage.deployment"] for t in running} == {"71"}


def test_logs_are_the_services_lines_from_every_node(
    runtime: SwarmRuntime, registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
) -> None:
    repository = "sw-logs/api"
    image = busybox_image(registry_basic, repository, "1.0", marker=repository)
    login = _user(registry_basic, repository)
    command = ["/bin/sh", "-c", "echo hello-from-a-task; sleep 600"]
    runtime.deploy(_spec(81, app_id=81, replicas=3, command=command), _source(image, login),
                   Events())
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while len(lines) < 3:
        assert time.monotonic() < deadline, lines
        lines = [line.text for line in runtime.logs(1, 81, tail=10)
                 if line.text.startswith("hello-from-")]
        time.sleep(0.3)
    assert lines == ["hello-from-a-task"] * 3  # one line from each task, on three nodes
    with pytest.raises(LogsError) as raised:
        list(runtime.logs(1, 999))
    assert raised.value.code == "app_not_running"
