"""The login page in a real Chromium: it renders, a login works, a wrong password is shown."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from moorage.testing import factories
from moorage.testing.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_page_renders_and_a_login_shows_the_account(
    page: Page, live_server: object
) -> None:
    owner = factories.make_account("Browser Co")
    url = str(live_server.url)  # type: ignore[attr-defined]
    page.goto(url + "/")
    assert page.url.startswith(url + "/login/")
    assert page.get_by_role("heading", name="Log in to Moorage").is_visible()

    page.get_by_label("E-mail").fill(owner.user.email)
    page.get_by_label("Password").fill("not the password 1")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_text("The e-mail address or password is not right.").is_visible()

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(url + "/")
    assert page.get_by_test_id("account-name").inner_text() == "Browser Co"
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link").all_inner_texts() == [
        "Apps", "Credentials", "Regions", "Activity", "Account",
    ]
    assert PASSWORD not in page.content()
