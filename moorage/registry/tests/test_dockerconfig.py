"""Docker config documents and Engine auth headers, proved with real tools.

The built ``config.json`` is handed to Debian's ``skopeo`` against both real registries, and
the headers to the real dockerd (a pull with ``X-Registry-Auth``, a classic build with
``X-Registry-Config``): a document that only round-trips through our own parser proves little.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from moorage.registry import (
    DockerConfigEntry,
    ImageReference,
    InvalidDockerConfig,
    RegistryLogin,
    build_docker_config,
    build_k8s_secret,
    dump_docker_config,
    parse_docker_config,
    registry_auth_header,
    registry_config_header,
)
from moorage.registry.tests.conftest import new_user
from moorage.testing.programs import require_binary
from moorage.testing.registry import RegistryServer

HUB_KEY = "https://index.docker.io/v1/"
ALICE = RegistryLogin("alice", "pa:ss/wo+rd=" + secrets.token_hex(6))
BOB = RegistryLogin("bob", "b0b-" + secrets.token_hex(6))

PushedImage = Callable[[RegistryServer], ImageReference]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ----- build / parse


@pytest.mark.parametrize(
    "hub", ["docker.io", "index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io"]
)
def test_docker_hub_is_keyed_exactly(hub: str) -> None:
    config = build_docker_config([(hub, ALICE, None)])
    assert list(config["auths"]) == [HUB_KEY]


def test_build_shape() -> None:
    config = build_docker_config(
        [("https://ghcr.io/", ALICE, "alice@example.com"), ("127.0.0.1:5000", BOB, None)]
    )
    assert config == {
        "auths": {
            "ghcr.io": {
                "auth": _b64(f"alice:{ALICE.password}"),
                "username": "alice",
                "password": ALICE.password,
                "email": "alice@example.com",
            },
            "127.0.0.1:5000": {
                "auth": _b64(f"bob:{BOB.password}"),
                "username": "bob",
                "password": BOB.password,
            },
        }
    }
    with pytest.raises(ValueError, match=r"two credentials for the registry docker\.io"):
        build_docker_config([("docker.io", ALICE, None), ("index.docker.io", BOB, None)])


def test_round_trip() -> None:
    entries = [
        ("docker.io", ALICE, "a@example.com"),
        ("ghcr.io", BOB, None),
        ("[::1]:5000", ALICE, None),
    ]
    parsed = parse_docker_config(dump_docker_config(entries))
    assert sorted(parsed, key=lambda e: e.host) == [
        DockerConfigEntry("[::1]:5000", "alice", ALICE.password, None),
        DockerConfigEntry("docker.io", "alice", ALICE.password, "a@example.com"),
        DockerConfigEntry("ghcr.io", "bob", BOB.password, None),
    ]
    assert parsed.skipped == ()
    hub = parsed.for_host("https://index.docker.io/v1/")
    assert hub is not None and hub.login == ALICE
    assert ALICE.password not in repr(parsed) and ALICE.password not in str(hub)


def test_parse_auth_wins_and_skips_what_it_cannot_use() -> None:
    document = {
        "auths": {
            # auth wins over username/password (Kubernetes' rule)
            "ghcr.io": {"auth": _b64("real:secret-1"), "username": "x", "password": "y"},
            "quay.io": {"username": "u", "password": "p"},  # no auth: the fields are used
            "gcr.io": {"auth": _b64('_json_key:{\n "type": "service_account"\n}')},
            "https://index.docker.io/v1/": {},  # secret in the credsStore
            "registry.gitlab.com": {"identitytoken": "oauth-refresh"},
            "bad.example": {"auth": "%%%not base64%%%"},
            "nocolon.example": {"auth": _b64("just-a-user")},
            "*.example.com": {"auth": _b64("a:b")},  # a kubelet glob, not one host
            "example.com/team": {"auth": _b64("a:b")},  # a kubelet path prefix
            "ecr.example": {},
        },
        "credsStore": "desktop",
        "credHelpers": {"ecr.example": "ecr-login", "gcr.example": "gcloud"},
    }
    parsed = parse_docker_config(json.dumps(document))
    assert [(e.host, e.username, e.password) for e in parsed] == [
        ("ghcr.io", "real", "secret-1"),
        ("quay.io", "u", "p"),
        ("gcr.io", "_json_key", '{\n "type": "service_account"\n}'),  # newlines kept
    ]
    reasons = {s.key: s.reason for s in parsed.skipped}
    assert "credential store docker-credential-desktop" in reasons[HUB_KEY]
    assert "identity token" in reasons["registry.gitlab.com"]
    assert "not base64" in reasons["bad.example"]
    assert 'does not hold "user:password"' in reasons["nocolon.example"]
    assert "not a single registry host" in reasons["*.example.com"]
    assert "not a single registry host" in reasons["example.com/team"]
    assert "credential helper docker-credential-ecr-login" in reasons["ecr.example"]
    assert "credential helper docker-credential-gcloud" in reasons["gcr.example"]


def test_parse_duplicate_hosts_prefer_the_canonical_key() -> None:
    document = {
        "auths": {
            "docker.io": {"auth": _b64("old:one")},
            HUB_KEY: {"auth": _b64("new:two")},
            "index.docker.io": {"auth": _b64("other:three")},
        }
    }
    parsed = parse_docker_config(json.dumps(document).encode())
    assert [(e.host, e.username) for e in parsed] == [("docker.io", "new")]
    assert sorted(s.key for s in parsed.skipped) == ["docker.io", "index.docker.io"]


@pytest.mark.parametrize("text", ["not json", "[]", '{"auths": []}', '"string"', b"\xff\xfe"])
def test_parse_refuses_a_document_that_is_not_a_config(text: str | bytes) -> None:
    with pytest.raises(InvalidDockerConfig):
        parse_docker_config(text)


def test_parse_an_empty_config() -> None:
    assert list(parse_docker_config("{}")) == []


def test_k8s_secret() -> None:
    secret = build_k8s_secret("pull-secret", "tenant-a", [("docker.io", ALICE, None)])
    assert secret["apiVersion"] == "v1" and secret["kind"] == "Secret"
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"] == {"name": "pull-secret", "namespace": "tenant-a"}
    config = base64.b64decode(secret["data"][".dockerconfigjson"]).decode()
    assert list(json.loads(config)["auths"]) == [HUB_KEY]
    assert parse_docker_config(config).entries[0].login == ALICE
    with pytest.raises(ValueError, match="object name"):
        build_k8s_secret("Bad_Name", "ns", [])
    with pytest.raises(ValueError, match="namespace"):
        build_k8s_secret("ok", "a.b", [])


# ----- headers


def _decode_urlsafe(value: str) -> Any:
    assert "+" not in value and "/" not in value  # URL-safe alphabet, as the engine decodes
    return json.loads(base64.urlsafe_b64decode(value))


def test_registry_auth_header() -> None:
    # ">>>?" encodes to "Pj4+Pw==" in standard base64: the header must use '-' and '_'.
    tricky = RegistryLogin("u", ">>>?" * 5)
    for host, server in [
        ("docker.io", "index.docker.io"),
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("https://ghcr.io/", "ghcr.io"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
    ]:
        header = registry_auth_header(tricky, host)
        assert _decode_urlsafe(header) == {
            "username": "u",
            "password": tricky.password,
            "serveraddress": server,
        }


def test_registry_config_header() -> None:
    header = registry_config_header([("docker.io", ALICE), ("ghcr.io", BOB)])
    assert _decode_urlsafe(header) == {
        HUB_KEY: {"username": "alice", "password": ALICE.password, "serveraddress": HUB_KEY},
        "ghcr.io": {"username": "bob", "password": BOB.password, "serveraddress": "ghcr.io"},
    }
    with pytest.raises(ValueError, match="two credentials"):
        registry_config_header([("ghcr.io", ALICE), ("https://ghcr.io", BOB)])


# ----- real tools


def _skopeo_inspect(
    reference: ImageReference, authfile: Path, home: Path
) -> subprocess.CompletedProcess[str]:
    skopeo = require_binary("/usr/bin/skopeo")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    env["XDG_RUNTIME_DIR"] = str(home)  # no stray auth.json of the machine
    return subprocess.run(
        [
            skopeo,
            "inspect",
            "--tls-verify=false",
            "--authfile",
            str(authfile),
            f"docker://{reference}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_skopeo_pulls_with_a_built_config(
    registry: RegistryServer, pushed_image: PushedImage, tmp_path: Path
) -> None:
    image = pushed_image(registry)
    login = new_user(registry, image.path)
    authfile = tmp_path / "config.json"
    authfile.write_text(dump_docker_config([(registry.host, login, None)]))
    authfile.chmod(0o600)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"auths": {}}))

    ok = _skopeo_inspect(image, authfile, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["Name"] == image.name

    refused = _skopeo_inspect(image, empty, tmp_path)
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "denied" in refused.stderr.lower()

    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        dump_docker_config([(registry.host, RegistryLogin(login.username, "nope"), None)])
    )
    assert _skopeo_inspect(image, wrong, tmp_path).returncode != 0


@pytest.mark.docker
def test_engine_pulls_with_our_registry_auth_header(
    registry: RegistryServer,
    pushed_image: PushedImage,
    docker_client: docker.DockerClient,
) -> None:
    image = pushed_image(registry)
    login = new_user(registry, image.path)
    api = docker_client.api

    def pull(header: str | None) -> list[dict[str, Any]]:
        headers = {"X-Registry-Auth": header} if header else {}
        response = api._post(
            api._url("/images/create"),
            params={"fromImage": image.name, "tag": image.pull_ref},
            headers=headers,
            stream=True,
        )
        if response.status_code >= 400:
            return [{"error": response.text}]
        return list(api._stream_helper(response, decode=True))

    refused = pull(None)
    assert any("error" in line for line in refused), refused
    lines = pull(registry_auth_header(login, registry.host))
    assert not any("error" in line for line in lines), lines
    assert docker_client.images.get(f"{image.name}:{image.pull_ref}")


@pytest.mark.docker
def test_classic_build_pulls_its_base_with_our_registry_config_header(
    registry: RegistryServer,
    pushed_image: PushedImage,
    docker_client: docker.DockerClient,
) -> None:
    image = pushed_image(registry)
    login = new_user(registry, image.path)
    api = docker_client.api
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = f"FROM {image}\nLABEL moorage.test=1\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))

    def build(header: str | None) -> list[dict[str, Any]]:
        headers = {"Content-Type": "application/x-tar"}
        if header is not None:
            headers["X-Registry-Config"] = header
        response = api._post(
            api._url("/build"),
            params={"pull": "1", "rm": "1", "forcerm": "1", "labels": '{"moorage.test":"1"}'},
            data=context.getvalue(),
            headers=headers,
            stream=True,
        )
        if response.status_code >= 400:
            return [{"error": response.text}]
        return list(api._stream_helper(response, decode=True))

    refused = build(None)
    assert any("error" in line for line in refused), refused
    built = build(registry_config_header([(registry.host, login)]))
    ids = [
        line["stream"].split()[-1]
        for line in built
        if line.get("stream", "").startswith("Successfully built")
    ]
    try:
        assert not any("error" in line for line in built), built
        assert ids, built
    finally:
        # The built image is a child of the base: remove it first, or the engine teardown
        # (which removes new images in no particular order) may meet a conflict.
        for image_id in ids:
            docker_client.images.remove(image_id, force=True)
