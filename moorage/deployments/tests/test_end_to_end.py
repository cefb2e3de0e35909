"""Image deploys end to end: the control plane (live server), a real agent in this process,
a real dockerd and real registries. Invariants I4, I5, I6, I8."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from moorage.apps.services import app_create, app_delete
from moorage.credentials import services as credential_services
from moorage.deployments.tests.conftest import RunAgent
from moorage.regions.models import RunningService
from moorage.testing.agents import InProcessAgent
from moorage.testing.credentials import make_credential
from moorage.testing.dockerd import Dockerd
from moorage.testing.ports import free_port
from moorage.testing.regions import AgentView, deploy_one, member_in
from moorage.testing.registry import RegistryServer

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]





def _private_image(registry: RegistryServer, busybox_image: Callable[..., str],
                   repository: str) -> tuple[str, str, str]:
    user, password = "u" + secrets.token_hex(4), "Deploy-Pw-" + secrets.token_hex(6)
    registry.add_user(user, password)
    image = busybox_image(registry, repository, "1.0", marker=repository)
    registry.grant(user, repository)
    return image, user, password




def _serve(port: int) -> list[str]:
    return ["/bin/sh", "-c", f"exec httpd -f -p {port}"]


def test_an_image_app_deploys_with_its_credential_and_records_it(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], docker_client: docker.DockerClient,
) -> None:
    owner = member_in(region, "Acme")
    image, user, password = _private_image(registry_basic, busybox_image, "acme/api")
    make_credential(owner, name="reg-prod", server=registry_basic.host, username=user,
                    secret=password)
    port = free_port()
    app = app_create(actor=owner.user, membership=owner.membership, name="api", image=image,
                     port=port, command=_serve(port))
    deployment = deploy_one(owner, app.pk)
    run_agent()
    deployment.refresh_from_db()
    assert deployment.status == "running", (deployment.error_code, deployment.error_message)
    assert deployment.image_digest.startswith("sha256:")
    assert (deployment.credential_name, deployment.used_revision) == ("reg-prod", 1)
    lines = list(deployment.logs.values_list("line", flat=True))
    assert any("with 'reg-prod' (revision 1)" in line for line in lines), lines
    [container] = docker_client.containers.list(filters={"label": f"moorage.app={app.pk}"})
    assert container.labels["moorage.deployment"] == str(deployment.pk)
    assert container.labels["moorage.account"] == str(owner.account.pk)
    inspected = json.dumps(container.attrs)
    assert password not in inspected  # not in the env, the args, anywhere


def test_a_cached_image_does_not_start_for_an_account_without_access(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], docker_client: docker.DockerClient,
) -> None:
    """I8: account B cannot run what account A's deploy left in the engine's cache."""
    alice, bob = member_in(region, "Alice Co"), member_in(region, "Bob Co")
    image, user, password = _private_image(registry_basic, busybox_image, "alice/secret-app")
    make_credential(alice, name="alice-reg", server=registry_basic.host, username=user,
                    secret=password)
    port = free_port()
    theirs = app_create(actor=alice.user, membership=alice.membership, name="app", image=image,
                        port=port, command=_serve(port))
    first = deploy_one(alice, theirs.pk)
    run_agent()
    first.refresh_from_db()
    assert first.status == "running", first.error_message
    assert docker_client.images.get(image)  # cached in the shared engine now

    mine = app_create(actor=bob.user, membership=bob.membership, name="copycat", image=image,
                      runtime_pull="none", command=["/bin/sh", "-c", "sleep 60"])
    attempt = deploy_one(bob, mine.pk)
    run_agent()
    attempt.refresh_from_db()
    assert attempt.status == "failed"
    assert attempt.error_code == "registry_unauthorized", attempt.error_message
    assert not docker_client.containers.list(all=True,
                                             filters={"label": f"moorage.app={mine.pk}"})


def test_a_rotation_reaches_the_nextdeploy_one(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: Callable[..., str],
) -> None:
    """I6: change the password on the registry and in Moorage; the next deploy uses it."""
    owner = member_in(region, "Rotator")
    image, user, password = _private_image(registry_basic, busybox_image, "rot/api")
    credential = make_credential(owner, name="reg", server=registry_basic.host, username=user,
                                 secret=password)
    app = app_create(actor=owner.user, membership=owner.membership, name="api", image=image,
                     command=["/bin/sh", "-c", "sleep 300"])
    before = deploy_one(owner, app.pk)
    run_agent()
    before.refresh_from_db()
    assert (before.status, before.used_revision) == ("running", 1), before.error_message

    rotated = "Rotated-" + secrets.token_hex(6)
    registry_basic.set_password(user, rotated)  # the old password stops working now
    credential_services.credential_update(actor=owner.user, membership=owner.membership,
                                          credential_id=credential.pk, secret=rotated)
    after = deploy_one(owner, app.pk)
    assert after.credential_revision == 2
    run_agent()
    after.refresh_from_db()
    assert (after.status, after.used_revision) == ("running", 2), after.error_message


def test_a_rejected_credential_fails_in_the_users_words_and_the_old_version_keeps_serving(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], docker_client: docker.DockerClient,
) -> None:
    owner = member_in(region, "Steady")
    image, user, password = _private_image(registry_basic, busybox_image, "steady/api")
    credential = make_credential(owner, name="reg", server=registry_basic.host, username=user,
                                 secret=password)
    port = free_port()
    app = app_create(actor=owner.user, membership=owner.membership, name="api", image=image,
                     port=port, command=_serve(port))
    good = deploy_one(owner, app.pk)
    run_agent()
    good.refresh_from_db()
    assert good.status == "running", good.error_message

    credential_services.credential_update(actor=owner.user, membership=owner.membership,
                                          credential_id=credential.pk, secret="wrong-one")
    bad = deploy_one(owner, app.pk)
    run_agent()
    bad.refresh_from_db()
    assert bad.status == "failed" and bad.error_code == "registry_unauthorized"
    assert "reg" in bad.error_message and registry_basic.host in bad.error_message
    assert "wrong-one" not in bad.error_message
    [serving] = docker_client.containers.list(filters={"label": f"moorage.app={app.pk}"})
    assert serving.labels["moorage.deployment"] == str(good.pk)


def test_a_public_image_elsewhere_deploys_without_sending_the_default(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    registry_token: RegistryServer, busybox_image: Callable[..., str],
    docker_client: docker.DockerClient,
) -> None:
    """"Use account default" with a default for registry 1 and a public image on registry 2:
    the pull is anonymous (docker's and kubelet's rule), and registry 2's token issuer never
    receives registry 1's login (I4)."""
    owner = member_in(region, "Public Co")
    user, password = "u" + secrets.token_hex(4), "Default-Pw-" + secrets.token_hex(6)
    registry_basic.add_user(user, password)
    registry_token.add_user(user, password)  # the same login would even work there
    make_credential(owner, name="first-reg", server=registry_basic.host, username=user,
                    secret=password)  # the account default
    repository = "public/web-" + secrets.token_hex(3)
    image = busybox_image(registry_token, repository, "1.0")
    registry_token.make_public(repository)
    assert registry_token.issuer is not None
    registry_token.issuer.clear_requests()
    port = free_port()
    app = app_create(actor=owner.user, membership=owner.membership, name="web", image=image,
                     port=port, command=_serve(port))
    deployment = deploy_one(owner, app.pk)
    run_agent()
    deployment.refresh_from_db()
    assert deployment.status == "running", (deployment.error_code, deployment.error_message)
    assert deployment.pull_summary == f"anonymous (the default is for {registry_basic.host})"
    assert (deployment.credential_id, deployment.used_revision) == (None, None)
    lines = list(deployment.logs.values_list("line", flat=True))
    assert (f"Pulling {image} anonymously from {registry_token.host} (the account default is "
            f"for {registry_basic.host})") in lines, lines
    asked = [r for r in registry_token.issuer.requests
             if any(repository in scope for scope in r.scopes)]
    assert asked, "the engine never asked the token issuer"
    assert [(r.username, r.authenticated) for r in asked] == [(None, False)] * len(asked)
    assert password not in repr(registry_token.issuer.requests)
    assert docker_client.containers.list(filters={"label": f"moorage.app={app.pk}"})


def test_a_refused_anonymous_pull_names_the_defaults_registry(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    registry_token: RegistryServer, busybox_image: Callable[..., str],
) -> None:
    owner = member_in(region, "Private Co")
    user, password = "u" + secrets.token_hex(4), "Default-Pw-" + secrets.token_hex(6)
    registry_basic.add_user(user, password)
    make_credential(owner, name="first-reg", server=registry_basic.host, username=user,
                    secret=password)
    image = busybox_image(registry_token, "private/api-" + secrets.token_hex(3), "1.0")
    app = app_create(actor=owner.user, membership=owner.membership, name="api", image=image,
                     command=["/bin/sh", "-c", "sleep 60"])
    deployment = deploy_one(owner, app.pk)
    run_agent()
    deployment.refresh_from_db()
    assert deployment.status == "failed"
    assert deployment.error_code in ("registry_unauthorized", "registry_forbidden"), \
        deployment.error_message
    assert (f"The app uses the account default, which is for {registry_basic.host}, so the "
            f"pull from {registry_token.host} was anonymous: choose a credential for "
            f"{registry_token.host} for this app.") in deployment.error_message
    assert password not in deployment.error_message


def test_an_agent_restarted_with_an_empty_data_dir_adopts_containers_and_removes_orphans(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], docker_client: docker.DockerClient, dockerd: Dockerd,
    live_server: Any, tmp_path: Path,
) -> None:
    """The docker runtime, too, reconciles from the engine's labels: nothing runs twice, and
    an app deleted while the agent was away (its app.delete never seen) does not linger."""
    owner = member_in(region, "Phoenix Docker")
    image, user, password = _private_image(registry_basic, busybox_image, "phoenix-dk/api")
    make_credential(owner, name="reg", server=registry_basic.host, username=user,
                    secret=password)
    kept = app_create(actor=owner.user, membership=owner.membership, name="kept", image=image,
                      command=["/bin/sh", "-c", "sleep 300"])
    gone = app_create(actor=owner.user, membership=owner.membership, name="gone", image=image,
                      command=["/bin/sh", "-c", "sleep 300"])
    deploy_one(owner, kept.pk)
    deploy_one(owner, gone.pk)
    run_agent()
    [container] = docker_client.containers.list(filters={"label": f"moorage.app={kept.pk}"})
    assert docker_client.containers.list(filters={"label": f"moorage.app={gone.pk}"})

    app_delete(actor=owner.user, membership=owner.membership, app_id=gone.pk)
    fresh = InProcessAgent(region, url=str(live_server.url), docker_host=dockerd.base_url,
                           data_dir=tmp_path / "fresh")
    try:
        fresh.run_until_idle()
    finally:
        fresh.stop()
    assert [c.id for c in docker_client.containers.list(
        all=True, filters={"label": f"moorage.app={kept.pk}"})] == [container.id]
    assert not docker_client.containers.list(all=True,
                                             filters={"label": f"moorage.app={gone.pk}"})
    [running] = RunningService.objects.filter(region__slug=region.slug)
    assert (running.app_id, running.running, running.desired, running.credential_id) == (
        kept.pk, 1, 1, None)  # a container keeps no registry login
