"""The accounts pages through Django's test client: login, switcher, members, tokens, errors."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from django.template import context_processors
from django.test import Client
from django.test.utils import override_settings

from moorage.accounts.choices import Role
from moorage.accounts.models import ApiToken, Invitation, Membership
from moorage.testing import factories
from moorage.testing.factories import PASSWORD, Member

pytestmark = pytest.mark.django_db


def _login(client: Client, member: Member) -> None:
    response = client.post("/login/", {"email": member.user.email, "password": PASSWORD})
    assert response.status_code == 302, response.content[:300]


def test_pages_need_a_login(client: Client) -> None:
    for path in ("/", "/account/", "/activity/", "/apps/", "/credentials/", "/regions/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")


class _Assets(HTMLParser):
    """The URLs a page loads code and styles from: ``<script src>`` and ``<link href>``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        for name, value in attrs:
            if name == wanted and value is not None:
                self.urls.append(value)


def loaded_assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    parser.close()
    return parser.urls


def offsite(urls: list[str], origin: str) -> list[str]:
    """The URLs that resolve, against a page of ``origin``, to another origin."""
    own = urlsplit(origin)
    return [url for url in urls
            if (urlsplit(urljoin(origin + "/", url))[:2]) != (own.scheme, own.netloc)]


def test_offsite_finds_what_a_cdn_would_serve() -> None:
    html = ('<link rel="stylesheet" href="/static/a.css"><script src="rel.js"></script>'
            '<script src="https://cdn.example/htmx.js"></script>'
            '<link rel="preload" href="//fonts.example/f.woff2"><script>inline()</script>')
    urls = loaded_assets(html)
    assert urls == ["/static/a.css", "rel.js", "https://cdn.example/htmx.js",
                    "//fonts.example/f.woff2"]
    assert offsite(urls, "http://testserver") == ["https://cdn.example/htmx.js",
                                                  "//fonts.example/f.woff2"]


def test_login_shows_the_account_and_navigation(
    client: Client, owner: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CSRF token in the page is random; this one holds "cdn", as the one that once made
    # a check for the word fail. What matters is where the page loads its code from.
    monkeypatch.setattr(context_processors, "get_token", lambda request: "zcdnczrd" * 8)
    _login(client, owner)
    page = client.get("/").content.decode()
    assert "zcdnczrd" in page
    assert 'data-testid="account-name">Acme</h1>' in page
    for label in ("Apps", "Credentials", "Regions", "Activity", "Account"):
        assert f">{label}</a>" in page
    assets = loaded_assets(page)
    assert any("htmx" in url for url in assets), assets
    assert any(url.endswith("moorage.css") for url in assets), assets
    assert offsite(assets, "http://testserver") == []


def test_wrong_password_shows_an_error_on_the_form(client: Client, owner: Member) -> None:
    response = client.post("/login/", {"email": owner.user.email, "password": "nope-nope-1"})
    assert response.status_code == 401
    assert "The e-mail address or password is not right." in response.content.decode()
    assert "nope-nope-1" not in response.content.decode()


@override_settings(LOGIN_FAILURES_PER_USER_ADDRESS=2)
def test_login_page_is_rate_limited_and_says_when_to_retry(
    client: Client, owner: Member
) -> None:
    for _ in range(2):
        client.post("/login/", {"email": owner.user.email, "password": "nope-nope-1"})
    response = client.post("/login/", {"email": owner.user.email, "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert 0 < int(response["Retry-After"]) <= 15 * 60
    # The owner at another address is not locked out by these failures.
    other = client.post("/login/", {"email": owner.user.email, "password": PASSWORD},
                        REMOTE_ADDR="192.0.2.44")
    assert other.status_code == 302


def test_login_ignores_an_offsite_next(client: Client, owner: Member) -> None:
    response = client.post("/login/?next=https://evil.example/",
                           {"email": owner.user.email, "password": PASSWORD})
    assert response["Location"] == "/"


def test_csrf_is_enforced_on_forms(owner: Member) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"email": owner.user.email, "password": PASSWORD})
    assert response.status_code == 403
    assert "csrf_failed" in response.content.decode()


def test_account_switcher_changes_the_current_account(client: Client, owner: Member) -> None:
    second = factories.make_account("Second Co", owner=owner.user)
    _login(client, owner)
    assert 'data-testid="account-name">Acme<' in client.get("/").content.decode()
    page = client.post("/switch/", {"account": second.account.slug}, follow=True)
    assert 'data-testid="account-name">Second Co<' in page.content.decode()


def test_switching_to_someone_elses_account_is_404(
    client: Client, owner: Member, other_owner: Member
) -> None:
    _login(client, owner)
    response = client.post("/switch/", {"account": other_owner.account.slug})
    assert response.status_code == 404
    assert "Traceback" not in response.content.decode()


def test_viewer_gets_403_for_admin_actions_on_pages(client: Client, owner: Member) -> None:
    viewer = factories.add_member(owner, Role.VIEWER)
    _login(client, viewer)
    page = client.get("/account/").content.decode()
    assert "Invite a member" not in page  # the button is hidden...
    response = client.post("/account/invitations/", {"email": "x@example.com",
                                                      "role": "member"})
    assert response.status_code == 403  # ...and the server refuses anyway
    assert "may not manage members" in response.content.decode()
    assert not Invitation.objects.filter(email="x@example.com").exists()
    response = client.post(f"/account/members/{owner.membership.id}/role/", {"role": "viewer"})
    assert response.status_code == 403
    assert Membership.objects.get(id=owner.membership.id).role == Role.OWNER


def test_another_accounts_member_is_404_on_pages(
    client: Client, owner: Member, other_owner: Member
) -> None:
    stranger = factories.add_member(other_owner, Role.MEMBER)
    _login(client, owner)
    response = client.post(f"/account/members/{stranger.membership.id}/remove/")
    assert response.status_code == 404
    assert Membership.objects.filter(id=stranger.membership.id).exists()
    token = ApiToken.objects.filter(user=other_owner.user).first()
    assert token is not None
    assert client.post(f"/account/tokens/{token.id}/revoke/").status_code == 404


def test_token_created_on_the_page_is_shown_once_and_works(client: Client, owner: Member) -> None:
    _login(client, owner)
    page = client.post("/account/tokens/", {"name": "laptop"}).content.decode()
    match = re.search(r'data-testid="new-token">(mrg_[^<]+)<', page)
    assert match, page
    token = match.group(1)
    assert token not in client.get("/account/").content.decode()
    api = Client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200


def test_oversize_input_gets_a_field_error_and_writes_nothing(
    client: Client, owner: Member
) -> None:
    _login(client, owner)
    count = ApiToken.objects.count()
    response = client.post("/account/tokens/", {"name": "n" * 300})
    assert response.status_code == 422
    assert "at most 100 characters" in response.content.decode()
    assert ApiToken.objects.count() == count


def test_password_change_page(client: Client, owner: Member) -> None:
    _login(client, owner)
    response = client.post(
        "/account/password/",
        {"current_password": PASSWORD, "new_password": "new and long pass 7",
         "confirm_password": "new and long pass 7"},
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200  # the session survived the change
    owner.user.refresh_from_db()
    assert owner.user.check_password("new and long pass 7")


def test_error_pages_have_no_stack_trace(client: Client, owner: Member) -> None:
    _login(client, owner)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "There is nothing at this address." in body
    assert "Traceback" not in body and "urlpatterns" not in body


def test_activity_page_lists_the_accounts_events(client: Client, owner: Member) -> None:
    factories.add_member(owner, Role.VIEWER, "watcher@example.com")
    _login(client, owner)
    page = client.get("/activity/").content.decode()
    assert 'data-action="member.added"' in page
    assert "watcher@example.com" in page


def test_logout_needs_post(client: Client, owner: Member) -> None:
    _login(client, owner)
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302
