"""The Credentials pages through Django's test client."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from moorage.accounts.choices import Role
from moorage.credentials import vault
from moorage.credentials.models import Credential
from moorage.testing import factories
from moorage.testing.credentials import make_credential
from moorage.testing.factories import PASSWORD, Member

pytestmark = pytest.mark.django_db


def _login(client: Client, member: Member) -> Client:
    assert client.post("/login/", {"email": member.user.email, "password": PASSWORD}) \
        .status_code == 302
    return client


def _row(page: str, name: str) -> str:
    match = re.search(rf'<tr data-credential="{re.escape(name)}".*?</tr>', page, re.S)
    assert match, f"no row for {name}"
    return match.group(0)


def test_list_shows_default_badge_and_actions_for_admins(client: Client, owner: Member) -> None:
    make_credential(owner, name="hub", server="docker.io")
    make_credential(owner, name="ghcr", server="ghcr.io")
    make_credential(owner, name="gh", type="git", server="github.com")
    page = _login(client, owner).get("/credentials/").content.decode()
    assert 'data-testid="default-badge"' in _row(page, "hub")
    assert "default-badge" not in _row(page, "ghcr")
    assert "Set as default" in _row(page, "ghcr")
    assert "Set as default" not in _row(page, "hub")
    assert "Set as default" not in _row(page, "gh") and "Test connection" not in _row(page, "gh")
    assert "Add credential" in page
    assert "0 apps" in _row(page, "hub")


def test_member_sees_the_list_without_edit_actions(client: Client, owner: Member) -> None:
    make_credential(owner, name="hub")
    member = factories.add_member(owner, Role.MEMBER)
    page = _login(client, member).get("/credentials/").content.decode()
    row = _row(page, "hub")
    assert "Edit" not in row and "Delete" not in row and "Set as default" not in row
    assert "Test connection" in row  # members may test
    assert "Add credential" not in page
    assert client.get("/credentials/new/").status_code == 403


def test_viewer_sees_no_test_button(client: Client, owner: Member) -> None:
    make_credential(owner, name="hub")
    viewer = factories.add_member(owner, Role.VIEWER)
    row = _row(_login(client, viewer).get("/credentials/").content.decode(), "hub")
    assert "Test connection" not in row


def test_add_form_changes_fields_with_type_and_preset(client: Client, owner: Member) -> None:
    _login(client, owner)
    page = client.get("/credentials/new/").content.decode()
    assert "Registry server" in page and 'name="preset"' in page
    git = client.get("/credentials/new/?type=git", headers={"HX-Request": "true"})
    fragment = git.content.decode()
    assert "<html" not in fragment  # htmx gets the fields alone
    assert "Git host" in fragment and "Token" in fragment and 'name="preset"' not in fragment
    gar = client.get("/credentials/new/?type=container_registry&preset=gar",
                     headers={"HX-Request": "true"}).content.decode()
    # Google's preset logs in with the key exchanged for tokens: no username to type.
    assert '<option value="gcp_service_account" selected>' in gar and "<textarea" in gar
    assert 'name="username"' not in gar and "oauth2accesstoken" in gar
    assert 'value="europe-docker.pkg.dev"' in gar
    ecr = client.get("/credentials/new/?type=container_registry&preset=ecr",
                     headers={"HX-Request": "true"}).content.decode()
    assert '<option value="aws_ecr" selected>' in ecr
    assert 'name="aws_access_key_id"' in ecr and 'name="aws_region"' in ecr
    assert "Secret access key" in ecr and "(optional)" in ecr
    acr = client.get("/credentials/new/?type=container_registry&preset=acr",
                     headers={"HX-Request": "true"}).content.decode()
    assert '<option value="static" selected>' in acr and 'name="username"' in acr
    assert "this is a static credential" in acr
    # Choosing a source by hand shows that source's fields.
    chosen = client.get("/credentials/new/?type=container_registry&preset=generic"
                        "&login_source=aws_ecr", headers={"HX-Request": "true"}).content.decode()
    assert 'name="aws_region"' in chosen and 'name="username"' not in chosen


def test_adding_on_the_page(client: Client, owner: Member) -> None:
    _login(client, owner)
    response = client.post("/credentials/new/", {
        "type": "container_registry", "preset": "ghcr", "name": "ghcr-prod",
        "server": "https://ghcr.io/", "username": "octo", "secret": "Page-Secret-1",
        "email": "",
    }, follow=True)
    page = response.content.decode()
    assert "Credential &#x27;ghcr-prod&#x27; added. It is the account default." in page
    credential = Credential.objects.get(name="ghcr-prod")
    assert credential.server == "ghcr.io" and vault.open_secret(credential) == "Page-Secret-1"
    assert "Page-Secret-1" not in page


def test_errors_show_on_the_field_and_the_secret_is_not_echoed(
    client: Client, owner: Member
) -> None:
    _login(client, owner)
    response = client.post("/credentials/new/", {
        "type": "container_registry", "preset": "generic", "name": "x",
        "server": "https://ghcr.io/some/path", "username": "u", "secret": "Echo-Me-Not-9",
    })
    assert response.status_code == 422
    page = response.content.decode()
    assert "field-error" in page and "path" in page
    assert "Echo-Me-Not-9" not in page
    assert not Credential.objects.filter(name="x").exists()


def test_edit_keeps_the_password_when_left_empty_and_replace_rotates(
    client: Client, owner: Member
) -> None:
    credential = make_credential(owner, name="hub", secret="Original-Secret-1")
    _login(client, owner)
    edit = client.get(f"/credentials/{credential.id}/edit/").content.decode()
    assert "Original-Secret-1" not in edit
    client.post(f"/credentials/{credential.id}/edit/", {
        "name": "hub-renamed", "server": "registry.example.com", "username": "robot",
        "email": "", "secret": "",
    })
    fresh = Credential.objects.get(id=credential.id)
    assert fresh.name == "hub-renamed" and fresh.revision == 1
    assert vault.open_secret(fresh) == "Original-Secret-1"
    response = client.post(f"/credentials/{credential.id}/secret/", {"secret": "Rotated-2"},
                           follow=True)
    assert "replaced (revision 2)" in response.content.decode()
    assert vault.open_secret(Credential.objects.get(id=credential.id)) == "Rotated-2"


def test_set_default_and_delete_confirmation_tell_about_the_default(
    client: Client, owner: Member
) -> None:
    first = make_credential(owner, name="first")
    second = make_credential(owner, name="second")
    _login(client, owner)
    confirm = client.get(f"/credentials/{first.id}/delete/").content.decode()
    assert "second, the oldest remaining registry credential, becomes the default" in confirm
    client.post(f"/credentials/{second.id}/set-default/")
    assert Credential.objects.get(id=second.id).is_default
    response = client.post(f"/credentials/{second.id}/delete/", follow=True)
    assert "&#x27;first&#x27; is now the account default." in response.content.decode()
    last = client.get(f"/credentials/{first.id}/delete/").content.decode()
    assert "the last registry credential" in last


def test_another_accounts_credential_is_404_on_pages(
    client: Client, owner: Member, other_owner: Member
) -> None:
    theirs = make_credential(other_owner, name="theirs")
    _login(client, owner)
    for path in (f"/credentials/{theirs.id}/edit/", f"/credentials/{theirs.id}/delete/"):
        assert client.get(path).status_code == 404
    for path in (f"/credentials/{theirs.id}/set-default/", f"/credentials/{theirs.id}/test/",
                 f"/credentials/{theirs.id}/delete/"):
        assert client.post(path).status_code == 404
    assert Credential.objects.filter(id=theirs.id).exists()


def test_test_button_with_htmx_returns_the_result_cell(client: Client, owner: Member) -> None:
    from moorage.testing.ports import free_port

    credential = make_credential(owner, name="down", server=f"127.0.0.1:{free_port()}")
    _login(client, owner)
    cell = client.post(f"/credentials/{credential.id}/test/", headers={"HX-Request": "true"})
    text = cell.content.decode()
    assert "<html" not in text and "Registry unreachable" in text


def test_adding_an_ecr_credential_on_the_page(
    client: Client, owner: Member, aws_ecr: object,
) -> None:
    _login(client, owner)
    canary = "Page/Canary/" + "k" * 20
    refused = client.post("/credentials/new/", {
        "type": "container_registry", "preset": "ecr", "login_source": "aws_ecr",
        "name": "ecr", "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_region": "moon-1",
        "secret": canary})
    assert refused.status_code == 422
    page = refused.content.decode()
    assert "is not an AWS region with ECR" in page and canary not in page
    added = client.post("/credentials/new/", {
        "type": "container_registry", "preset": "ecr", "login_source": "aws_ecr",
        "name": "ecr", "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "aws_region": "eu-west-1",
        "secret": canary})
    assert added.status_code == 302, added.content.decode()[:2000]
    listing = client.get("/credentials/").content.decode()
    row = _row(listing, "ecr")
    assert "ECR token, refreshed" in row and "Refresh now" in row and "Replace key" in row
    assert canary not in listing
    credential = Credential.objects.get(name="ecr")
    edit = client.get(f"/credentials/{credential.pk}/edit/").content.decode()
    assert 'value="AKIAIOSFODNN7EXAMPLE"' in edit and "ECR token, refreshed" in edit
    assert canary not in edit
