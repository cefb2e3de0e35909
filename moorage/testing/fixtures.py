"""Pytest fixtures for the real components; load with
``pytest_plugins = ["moorage.testing.fixtures"]`` in the repo-root ``conftest.py``.

* ``registry_basic`` / ``registry_token`` (session): real registries, see
  :class:`moorage.testing.registry.RegistryServer`. Tests share them, so each test should use
  its own repository names and users (e.g. derived from ``request.node.name``).
* ``dockerd`` (session): a private real Docker Engine, :class:`moorage.testing.dockerd.Dockerd`.
* ``swarm`` (session): three real engines joined as one swarm, :class:`moorage.testing.swarm.Swarm`;
  ``swarm_client`` (function): a client for its manager whose teardown puts the swarm back.
* ``docker_client`` (function): a fresh client whose teardown puts the engine back (see there).
* ``busybox_image`` (function): a factory that pushes a busybox image to a registry.
* ``browser`` (session) / ``page`` (function): Playwright on Debian Chromium.
* ``moto_server`` (session) / ``aws_ecr`` (function): moto's server and boto3 pointed at it.
* ``google_token_service`` (session) / ``google_tokens`` (function): a Google OAuth fake.

A fixture whose system program is missing *fails* with the Debian package to install; it
never skips, so a CI machine without it cannot pass by testing less.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import docker
import docker.errors
import pytest
from playwright.sync_api import Browser, Page

from moorage.testing.browser import launch_chromium, start_playwright
from moorage.testing.cloud import GoogleTokenEndpoint, MotoEcr
from moorage.testing.dockerd import Dockerd
from moorage.testing.gitserver import GitServer
from moorage.testing.images import push_busybox_image
from moorage.testing.ports import ComponentStartError
from moorage.testing.programs import MissingSystemBinary
from moorage.testing.registry import RegistryServer
from moorage.testing.swarm import Swarm

#: Label that marks engine objects as test-made; the ``docker_client`` teardown removes them.
TEST_LABEL = "moorage.test"


def _start_or_fail[T](start: Callable[[], T]) -> T:
    """Run a component's start; turn a missing program or failed start into a test failure."""
    try:
        return start()
    except MissingSystemBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    except ComponentStartError as exc:
        pytest.fail(f"a real test component did not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def registry_basic() -> Iterator[RegistryServer]:
    """A real registry with htpasswd (Basic) auth and an admin user; stopped at session end."""
    server = _start_or_fail(RegistryServer("basic").start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry_token() -> Iterator[RegistryServer]:
    """A real registry with Bearer-token auth and our token issuer (``.issuer``)."""
    server = _start_or_fail(RegistryServer("token").start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private real dockerd (vfs, no bridge, host networking only); stopped at session end."""
    engine = _start_or_fail(Dockerd().start)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def swarm() -> Iterator[Swarm]:
    """Three private real dockerd engines joined as one swarm on 127.0.0.1 (one manager).

    Shared by the session; use ``swarm_client`` in a test so that what it changed is put back.
    """
    cluster = _start_or_fail(Swarm(3).start)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def swarm_client(swarm: Swarm) -> Iterator[docker.DockerClient]:
    """A client for the swarm's manager; teardown puts the swarm back.

    Teardown: every frozen engine thawed, every node active and ready again, every service
    the test made (or labelled ``moorage.test=1``) removed, and its task containers gone from
    every node, so the next test finds the ports and names free.
    """
    client = swarm.client()
    before = {s["ID"] for s in client.api.services()}
    try:
        yield client
    finally:
        try:
            swarm.restore()
            problems = _remove_services(swarm, before)
        finally:
            client.close()
        if problems:
            pytest.fail("swarm cleanup failed: " + "; ".join(problems), pytrace=False)


def _remove_services(swarm: Swarm, before: set[str], *, timeout: float = 60.0) -> list[str]:
    """Remove the services not in ``before`` (and labelled ones); wait for their containers."""
    problems: list[str] = []
    client = swarm.client()
    try:
        labelled = {s["ID"] for s in client.api.services(filters={"label": f"{TEST_LABEL}=1"})}
        removed = []
        for service in client.api.services():
            if service["ID"] not in before or service["ID"] in labelled:
                try:
                    client.api.remove_service(service["ID"])
                    removed.append(service["ID"])
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    problems.append(f"service {service['Spec']['Name']}: {exc}")
    finally:
        client.close()
    if not removed:
        return problems
    # The nodes stop and remove a removed service's tasks in their own time (seconds);
    # removing the containers directly frees their ports and names now.
    deadline = time.monotonic() + timeout
    for engine in swarm.engines:
        node = engine.client(timeout=30)
        try:
            while True:
                left = [c for c in node.api.containers(all=True)
                        if c.get("Labels", {}).get("com.docker.swarm.service.id") in removed]
                if not left:
                    break
                for container in left:
                    try:
                        node.api.remove_container(container["Id"], force=True)
                    except docker.errors.APIError:
                        pass  # already going; looked at again below
                if time.monotonic() > deadline:
                    problems.append(f"{len(left)} task container(s) left on {engine}")
                    break
                time.sleep(0.1)
        finally:
            node.close()
    return problems


class _Snapshot:
    """IDs of what existed on the engine before a test."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.containers = {c.id for c in client.containers.list(all=True)}
        self.images = {i.id for i in client.images.list(all=True)}
        self.volumes = {v.id for v in client.volumes.list()}
        self.swarm_active = _swarm_active(client)
        self.services = {s.id for s in client.services.list()} if self.swarm_active else set()


def _swarm_active(client: docker.DockerClient) -> bool:
    return client.info().get("Swarm", {}).get("LocalNodeState") == "active"


def _restore_engine(client: docker.DockerClient, before: _Snapshot) -> list[str]:
    """Remove what a test left on the engine; return the problems met (not raised midway)."""
    problems: list[str] = []

    def attempt(what: str, action: Callable[..., object], **kwargs: object) -> None:
        try:
            action(**kwargs)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            problems.append(f"{what}: {exc}")

    label = {"label": f"{TEST_LABEL}=1"}
    if _swarm_active(client):
        labelled = {s.id for s in client.services.list(filters=label)}
        for service in client.services.list():
            if service.id not in before.services or service.id in labelled:
                attempt(f"service {service.name}", service.remove)
    labelled_containers = {c.id for c in client.containers.list(all=True, filters=label)}
    for container in client.containers.list(all=True):
        if container.id not in before.containers or container.id in labelled_containers:
            attempt(f"container {container.name}", container.remove, force=True)
    if _swarm_active(client) and not before.swarm_active:
        attempt("swarm leave", client.swarm.leave, force=True)
    for volume in client.volumes.list():
        if volume.id not in before.volumes:
            attempt(f"volume {volume.id}", volume.remove, force=True)
    for image in client.images.list(all=True):
        if image.id not in before.images:
            attempt(f"image {image.id}", client.images.remove, image=image.id, force=True)
    return problems


@pytest.fixture
def docker_client(dockerd: Dockerd) -> Iterator[docker.DockerClient]:
    """A fresh docker-py client for the session's engine, which teardown puts back.

    Teardown rule: everything that exists after the test but did not before it is removed —
    containers (forced), swarm services, volumes and images (so the next test's pull really
    goes to the registry) — plus any container or service labelled ``moorage.test=1`` whenever
    it was made. A swarm the test initialised is left. Objects that existed before the test
    and are unlabelled are kept.

    The client does not read the host's docker config when made, but docker-py still loads
    it at pull time when ``auth_config`` is None (see :meth:`Dockerd.client`).
    """
    client = dockerd.client()
    before = _Snapshot(client)
    try:
        yield client
    finally:
        try:
            problems = _restore_engine(client, before)
        finally:
            client.close()
        if problems:
            pytest.fail("engine cleanup failed: " + "; ".join(problems), pytrace=False)


class BusyboxImageFactory(Protocol):
    """Signature of the ``busybox_image`` fixture."""

    def __call__(
        self,
        registry: RegistryServer,
        repository: str,
        tag: str = "latest",
        *,
        username: str | None = None,
        password: str | None = None,
        marker: str | None = None,
    ) -> str:
        """Push a busybox image; return ``127.0.0.1:PORT/REPOSITORY:TAG``."""
        ...


@pytest.fixture
def busybox_image(dockerd: Dockerd) -> BusyboxImageFactory:
    """Factory pushing a busybox image to a test registry (as its admin unless told).

    ``busybox_image(registry, repository, tag="latest", *, username=None, password=None,
    marker=None) -> "127.0.0.1:PORT/repository:tag"``. The image is built locally, pushed,
    and its local tag removed, so using it means pulling it from the registry.
    """

    def factory(
        registry: RegistryServer,
        repository: str,
        tag: str = "latest",
        *,
        username: str | None = None,
        password: str | None = None,
        marker: str | None = None,
    ) -> str:
        client = dockerd.client()
        try:
            try:
                return push_busybox_image(
                    client,
                    registry,
                    repository,
                    tag,
                    username=username,
                    password=password,
                    marker=marker,
                )
            except MissingSystemBinary as exc:
                pytest.fail(str(exc), pytrace=False)
        finally:
            client.close()

    return factory


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Debian Chromium through Playwright's sync API, for one test module.

    Module-scoped, not session-scoped: while Playwright's sync API is started, the main thread
    has an asyncio loop registered as *running*, and every later test in that thread that
    runs async code (``asyncio.run``, an async view through the test client) would fail with
    "cannot be called from a running event loop". Starting Chromium costs about a second per
    browser module; stopping Playwright after each one keeps the rest of the suite clean.

    Sets ``DJANGO_ALLOW_ASYNC_UNSAFE=true`` (restored at the end). Why: Playwright's sync
    API keeps an asyncio event loop registered as *running* in the calling (main) thread while
    it is started, and Django's ``async_unsafe`` guard sees that loop and raises
    ``SynchronousOnlyOperation`` for every ORM call made in the same thread — i.e. in any
    test that uses both ``page`` and the database. No ORM call actually runs inside the loop,
    so the guard's premise does not hold here and disabling it is safe for tests.
    """
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = start_playwright()
    try:
        chromium = _start_or_fail(lambda: launch_chromium(playwright))
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (own cookies and storage), closed afterwards."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="session")
def git_server() -> Iterator[GitServer]:
    """A real git smart-HTTP server (``git http-backend``) with Basic auth, for the session.

    See :class:`moorage.testing.gitserver.GitServer`: tests add their own users and
    repositories (``create_repo``) and can read the requests it received (``requests``).
    """
    server = _start_or_fail(GitServer().start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoEcr]:
    """moto's real server (AWS ECR's ``GetAuthorizationToken`` among others), for the session."""
    server = MotoEcr().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_ecr(moto_server: MotoEcr, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoEcr]:
    """boto3 pointed at the moto server (``AWS_ENDPOINT_URL``), with no AWS login of this
    machine in reach; the server is running again after a test that stopped it."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    try:
        yield moto_server
    finally:
        if moto_server.stopped:
            moto_server.start()


@pytest.fixture(scope="session")
def google_token_service() -> Iterator[GoogleTokenEndpoint]:
    """The fake Google OAuth token endpoint of test service-account keys, for the session."""
    endpoint = GoogleTokenEndpoint().start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


@pytest.fixture
def google_tokens(google_token_service: GoogleTokenEndpoint) -> Iterator[GoogleTokenEndpoint]:
    """The Google fake answering normally (``mode`` and ``expires_in`` reset afterwards, and
    serving again after a test that stopped it)."""
    google_token_service.mode, google_token_service.expires_in = "ok", 3600
    try:
        yield google_token_service
    finally:
        google_token_service.mode, google_token_service.expires_in = "ok", 3600
        if google_token_service.stopped:
            google_token_service.start()
