"""The delete page of a default that apps pull with, in a real Chromium: it names them, needs
the box ticked, and says which credential is the default afterwards (or that none is)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from moorage.apps.services import app_create
from moorage.credentials.models import Credential
from moorage.testing import factories
from moorage.testing.browser import log_in
from moorage.testing.credentials import make_credential
from moorage.testing.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_deleting_the_default_apps_pull_with_needs_the_box_ticked(
    page: Page, live_server: object
) -> None:
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner = factories.make_account("Delete Co")
    hub = make_credential(owner, name="hub", server="docker.io")
    ghcr = make_credential(owner, name="ghcr", server="ghcr.io")
    for name, image in (("web", "nginx:1.27"), ("tool", "ghcr.io/acme/tool:1")):
        app_create(actor=owner.user, membership=owner.membership, name=name, image=image)
    log_in(page, url, owner.user.email, PASSWORD)

    page.goto(url + f"/credentials/{hub.pk}/delete/")
    expect(page.get_by_test_id("default-warning")).to_have_text(
        "'hub' is the account default, and 1 app on \"Use account default\" pulls with it "
        "from docker.io: web. After the deletion it would pull anonymously: the next "
        "default, 'ghcr', is for ghcr.io. Confirm the deletion to go ahead.")
    box = page.get_by_label("Delete it anyway: web will no longer pull with it")
    expect(box).not_to_be_checked()
    page.get_by_role("button", name="Delete credential").click()
    expect(page.get_by_test_id("delete-error")).to_contain_text("credential_default_in_use")
    assert Credential.objects.get(pk=hub.pk).is_default

    page.get_by_label("Delete it anyway: web will no longer pull with it").check()
    page.get_by_role("button", name="Delete credential").click()
    expect(page.get_by_role("status")).to_have_text(
        "Credential 'hub' deleted. 'ghcr' is now the account default.")
    assert not Credential.objects.filter(pk=hub.pk).exists()

    # ghcr is now the default "tool" pulls with, and the last one.
    page.goto(url + f"/credentials/{ghcr.pk}/delete/")
    expect(page.get_by_test_id("default-warning")).to_contain_text(
        "tool. After the deletion it would pull anonymously: no registry credential would "
        "be left.")
    page.get_by_label("Delete it anyway: tool will no longer pull with it").check()
    page.get_by_role("button", name="Delete credential").click()
    expect(page.get_by_role("status")).to_have_text(
        "Credential 'ghcr' deleted. No default left: apps on \"Use account default\" pull "
        "without a credential.")


def test_a_credential_an_app_names_cannot_be_deleted_and_the_page_says_why(
    page: Page, live_server: object
) -> None:
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner = factories.make_account("Named Co")
    hub = make_credential(owner, name="hub", server="docker.io")
    app_create(actor=owner.user, membership=owner.membership, name="api", image="nginx:1",
               runtime_pull="credential", runtime_pull_credential_id=hub.pk)
    log_in(page, url, owner.user.email, PASSWORD)
    page.goto(url + f"/credentials/{hub.pk}/delete/")
    expect(page.get_by_test_id("delete-naming")).to_have_text(
        "It cannot be deleted while api names it: choose another credential for it first.")
    page.get_by_role("button", name="Delete credential").click()
    expect(page.get_by_test_id("delete-error")).to_contain_text(
        "credential_in_use 'hub' is the pull credential of api")
    assert Credential.objects.filter(pk=hub.pk).exists()
