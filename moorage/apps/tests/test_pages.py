"""The App page: the runtime-pull select, its live preview, saving, deploying, the log."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from moorage.accounts.choices import Role
from moorage.apps.models import App
from moorage.deployments.models import Deployment
from moorage.regions import services as region_services
from moorage.testing import factories
from moorage.testing.credentials import make_credential
from moorage.testing.factories import PASSWORD, Member
from moorage.testing.regions import make_region

pytestmark = pytest.mark.django_db


def _login(client: Client, member: Member) -> Client:
    client.post("/login/", {"email": member.user.email, "password": PASSWORD})
    return client


def _options(page: str) -> list[tuple[str, str]]:
    select = re.search(r'<select name="pull" id="id_pull".*?</select>', page, re.S)
    assert select, page
    return re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', select.group(0))


def test_the_select_lists_default_none_then_the_accounts_registry_credentials(
    client: Client, owner: Member, other_owner: Member
) -> None:
    ghcr = make_credential(owner, name="ghcr-prod", server="ghcr.io")
    hub = make_credential(owner, name="hub", server="docker.io")
    make_credential(owner, name="gh", type="git", server="github.com")
    make_credential(other_owner, name="theirs", server="ghcr.io")
    page = _login(client, owner).get("/apps/new/").content.decode()
    assert _options(page) == [
        ("account_default", "Use account default (ghcr-prod)"),
        ("none", "None (public image)"),
        (f"credential:{ghcr.id}", "ghcr-prod"),
        (f"credential:{hub.id}", "hub"),
    ]
    assert re.search(r'<option value="account_default" selected', page)
    # The select sits right under the Image input.
    assert page.index('id="id_image"') < page.index('id="id_pull"') < page.index(
        'id="pull-preview"')


def test_the_preview_says_what_deploys_will_do(client: Client, owner: Member) -> None:
    ghcr = make_credential(owner, name="ghcr-prod", server="ghcr.io")
    _login(client, owner)

    def preview(image: str, pull: str) -> str:
        text = client.get("/apps/preview/", {"image": image, "pull": pull}).content.decode()
        match = re.search(r'data-testid="pull-preview">(.*?)</p>', text, re.S)
        assert match, text
        return match.group(1).replace("&#x27;", "'")

    assert preview("ghcr.io/acme/api:1.4", "account_default") == \
        "Deploys will pull ghcr.io/acme/api:1.4 with 'ghcr-prod' (ghcr.io)."
    assert "will be refused" in preview("docker.io/library/nginx:1", f"credential:{ghcr.id}")
    # The default is for ghcr.io: a Docker Hub image is pulled anonymously, and said so.
    assert preview("nginx:1.27", "account_default") == (
        "Deploys will pull nginx:1.27 anonymously: the account default 'ghcr-prod' is for "
        "ghcr.io, and nginx:1.27 is on docker.io. If the image is private, choose a "
        "credential for docker.io.")
    assert "without a credential (public image)" in preview("nginx:1", "none")
    assert "not valid" in preview("UPPER/Case", "none")


def test_saving_an_app_on_the_page(client: Client, owner: Member) -> None:
    region = make_region("eu-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=[region.slug])
    ghcr = make_credential(owner, name="ghcr-prod", server="ghcr.io")
    _login(client, owner)
    response = client.post("/apps/new/", {
        "name": "api", "source": "image", "image": "ghcr.io/acme/api:1.4",
        "pull": f"credential:{ghcr.id}", "port": "8080", "command": "sh -c 'httpd -f'",
        "env": "LOG_LEVEL=info", "secret_env": "DB_PASSWORD=Page-Env-Secret",
        "regions": ["eu-1"],
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    app = App.objects.get(name="api")
    assert app.runtime_pull == "credential" and app.runtime_pull_credential == ghcr
    assert app.command == ["sh", "-c", "httpd -f"]
    page = client.get(f"/apps/{app.id}/").content.decode()
    assert "Page-Env-Secret" not in page
    assert "DB_PASSWORD" in page
    deploy = client.post(f"/apps/{app.id}/deploy/", follow=True).content.decode()
    assert "Deploy #1 queued for eu-1." in deploy
    deployment = Deployment.objects.get(app=app)
    log = client.get(f"/deployments/{deployment.id}/log/").content.decode()
    assert 'hx-trigger="every 1s"' in log and "Queued" in log


def test_a_deploy_records_that_the_default_was_for_another_registry(
    client: Client, owner: Member
) -> None:
    region = make_region("eu-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=[region.slug])
    make_credential(owner, name="ghcr-prod", server="ghcr.io")  # the default
    _login(client, owner)
    client.post("/apps/new/", {"name": "web", "source": "image", "image": "nginx:1.27",
                               "pull": "account_default", "regions": ["eu-1"]})
    app = App.objects.get(name="web")
    deploy = client.post(f"/apps/{app.id}/deploy/", follow=True).content.decode()
    assert "Deploy #1 queued for eu-1." in deploy
    pulls = re.findall(r'data-testid="deployment-pull">([^<]*)<', deploy)
    assert pulls == ["anonymous (the default is for ghcr.io)"] * 2  # latest, and the table


def test_another_accounts_credential_is_refused_by_the_server(
    client: Client, owner: Member, other_owner: Member
) -> None:
    theirs = make_credential(other_owner, name="theirs", server="ghcr.io")
    _login(client, owner)
    response = client.post("/apps/new/", {
        "name": "api", "source": "image", "image": "ghcr.io/acme/api:1.4",
        "pull": f"credential:{theirs.id}"})
    assert response.status_code == 422
    assert not App.objects.filter(name="api").exists()


def test_viewers_see_the_app_but_cannot_change_or_deploy(client: Client, owner: Member) -> None:
    from moorage.apps.services import app_create

    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     image="ghcr.io/acme/api:1.4")
    viewer = factories.add_member(owner, Role.VIEWER)
    page = _login(client, viewer).get(f"/apps/{app.id}/").content.decode()
    assert ">Deploy</button>" not in page and "Delete app" not in page
    assert client.post(f"/apps/{app.id}/deploy/").status_code == 403
    assert client.post(f"/apps/{app.id}/delete/").status_code == 403
    assert App.objects.filter(id=app.id).exists()


def test_the_readiness_timeout_on_the_page(client: Client, owner: Member) -> None:
    _login(client, owner)
    new = client.get("/apps/new/").content.decode()
    assert re.search(r'<input type="number" name="ready_timeout" value="30"[^>]*'
                     r'min="1"[^>]*max="600"', new), new
    base = {"name": "api", "source": "image", "image": "ghcr.io/acme/api:1.4",
            "pull": "none", "port": "8080"}
    assert client.post("/apps/new/", base | {"ready_timeout": "45"}).status_code == 302
    app = App.objects.get(name="api")
    assert app.ready_timeout == 45
    page = client.get(f"/apps/{app.id}/").content.decode()
    assert 'name="ready_timeout" value="45"' in page
    # Saved unchanged, it stays; out of bounds, the field says why and nothing changes.
    assert client.post(f"/apps/{app.id}/", base | {"ready_timeout": "45"}).status_code == 302
    refused = client.post(f"/apps/{app.id}/", base | {"ready_timeout": "0"})
    assert refused.status_code == 422
    assert re.search(r'id_ready_timeout.*?<p class="field-error">[^<]*greater than or equal '
                     r'to 1', refused.content.decode(), re.S)
    app.refresh_from_db()
    assert app.ready_timeout == 45
