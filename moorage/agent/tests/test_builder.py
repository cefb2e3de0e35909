"""Builds from source on the agent side: the FAKE control plane (``fakes.py``) sends build
deployments, the real sync loop and deployer run them against a REAL git server
(``git http-backend``), REAL registries (Basic and Bearer token) and a REAL dockerd.

The ``docker_client`` fixture removes every container and image a test made (built images,
pulled base images and intermediate layers included).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import secrets
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from moorage.agent.backoff import Backoff
from moorage.agent.builder import ArchiveSource, BuildSpec, context_tar, fetch_source
from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.deployer import Deployer
from moorage.agent.errors import DeployError
from moorage.agent.replica import Replica
from moorage.agent.runtime import DockerRuntime
from moorage.agent.sync import SyncLoop
from moorage.agent.tests.conftest import Sleeps
from moorage.agent.tests.fakes import FakeControlPlane, FakeCredential, FakeDeployment, always
from moorage.registry import RegistryLogin
from moorage.testing.dockerd import Dockerd
from moorage.testing.fixtures import BusyboxImageFactory
from moorage.testing.gitserver import GitServer
from moorage.testing.registry import RegistryServer, TokenIssuer

PASSWORD = "pw-Build-Kq93x"
OTHER_PASSWORD = "pw-Other-Zr44m"

Run = Callable[[], SyncLoop]


@pytest.fixture
def runtime(dockerd: Dockerd, docker_client: docker.DockerClient) -> Iterator[DockerRuntime]:
    yield DockerRuntime(dockerd.base_url, pull_timeout=60, ready_timeout=15, stop_timeout=1)
    # Before docker_client's teardown: containers first, then the built images from the top,
    # so that their intermediate layers go with them (removing a parent first is refused).
    for container in docker_client.containers.list(all=True, filters={"label": "moorage.app"}):
        container.remove(force=True)
    for image in docker_client.images.list():
        for tag in image.tags:
            if tag.startswith("moorage/"):
                docker_client.images.remove(tag, force=True)


def issuer(registry: RegistryServer) -> TokenIssuer:
    assert registry.issuer is not None
    return registry.issuer


class Clones(list[str]):
    """The ``.git/config`` of every clone, read before the agent removes it ("" for an
    uploaded source, which has none)."""

    def __call__(self, clone: Path) -> None:
        config = clone / ".git" / "config"
        self.append(config.read_text() if config.exists() else "")


@pytest.fixture
def clones() -> Clones:
    return Clones()


@pytest.fixture
def make_agent(
    config: AgentConfig, client: ControlPlaneClient, replica: Replica, runtime: DockerRuntime,
    sleeps: Sleeps, clones: Clones, tmp_path: Path,
) -> Run:
    (tmp_path / "builds").mkdir()

    def make() -> SyncLoop:
        logger = logging.getLogger("moorage.agent")
        deployer = Deployer(replica, client, runtime, logger, backoff=Backoff(rand=always(0.5)),
                            build_dir=tmp_path / "builds", inspect_clone=clones)
        return SyncLoop(config, client, replica, logger, threading.Event(), sleep=sleeps,
                        backoff=Backoff(rand=always(0.5)), deployer=deployer)

    return make


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def build(url: str, ref: str, *, git: int | None = None, pull: int | None = None,
          **fields: Any) -> dict[str, Any]:
    return {"git": {"url": url, "ref": ref, "credential_id": git,
                    "credential_revision": 1 if git else None},
            "dockerfile": "Dockerfile", "context": ".", "build_args": {},
            "pull": None if pull is None else {"credential_id": pull, "credential_name":
                                               f"cred-{pull}", "credential_revision": 1}
            } | fields


def reports_of(fake: FakeControlPlane, deployment_id: int) -> list[dict[str, Any]]:
    return [body for i, body in fake.reports if i == deployment_id]


def log_of(fake: FakeControlPlane, deployment_id: int) -> list[str]:
    return [line for body in reports_of(fake, deployment_id) for line in body.get("log", [])]


def final(fake: FakeControlPlane, deployment_id: int) -> dict[str, Any]:
    return reports_of(fake, deployment_id)[-1]


APP_DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE=nothing
FROM ${{BASE}} AS base
FROM {stage}
RUN echo "built from source" > /built.txt
CMD ["sh", "-c", "cat /built.txt; sleep 3600"]
"""


def test_a_private_base_image_and_a_private_repository_build_and_run_and_no_token_leaks(
    fake: FakeControlPlane, make_agent: Run, registry_basic: RegistryServer,
    git_server: GitServer, busybox_image: BusyboxImageFactory, docker_client: docker.DockerClient,
    clones: Clones, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    user = unique("bld-ok")
    base = busybox_image(registry_basic, f"{user}/base", "1.0")
    registry_basic.add_user(user, PASSWORD)
    token = git_server.add_user(user)
    repo = git_server.create_repo(f"{user}/app", {
        "Dockerfile": APP_DOCKERFILE.format(stage="base"), "README": "hello"})
    # A PATH shim records every git command line the agent runs.
    argv_log = tmp_path / "git-argv.log"
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "git").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\n'
                              'exec /usr/bin/git "$@"\n')
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")

    fake.add_account(1, "acme")
    fake.put_credential(FakeCredential(17, 1, user, PASSWORD, name="reg-build",
                                       server=registry_basic.host))
    fake.put_credential(FakeCredential(21, 1, user, token, name="git-acme", type="git",
                                       server=git_server.host))
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, None, build=build(
        repo.url, "main", git=21, pull=17, build_args={"BASE": base})))
    git_server.clear_requests()
    make_agent().run_once()

    statuses = [body["status"] for body in reports_of(fake, 41)]
    assert statuses[0] == "building" and statuses[-2:] == ["starting", "running"], statuses
    assert set(statuses[:-2]) == {"building"}
    log = log_of(fake, 41)
    assert f"Fetching {repo.url} at main with a git credential" in log
    assert f"Fetched commit {repo.commit[:12]}" in log
    assert f"Base image {base}: pulled with 'reg-build' (revision 1) ({registry_basic.host})" \
        in log
    assert "Stage 1: FROM stage 'base' (nothing to pull)" in log
    # Step 4 of the 5 written: the agent adds no steps (no LABEL per label).
    assert 'Step 4/5 : RUN echo "built from source" > /built.txt' in log
    assert "Successfully tagged moorage/acme/api:41" in log
    running = final(fake, 41)
    image = docker_client.images.get("moorage/acme/api:41")
    assert running["image_digest"] == image.id
    assert (running["credential_id"], running["credential_revision"]) == (17, 1)
    container = docker_client.containers.get(running["container_id"])
    assert container.image.id == image.id
    assert container.exec_run(["cat", "/built.txt"]).output == b"built from source\n"
    assert not any(key.startswith("moorage.") for key in image.labels or {})
    assert container.labels["moorage.app"] == "3"  # the container carries them
    assert container.labels["moorage.deployment"] == "41"

    # The git token: only in the Authorization header of the requests git made...
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    assert git_server.requests and all(r.username == user for r in git_server.requests)
    for request in git_server.requests:
        assert token not in request.request_line and basic not in request.request_line
        for name, value in request.headers:
            if name.lower() != "authorization":
                assert token not in value and basic not in value, name
    # ...and nowhere else: git's argv, the clone's .git/config, reports, agent logs.
    argv = argv_log.read_text()
    assert "clone --quiet --depth 1 --branch main" in argv
    assert token not in argv and basic not in argv and "extraHeader" not in argv
    assert len(clones) == 1 and token not in clones[0] and basic not in clones[0]
    assert "extraheader" not in clones[0].lower()
    for text in (json.dumps(fake.reports), caplog.text):
        assert token not in text and basic not in text and PASSWORD not in text
    assert list((tmp_path / "builds").iterdir()) == []  # the clone is gone


def test_a_multi_stage_build_sends_the_credential_only_to_its_own_registry(
    fake: FakeControlPlane, make_agent: Run, registry_basic: RegistryServer,
    registry_token: RegistryServer, git_server: GitServer, busybox_image: BusyboxImageFactory,
    docker_client: docker.DockerClient,
) -> None:
    user = unique("bld-ms")
    private = busybox_image(registry_basic, f"{user}/private", "1.0")
    public = busybox_image(registry_token, f"{user}/public", "2.0", marker="public")
    issuer(registry_token).make_public(f"{user}/public")
    registry_basic.add_user(user, PASSWORD)
    # The same user name exists on the token registry: if the credential were sent there,
    # the issuer would record it.
    registry_token.add_user(user, PASSWORD)
    dockerfile = (f"ARG PUBLIC={public}\nFROM --platform=linux/amd64 $PUBLIC AS tools\n"
                  "RUN echo tools > /tools.txt\n"
                  f"FROM \\\n  {private}\nCOPY --from=tools /tools.txt /tools.txt\n"
                  'CMD ["sleep", "3600"]\n')
    git_server.create_repo(f"{user}/app", {"Dockerfile": dockerfile})
    first = git_server.tip(f"{user}/app")
    git_server.add_commit(f"{user}/app", {"Dockerfile": "FROM nothing-here\n"})
    git_server.make_public(f"{user}/app")
    fake.add_account(1, "acme")
    fake.put_credential(FakeCredential(17, 1, user, PASSWORD, name="reg-build",
                                       server=registry_basic.host))
    # An older commit by sha: the shallow clone of a branch fails, a full clone checks it out.
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, None, build=build(
        f"{git_server.url}/{user}/app.git", first, pull=17)))
    issuer(registry_token).clear_requests()
    token_log = len(registry_token.logs())
    make_agent().run_once()

    assert final(fake, 41)["status"] == "running", final(fake, 41)
    log = log_of(fake, 41)
    assert f"Fetching {git_server.url}/{user}/app.git at {first} anonymously" in log
    assert f"Fetched commit {first[:12]}" in log
    assert f"Base image {public}: pulled anonymously ({registry_token.host})" in log
    assert f"Base image {private}: pulled with 'reg-build' (revision 1) " \
           f"({registry_basic.host})" in log
    container = docker_client.containers.get(final(fake, 41)["container_id"])
    assert container.exec_run(["cat", "/tools.txt"]).output == b"tools\n"
    # The token registry saw only anonymous requests, and never the user name.
    requests = issuer(registry_token).requests
    assert requests and all(r.username is None for r in requests)
    assert user not in registry_token.logs()[token_log:].replace(f"{user}/public", "")


def test_without_a_build_credential_neither_the_default_nor_the_hosts_login_is_used(
    fake: FakeControlPlane, make_agent: Run, registry_basic: RegistryServer,
    git_server: GitServer, busybox_image: BusyboxImageFactory, runtime: DockerRuntime,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = unique("bld-none")
    base = busybox_image(registry_basic, f"{user}/base", "1.0")
    registry_basic.add_user(user, PASSWORD)
    # Trap 1: the machine's docker login holds the registry's admin.
    admin = f"{registry_basic.admin_username}:{registry_basic.admin_password}"
    docker_config = {"auths": {registry_basic.host: {
        "auth": base64.b64encode(admin.encode()).decode()}}}
    for place in (tmp_path / "home" / ".docker", tmp_path / "dockerconfig"):
        place.mkdir(parents=True)
        (place / "config.json").write_text(json.dumps(docker_config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockerconfig"))
    # Trap 2: the account's default credential is for that registry.
    fake.add_account(1, "acme")
    fake.put_credential(FakeCredential(17, 1, user, PASSWORD, name="reg-default",
                                       server=registry_basic.host, is_default=True))
    repo = git_server.create_repo(f"{user}/app", {"Dockerfile": f"FROM {base}\n"})
    git_server.make_public(f"{user}/app")
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, None, build=build(repo.url, "v1")))
    make_agent().run_once()

    failed = final(fake, 41)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "registry_unauthorized"
    assert failed["error"]["message"].startswith(
        f"Base image {base}: The registry {registry_basic.host} requires a login to pull "
        f"{base}, and the build pulls it anonymously. Builds never use the account default: "
        f"choose a 'Container registry for build pull' credential for {registry_basic.host}. "
        "The registry said: ")
    assert f"Base image {base}: pulled anonymously ({registry_basic.host})" \
        in log_of(fake, 41)

    # The engine's own pull during the build (pull=1) does not get the host login either:
    # X-Registry-Config is empty, not docker-py's reload of the machine's config.
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\n")
    with pytest.raises(DeployError) as raised:
        runtime.build(context_tar(context, "Dockerfile"), dockerfile="Dockerfile",
                      tag=f"moorage/test/{user}:1")
    assert raised.value.code == "build_failed"
    assert "Step 1/1 : FROM" in raised.value.message
    assert "no basic auth credentials" in raised.value.message \
        or "unauthorized" in raised.value.message


def test_a_cached_base_image_is_not_an_authorization_for_another_account(
    fake: FakeControlPlane, make_agent: Run, registry_token: RegistryServer,
    git_server: GitServer, busybox_image: BusyboxImageFactory, docker_client: docker.DockerClient,
) -> None:
    user = unique("bld-cache")
    base = busybox_image(registry_token, f"{user}/base", "1.0")
    registry_token.add_user(user, PASSWORD)
    registry_token.grant(user, f"{user}/base")
    repo = git_server.create_repo(f"{user}/app", {"Dockerfile": f"FROM {base}\n"
                                                                'CMD ["sleep", "3600"]\n'})
    git_server.make_public(f"{user}/app")
    fake.add_account(1, "acme")
    fake.add_account(2, "globex")
    fake.put_credential(FakeCredential(17, 1, user, PASSWORD, name="reg-a",
                                       server=registry_token.host))
    other = unique("bld-other")
    registry_token.add_user(other, OTHER_PASSWORD)  # a valid login without access
    fake.put_credential(FakeCredential(18, 2, other, OTHER_PASSWORD, name="reg-b",
                                       server=registry_token.host, is_default=True))
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, None,
                                       build=build(repo.url, "main", pull=17)))
    agent = make_agent()
    agent.run_once()
    assert final(fake, 41)["status"] == "running"
    assert docker_client.images.get(base)  # cached on the engine now

    fake.put_deployment(FakeDeployment(51, 2, 5, "web", 1, None,
                                       build=build(repo.url, "main")))
    agent.run_once()
    failed = final(fake, 51)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] in ("registry_unauthorized", "registry_forbidden")
    assert failed["error"]["message"].startswith(f"Base image {base}: ")
    # With B's own credential, which has no access to the repository: refused as well.
    fake.put_deployment(FakeDeployment(52, 2, 5, "web", 2, None,
                                       build=build(repo.url, "main", pull=18)))
    agent.run_once()
    assert final(fake, 52)["error"]["code"] == "registry_forbidden"
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get("moorage/globex/web:52")


def test_a_failing_step_is_build_failed_with_the_step_and_its_last_lines(
    fake: FakeControlPlane, make_agent: Run, registry_token: RegistryServer,
    git_server: GitServer, busybox_image: BusyboxImageFactory,
) -> None:
    user = unique("bld-fail")
    base = busybox_image(registry_token, f"{user}/base", "1.0")
    issuer(registry_token).make_public(f"{user}/base")
    repo = git_server.create_repo(f"{user}/app", {"sub/Dockerfile.app": (
        f"FROM {base}\nRUN echo compiling; echo 'error: missing semicolon' >&2; exit 3\n"),
        ".dockerignore": "secret.txt\n", "sub/secret.txt": "x"})
    git_server.make_public(f"{user}/app")
    fake.add_account(1, "acme")
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, None, build=build(
        repo.url, "v1", context="sub", dockerfile="Dockerfile.app")))
    make_agent().run_once()
    failed = final(fake, 41)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "build_failed"
    assert failed["error"]["message"].startswith(
        "Step 2/2 : RUN echo compiling; echo 'error: missing semicolon' >&2; exit 3 failed: "
        "The command '/bin/sh -c echo compiling;")
    log = log_of(fake, 41)
    assert "compiling" in log and "error: missing semicolon" in log
    assert not any("secret.txt" in line for line in log)
    # stdout and stderr of a step arrive in either order.
    message, _, output = failed["error"]["message"].partition(" Last output: ")
    assert message.endswith("returned a non-zero code: 3")
    assert sorted(output.split(" | ")) == ["compiling", "error: missing semicolon"]
    assert sorted(log[-3:-1]) == ["compiling", "error: missing semicolon"]
    assert log[-1].startswith("Removing intermediate container ")


def test_a_git_credential_for_another_host_is_refused_before_any_request(
    fake: FakeControlPlane, make_agent: Run, git_server: GitServer,
) -> None:
    user = unique("bld-githost")
    token = git_server.add_user(user)
    repo = git_server.create_repo(f"{user}/app", {"Dockerfile": "FROM scratch\n"})
    fake.add_account(1, "acme")
    fake.put_credential(FakeCredential(21, 1, user, token, name="git-gh", type="git",
                                       server="github.com"))
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, None,
                                       build=build(repo.url, "main", git=21)))
    git_server.clear_requests()
    make_agent().run_once()
    assert final(fake, 41)["error"]["code"] == "credential_host_mismatch"
    assert git_server.requests == []

    # Without a credential, the private repository is refused by the git server.
    fake.put_deployment(FakeDeployment(42, 1, 3, "api", 2, None,
                                       build=build(repo.url, "main")))
    make_agent().run_once()
    error = final(fake, 42)["error"]
    assert error["code"] == "git_unauthorized", error


def test_the_build_sends_only_the_build_credential_in_x_registry_config(
    runtime: DockerRuntime,
) -> None:
    from moorage.agent.runtime.docker import _BuildClient

    api = runtime.client(_BuildClient)
    try:
        api.registry_config = "e30="
        headers: dict[str, Any] = {}
        api._set_auth_headers(headers)
        assert headers == {"X-Registry-Config": "e30="}
    finally:
        api.close()
    login = RegistryLogin("u", PASSWORD)
    from moorage.registry import registry_config_header

    decoded = json.loads(base64.urlsafe_b64decode(registry_config_header([("docker.io", login)])))
    assert list(decoded) == ["https://index.docker.io/v1/"]


def test_only_the_three_newest_build_images_of_an_app_are_kept(
    runtime: DockerRuntime, docker_client: docker.DockerClient,
) -> None:
    from moorage.testing.images import build_busybox_rootfs_tar

    repository = f"moorage/acme/{unique('prune')}"
    docker_client.api.import_image_from_data(build_busybox_rootfs_tar("prune"),
                                             repository=repository, tag="7")
    for number in (9, 10, 8, 11):
        docker_client.api.tag(f"{repository}:7", repository, str(number))
    docker_client.api.tag(f"{repository}:7", "moorage/other/app", "1")
    assert runtime.prune_builds(repository) == [f"{repository}:8", f"{repository}:7"]
    tags = {t for i in docker_client.images.list() for t in i.tags}
    assert {t for t in tags if t.startswith(repository)} == {
        f"{repository}:9", f"{repository}:10", f"{repository}:11"}
    assert "moorage/other/app:1" in tags


# -- uploaded sources ------------------------------------------------------------------------


def _targz(files: dict[str, str], *, extra: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buffer.getvalue()


def archive_build(data: bytes, archive_id: int = 7, **fields: Any) -> dict[str, Any]:
    return {"archive": {"id": archive_id, "sha256": hashlib.sha256(data).hexdigest(),
                        "size": len(data)},
            "dockerfile": "Dockerfile", "context": ".", "build_args": {}, "pull": None} | fields


def test_an_uploaded_source_is_downloaded_checked_built_and_run(
    fake: FakeControlPlane, make_agent: Run, registry_token: RegistryServer,
    busybox_image: BusyboxImageFactory, docker_client: docker.DockerClient, tmp_path: Path,
) -> None:
    user = unique("bld-upl")
    base = busybox_image(registry_token, f"{user}/base", "1.0")
    issuer(registry_token).make_public(f"{user}/base")
    data = _targz({"svc/Dockerfile": f"FROM {base}\nCOPY msg.txt /msg.txt\n"
                                     "CMD [\"sh\", \"-c\", \"cat /msg.txt; sleep 3600\"]\n",
                   "svc/msg.txt": "from an upload\n"})
    fake.add_account(1, "acme")
    fake.sources[7] = data
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, None,
                                       build=archive_build(data, context="svc")))
    make_agent().run_once()
    running = final(fake, 41)
    assert running["status"] == "running", running
    log = log_of(fake, 41)
    sha = hashlib.sha256(data).hexdigest()
    assert f"Fetching the uploaded source sha256:{sha[:12]} ({len(data)} bytes)" in log
    assert "Unpacked the uploaded source" in log
    assert f"Base image {base}: pulled anonymously ({registry_token.host})" in log
    assert "sources/7" in fake.requests
    container = docker_client.containers.get(running["container_id"])
    assert container.exec_run(["cat", "/msg.txt"]).output == b"from an upload\n"
    assert list((tmp_path / "builds").iterdir()) == []  # archive and tree are gone


@pytest.mark.parametrize(("served", "code", "words"), [
    (b"other bytes", "source_invalid", "is not the one deployed"),
    (None, "source_not_found", "no longer has the uploaded source"),
])
def test_an_uploaded_source_that_is_not_the_one_deployed_is_refused(
    fake: FakeControlPlane, make_agent: Run, tmp_path: Path, served: bytes | None, code: str,
    words: str,
) -> None:
    data = _targz({"Dockerfile": "FROM busybox:1\n"})
    fake.add_account(1, "acme")
    if served is not None:
        fake.sources[7] = served
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, None, build=archive_build(data)))
    make_agent().run_once()
    failed = final(fake, 41)
    assert failed["status"] == "failed" and failed["error"]["code"] == code, failed
    assert words in failed["error"]["message"]
    assert list((tmp_path / "builds").iterdir()) == []


def test_fetch_source_unpacks_an_archive_and_refuses_one_escaping(tmp_path: Path) -> None:
    good = _targz({"Dockerfile": "FROM scratch\n", "a/b.txt": "b"})

    def serve(data: bytes) -> Callable[[int, Path], None]:
        def download(archive_id: int, dest: Path) -> None:
            assert archive_id == 7
            dest.write_bytes(data)
        return download

    source = ArchiveSource(id=7, sha256=hashlib.sha256(good).hexdigest(), size=len(good))
    dest = tmp_path / "one" / "src"
    dest.parent.mkdir()
    assert fetch_source(source, None, dest, download=serve(good)) == f"sha256:{source.sha256}"
    assert (dest / "a" / "b.txt").read_text() == "b"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["src"]  # the download is gone

    escaping = tarfile.TarInfo("link")
    escaping.type, escaping.linkname = tarfile.SYMTYPE, "/etc/passwd"
    evil = _targz({"../outside.txt": "x"})
    for data in (evil, _targz({"ok": "x"}, extra=(escaping,))):
        dest = tmp_path / secrets.token_hex(4) / "src"
        dest.parent.mkdir()
        bad = ArchiveSource(id=7, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        with pytest.raises(DeployError) as raised:
            fetch_source(bad, None, dest, download=serve(data))
        assert raised.value.code == "source_invalid"
    assert not (tmp_path / "outside.txt").exists()
    for spec in ({"archive": {"id": 7, "sha256": "nope", "size": 1}},
                 {"archive": {"id": 7, "sha256": "a" * 64, "size": 1},
                  "git": {"url": "https://x/y.git", "ref": "main"}}):
        with pytest.raises(ValueError):
            BuildSpec.from_payload(spec)
