"""Builds from source end to end: the control plane (live server) and its services, a real
agent in this process, a real dockerd, real registries and a real git server
(``git http-backend``). Invariants I3 (the git token), I5 (a build never falls back to the
account default) and I8 (a cached base image is not an authorization)."""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from moorage.apps.services import BuildInput, app_create, app_update
from moorage.deployments.models import DeploymentLog
from moorage.deployments.tests.conftest import RunAgent
from moorage.testing.credentials import make_credential
from moorage.testing.dockerd import Dockerd
from moorage.testing.fixtures import BusyboxImageFactory
from moorage.testing.gitserver import GitRepo, GitServer
from moorage.testing.ports import free_port
from moorage.testing.regions import AgentView, deploy_one, member_in
from moorage.testing.registry import RegistryServer
from moorage.testing.secrets_search import database_text

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


#: A registry upload: ``POST …/blobs/uploads/``, ``PATCH``/``PUT`` of an upload, ``PUT`` of a
#: manifest. The registry logs every request with its method and URI.
_UPLOAD = re.compile(r'http\.request\.method="?(PUT|POST|PATCH)"?|"(PUT|POST|PATCH) /v2/')


@pytest.fixture
def engine(dockerd: Dockerd, docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    """``docker_client``, with build images and app containers removed before its teardown.

    Containers first, then the built images by tag from the top, so that their intermediate
    layers go with them (``docker_client`` would try a parent before its child and fail).
    """
    yield docker_client
    for container in docker_client.containers.list(all=True, filters={"label": "moorage.app"}):
        container.remove(force=True)
    for image in docker_client.images.list():
        for tag in image.tags:
            if tag.startswith("moorage/"):
                docker_client.images.remove(tag, force=True)






def _private_base(registry: RegistryServer, busybox_image: BusyboxImageFactory,
                  repository: str) -> tuple[str, str, str]:
    """A busybox base image only ``user`` (and the registry's admin) may pull."""
    user, password = "u" + secrets.token_hex(4), "Base-Pw-" + secrets.token_hex(6)
    registry.add_user(user, password)
    image = busybox_image(registry, repository, "1.0", marker=repository)
    registry.grant(user, repository)
    return image, user, password


def _app_repo(git_server: GitServer, name: str, base: str, port: int) -> GitRepo:
    """A repository whose Dockerfile builds FROM ``base`` and serves httpd on ``port``."""
    dockerfile = (f"FROM {base}\n"
                  'RUN mkdir -p /www && echo "built from source" > /www/index.html\n'
                  f'CMD ["httpd", "-f", "-p", "{port}", "-h", "/www"]\n')
    return git_server.create_repo(name, {"Dockerfile": dockerfile, "README": "hello\n"})


def _uploads(log: str) -> list[str]:
    return [line for line in log.splitlines() if _UPLOAD.search(line)]


def _get(port: int) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as answer:
        return bytes(answer.read())


def test_a_build_app_builds_with_its_credentials_runs_and_never_pushes_or_leaks(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory, git_server: GitServer, engine: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    owner = member_in(region, "Acme Build")
    slug = owner.account.slug
    base, user, password = _private_base(registry_basic, busybox_image, f"{slug}/base")
    reg = make_credential(owner, name="reg-build", server=registry_basic.host, username=user,
                          secret=password)
    assert reg.is_default  # the account's first registry credential: the default
    git_user = "git-" + secrets.token_hex(3)
    token = git_server.add_user(git_user)
    git = make_credential(owner, type="git", name="git-acme", server=git_server.host,
                          username=git_user, secret=token)
    port = free_port()
    repo = _app_repo(git_server, f"{slug}/api", base, port)
    build = BuildInput(git_url=repo.url, git_ref="main", git_credential_id=git.pk,
                       build_pull_credential_id=reg.pk)
    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     source="build", port=port, build=build)
    assert _uploads(registry_basic.logs())  # the base image's push: the pattern finds it
    mark = len(registry_basic.logs())
    git_server.clear_requests()

    deployment = deploy_one(owner, app.pk)
    assert deployment.build is not None and deployment.image == ""
    run_agent()
    deployment.refresh_from_db()
    assert deployment.status == "running", (deployment.error_code, deployment.error_message)
    # The control plane recorded the build-pull credential, its revision and the image.
    assert (deployment.credential_name, deployment.used_revision) == ("reg-build", 1)
    image = engine.images.get(f"moorage/{slug}/api:{deployment.pk}")
    assert deployment.image_digest == image.id
    [container] = engine.containers.list(filters={"label": f"moorage.app={app.pk}"})
    assert container.id == deployment.container_id and container.image.id == image.id
    assert _get(port) == b"built from source\n"
    lines = list(deployment.logs.order_by("id").values_list("line", flat=True))
    assert f"Fetching {repo.url} at main with a git credential" in lines, lines
    assert f"Fetched commit {repo.commit[:12]}" in lines
    assert f"Base image {base}: pulled with 'reg-build' (revision 1) ({registry_basic.host})" \
        in lines
    # The git server saw the token (only) from the agent's clone; the registry took no upload.
    assert git_server.requests and all(r.username == git_user for r in git_server.requests)
    since = registry_basic.logs()[mark:]
    assert f"/v2/{slug}/base/manifests/1.0" in since  # the build's pull reached it...
    assert _uploads(since) == []  # ...and nothing was pushed

    # The same app, "Container registry for build pull" emptied: the account default is for
    # that very registry, and the build still pulls anonymously (I5), so the registry refuses.
    app_update(actor=owner.user, membership=owner.membership, app_id=app.pk,
               build=BuildInput(git_url=repo.url, git_ref="main", git_credential_id=git.pk,
                                build_pull_credential_id=None))
    anonymous = deploy_one(owner, app.pk)
    assert anonymous.credential_name == "" and anonymous.credential_id is None
    run_agent()
    anonymous.refresh_from_db()
    assert anonymous.status == "failed"
    assert anonymous.error_code in ("registry_unauthorized", "registry_forbidden"), \
        anonymous.error_message
    assert anonymous.error_message.startswith(f"Base image {base}: ")
    assert "Builds never use the account default" in anonymous.error_message
    assert anonymous.used_revision is None
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(f"moorage/{slug}/api:{anonymous.pk}")
    # The first deployment keeps serving.
    [serving] = engine.containers.list(filters={"label": f"moorage.app={app.pk}"})
    assert serving.id == deployment.container_id
    assert _uploads(registry_basic.logs()[mark:]) == []

    # I3: the git token (raw, or inside the Basic header git sent) is nowhere at rest.
    basic = base64.b64encode(f"{git_user}:{token}".encode()).decode()
    all_logs = "\n".join(DeploymentLog.objects.filter(deployment__app=app).values_list(
        "line", flat=True))
    stored = database_text()
    for text in (stored, all_logs, caplog.text, anonymous.error_message):
        assert token not in text and basic not in text and password not in text
    assert repo.url in stored  # the search does read what the control plane stored


def test_a_cached_private_base_does_not_build_for_an_account_without_access(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory, git_server: GitServer, engine: docker.DockerClient,
) -> None:
    """I8: account B's build cannot use the base image account A's build left in the cache."""
    alice, bob = member_in(region, "Alice Build"), member_in(region, "Bob Build")
    base, user, password = _private_base(registry_basic, busybox_image,
                                         f"{alice.account.slug}/base")
    reg = make_credential(alice, name="alice-reg", server=registry_basic.host, username=user,
                          secret=password)
    port = free_port()
    repo = _app_repo(git_server, f"{alice.account.slug}/app", base, port)
    git_server.make_public(repo.name)  # the source is public; the base image is not
    theirs = app_create(actor=alice.user, membership=alice.membership, name="app",
                        source="build", port=port,
                        build=BuildInput(git_url=repo.url, build_pull_credential_id=reg.pk))
    first = deploy_one(alice, theirs.pk)
    run_agent()
    first.refresh_from_db()
    assert first.status == "running", first.error_message
    assert engine.images.get(base)  # cached on the shared engine now

    mine = app_create(actor=bob.user, membership=bob.membership, name="copycat",
                      source="build", port=free_port(), build=BuildInput(git_url=repo.url))
    attempt = deploy_one(bob, mine.pk)
    run_agent()
    attempt.refresh_from_db()
    assert attempt.status == "failed"
    assert attempt.error_code in ("registry_unauthorized", "registry_forbidden"), \
        attempt.error_message
    assert attempt.error_message.startswith(f"Base image {base}: ")
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(f"moorage/{bob.account.slug}/copycat:{attempt.pk}")
    assert not engine.containers.list(all=True, filters={"label": f"moorage.app={mine.pk}"})
