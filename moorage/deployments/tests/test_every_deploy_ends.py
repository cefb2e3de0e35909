"""Every deploy ends, and ``moorage apps deploy --follow`` returns for each: the real control
plane (live server), the region's real agent (in a thread, or a ``moorage agent`` process that
is killed mid-deploy), the real dockerd and registry, and the CLI as separate processes fired
at once.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest
from django.test import override_settings

from moorage.agent.runtime import DockerRuntime
from moorage.agent.runtime.base import LABEL_APP, LABEL_REGION
from moorage.apps.models import App
from moorage.apps.services import app_create, app_delete
from moorage.cli import apps as apps_cli
from moorage.cli import clientconfig
from moorage.deployments.choices import DeploymentStatus
from moorage.deployments.models import Deployment
from moorage.private_files import write_private
from moorage.testing.agents import InProcessAgent
from moorage.testing.credentials import make_credential
from moorage.testing.dockerd import Dockerd
from moorage.testing.factories import Member
from moorage.testing.ports import free_port
from moorage.testing.processes import AgentProcess, wait_until
from moorage.testing.regions import AgentView, deploy_one, make_region, member_in
from moorage.testing.registry import RegistryServer

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

Cli = Callable[..., "subprocess.Popen[str]"]
#: The last line of a follow that saw its deployment run ("✓ eu-1 (1/1 replicas): running …").
RUNNING = re.compile(r"✓ eu-1( \(\d+/\d+ replicas\))?: running ")


@pytest.fixture
def eu() -> AgentView:
    return make_region("eu-1")


@pytest.fixture
def owner(eu: AgentView) -> Member:
    return member_in(eu, "Acme")


@pytest.fixture
def cli(owner: Member, live_server: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """Start ``moorage ARGS`` as its own process, logged in as ``owner``; every one started
    is reaped (killed if it still runs) at the end."""
    home = tmp_path / "cli-home"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    clientconfig.save(clientconfig.ClientConfig(url=str(live_server.url), token=owner.token))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MOORAGE_", "DJANGO_")) and k != "DATABASE_URL"}
    env |= {"XDG_CONFIG_HOME": str(home / "config"), "HOME": str(home), "COLUMNS": "300",
            "PYTHONUNBUFFERED": "1"}
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-m", "moorage", *args], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def _app(owner: Member, registry: RegistryServer, busybox_image: Callable[..., str],
         name: str, *, command: list[str] | None = None, port: int | None = None,
         ready_timeout: int = 30) -> App:
    """An app pulling a busybox image from the Basic registry with a credential; by default
    an HTTP server on a free port (the deploy waits until it accepts connections)."""
    image = busybox_image(registry, f"acme/{name}", "1.0")
    credential = make_credential(owner, name=f"{name}-registry", server=registry.host,
                                 username=registry.admin_username,
                                 secret=registry.admin_password)
    if command is None:
        port = free_port()
        command = ["/bin/sh", "-c", f"exec httpd -f -p {port}"]
    return app_create(actor=owner.user, membership=owner.membership, name=name, image=image,
                      runtime_pull="credential", runtime_pull_credential_id=credential.pk,
                      port=port, command=command, ready_timeout=ready_timeout)


def _finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def _fire(cli: Cli, app: str, count: int) -> list[subprocess.Popen[str]]:
    """``count`` ``deploy --follow`` of ``app`` at once."""
    return [cli("apps", "deploy", app, "--follow", "--timeout", "300") for _ in range(count)]


def _number(output: str) -> int:
    found = re.search(r"Deploy #(\d+) of", output)
    assert found, output
    return int(found.group(1))


def _containers(client: docker.DockerClient, app: App) -> list[Any]:
    return client.containers.list(all=True, filters={"label": [f"{LABEL_APP}={app.pk}",
                                                               f"{LABEL_REGION}=eu-1"]})


def _statuses(app: App) -> dict[int, str]:
    return dict(Deployment.objects.filter(app=app).values_list("number", "status"))


def _check_followers(processes: list[subprocess.Popen[str]], newest: int) -> None:
    """Each follower returned: the newest deploy's with 0 (running), every other with
    :data:`~moorage.cli.apps.EXIT_SUPERSEDED` or 0 (it ran, then was replaced)."""
    for process in processes:
        code, out = _finish(process)
        number = _number(out)
        if number == newest:
            assert code == 0, out
            assert RUNNING.search(out), out
        elif code == apps_cli.EXIT_SUPERSEDED:
            assert "superseded: a newer deploy of the app took its place" in out, out
        else:
            assert code == 0 and (RUNNING.search(out) or "has replaced it since" in out), out


def test_five_deploys_fired_at_once_end_with_one_container_and_five_terminal_deployments(
    eu: AgentView, owner: Member, cli: Cli, start_agent: Callable[[AgentView], InProcessAgent],
    registry_basic: RegistryServer, busybox_image: Callable[..., str],
    docker_client: docker.DockerClient,
) -> None:
    app = _app(owner, registry_basic, busybox_image, "big")
    agent = start_agent(eu)
    first = deploy_one(owner, app.pk)
    wait_until(lambda: Deployment.objects.get(pk=first.pk).status == "running", timeout=90,
               what="deploy #1 to run")
    # The agent is away while five deploys are made at once: when it is back it receives
    # only the newest (changes coalesce per app), as after any busy spell.
    agent.stop()
    followers = _fire(cli, "big", 5)
    wait_until(lambda: Deployment.objects.filter(app=app).count() == 6, timeout=60,
               what="the five deploys to be made")
    assert set(_statuses(app).values()) == {"running", "queued"}
    start_agent(eu)
    _check_followers(followers, newest=6)
    statuses = _statuses(app)
    assert statuses == {1: "replaced", 2: "superseded", 3: "superseded", 4: "superseded",
                        5: "superseded", 6: "running"}, statuses
    never_started = Deployment.objects.filter(app=app, status="superseded")
    assert all(d.started_at is None and d.finished_at is not None for d in never_started)
    assert "Superseded by #6 before it started" in " ".join(
        never_started.first().logs.values_list("line", flat=True))  # type: ignore[union-attr]
    [container] = _containers(docker_client, app)
    assert container.labels["moorage.deployment"] == str(
        Deployment.objects.get(app=app, number=6).pk)

    # Again, with the agent running throughout: it supersedes what it already received
    # itself, and the control plane what it never sent. Still one of each app runs.
    followers = _fire(cli, "big", 5)
    _check_followers(followers, newest=11)
    statuses = _statuses(app)
    assert statuses[11] == "running", statuses
    assert all(statuses[n] in ("superseded", "replaced") for n in range(1, 11)), statuses
    assert statuses[6] == "replaced"
    assert list(statuses.values()).count("running") == 1
    [container] = _containers(docker_client, app)
    assert container.labels["moorage.deployment"] == str(
        Deployment.objects.get(app=app, number=11).pk)


def test_follow_says_stalled_and_exits_3_when_the_agent_stops_mid_deploy(
    eu: AgentView, owner: Member, cli: Cli, live_server: Any, dockerd: Dockerd,
    registry_basic: RegistryServer, busybox_image: Callable[..., str],
    docker_client: docker.DockerClient, tmp_path: Path,
) -> None:
    # A server that never listens on its port: the deploy waits in ``starting``.
    port = free_port()
    app = _app(owner, registry_basic, busybox_image, "slow",
               command=["/bin/sh", "-c", "exec sleep 3600"], port=port, ready_timeout=15)
    files = tmp_path / "agent-files"
    files.mkdir()
    write_private(files / "token", eu.token + "\n")
    write_private(files / "key", eu.key.encoded() + "\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MOORAGE_", "DJANGO_")) and k != "DATABASE_URL"}
    env["HOME"] = str(tmp_path / "agent-home")
    agent = AgentProcess(tmp_path / "agent", agent_dir=files, url=str(live_server.url),
                         env=env, docker_host=dockerd.base_url)
    with override_settings(DEPLOY_STALLED_AFTER=4):
        agent.start()
        try:
            follower = cli("apps", "deploy", "slow", "--follow")
            wait_until(lambda: Deployment.objects.filter(app=app, status="starting").exists(),
                       timeout=90, what="the deploy to be starting")
            agent.kill()  # mid-deploy: no report, no poll any more
        finally:
            agent.stop()
        code, out = _finish(follower, timeout=60)
    assert code == apps_cli.EXIT_STALLED, out
    assert "stalled: The agent of region eu-1 has not been in touch for" in out, out
    assert "eu-1: stalled agent_offline:" in out, out
    deployment = Deployment.objects.get(app=app)
    assert deployment.status == DeploymentStatus.STARTING  # not finished: it may go on
    for container in _containers(docker_client, app):
        container.remove(force=True)


def test_follow_stops_at_its_own_timeout(
    eu: AgentView, owner: Member, cli: Cli, registry_basic: RegistryServer,
    busybox_image: Callable[..., str],
) -> None:
    app = _app(owner, registry_basic, busybox_image, "nobody")
    # No agent at all, and a stall bound far away: only the follow's own bound ends it.
    with override_settings(DEPLOY_STALLED_AFTER=3600):
        code, out = _finish(cli("apps", "deploy", "nobody", "--follow", "--timeout", "2"),
                            timeout=60)
    assert code == apps_cli.EXIT_FOLLOW_TIMEOUT, out
    assert "eu-1: still queued after 2 s of following; the deploy goes on." in out, out
    assert Deployment.objects.get(app=app).status == DeploymentStatus.QUEUED


class DeletingRuntime(DockerRuntime):
    """The real docker runtime; ``during_pull`` runs once its pull has finished (a test hook:
    the app is deleted there, as a member would while the image downloads)."""

    during_pull: Callable[[], None] = staticmethod(lambda: None)

    def pull(self, *args: Any, **kwargs: Any) -> Any:
        pulled = super().pull(*args, **kwargs)
        self.during_pull()
        return pulled


def test_an_app_deleted_mid_pull_never_starts_and_its_late_report_is_no_error(
    eu: AgentView, owner: Member, live_server: Any, dockerd: Dockerd, tmp_path: Path,
    registry_basic: RegistryServer, busybox_image: Callable[..., str],
    docker_client: docker.DockerClient, caplog: pytest.LogCaptureFixture,
) -> None:
    app = _app(owner, registry_basic, busybox_image, "doomed")
    deployment = deploy_one(owner, app.pk)
    runtime = DeletingRuntime(dockerd.base_url, region="eu-1", pull_timeout=60,
                              ready_timeout=20, stop_timeout=1)
    runtime.during_pull = lambda: app_delete(actor=owner.user, membership=owner.membership,
                                             app_id=app.pk)
    agent = InProcessAgent(eu, url=str(live_server.url), docker_host=dockerd.base_url,
                           data_dir=tmp_path, runtime_for=lambda kind: runtime)
    since = datetime.now(UTC)
    caplog.set_level(logging.INFO, logger="moorage.agent")
    try:
        agent.run_until_idle()
        # No container of the app was ever created, not even for a moment.
        created = [e for e in docker_client.events(
            since=since, until=datetime.now(UTC), decode=True,
            filters={"type": "container", "label": f"{LABEL_APP}={app.pk}"})
            if e.get("Action") == "create"]
        assert created == []
        assert _containers(docker_client, app) == []
        assert "its app was deleted meanwhile; not started" in caplog.text
        # A report that still comes for it (an agent that had run it) is expected: INFO.
        assert agent.loop is not None and agent.loop.deployer is not None
        caplog.clear()
        agent.loop.deployer.send_report(deployment.pk, {"status": "running"}, final=True)
    finally:
        agent.stop()
    refused = [r for r in caplog.records if "refused the report" in r.getMessage()]
    assert refused and all(r.levelno == logging.INFO for r in refused), caplog.text
    assert "deployment_not_found" in refused[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
