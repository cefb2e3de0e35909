"""The App page in a real Chromium: the live pull preview and the source switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pytest_django.fixtures import Settings

from moorage.apps.models import App
from moorage.apps.tests.test_source_upload_page import ZIP
from moorage.testing import factories
from moorage.testing.browser import log_in
from moorage.testing.credentials import make_credential
from moorage.testing.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_preview_follows_the_select_and_the_image(page: Page, live_server: object) -> None:
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner = factories.make_account("Browser Co")
    make_credential(owner, name="ghcr-prod", server="ghcr.io")
    make_credential(owner, name="hub", server="docker.io")
    log_in(page, url, owner.user.email, PASSWORD)
    page.goto(url + "/apps/new/")

    select = page.get_by_label("Container registry for runtime pull")
    expect(select).to_have_value("account_default")
    preview = page.get_by_test_id("pull-preview")
    page.get_by_label("Image", exact=True).fill("ghcr.io/acme/api:1.4")
    expect(preview).to_have_text(
        "Deploys will pull ghcr.io/acme/api:1.4 with 'ghcr-prod' (ghcr.io).")
    select.select_option(label="hub")
    expect(preview).to_contain_text("will be refused")
    select.select_option(label="Use account default (ghcr-prod)")
    page.get_by_label("Image", exact=True).fill("nginx:1.27")
    expect(preview).to_have_text(
        "Deploys will pull nginx:1.27 anonymously: the account default 'ghcr-prod' is for "
        "ghcr.io, and nginx:1.27 is on docker.io. If the image is private, choose a "
        "credential for docker.io.")
    select.select_option(label="None (public image)")
    expect(preview).to_contain_text("without a credential (public image)")
    if os.environ.get("MOORAGE_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["MOORAGE_SCREENSHOTS"], "app.png"),
                        full_page=True)

    page.get_by_label("Build from source").check()
    expect(page.get_by_label("Image", exact=True)).to_be_hidden()
    expect(page.get_by_role("heading",
                            name="Custom registry for pulling images in build process")
           ).to_be_visible()
    page.get_by_label("Use image").check()
    expect(select).to_be_visible()


def test_build_mode_offers_no_account_default_and_keeps_an_empty_select_empty(
    page: Page, live_server: object
) -> None:
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner = factories.make_account("Builder Co")
    make_credential(owner, name="ghcr-prod", server="ghcr.io")  # the account default
    make_credential(owner, name="internal", server="registry.example.com:5000")
    log_in(page, url, owner.user.email, PASSWORD)
    page.goto(url + "/apps/new/")
    page.get_by_label("Build from source").check()
    card = page.locator("#build-card")
    expect(card.get_by_role("heading",
                            name="Custom registry for pulling images in build process")
           ).to_be_visible()
    select = card.get_by_label("Container registry for build pull")
    options = select.locator("option").all_inner_texts()
    assert options == ["", "ghcr-prod", "internal"]
    assert not any("default" in o.lower() for o in options)
    expect(select).to_have_value("")
    page.get_by_label("Name", exact=True).fill("built")
    page.get_by_label("Repository URL").fill("https://git.example.com/acme/api.git")
    page.get_by_role("button", name="Create app").click()
    page.wait_for_url(url + "/apps/*/")
    expect(page.locator("#build-card").get_by_label("Container registry for build pull")
           ).to_have_value("")
    app = App.objects.get(name="built")
    assert app.source == "build" and app.build_pull_credential is None


def test_a_build_app_waits_for_its_source_and_takes_a_zip_upload(
    page: Page, live_server: object, tmp_path: Path, settings: Settings
) -> None:
    settings.DATA_DIR = tmp_path / "data"  # the live server keeps the upload there
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner = factories.make_account("Upload Co")
    log_in(page, url, owner.user.email, PASSWORD)
    page.goto(url + "/apps/new/")
    page.get_by_label("Build from source").check()
    page.get_by_label("Name", exact=True).fill("uploaded")
    page.get_by_label("Upload the source instead").check()
    page.get_by_role("button", name="Create app").click()
    page.wait_for_url(url + "/apps/*/")
    archive = tmp_path / "site.zip"
    archive.write_bytes(ZIP)
    page.get_by_label("Source archive").set_input_files(str(archive))
    page.get_by_role("button", name="Upload source").click()
    expect(page.get_by_role("status")).to_contain_text("Uploaded site.zip")
    expect(page.get_by_test_id("source-archive")).to_contain_text("Building the uploaded source")
    app = App.objects.get(name="uploaded")
    assert app.source_archive is not None
    assert (tmp_path / "data" / "sources" / str(app.pk)
            / f"{app.source_archive.sha256}.tar.gz").exists()
    # A bad file: the API's error, on the form.
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not an archive")
    page.get_by_label("Source archive").set_input_files(str(bad))
    page.get_by_role("button", name="Upload source").click()
    expect(page.get_by_test_id("upload-error")).to_contain_text(
        "source_invalid The upload is not a gzipped tar archive, nor a zip")
