"""Swarm regions end to end: the control plane (live server), the CLI, a real agent in this
process driving a REAL three-node swarm, and real registries (Basic and Bearer token).
Invariants I3, I8/I9 (a cache is not an authorization), I12 (rotation reaches running
services without a restart)."""

from __future__ import annotations

import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any

import docker
import pytest
from click.testing import CliRunner
from django.test import Client

from moorage.apps.models import App
from moorage.apps.services import BuildInput, app_create, app_delete, app_update
from moorage.cli import clientconfig
from moorage.cli.main import cli
from moorage.credentials import refresh
from moorage.credentials import services as credential_services
from moorage.deployments.models import Deployment, DeploymentLog
from moorage.deployments.services import deployment_create
from moorage.deployments.tests.conftest import MakeAgent
from moorage.deployments.tests.test_build_end_to_end import _uploads
from moorage.deployments.tests.test_cloud_end_to_end import CANARY, _ecr_image
from moorage.errors import Conflict, ValidationFailed
from moorage.regions.models import Region, RunningService
from moorage.regions.services import RegistryInput, region_remove
from moorage.testing.agents import InProcessAgent
from moorage.testing.cloud import MOTO_ECR_PASSWORD, MotoEcr
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.fixtures import BusyboxImageFactory
from moorage.testing.gitserver import GitServer
from moorage.testing.processes import wait_until
from moorage.testing.regions import AgentView, deploy_one, make_region, member_in
from moorage.testing.registry import RegistryServer
from moorage.testing.secrets_search import database_text
from moorage.testing.swarm import Swarm

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=["basic", "token"])
def registry(request: pytest.FixtureRequest) -> RegistryServer:
    """The tenant's registry: each test taking it runs with the Basic and the Bearer one."""
    server: RegistryServer = request.getfixturevalue(f"registry_{request.param}")
    return server


def _private_image(registry: RegistryServer, busybox_image: BusyboxImageFactory,
                   repository: str) -> tuple[str, str, str]:
    user, password = "u" + secrets.token_hex(4), "Swarm-E2E-Pw-" + secrets.token_hex(6)
    registry.add_user(user, password)
    image = busybox_image(registry, repository, "1.0", marker=repository)
    registry.grant(user, repository)
    return image, user, password


def _service(client: docker.DockerClient, app_id: int) -> dict[str, Any]:
    [service] = client.api.services(filters={"label": f"moorage.app={app_id}"})
    return dict(service)


def _tasks(client: docker.DockerClient, service_id: str) -> dict[str, str]:
    """Running task id → node id."""
    return {t["ID"]: t["NodeID"] for t in client.api.tasks(
        filters={"service": service_id, "desired-state": "running"})
        if t["Status"]["State"] == "running"}


def _cli(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(cli, list(args))


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return CliRunner()


def test_three_replicas_on_three_nodes_deployed_and_followed_with_the_cli(
    swarm_region: AgentView, swarm_agent: MakeAgent, swarm: Swarm,
    swarm_client: docker.DockerClient, registry: RegistryServer,
    busybox_image: BusyboxImageFactory, runner: CliRunner, live_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    owner = member_in(swarm_region, "Acme Swarm")
    image, user, password = _private_image(registry, busybox_image, f"e2e-{registry.auth}/api")
    make_credential(owner, name="reg", server=registry.host, username=user, secret=password)
    clientconfig.save(clientconfig.ClientConfig(url=str(live_server.url), token=owner.token))
    created = _cli(runner, "apps", "create", "api", "--image", image, "--replicas", "3",
                   "--command", "sleep 600")
    assert created.exit_code == 0, created.output

    agent = swarm_agent(background=True)
    agent.start()
    try:
        followed = _cli(runner, "apps", "deploy", "api", "--follow")
    finally:
        agent.stop()
    assert followed.exit_code == 0, followed.output
    out = " ".join(followed.output.split())
    assert "3/3 replica(s) of deployment" in out
    assert re.search(r"✓ sw-1 \(3/3 replicas\): running .*, pulled with 'reg' revision 1", out)

    app = owner.account.apps.get(name="api")
    service = _service(swarm_client, app.pk)
    assert sorted(_tasks(swarm_client, service["ID"]).values()) == sorted(
        n.node_id for n in swarm.nodes)
    status = _cli(runner, "apps", "status", "api")
    assert status.exit_code == 0 and "3/3" in status.output
    regions = {r["slug"]: r for r in Client().get("/api/v1/regions", headers=owner.auth).json()}
    assert [n["state"] for n in regions["sw-1"]["nodes"]] == ["ready"] * 3
    assert regions["sw-1"]["runtime"] == "swarm"
    assert regions["sw-1"]["registry"] == swarm_region_registry(swarm_region)

    # No secret in `docker service inspect`, the tasks, Moorage's logs, reports or database.
    shown = json.dumps(swarm_client.api.inspect_service(service["ID"])) + json.dumps(
        swarm_client.api.tasks(filters={"service": service["ID"]}))
    assert password not in shown
    assert password not in caplog.text and password not in followed.output
    lines = " ".join(DeploymentLog.objects.values_list("line", flat=True))
    assert password not in lines
    assert password not in database_text()


def swarm_region_registry(region: AgentView) -> str:
    return str(Region.objects.get(slug=region.slug).registry)


def _two_replicas_running(owner: Member, image: str, credential_id: int,
                          swarm_agent: MakeAgent, swarm_client: docker.DockerClient,
                          ) -> tuple[App, InProcessAgent, dict[str, str]]:
    """An app of two replicas deployed with the credential at revision 1, its agent, and its
    running tasks (task id → node id)."""
    app = app_create(actor=owner.user, membership=owner.membership, name="api", image=image,
                     replicas=2, command=["sleep", "600"])
    deployment = deploy_one(owner, app.pk)
    agent = swarm_agent()
    agent.run_until_idle()
    deployment.refresh_from_db()
    assert deployment.status == "running", (deployment.error_code, deployment.error_message)
    service = _service(swarm_client, app.pk)
    assert service["Spec"]["Labels"]["moorage.credential"] == f"{credential_id}:1"
    return app, agent, _tasks(swarm_client, service["ID"])


def test_a_rotation_reaches_the_running_service_without_restarting_it(
    swarm_region: AgentView, swarm_agent: MakeAgent, swarm_client: docker.DockerClient,
    registry: RegistryServer, busybox_image: BusyboxImageFactory,
) -> None:
    """I12: rotate at the registry and in Moorage; the agent hands the service the new login
    (same task ids), reports it, and the credential's sync view says "applied"."""
    owner = member_in(swarm_region, "Rotor")
    image, user, password = _private_image(registry, busybox_image, f"rot-{registry.auth}/api")
    credential = make_credential(owner, name="reg", server=registry.host, username=user,
                                 secret=password)
    app, agent, before = _two_replicas_running(owner, image, credential.pk, swarm_agent,
                                               swarm_client)

    rotated = "Rotated-E2E-" + secrets.token_hex(6)
    registry.set_password(user, rotated)  # the old password is revoked at the registry
    credential_services.credential_update(actor=owner.user, membership=owner.membership,
                                          credential_id=credential.pk, secret=rotated)
    agent.run_until_idle()
    service = _service(swarm_client, app.pk)
    assert service["Spec"]["Labels"]["moorage.credential"] == f"{credential.pk}:2"
    assert _tasks(swarm_client, service["ID"]) == before  # nothing restarted
    client = Client()
    sync = client.get(f"/api/v1/credentials/{credential.pk}/sync", headers=owner.auth).json()
    [state] = sync["regions"]
    assert (state["region"], state["revision"], state["services"],
            state["services_applied"]) == ("sw-1", 2, 1, 1)
    client.force_login(owner.user)
    page = client.get("/credentials/")
    assert "applied to 1 of 1 service in sw-1" in " ".join(page.content.decode().split())
    assert rotated not in json.dumps(swarm_client.api.inspect_service(service["ID"]))

    # A new default for the image's registry moves an app on "Use account default".
    other_user, other_password = "v" + secrets.token_hex(4), "Other-Pw-" + secrets.token_hex(6)
    registry.add_user(other_user, other_password)
    registry.grant(other_user, f"rot-{registry.auth}/api")
    second = make_credential(owner, name="reg-2", server=registry.host, username=other_user,
                             secret=other_password)
    credential_services.credential_set_default(actor=owner.user, membership=owner.membership,
                                               credential_id=second.pk)
    agent.run_until_idle()
    second.refresh_from_db()
    service = _service(swarm_client, app.pk)
    assert service["Spec"]["Labels"]["moorage.credential"] == f"{second.pk}:{second.revision}"
    assert _tasks(swarm_client, service["ID"]) == before
    assert RunningService.objects.get(app=app).credential_id == second.pk


def test_a_refreshed_ecr_token_reaches_the_running_service_without_restarting_it(
    swarm_region: AgentView, swarm_agent: MakeAgent, swarm_client: docker.DockerClient,
    registry_basic: RegistryServer, busybox_image: BusyboxImageFactory, aws_ecr: MotoEcr,
) -> None:
    """I10 + I12: the worker's refresh of an exchanged login is a new revision, which the
    swarm agent hands to the running service like a rotation (same tasks), and neither the
    long-lived key nor the token shows in what Swarm lets anyone inspect."""
    owner = member_in(swarm_region, "Refreshing")
    image, credential = _ecr_image(owner, registry_basic, busybox_image, "swarm")
    app, agent, before = _two_replicas_running(owner, image, credential.pk, swarm_agent,
                                               swarm_client)

    refresh.login_token_refresh_soon(credential=credential)
    assert refresh.login_tokens_refresh_due().refreshed == 1
    agent.run_until_idle()
    service = _service(swarm_client, app.pk)
    assert service["Spec"]["Labels"]["moorage.credential"] == f"{credential.pk}:2"
    assert _tasks(swarm_client, service["ID"]) == before  # nothing restarted
    shown = json.dumps(swarm_client.api.inspect_service(service["ID"])) + json.dumps(
        swarm_client.api.tasks(filters={"service": service["ID"]}))
    assert CANARY not in shown and MOTO_ECR_PASSWORD not in shown
    assert CANARY not in database_text()


def test_i9_a_cached_image_is_refused_for_another_account_before_any_service(
    swarm_region: AgentView, swarm_agent: MakeAgent, swarm_client: docker.DockerClient,
    registry_token: RegistryServer, busybox_image: BusyboxImageFactory,
) -> None:
    alice, bob = member_in(swarm_region, "Alice Swarm"), member_in(swarm_region, "Bob Swarm")
    image, user, password = _private_image(registry_token, busybox_image, "alice-sw/secret")
    make_credential(alice, name="alice-reg", server=registry_token.host, username=user,
                    secret=password)
    theirs = app_create(actor=alice.user, membership=alice.membership, name="app",
                        image=image, replicas=3, command=["sleep", "600"])
    first = deploy_one(alice, theirs.pk)
    agent = swarm_agent()
    agent.run_until_idle()
    first.refresh_from_db()
    assert first.status == "running", first.error_message  # cached on all three nodes now

    mine = app_create(actor=bob.user, membership=bob.membership, name="copycat", image=image,
                      runtime_pull="none", replicas=3, command=["sleep", "600"])
    attempt = deploy_one(bob, mine.pk)
    agent.run_until_idle()
    attempt.refresh_from_db()
    assert (attempt.status, attempt.error_code) == ("failed", "registry_unauthorized"), \
        attempt.error_message
    assert "alice-sw/secret" in attempt.error_message
    assert not swarm_client.api.services(filters={"label": f"moorage.app={mine.pk}"})
    assert not RunningService.objects.filter(app=mine).exists()


def test_a_failing_update_rolls_back_and_the_previous_version_keeps_running(
    swarm_region: AgentView, swarm_agent: MakeAgent, swarm_client: docker.DockerClient,
    registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
) -> None:
    owner = member_in(swarm_region, "Steady Swarm")
    image, user, password = _private_image(registry_basic, busybox_image, "steady-sw/api")
    make_credential(owner, name="reg", server=registry_basic.host, username=user,
                    secret=password)
    app = app_create(actor=owner.user, membership=owner.membership, name="api", image=image,
                     replicas=2, command=["sleep", "600"])
    good = deploy_one(owner, app.pk)
    agent = swarm_agent()
    agent.run_until_idle()
    app_update(actor=owner.user, membership=owner.membership, app_id=app.pk,
               command=["/bin/sh", "-c", "sleep 0.3; exit 5"])
    bad = deploy_one(owner, app.pk)
    agent.run_until_idle()
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.status == "running"
    assert (bad.status, bad.error_code) == ("failed", "update_rolled_back"), bad.error_message
    assert f"deployment {good.pk} keeps serving" in bad.error_message
    service = _service(swarm_client, app.pk)
    assert service["Spec"]["Labels"]["moorage.deployment"] == str(good.pk)
    assert len(_tasks(swarm_client, service["ID"])) == 2
    assert RunningService.objects.get(app=app).deployment_id == good.pk


def test_an_agent_restarted_with_an_empty_data_dir_adopts_and_leaves_no_orphan(
    swarm_region: AgentView, swarm_agent: MakeAgent, swarm_client: docker.DockerClient,
    registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
) -> None:
    owner = member_in(swarm_region, "Phoenix")
    image, user, password = _private_image(registry_basic, busybox_image, "phoenix/api")
    make_credential(owner, name="reg", server=registry_basic.host, username=user,
                    secret=password)
    kept = app_create(actor=owner.user, membership=owner.membership, name="kept", image=image,
                      replicas=2, command=["sleep", "600"])
    gone = app_create(actor=owner.user, membership=owner.membership, name="gone", image=image,
                      command=["sleep", "600"])
    deploy_one(owner, kept.pk)
    deploy_one(owner, gone.pk)
    first = swarm_agent("first")
    first.run_until_idle()
    service = _service(swarm_client, kept.pk)
    before = _tasks(swarm_client, service["ID"])
    assert len(before) == 2
    first.stop()

    # While no agent runs, an app is deleted: its app.delete is never seen by the new agent.
    app_delete(actor=owner.user, membership=owner.membership, app_id=gone.pk)
    fresh = swarm_agent("fresh")  # an empty data dir
    fresh.run_until_idle()
    assert [s["ID"] for s in swarm_client.api.services(
        filters={"label": f"moorage.app={kept.pk}"})] == [service["ID"]]
    assert _tasks(swarm_client, service["ID"]) == before  # adopted, not redeployed
    assert not swarm_client.api.services(filters={"label": f"moorage.app={gone.pk}"})
    assert [(s.app_id, s.running, s.desired) for s in RunningService.objects.all()] == [
        (kept.pk, 2, 2)]

    again = deploy_one(owner, kept.pk)
    fresh.run_until_idle()
    again.refresh_from_db()
    assert again.status == "running", again.error_message
    assert len(swarm_client.api.services(filters={"label": f"moorage.app={kept.pk}"})) == 1


def test_a_build_in_a_swarm_region_without_a_registry_is_refused_and_nothing_recorded(
    db: None,
) -> None:
    region = make_region("sw-bare", runtime="swarm")
    owner = member_in(region, "Bare")
    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     source="build", build=BuildInput(git_url="https://git.example.com/a.git"))
    with pytest.raises(ValidationFailed) as raised:
        deployment_create(actor=owner.user, membership=owner.membership, app_id=app.pk)
    assert raised.value.code == "region_registry_missing"
    assert "sw-bare" in raised.value.message
    assert not Deployment.objects.exists()


def test_a_region_registry_that_refuses_its_credential_is_not_saved(
    registry_basic: RegistryServer,
) -> None:
    wrong = "Wrong-Region-Pw-" + secrets.token_hex(4)
    with pytest.raises(ValidationFailed) as raised:
        make_region("sw-bad", runtime="swarm", registry=RegistryInput(
            registry_basic.host, registry_basic.admin_username, wrong))
    assert raised.value.code == "region_registry_rejected"
    assert registry_basic.host in raised.value.message and wrong not in raised.value.message
    assert not Region.objects.filter(slug="sw-bad").exists()
    with pytest.raises(ValidationFailed) as raised:
        make_region("sw-docker", runtime="docker", registry=RegistryInput(
            registry_basic.host, registry_basic.admin_username,
            registry_basic.admin_password))
    assert raised.value.code == "region_registry_requires_swarm"
    with pytest.raises(ValidationFailed) as raised:
        make_region("sw-k8s", runtime="kubernetes")
    assert raised.value.code == "region_runtime_invalid"



def test_a_build_runs_on_every_node_from_the_region_registry_and_reaches_no_user_registry(
    swarm_region: AgentView, swarm_agent: MakeAgent, swarm: Swarm,
    swarm_client: docker.DockerClient, registry_token: RegistryServer,
    registry_basic: RegistryServer, busybox_image: BusyboxImageFactory, git_server: GitServer,
    region_registry: RegistryInput,
) -> None:
    """Built on the manager with the tenant's build-pull credential (for its base image
    only), pushed to the region registry with the region's login only, pulled from there
    by every node; the tenant's registry receives no push and never the region's login."""
    owner = member_in(swarm_region, "Builder Swarm")
    slug = owner.account.slug
    base, user, password = _private_image(registry_token, busybox_image, f"{slug}/base")
    reg = make_credential(owner, name="reg-build", server=registry_token.host, username=user,
                          secret=password)
    repo = git_server.create_repo(f"{slug}/api", {
        "Dockerfile": f"FROM {base}\nRUN echo built > /built\nCMD [\"sleep\", \"600\"]\n"})
    git_server.make_public(repo.name)
    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     source="build", replicas=3,
                     build=BuildInput(git_url=repo.url, build_pull_credential_id=reg.pk))
    registry_token.issuer.clear_requests()  # type: ignore[union-attr]
    mark, tenant_mark = len(registry_basic.logs()), len(registry_token.logs())
    deployment = deploy_one(owner, app.pk)
    swarm_agent().run_until_idle()
    deployment.refresh_from_db()
    assert deployment.status == "running", (deployment.error_code, deployment.error_message)

    service = _service(swarm_client, app.pk)
    image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image.startswith(f"{region_registry.host}/moorage/{slug}/api:{deployment.pk}@sha256:")
    assert service["Spec"]["Labels"]["moorage.credential"].startswith("region-registry:")
    assert sorted(_tasks(swarm_client, service["ID"]).values()) == sorted(
        n.node_id for n in swarm.nodes)
    for node in swarm.workers:  # each worker pulled the build from the region registry
        engine = node.client()
        try:
            digests = [d for i in engine.images.list() for d in i.attrs.get("RepoDigests") or []]
        finally:
            engine.close()
        assert any(d == f"{region_registry.host}/moorage/{slug}/api@{image.split('@')[1]}"
                   for d in digests), digests
    assert _uploads(registry_basic.logs()[mark:])  # the push went to the region registry
    lines = list(deployment.logs.order_by("id").values_list("line", flat=True))
    assert any(line.startswith("Pushing the built image to the region registry") for line in
               lines), lines
    # The tenant's registry served its base image to the tenant's login, and nothing else:
    # no push scope, never the region registry's user, and no upload in its log.
    requests = registry_token.issuer.requests  # type: ignore[union-attr]
    assert requests and {r.username for r in requests} == {user}
    assert not [s for r in requests for s in r.scopes if "push" in s]
    assert _uploads(registry_token.logs()[tenant_mark:]) == []
    assert region_registry.password not in database_text()
    assert region_registry.password not in " ".join(lines)


def test_draining_a_swarm_region_removes_every_service_before_the_region_goes(
    swarm_region: AgentView, swarm_agent: MakeAgent, swarm_client: docker.DockerClient,
    registry_basic: RegistryServer, busybox_image: BusyboxImageFactory,
) -> None:
    """Issue 13, item 3, through the Runtime seam on Swarm: ``region.drain`` removes the
    services, the agent reports, and only then may the region go."""
    owner = member_in(swarm_region, "Drainer")
    image, user, password = _private_image(registry_basic, busybox_image, "drainer/api")
    credential = make_credential(owner, name="reg", server=registry_basic.host, username=user,
                                 secret=password)
    app, agent, _ = _two_replicas_running(owner, image, credential.pk, swarm_agent,
                                          swarm_client)
    service = _service(swarm_client, app.pk)
    with pytest.raises(Conflict) as refused:
        region_remove(actor=None, slug="sw-1")
    assert refused.value.detail["apps"] == ["drainer/api"]

    assert region_remove(actor=None, slug="sw-1", drain=True).draining
    agent.run_until_idle()
    assert swarm_client.api.services(filters={"label": "moorage.region=sw-1"}) == []

    def drained() -> bool:
        agent.run_until_idle()  # the agent reports once the tasks' containers are gone too
        return Region.objects.get(slug="sw-1").drained_at is not None
    wait_until(drained, timeout=60, what="the swarm agent to report the region drained")
    assert swarm_client.api.services(filters={"label": "moorage.region=sw-1"}) == []
    assert [t for t in swarm_client.api.tasks() if t["ServiceID"] == service["ID"]] == []
    assert region_remove(actor=None, slug="sw-1").removed
