"""The Credentials page in a real Chromium: add two, watch the Default badge move."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import Page, expect

from moorage.accounts.choices import Role
from moorage.testing import factories
from moorage.testing.factories import PASSWORD, Member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(page: Page, url: str, member: Member) -> None:
    page.goto(url + "/login/")
    page.get_by_label("E-mail").fill(member.user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(url + "/")


def _add(page: Page, url: str, *, name: str, preset: str, server: str | None = None) -> None:
    page.goto(url + "/credentials/new/")
    # Choosing a preset swaps the fields in with htmx: wait for the swap to settle before
    # typing, or the late swap replaces what was typed.
    with page.expect_response(lambda response: "/credentials/new/?" in response.url):
        page.get_by_label("Registry", exact=True).select_option(preset)
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    )
    if server is None:
        expect(page.get_by_label("Registry server")).not_to_have_value("")
    else:
        page.get_by_label("Registry server").fill(server)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Username").fill("robot")
    page.locator("#id_secret").fill("Browser-Secret-1")
    page.get_by_role("button", name="Save credential").click()
    page.wait_for_url(url + "/credentials/")


def test_add_two_and_move_the_default(page: Page, live_server: object) -> None:
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner = factories.make_account("Browser Co")
    _login(page, url, owner)
    _add(page, url, name="ghcr-prod", preset="ghcr")
    _add(page, url, name="internal", preset="generic", server="registry.example.com:5000")

    first, second = page.locator('tr[data-credential="ghcr-prod"]'), page.locator(
        'tr[data-credential="internal"]')
    expect(first.get_by_test_id("default-badge")).to_be_visible()
    expect(second.get_by_test_id("default-badge")).to_have_count(0)
    expect(first.get_by_role("cell").nth(2)).to_have_text("ghcr.io")

    second.get_by_role("button", name="Set as default").click()
    expect(second.get_by_test_id("default-badge")).to_be_visible()
    expect(first.get_by_test_id("default-badge")).to_have_count(0)
    expect(first.get_by_role("button", name="Set as default")).to_be_visible()
    assert "Browser-Secret-1" not in page.content()
    if os.environ.get("MOORAGE_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["MOORAGE_SCREENSHOTS"], "credentials.png"),
                        full_page=True)

    member = factories.add_member(owner, Role.MEMBER)
    page.context.clear_cookies()
    _login(page, url, member)
    page.goto(url + "/credentials/")
    row = page.locator('tr[data-credential="internal"]')
    expect(row.get_by_test_id("default-badge")).to_be_visible()
    expect(row.get_by_role("button", name="Set as default")).to_have_count(0)
    expect(row.get_by_role("link", name="Edit")).to_have_count(0)
    expect(row.get_by_role("link", name="Delete")).to_have_count(0)
    expect(page.get_by_role("link", name="Add credential")).to_have_count(0)
