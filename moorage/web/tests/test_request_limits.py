"""Bodies over the limit answer 413 ``request_too_large`` in the error shape (API) or as a
page, never a 500 with a traceback; source archives keep their own, larger limit."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from pytest_django.fixtures import Settings

from moorage.testing.api_checks import API, assert_api_error
from moorage.testing.factories import PASSWORD, Member

pytestmark = pytest.mark.django_db

OVER = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1024


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unauthenticated_token_request_over_the_limit_is_413(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"email": "a@example.com", "password": "x" * OVER, "name": "cli"})
    response = client.post(f"{API}/auth/token", data=body, content_type="application/json")
    error = assert_api_error(response, 413, "request_too_large")
    assert error["detail"] == {"max_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE}
    _no_traceback(caplog)


def test_an_api_body_over_the_limit_is_413(
    client: Client, owner: Member, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"type": "container_registry", "name": "big", "server": "ghcr.io",
                       "username": "u", "secret": "s" * OVER})
    response = client.post(f"{API}/credentials", data=body, content_type="application/json",
                           headers=owner.auth)
    assert_api_error(response, 413, "request_too_large")
    _no_traceback(caplog)


def test_a_page_form_over_the_limit_is_a_413_page(
    client: Client, owner: Member, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.post("/login/", {"email": owner.user.email, "password": "p" * OVER})
    assert response.status_code == 413
    page = response.content.decode()
    assert "Too large" in page and "request_too_large" in page
    assert "Traceback" not in page
    _no_traceback(caplog)
    # Logged in, a form over the limit is the same friendly page.
    client.login(email=owner.user.email, password=PASSWORD)
    response = client.post("/account/rename/", {"name": "n" * OVER})
    assert response.status_code == 413


def test_a_source_archive_larger_than_the_form_limit_still_uploads(
    client: Client, owner: Member, settings: Settings, tmp_path: Path
) -> None:
    settings.DATA_DIR = tmp_path / "data"
    created = client.post(f"{API}/apps", data=json.dumps(
        {"name": "big-src", "source": "build", "source_upload": True}),
        content_type="application/json", headers=owner.auth)
    assert created.status_code == 201, created.content
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in (("Dockerfile", b"FROM busybox:1\n"), ("blob", os.urandom(OVER))):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    archive = buffer.getvalue()
    assert len(archive) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    uploaded = client.post(f"{API}/apps/{created.json()['id']}/source", data=archive,
                           content_type="application/gzip", headers=owner.auth)
    assert uploaded.status_code == 201, uploaded.content
    assert uploaded.json()["size"] == len(archive)
