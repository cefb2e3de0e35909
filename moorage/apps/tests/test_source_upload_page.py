"""Uploading a build's source on the App page: a .tar.gz or a .zip, with the API's size limit
and the API's errors (the same service does the work)."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from pytest_django.fixtures import Settings

from moorage.accounts.choices import Role
from moorage.apps import sources, upload_handler
from moorage.apps.models import App, SourceArchive
from moorage.apps.services import app_create
from moorage.apps.tests.test_source_upload import DOCKERFILE, GOOD, device, link, targz
from moorage.testing.api_checks import API
from moorage.testing.factories import PASSWORD, Member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_dir(settings: Settings, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


@pytest.fixture
def app(owner: Member) -> App:
    return app_create(actor=owner.user, membership=owner.membership, name="api",
                      source="build", source_upload=True)


def _login(client: Client, member: Member) -> Client:
    client.post("/login/", {"email": member.user.email, "password": PASSWORD})
    return client


def _page_upload(client: Client, app_id: int, body: bytes, name: str = "src.tar.gz") -> Any:
    return client.post(f"/apps/{app_id}/source/",
                       {"archive": SimpleUploadedFile(name, body, "application/octet-stream")})


def _page_error(response: Any) -> tuple[int, str, str]:
    match = re.search(r'data-testid="upload-error"><code>([^<]+)</code> ([^<]*)</p>',
                      response.content.decode())
    assert match, response.content.decode()[-3000:]
    return response.status_code, match.group(1), unescape(match.group(2))


def _api_error(client: Client, owner: Member, app_id: int, body: bytes,
               content_type: str = "application/gzip") -> tuple[int, str, str]:
    response = client.post(f"{API}/apps/{app_id}/source", data=body,
                           content_type=content_type, headers=owner.auth)
    return response.status_code, response.json()["code"], response.json()["message"]


def _files(data_dir: Path) -> list[str]:
    root = data_dir / "sources"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def zipped(members: list[tuple[str, bytes, int]]) -> bytes:
    """A zip of ``(name, content, unix mode)`` entries, as desktop tools and ``zip -y`` make."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content, mode in members:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 2, 3, 4, 6))
            info.external_attr = mode << 16
            archive.writestr(info, content)
    return buffer.getvalue()


ZIP = zipped([("app/", b"", stat.S_IFDIR | 0o755), ("app/Dockerfile", DOCKERFILE,
              stat.S_IFREG | 0o644), ("app/run.sh", b"#!/bin/sh\necho hi\n", stat.S_IFREG | 0o755),
              ("app/current", b"run.sh", stat.S_IFLNK | 0o777)])


def test_the_app_page_uploads_a_tar_gz(client: Client, owner: Member, app: App,
                                       data_dir: Path) -> None:
    page = _login(client, owner).get(f"/apps/{app.pk}/").content.decode()
    assert 'enctype="multipart/form-data"' in page and 'name="archive"' in page
    assert "at most 100 MiB" in page
    response = _page_upload(client, app.pk, GOOD)
    assert response.status_code == 302, response.content.decode()[-2000:]
    sha = hashlib.sha256(GOOD).hexdigest()
    app.refresh_from_db()
    assert app.source_archive is not None and app.source_archive.sha256 == sha
    assert _files(data_dir) == [f"{app.pk}/{sha}.tar.gz"]
    shown = client.get(f"/apps/{app.pk}/").content.decode()
    assert f"sha256 {sha[:12]}). The next deploy builds it." in shown  # the message
    assert f"sha256:{sha[:12]}" in shown  # the app's current source


def test_a_zip_is_kept_as_the_gzipped_tar_the_agents_build(
    client: Client, owner: Member, app: App, data_dir: Path
) -> None:
    _login(client, owner)
    assert _page_upload(client, app.pk, ZIP, "src.zip").status_code == 302
    app.refresh_from_db()
    assert app.source_archive is not None
    stored = data_dir / "sources" / str(app.pk) / f"{app.source_archive.sha256}.tar.gz"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == app.source_archive.sha256
    assert app.source_archive.size == stored.stat().st_size
    with tarfile.open(stored, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["app", "app/Dockerfile", "app/current", "app/run.sh"]
        assert members["app"].isdir()
        assert members["app/current"].issym() and members["app/current"].linkname == "run.sh"
        assert stat.S_IMODE(members["app/run.sh"].mode) == 0o755
        dockerfile = tar.extractfile("app/Dockerfile")
        assert dockerfile is not None and dockerfile.read() == DOCKERFILE
    # The API takes the same zip and keeps the very same archive.
    again = client.post(f"{API}/apps/{app.pk}/source", data=ZIP, content_type="application/zip",
                        headers=owner.auth)
    assert again.status_code == 201, again.content
    assert again.json()["sha256"] == app.source_archive.sha256
    assert SourceArchive.objects.filter(app=app).count() == 1


def _zip_traversal() -> bytes:
    return zipped([("Dockerfile", DOCKERFILE, stat.S_IFREG | 0o644),
                   ("../../etc/cron.d/x", b"* * * * * root id\n", stat.S_IFREG | 0o644)])


@pytest.mark.parametrize("make_body", [
    lambda: b"not a tarball at all",
    lambda: GOOD[: len(GOOD) // 2],
    lambda: targz([("/etc/passwd", b"x")]),
    lambda: targz([link("a/escape", "../../etc")]),
    lambda: targz([device("null")]),
    _zip_traversal,
    lambda: zipped([("escape", b"/etc/shadow", stat.S_IFLNK | 0o777)]),
    lambda: zipped([("long", b"a/" * 4000, stat.S_IFLNK | 0o777)]),
    lambda: ZIP[: len(ZIP) // 2],
], ids=["text", "truncated", "absolute", "symlink-out", "device", "zip-traversal",
        "zip-symlink-out", "zip-long-link", "zip-truncated"])
def test_bad_archives_get_the_apis_error_on_the_page(
    client: Client, owner: Member, app: App, data_dir: Path, make_body: Callable[[], bytes],
) -> None:
    body = make_body()
    on_page = _page_error(_page_upload(_login(client, owner), app.pk, body))
    kind = "application/zip" if body.startswith(b"PK") else "application/gzip"
    assert on_page == _api_error(client, owner, app.pk, body, kind)
    assert on_page[:2] == (422, "source_invalid")
    assert _files(data_dir) == [] and not SourceArchive.objects.exists()


@pytest.mark.parametrize("declared", [False, True], ids=["counted", "declared"])
def test_the_size_limit_is_the_apis(
    client: Client, owner: Member, app: App, data_dir: Path, monkeypatch: pytest.MonkeyPatch,
    declared: bool,
) -> None:
    monkeypatch.setattr(sources, "MAX_ARCHIVE_BYTES", len(GOOD) - 1)
    if declared:  # refused from the request's length, before the file is stored at all
        monkeypatch.setattr(upload_handler, "MULTIPART_ALLOWANCE", 0)
    on_page = _page_error(_page_upload(_login(client, owner), app.pk, GOOD))
    assert on_page == _api_error(client, owner, app.pk, GOOD)
    assert on_page[:2] == (413, "source_too_large")
    assert f"at most {(len(GOOD) - 1) // (1024 * 1024)} MiB" in on_page[2]
    assert _files(data_dir) == []


def test_no_file_chosen(client: Client, owner: Member, app: App) -> None:
    response = _login(client, owner).post(f"/apps/{app.pk}/source/", {})
    assert _page_error(response) == (422, "source_missing",
                                      "Choose the .tar.gz or .zip of the source directory.")


def test_csrf_roles_and_tenancy(
    owner: Member, other_owner: Member, app: App, data_dir: Path,
    member_with_role: Callable[[Role], Member],
) -> None:
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner.user)
    assert _page_upload(strict, app.pk, GOOD).status_code == 403  # no CSRF token
    token = strict.get(f"/apps/{app.pk}/").cookies["csrftoken"].value
    accepted = strict.post(f"/apps/{app.pk}/source/", {
        "csrfmiddlewaretoken": token,
        "archive": SimpleUploadedFile("src.tar.gz", GOOD, "application/gzip")})
    assert accepted.status_code == 302
    SourceArchive.objects.all().delete()
    viewer = _login(Client(), member_with_role(Role.VIEWER))
    assert 'name="archive"' not in viewer.get(f"/apps/{app.pk}/").content.decode()
    assert _page_upload(viewer, app.pk, GOOD).status_code == 403
    assert _page_upload(_login(Client(), other_owner), app.pk, GOOD).status_code == 404
    assert not SourceArchive.objects.exists()


def test_a_new_build_app_can_wait_for_its_upload(client: Client, owner: Member) -> None:
    _login(client, owner)
    fields = {"name": "web", "source": "build", "pull": "account_default"}
    refused = client.post("/apps/new/", fields)
    assert refused.status_code == 422 and "Give the repository to build." in \
        refused.content.decode()
    created = client.post("/apps/new/", fields | {"source_upload": "on"})
    assert created.status_code == 302, created.content.decode()[-2000:]
    app = App.objects.get(name="web")
    assert (app.source, app.git_url, app.source_archive) == ("build", "", None)
    assert 'id="source-upload"' in client.get(f"/apps/{app.pk}/").content.decode()
