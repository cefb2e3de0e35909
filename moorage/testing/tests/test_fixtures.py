"""Proofs that the real-component fixtures are real: registries refuse what they should, the
engine pulls through them with the right credential only, and its containers run.

None of these needs the Django database.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import time
from pathlib import Path

import docker
import docker.auth
import docker.errors
import httpx
import jwt
import pytest
from playwright.sync_api import Page

from moorage.testing.dockerd import Dockerd
from moorage.testing.fixtures import (
    TEST_LABEL,
    BusyboxImageFactory,
    _restore_engine,
    _Snapshot,
    _start_or_fail,
)
from moorage.testing.images import REQUIRED_APPLETS, build_busybox_rootfs_tar
from moorage.testing.programs import MissingSystemBinary, require_binary
from moorage.testing.registry import RegistryServer, Scope, parse_scopes

#: What dockerd 20.10 relays when a registry refuses a pull (seen on these registries). The
#: status differs too: 500 for the Basic registry and a bad password, 404 (ImageNotFound, an
#: APIError) when the token registry refuses the token's empty grant.
ANONYMOUS_REFUSED = {
    "basic": "no basic auth credentials",
    "token": "requested access to the resource is denied",
}
BAD_PASSWORD_REFUSED = {
    "basic": "unauthorized: authentication required",
    "token": "unauthorized: invalid username or password",
}
NOT_GRANTED = "requested access to the resource is denied"


def _name(prefix: str) -> str:
    """A repository or user name no other test uses (the registries are session-wide)."""
    return f"{prefix}-{secrets.token_hex(4)}"


def _split(reference: str) -> tuple[str, str]:
    name, _, tag = reference.rpartition(":")
    return name, tag


def _pull(
    client: docker.DockerClient, reference: str, auth: dict[str, str] | None
) -> docker.models.images.Image:
    name, tag = _split(reference)
    return client.images.pull(name, tag=tag, auth_config=auth)


@pytest.fixture
def empty_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point docker-py's pull-time config lookup at an empty dir, so 'no auth' means none."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    return tmp_path


@pytest.mark.docker
@pytest.mark.parametrize("flavour", ["basic", "token"])
def test_anonymous_pull_is_refused(
    flavour: str,
    request: pytest.FixtureRequest,
    docker_client: docker.DockerClient,
    busybox_image: BusyboxImageFactory,
    empty_docker_config: Path,
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"registry_{flavour}")
    reference = busybox_image(registry, _name("anon"))

    with pytest.raises(docker.errors.APIError) as refused:
        _pull(docker_client, reference, None)

    assert ANONYMOUS_REFUSED[flavour] in str(refused.value)
    assert not docker_client.images.list(name=_split(reference)[0])


@pytest.mark.docker
@pytest.mark.parametrize("flavour", ["basic", "token"])
def test_pull_needs_the_right_password(
    flavour: str,
    request: pytest.FixtureRequest,
    docker_client: docker.DockerClient,
    busybox_image: BusyboxImageFactory,
) -> None:
    registry: RegistryServer = request.getfixturevalue(f"registry_{flavour}")
    repository, user, password = _name("private"), _name("user"), secrets.token_urlsafe(12)
    reference = busybox_image(registry, repository, marker=repository)
    registry.add_user(user, password)
    registry.grant(user, repository, ["pull"])

    with pytest.raises(docker.errors.APIError) as refused:
        _pull(docker_client, reference, {"username": user, "password": password + "x"})
    assert BAD_PASSWORD_REFUSED[flavour] in str(refused.value)
    assert password not in str(refused.value)

    image = _pull(docker_client, reference, {"username": user, "password": password})
    assert reference in image.tags


def test_basic_password_change_applies_without_restart(registry_basic: RegistryServer) -> None:
    user = _name("rotating")
    registry_basic.add_user(user, "first-password")
    url = f"{registry_basic.url}/v2/"
    with httpx.Client(trust_env=False) as http:
        assert http.get(url, auth=(user, "first-password")).status_code == 200
        registry_basic.set_password(user, "second-password")
        assert http.get(url, auth=(user, "first-password")).status_code == 401
        assert http.get(url, auth=(user, "second-password")).status_code == 200
        assert http.get(url).status_code == 401


@pytest.mark.docker
def test_token_grant_is_per_repository(
    registry_token: RegistryServer,
    docker_client: docker.DockerClient,
    busybox_image: BusyboxImageFactory,
) -> None:
    assert registry_token.issuer is not None
    repo_a, repo_b = _name("repo-a"), _name("repo-b")
    ref_a = busybox_image(registry_token, repo_a, marker="a")
    ref_b = busybox_image(registry_token, repo_b, marker="b")
    user, password = _name("only-a"), secrets.token_urlsafe(12)
    registry_token.add_user(user, password)
    registry_token.grant(user, repo_a, ["pull"])
    auth = {"username": user, "password": password}
    registry_token.issuer.clear_requests()

    assert ref_a in _pull(docker_client, ref_a, auth).tags
    with pytest.raises(docker.errors.APIError) as refused:
        _pull(docker_client, ref_b, auth)
    assert NOT_GRANTED in str(refused.value)

    # The issuer did answer for repo B — with an empty grant: a token is not proof of access.
    for_b = [
        r
        for r in registry_token.issuer.requests
        if any(repo_b in scope for scope in r.scopes) and r.username == user
    ]
    assert for_b, registry_token.issuer.requests
    assert all(r.status == 200 and r.authenticated for r in for_b)
    assert all(
        grant["actions"] == [] for r in for_b for grant in r.granted if grant["name"] == repo_b
    )


def test_token_issuer_refuses_bad_password_and_intersects_scopes(
    registry_token: RegistryServer,
) -> None:
    issuer = registry_token.issuer
    assert issuer is not None
    user, password = _name("scoped"), secrets.token_urlsafe(12)
    registry_token.add_user(user, password)
    registry_token.grant(user, "team/app", ["pull"])
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("service", issuer.service),
        ("scope", "repository:team/app:pull,push"),
        ("scope", "repository:127.0.0.1:5000/team/other:pull"),
    ]
    with httpx.Client(trust_env=False) as http:
        bad = http.get(issuer.realm, params=params, auth=(user, "wrong"))
        assert bad.status_code == 401
        assert "token" not in bad.json()

        good = http.get(issuer.realm, params=params, auth=(user, password))
        assert good.status_code == 200
        body = good.json()
        assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
        header = jwt.get_unverified_header(body["token"])
        assert header["alg"] == "RS256" and header["x5c"]
        claims = jwt.decode(
            body["token"],
            issuer._key.public_key(),
            algorithms=["RS256"],
            audience=issuer.service,
            issuer=issuer.issuer,
        )
        assert claims["access"] == [
            {"type": "repository", "name": "team/app", "actions": ["pull"]},
            {"type": "repository", "name": "127.0.0.1:5000/team/other", "actions": []},
        ]
        assert {"exp", "nbf", "iat", "jti"} <= set(claims)

        anonymous = http.get(issuer.realm, params=params)
        assert anonymous.status_code == 200
        anon_claims = jwt.decode(anonymous.json()["token"], options={"verify_signature": False})
        assert all(grant["actions"] == [] for grant in anon_claims["access"])

    recorded = issuer.requests[-3:]
    assert [r.status for r in recorded] == [401, 200, 200]
    assert [r.username for r in recorded] == [user, user, None]
    assert all(password not in repr(r) for r in recorded)


def test_missing_program_fails_loudly_naming_the_package() -> None:
    programs = {"moorage-no-such-program": "some-debian-package",
                "/nonexistent/moorage-program": "pkg"}
    with pytest.raises(MissingSystemBinary, match="apt-get install -y some-debian-package"):
        require_binary("moorage-no-such-program", programs=programs)

    def start() -> None:
        require_binary("/nonexistent/moorage-program", programs=programs)

    with pytest.raises(pytest.fail.Exception, match="Debian package 'pkg'"):
        _start_or_fail(start)


def test_scope_parsing_splits_from_the_right() -> None:
    scope = Scope.parse("repository:127.0.0.1:5000/a/b:pull,push")
    assert (scope.type, scope.name, scope.actions) == (
        "repository",
        "127.0.0.1:5000/a/b",
        ("pull", "push"),
    )
    assert Scope.parse("repository(plugin):x/y:pull").base_type == "repository"
    assert [s.name for s in parse_scopes(["repository:a:pull repository:b:push"])] == ["a", "b"]
    with pytest.raises(ValueError):
        Scope.parse("repository:pull")


@pytest.mark.docker
def test_busybox_container_runs_on_host_network(
    registry_basic: RegistryServer,
    docker_client: docker.DockerClient,
    busybox_image: BusyboxImageFactory,
) -> None:
    marker = _name("marker")
    reference = busybox_image(registry_basic, _name("runner"), marker=marker)
    auth = {"username": registry_basic.admin_username, "password": registry_basic.admin_password}
    _pull(docker_client, reference, auth)
    greeting = _name("hello")

    output = docker_client.containers.run(
        reference,
        ["sh", "-c", f"echo {greeting}; cat /etc/marker; ls /bin/wget /bin/httpd"],
        network_mode="host",
        labels={TEST_LABEL: "1"},
        remove=False,
        stdout=True,
        stderr=True,
    )

    lines = output.decode().split()
    assert lines[:2] == [greeting, marker]
    assert "/bin/wget" in lines and "/bin/httpd" in lines


def test_rootfs_tar_has_applets_and_marker() -> None:
    plain = build_busybox_rootfs_tar(None)
    marked = build_busybox_rootfs_tar("m1")
    assert plain == build_busybox_rootfs_tar(None)  # reproducible
    assert marked != build_busybox_rootfs_tar("m2")
    with tarfile.open(fileobj=io.BytesIO(marked)) as tar:
        names = set(tar.getnames())
        marker = tar.extractfile("etc/marker")
        assert marker is not None and marker.read() == b"m1\n"
    assert {f"bin/{applet}" for applet in REQUIRED_APPLETS} <= names
    assert "etc/marker" not in set(tarfile.open(fileobj=io.BytesIO(plain)).getnames())


@pytest.mark.docker
def test_engine_cleanup_removes_what_a_test_left(
    dockerd: Dockerd, registry_basic: RegistryServer, busybox_image: BusyboxImageFactory
) -> None:
    reference = busybox_image(registry_basic, _name("leftover"))
    client = dockerd.client()
    try:
        before = _Snapshot(client)
        auth = {
            "username": registry_basic.admin_username,
            "password": registry_basic.admin_password,
        }
        _pull(client, reference, auth)
        container = client.containers.create(reference, ["sleep", "60"], network_mode="host")
        container.start()

        assert _restore_engine(client, before) == []

        assert container.id not in {c.id for c in client.containers.list(all=True)}
        assert not client.images.list(name=_split(reference)[0])
    finally:
        client.close()


@pytest.mark.browser
def test_browser_page_renders(page: Page) -> None:
    page.set_content("<button id=b onclick=\"this.textContent='clicked'\">go</button>")
    page.click("#b")
    assert page.text_content("#b") == "clicked"
    assert os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] == "true"


@pytest.mark.docker
def test_swarm_service_pulls_with_registry_auth_and_is_cleaned_up(
    dockerd: Dockerd, registry_token: RegistryServer, busybox_image: BusyboxImageFactory
) -> None:
    repository, user, password = _name("svc"), _name("svc-user"), secrets.token_urlsafe(12)
    reference = busybox_image(registry_token, repository, marker="svc")
    registry_token.add_user(user, password)
    registry_token.grant(user, repository, ["pull"])
    client = dockerd.client()
    try:
        before = _Snapshot(client)
        client.swarm.init(advertise_addr="127.0.0.1")
        # docker-py's create_service has no auth parameter (it takes the host's docker config),
        # so send X-Registry-Auth ourselves, as the swarm runtime will.
        header = docker.auth.encode_header(
            {"username": user, "password": password, "serveraddress": registry_token.host}
        )
        spec = {
            "Name": repository,
            "Labels": {TEST_LABEL: "1"},
            "TaskTemplate": {"ContainerSpec": {"Image": reference, "Command": ["sleep", "60"]}},
        }
        response = client.api._post_json(
            client.api._url("/services/create"), data=spec, headers={"X-Registry-Auth": header}
        )
        service = client.services.get(client.api._result(response, json=True)["ID"])
        states: list[str] = []
        deadline = time.monotonic() + 30
        while "running" not in states and time.monotonic() < deadline:
            time.sleep(0.2)
            states = [task["Status"]["State"] for task in service.tasks()]
        assert "running" in states, service.tasks()

        assert _restore_engine(client, before) == []

        assert client.info()["Swarm"]["LocalNodeState"] == "inactive"
        assert not client.containers.list(all=True, filters={"label": f"{TEST_LABEL}=1"})
    finally:
        client.close()
