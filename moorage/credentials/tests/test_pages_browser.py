"""The Credentials page in a real Chromium: add two, watch the Default badge move."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from moorage.accounts.choices import Role
from moorage.apps.services import app_create
from moorage.credentials.models import Credential
from moorage.regions import services as region_services
from moorage.testing import factories
from moorage.testing.browser import log_in
from moorage.testing.credentials import make_credential
from moorage.testing.factories import PASSWORD, Member

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(page: Page, url: str, member: Member) -> None:
    log_in(page, url, member.user.email, PASSWORD)


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
    expect(first.locator("td.server code")).to_have_text("ghcr.io")

    second.get_by_text("More").click()
    second.get_by_role("button", name="Set as default").click()
    expect(second.get_by_test_id("default-badge")).to_be_visible()
    expect(first.get_by_test_id("default-badge")).to_have_count(0)
    first.get_by_text("More").click()
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
    expect(row.get_by_text("More")).to_have_count(0)
    expect(row.get_by_role("button", name="Test connection")).to_be_visible()
    expect(row.get_by_role("link", name="Edit")).to_have_count(0)
    expect(row.get_by_role("link", name="Delete")).to_have_count(0)
    expect(page.get_by_role("link", name="Add credential")).to_have_count(0)


LAYOUT = """() => {
  const table = document.querySelector("table.credentials");
  const container = table.parentElement.getBoundingClientRect();
  const rows = [...table.querySelectorAll("tbody tr")].map((row) => {
    const sync = row.querySelector("[data-testid=sync] summary");
    const actions = row.querySelector("td.actions > div");  // the controls, not the cell
    const line = parseFloat(getComputedStyle(sync).lineHeight);
    return {name: row.dataset.credential, right: row.getBoundingClientRect().right,
            syncLines: sync.getBoundingClientRect().height / line,
            actionsWidth: actions.getBoundingClientRect().width,
            actionsLines: actions.getBoundingClientRect().height / line};
  });
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
          tableRight: table.getBoundingClientRect().right, tableWidth: table.offsetWidth,
          containerRight: container.right, rows};
}"""


def _layout_account() -> Member:
    """An account whose Credentials page is as full as a real one gets: long names and hosts,
    failed tests with long messages, a git token, three regions, apps using the default."""
    owner = factories.make_account("Layout Co")
    for slug in ("eu-west-1", "us-east-1", "ap-southeast-2"):
        region_services.region_create(actor=None, slug=slug)
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-west-1", "us-east-1", "ap-southeast-2"])
    rows = [("ghcr-production-deployments", "ghcr.io", "octo-deploy-robot"),
            ("internal-registry", "registry.internal.example-corporation.com:5000",
             "svc-moorage-puller"),
            ("hub", "docker.io", "acme")]
    for name, server, username in rows:
        make_credential(owner, name=name, server=server, username=username)
    make_credential(owner, name="github-builds", type="git", server="github.com",
                    username="x-access-token")
    Credential.objects.filter(name="internal-registry").update(
        last_tested_at=timezone.now(), last_test_result="unauthorized",
        last_test_message="The registry registry.internal.example-corporation.com:5000 "
                          "rejected the credential: invalid username or password.")
    Credential.objects.filter(name="hub").update(
        last_tested_at=timezone.now(), last_test_result="ok", last_test_message="Logged in.")
    for n in range(3):
        app_create(actor=owner.user, membership=owner.membership, name=f"app-{n}",
                   image=f"ghcr.io/acme/app-{n}:1")
    return owner


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)],
                         ids=["desktop-1280", "phone-390"])
def test_the_credentials_page_fits_the_window(
    browser: Browser, live_server: object, tmp_path: Path, width: int, height: int,
) -> None:
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner = _layout_account()
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        _login(page, url, owner)
        page.goto(url + "/credentials/")
        shot = tmp_path / f"credentials-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 0
        layout = page.evaluate(LAYOUT)
        assert layout["scrollWidth"] <= layout["innerWidth"], layout
        assert layout["tableRight"] <= layout["containerRight"] + 0.5, layout
        assert len(layout["rows"]) == 4
        for row in layout["rows"]:
            assert row["right"] <= layout["containerRight"] + 0.5, row
            assert row["syncLines"] < 1.6, row  # "synced to 0 of 3 regions" on one line
            assert row["actionsLines"] < 2.6, row  # at most two rows of small controls
            if width >= 1280:
                assert row["actionsWidth"] <= layout["tableWidth"] * 0.25, row
        # Everything is still there and usable: the default, the actions, the details.
        first = page.locator('tr[data-credential="ghcr-production-deployments"]')
        expect(first.get_by_test_id("default-badge")).to_be_visible()
        other = page.locator('tr[data-credential="internal-registry"]')
        expect(other.get_by_role("button", name="Test connection")).to_be_visible()
        other.get_by_text("More").click()
        expect(other.get_by_role("button", name="Set as default")).to_be_visible()
        expect(other.get_by_role("link", name="Edit")).to_be_visible()
        expect(other.get_by_role("link", name="Delete")).to_be_visible()
        after = page.evaluate(LAYOUT)  # an open menu overflows nothing either
        assert after["scrollWidth"] <= after["innerWidth"], after
        page.screenshot(path=str(tmp_path / f"credentials-{width}-menu.png"), full_page=True)
        page.keyboard.press("Escape")
        expect(other.get_by_role("link", name="Edit")).to_be_hidden()
    finally:
        context.close()


def test_the_ecr_preset_asks_for_an_access_key_and_the_row_shows_the_token(
    page: Page, live_server: object, aws_ecr: object,
) -> None:
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner = factories.make_account("Cloud Co")
    _login(page, url, owner)
    page.goto(url + "/credentials/new/")
    with page.expect_response(lambda response: "/credentials/new/?" in response.url):
        page.get_by_label("Registry", exact=True).select_option("ecr")
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    )
    expect(page.get_by_label("Logs in with")).to_have_value("aws_ecr")
    expect(page.get_by_label("Username")).to_have_count(0)
    page.get_by_label("Name", exact=True).fill("ecr")
    page.get_by_label("AWS access key id").fill("AKIAIOSFODNN7EXAMPLE")
    page.get_by_label("AWS region").fill("eu-west-1")
    page.locator("#id_secret").fill("Browser/Aws/Secret/Key/1")
    page.get_by_role("button", name="Save credential").click()
    page.wait_for_url(url + "/credentials/")
    row = page.locator('tr[data-credential="ecr"]')
    expect(row.get_by_test_id("token-state")).to_contain_text("ECR token, refreshed")
    expect(row.get_by_role("button", name="Refresh now")).to_be_visible()
