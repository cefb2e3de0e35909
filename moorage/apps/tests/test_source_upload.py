"""Uploading a build's source as a gzipped tar: the checks, the files on disk, the
deployment that freezes it, and the agent's download (I7)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from moorage.accounts.choices import Role
from moorage.apps import sources
from moorage.apps.models import App, SourceArchive
from moorage.regions import services as region_services
from moorage.testing.api_checks import API, assert_api_error
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, make_region

pytestmark = pytest.mark.django_db

REPO = "https://git.example.com/acme/api.git"
DOCKERFILE = b"FROM busybox:1\nCOPY . /src\n"


def targz(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    """A gzipped tar of ``(name, content)`` files and ready-made members (links, devices)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, content = member
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


GOOD = targz([("Dockerfile", DOCKERFILE), ("app/main.sh", b"echo hi\n"),
              link("app/current", "main.sh"), link("app/up", "../Dockerfile")])


@pytest.fixture(autouse=True)
def data_dir(settings: Settings, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def _json(client: Client, method: str, path: str, member: Member, body: Any = None) -> Any:
    return client.generic(method, API + path, json.dumps(body) if body is not None else "",
                          content_type="application/json", headers=member.auth)


def _upload(client: Client, member: Member, app_id: int, body: bytes,
            content_type: str = "application/gzip") -> Any:
    return client.post(f"{API}/apps/{app_id}/source", data=body, content_type=content_type,
                       headers=member.auth)


@pytest.fixture
def app(client: Client, owner: Member) -> dict[str, Any]:
    created = _json(client, "POST", "/apps", owner,
                    {"name": "api", "source": "build", "source_upload": True})
    assert created.status_code == 201, created.content
    body: dict[str, Any] = created.json()
    assert body["source_archive"] is None
    return body


def _files(data_dir: Path) -> list[str]:
    root = data_dir / "sources"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def test_an_upload_becomes_the_apps_source_and_its_deployments(
    client: Client, owner: Member, app: dict[str, Any], data_dir: Path
) -> None:
    eu = make_region("eu-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-1"])
    _json(client, "PATCH", f"/apps/{app['id']}", owner, {"regions": ["eu-1"]})
    # Before an upload, a deploy has nothing to build.
    assert_api_error(_json(client, "POST", f"/apps/{app['id']}/deploy", owner), 422,
                     "build_source_required")
    uploaded = _upload(client, owner, app["id"], GOOD)
    assert uploaded.status_code == 201, uploaded.content
    sha = hashlib.sha256(GOOD).hexdigest()
    archive = uploaded.json()
    assert (archive["sha256"], archive["size"]) == (sha, len(GOOD))
    path = data_dir / "sources" / str(app["id"]) / f"{sha}.tar.gz"
    assert path.read_bytes() == GOOD
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _files(data_dir) == [f"{app['id']}/{sha}.tar.gz"]  # no temp file left
    shown = _json(client, "GET", f"/apps/{app['id']}", owner).json()
    assert shown["source_archive"]["sha256"] == sha and shown["git_url"] == ""

    start = eu.snapshot(client)["revision"]
    [deployment] = _json(client, "POST", f"/apps/{app['id']}/deploy", owner).json()
    assert deployment["build"]["archive"] == {"id": archive["id"], "sha256": sha,
                                              "size": len(GOOD)}
    assert "git" not in deployment["build"]
    [change] = eu.changes(client, start)["changes"]
    assert change["deployment"]["build"]["archive"]["sha256"] == sha
    # The region's agent downloads exactly those bytes.
    download = client.get(f"{API}/agent/sources/{archive['id']}", headers=eu.auth)
    assert download.status_code == 200
    assert download["Content-Type"] == "application/gzip"
    assert b"".join(download.streaming_content) == GOOD  # type: ignore[attr-defined]

    # A git URL replaces the archive, and an archive the git URL: one or the other.
    patched = _json(client, "PATCH", f"/apps/{app['id']}", owner, {"git_url": REPO}).json()
    assert patched["git_url"] == REPO and patched["source_archive"] is None
    again = _upload(client, owner, app["id"], GOOD)
    assert again.status_code == 201 and again.json()["id"] == archive["id"]  # kept once
    row = App.objects.get(pk=app["id"])
    assert (row.git_url, row.source_archive_id, row.source) == ("", archive["id"], "build")
    # Other build settings change without losing the archive.
    kept = _json(client, "PATCH", f"/apps/{app['id']}", owner, {"dockerfile": "Dockerfile"})
    assert kept.status_code == 200 and kept.json()["source_archive"]["id"] == archive["id"]


def test_the_three_newest_archives_are_kept(
    client: Client, owner: Member, app: dict[str, Any], data_dir: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    bodies = [targz([("Dockerfile", DOCKERFILE), ("n", str(i).encode())]) for i in range(5)]
    for body in bodies:
        with django_capture_on_commit_callbacks(execute=True):
            assert _upload(client, owner, app["id"], body).status_code == 201
    kept = [hashlib.sha256(b).hexdigest() for b in bodies[2:]]
    assert sorted(SourceArchive.objects.filter(app_id=app["id"])
                  .values_list("sha256", flat=True)) == sorted(kept)
    assert _files(data_dir) == sorted(f"{app['id']}/{sha}.tar.gz" for sha in kept)
    assert App.objects.get(pk=app["id"]).source_archive.sha256 == kept[-1]  # type: ignore
    # Deleting the app removes its archives.
    with django_capture_on_commit_callbacks(execute=True):
        assert _json(client, "DELETE", f"/apps/{app['id']}", owner).status_code == 204
    assert _files(data_dir) == []


def _traversal() -> bytes:
    return targz([("Dockerfile", DOCKERFILE), ("../../etc/cron.d/x", b"* * * * * root id\n")])


@pytest.mark.parametrize(("make_body", "message"), [
    (lambda: b"not a tarball at all", "not a gzipped tar"),
    (lambda: GOOD[: len(GOOD) // 2], "not a gzipped tar"),
    (lambda: gzip.compress(b""), "not a gzipped tar"),
    (lambda: gzip.compress(b"plain text, gzipped"), "not a gzipped tar"),
    (_traversal, "not a relative path"),
    (lambda: targz([("/etc/passwd", b"x")]), "not a relative path"),
    (lambda: targz([("a/../../b", b"x")]), "not a relative path"),
    (lambda: targz([link("escape", "/etc/shadow")]), "points outside"),
    (lambda: targz([link("a/escape", "../../etc")]), "points outside"),
    (lambda: targz([("f", b"x"), link("hard", "../f", tarfile.LNKTYPE)]), "points outside"),
    (lambda: targz([device("null")]), "device or special file"),
])
def test_bad_archives_are_refused_and_leave_nothing(
    client: Client, owner: Member, app: dict[str, Any], data_dir: Path,
    make_body: Callable[[], bytes], message: str,
) -> None:
    body = assert_api_error(_upload(client, owner, app["id"], make_body()), 422,
                            "source_invalid")
    assert message in body["message"]
    assert _files(data_dir) == [] and not SourceArchive.objects.exists()
    assert App.objects.get(pk=app["id"]).source_archive_id is None


def test_size_limit_and_content_type(
    client: Client, owner: Member, app: dict[str, Any], data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sources, "MAX_ARCHIVE_BYTES", len(GOOD) - 1)
    body = assert_api_error(_upload(client, owner, app["id"], GOOD), 413, "source_too_large")
    assert body["detail"] == {"max_bytes": len(GOOD) - 1}
    assert _files(data_dir) == []
    monkeypatch.undo()
    # The declared length is checked before a byte is read.
    declared = client.post(f"{API}/apps/{app['id']}/source", data=GOOD,
                           content_type="application/gzip", headers=owner.auth,
                           CONTENT_LENGTH=str(sources.MAX_ARCHIVE_BYTES + 1))
    assert_api_error(declared, 413, "source_too_large")
    assert_api_error(_upload(client, owner, app["id"], GOOD, "application/json"), 415,
                     "source_content_type")
    assert _files(data_dir) == []


def test_tenancy_roles_and_the_agents_download(
    client: Client, owner: Member, other_owner: Member, app: dict[str, Any],
    member_with_role: Callable[[Role], Member], data_dir: Path,
) -> None:
    # Another account's app: 404, and nothing written.
    assert_api_error(_upload(client, other_owner, app["id"], GOOD), 404, "app_not_found")
    assert_api_error(_upload(client, member_with_role(Role.VIEWER), app["id"], GOOD), 403,
                     "permission_denied")
    assert _files(data_dir) == []
    assert client.post(f"{API}/apps/{app['id']}/source", data=GOOD,
                       content_type="application/gzip").status_code == 401
    archive = _upload(client, owner, app["id"], GOOD).json()

    # Only a region the app's account deploys to may download it.
    eu, us = make_region("eu-1"), make_region("us-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-1"])
    region_services.account_regions_set(actor=other_owner.user,
                                        membership=other_owner.membership, slugs=["us-1"])
    assert client.get(f"{API}/agent/sources/{archive['id']}", headers=eu.auth).status_code \
        == 200
    for view, archive_id in ((us, archive["id"]), (eu, archive["id"] + 1000)):
        assert_api_error(client.get(f"{API}/agent/sources/{archive_id}", headers=view.auth),
                         404, "source_archive_not_found")
    assert client.get(f"{API}/agent/sources/{archive['id']}",
                      headers=owner.auth).status_code == 401  # an API token is not an agent
    _check_disabled_region_loses_access(client, owner, eu, archive["id"])


def _check_disabled_region_loses_access(client: Client, owner: Member, eu: AgentView,
                                        archive_id: int) -> None:
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=[])
    assert_api_error(client.get(f"{API}/agent/sources/{archive_id}", headers=eu.auth), 404,
                     "source_archive_not_found")
