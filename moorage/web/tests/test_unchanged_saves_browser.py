"""Every page form with a Save, saved unchanged in a real Chromium, changes nothing.

The values are the awkward ones people really have (a quoted ``sh -c`` command, values with
spaces, quotes, ``=``, ``#``, trailing blanks, several lines, non-ASCII), set through the
services as the API and the CLI set them. After each save the whole state of the account is
compared with the state before: the apps as the API shows them (``updated_at`` included),
their variables as stored (sealed values included), the credentials' rows, the account's
regions, name and roles, and the audit trail (every service audits what it changes).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from moorage.accounts.choices import Role
from moorage.accounts.models import Account, Membership
from moorage.apps.api import app_out
from moorage.apps.models import App, EnvVar
from moorage.apps.services import BuildInput, EnvInput, app_create
from moorage.audit.models import AuditEvent
from moorage.credentials import services as credential_services
from moorage.credentials.models import Credential, LoginToken
from moorage.regions.models import AccountRegion, Change
from moorage.regions.services import account_regions_set
from moorage.testing import factories
from moorage.testing.browser import log_in
from moorage.testing.cloud import GoogleTokenEndpoint, MotoEcr
from moorage.testing.credentials import make_credential
from moorage.testing.factories import PASSWORD, Member
from moorage.testing.regions import make_region

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

#: The command of issue 13, item 2: joined with spaces, it came back as 9 arguments.
QUOTED = ["sh", "-c", "echo ui-start; exec httpd -f -p 18111 -h /www"]
AWKWARD_COMMAND = ["/bin/app", "--greeting", "it's \"fine\"", "", "a  b", "tab\there", "$HOME",
                   "x=y", "#not-a-comment", "ünïcode"]
AWKWARD_ENV = [
    EnvInput("PLAIN", "value"), EnvInput("SPACES", "  two  spaces around  "),
    EnvInput("QUOTES", "'single' \"double\""), EnvInput("EQUALS", "a=b=c"),
    EnvInput("HASH", "#not a comment"), EnvInput("EMPTY", ""),
    EnvInput("UNICODE", "ünïcødé ✓"), EnvInput("PEM", "-----BEGIN-----\nline 2\r\nline 3\n"),
    EnvInput("SEPARATORS", "a\u2028b\x0cc"),
    EnvInput("TRAILING", "ends with blanks   "),  # the last line of the textarea
    EnvInput("API_KEY", "s3cr3t value ", secret=True),
    EnvInput("DB_PASSWORD", "p@ss=word", secret=True),
]


def _state(account: Account) -> dict[str, Any]:
    """Everything a save could change, as stored."""
    return {
        "apps": {a.name: app_out(a) for a in App.objects.filter(account=account)},
        "env": list(EnvVar.objects.filter(app__account=account).order_by("app_id", "name")
                    .values("app_id", "name", "value", "secret", "sealed")),
        "credentials": list(Credential.objects.filter(account=account).order_by("id").values()),
        "tokens": list(LoginToken.objects.filter(credential__account=account)
                       .order_by("credential_id").values()),
        "account": list(Account.objects.filter(pk=account.pk).values()),
        "regions": sorted(AccountRegion.objects.filter(account=account)
                          .values_list("region__slug", flat=True)),
        "roles": sorted(Membership.objects.filter(account=account)
                        .values_list("user__email", "role")),
        "audit": list(AuditEvent.objects.filter(account=account).order_by("id")
                      .values_list("action", "details")),
        "changes": Change.objects.count(),
    }


def _world() -> tuple[Member, dict[str, App]]:
    owner = factories.make_account("Unchanged Co")
    factories.add_member(owner, Role.VIEWER, "viewer@unchanged.example")
    for slug in ("eu-1", "us-1", "ap-1"):
        make_region(slug)
    account_regions_set(actor=owner.user, membership=owner.membership, slugs=["eu-1", "us-1"])
    default = make_credential(owner, name="hub-prod", server="docker.io", email="ops@acme.io")
    ghcr = make_credential(owner, name="ghcr ci ✓", server="ghcr.io", username="acme-bot")
    git = make_credential(owner, type="git", name="github", server="github.com",
                          username="x-access-token")
    assert default.is_default
    apps = {
        "ui": app_create(actor=owner.user, membership=owner.membership, name="ui",
                         image="ghcr.io/acme/ui:1.4", runtime_pull="credential",
                         runtime_pull_credential_id=ghcr.pk, port=18111, command=QUOTED,
                         replicas=3, env=AWKWARD_ENV, regions=["eu-1"]),
        "bare": app_create(actor=owner.user, membership=owner.membership, name="bare",
                           image="nginx:1.27", runtime_pull="none"),
        "odd": app_create(actor=owner.user, membership=owner.membership, name="odd",
                          image="acme/odd@sha256:" + "a" * 64, command=AWKWARD_COMMAND,
                          env=[EnvInput("ONLY", "one")]),
        "built": app_create(
            actor=owner.user, membership=owner.membership, name="built", source="build",
            build=BuildInput(git_url="https://github.com/acme/api.git", git_ref="release/2.x",
                             git_credential_id=git.pk, dockerfile="deploy/Dockerfile.prod",
                             context="services/api",
                             build_args={"GREETING": "hello world", "EQ": "k=v",
                                         "PAD": " padded ", "EMPTY": "",
                                         "LINES": "one\ntwo\r\nthree"},
                             build_pull_credential_id=default.pk),
            command=["./serve", "--name", "it's"], env=[EnvInput("MODE", "build me")],
            regions=["eu-1", "us-1"]),
    }
    return owner, apps


def _save(page: Page, url: str, button: str, message: str) -> None:
    page.goto(url)
    page.get_by_role("button", name=button, exact=True).click()
    expect(page.get_by_role("status")).to_contain_text(message)


def test_saving_every_page_form_unchanged_changes_nothing(
    page: Page, live_server: object, aws_ecr: MotoEcr, google_tokens: GoogleTokenEndpoint,
) -> None:
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner, apps = _world()
    # Credentials exchanged for tokens: an unchanged save must not exchange again either.
    google_key = google_tokens.new_key()
    for fields in ({"name": "ecr", "login_source": "aws_ecr",
                    "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_region": "eu-west-1",
                    "secret": "ecr-secret-access-key"},
                   {"name": "gar", "login_source": "gcp_service_account",
                    "server": "europe-docker.pkg.dev", "secret": google_key}):
        credential_services.credential_create(actor=owner.user, membership=owner.membership,
                                              type="container_registry", **fields)

    def exchanges() -> tuple[int, int]:
        email = json.loads(google_key)["client_email"]
        return aws_ecr.token_requests, len(google_tokens.tokens_for(email))

    log_in(page, url, owner.user.email, PASSWORD)
    before, exchanged = _state(owner.account), exchanges()
    assert before["apps"]["ui"]["command"] == QUOTED

    saves = [(f"/apps/{app.pk}/", "Save", "Saved.") for app in apps.values()]
    saves += [(f"/credentials/{c.pk}/edit/", "Save", "saved.")
              for c in Credential.objects.filter(account=owner.account)]
    saves += [("/regions/", "Save the account's regions", "deploys to: eu-1, us-1"),
              ("/account/", "Rename", "Account renamed.")]
    for path, button, message in saves:
        _save(page, url + path, button, message)
        assert _state(owner.account) == before, f"saving {path} unchanged changed something"
    for membership in Membership.objects.filter(account=owner.account).select_related("user"):
        email = membership.user.email
        page.goto(url + "/account/")
        page.locator(f'tr[data-member="{email}"]').get_by_role("button", name="Change").click()
        expect(page.get_by_role("status")).to_contain_text(f"{email} is now")
        assert _state(owner.account) == before, f"saving {email}'s role unchanged changed it"
    assert exchanges() == exchanged


def test_editing_only_the_env_keeps_a_quoted_command(page: Page, live_server: object) -> None:
    """Issue 13, item 2, as reported: change the env on the App page, Save, command intact."""
    url = str(live_server.url)  # type: ignore[attr-defined]
    owner, apps = _world()
    app = apps["ui"]
    log_in(page, url, owner.user.email, PASSWORD)
    page.goto(url + f"/apps/{app.pk}/")
    command = page.get_by_label("Command")
    expect(command).to_have_value("sh -c 'echo ui-start; exec httpd -f -p 18111 -h /www'")
    env = page.get_by_label("Environment", exact=True)
    env.fill(env.input_value().replace("PLAIN=value", "PLAIN=changed"))
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Saved.")
    app.refresh_from_db()
    assert app.command == QUOTED
    values = {v.name: v.value for v in app.env.filter(secret=False)}
    assert values == {e.name: e.value for e in AWKWARD_ENV if not e.secret} | {"PLAIN": "changed"}
    [event] = AuditEvent.objects.filter(account=owner.account, action="app.updated")
    assert event.details["changed"] == ["env:PLAIN"]

    # Unbalanced quotes: an error on the field, and nothing saved.
    command.fill("sh -c 'echo unbalanced")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#id_command + .field-error")).to_have_text(
        "The command cannot be split into arguments: No closing quotation. Quote it as a "
        "shell would, like sh -c 'echo hi; exec httpd -f'.")
    app.refresh_from_db()
    assert app.command == QUOTED
