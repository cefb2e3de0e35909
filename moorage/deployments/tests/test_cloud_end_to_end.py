"""Private images deployed with exchanged cloud logins, end to end: the control plane (live
server), the real agent in this process, a real dockerd and the real ``docker-registry``.

AWS ECR's token service is moto's real server; Google's is a local token endpoint checking
the JWT the key signs. The registry's htpasswd user is ``AWS`` with the password moto's token
decodes to, or ``oauth2accesstoken`` with the access token Google's fake issued. Invariant
I10: the long-lived key (the canary) never reaches the region: not its data directory, its
logs, the sync payloads, a container, a page or an API answer.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from django.test import Client

from moorage.apps.services import app_create
from moorage.credentials import refresh, services
from moorage.credentials.models import Credential
from moorage.deployments.tests.conftest import RunAgent
from moorage.testing.cloud import MOTO_ECR_PASSWORD, GoogleTokenEndpoint, MotoEcr
from moorage.testing.factories import Member
from moorage.testing.ports import free_port
from moorage.testing.regions import AgentView, deploy_one, member_in
from moorage.testing.registry import RegistryServer
from moorage.testing.secrets_search import database_text, files_containing

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

CANARY = "Canary/Secret/" + secrets.token_urlsafe(18)


def _htpasswd(registry: RegistryServer, user: str, password: str) -> None:
    try:
        registry.add_user(user, password)
    except ValueError:
        registry.set_password(user, password)


def _ecr_image(owner: Member, registry: RegistryServer, busybox_image: Callable[..., str],
               name: str) -> tuple[str, Credential]:
    """A private image on the registry, whose user ``AWS`` has moto's token as password, and
    an ``aws_ecr`` credential for that registry (the canary as its secret access key)."""
    _htpasswd(registry, "AWS", MOTO_ECR_PASSWORD)
    repository = f"ecr/{name}-{secrets.token_hex(3)}"
    image = busybox_image(registry, repository, "1.0", marker=repository)
    credential = services.credential_create(
        actor=owner.user, membership=owner.membership, type="container_registry", name="ecr",
        server=registry.host, login_source="aws_ecr",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_region="eu-west-1", secret=CANARY)
    return image, credential


def _serve(port: int) -> list[str]:
    return ["/bin/sh", "-c", f"exec httpd -f -p {port}"]


def _nothing_leaks(secret: str, *, owner: Member, region: AgentView, agent_dir: Path,
                   app_id: int, log_text: str, docker_client: docker.DockerClient) -> None:
    """``secret`` is in no file of the agent, no agent log line, no sync payload, no page,
    no API answer, no container and nowhere in the database in clear."""
    assert files_containing(agent_dir, secret) == []
    assert secret not in log_text
    client = Client()
    assert secret not in json.dumps(region.snapshot(client))
    assert secret not in json.dumps(region.changes(client, since=0))
    client.force_login(owner.user)
    for page in ("/credentials/", f"/apps/{app_id}/", "/activity/"):
        shown = client.get(page)
        assert shown.status_code == 200, page
        assert secret not in shown.content.decode()
    for answer in ("/credentials", f"/apps/{app_id}", f"/apps/{app_id}/pull-credential",
                   f"/apps/{app_id}/deployments"):
        response = client.get("/api/v1" + answer, headers=owner.auth)
        assert response.status_code == 200, (answer, response.content[:200])
        assert secret not in response.content.decode()
    for container in docker_client.containers.list(all=True):
        assert secret not in json.dumps(container.attrs)
    assert secret not in database_text()


def test_a_private_image_deploys_with_an_ecr_credential_and_its_refreshed_token(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], docker_client: docker.DockerClient,
    aws_ecr: MotoEcr, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    owner = member_in(region, "Acme")
    image, credential = _ecr_image(owner, registry_basic, busybox_image, "api")
    port = free_port()
    app = app_create(actor=owner.user, membership=owner.membership, name="api", image=image,
                     port=port, command=_serve(port))
    preview = Client().get(f"/api/v1/apps/{app.pk}/pull-credential", headers=owner.auth)
    assert "with 'ecr' (" in preview.json()["message"]
    assert "ECR token, refreshed " in preview.json()["message"]

    first = deploy_one(owner, app.pk)
    run_agent()
    first.refresh_from_db()
    assert first.status == "running", (first.error_code, first.error_message)
    assert first.used_revision == 1
    lines = list(first.logs.values_list("line", flat=True))
    assert any("with 'ecr' (revision 1), a token its issuer said expired at 2015-01-01 00:00 "
               "UTC: trying it anyway" in line for line in lines), lines

    # The worker's refresh is a new revision the region picks up like a rotation.
    refresh.login_token_refresh_soon(credential=credential)
    assert refresh.login_tokens_refresh_due().refreshed == 1
    second = deploy_one(owner, app.pk)
    assert second.credential_revision == 2
    run_agent()
    second.refresh_from_db()
    assert (second.status, second.used_revision) == ("running", 2), second.error_message

    _nothing_leaks(CANARY, owner=owner, region=region, agent_dir=tmp_path / "agent",
                   app_id=app.pk, log_text=caplog.text, docker_client=docker_client)
    # The short-lived token rests sealed in the region too.
    assert files_containing(tmp_path / "agent", MOTO_ECR_PASSWORD) == []


def test_a_token_the_registry_refuses_while_refresh_fails_fails_the_deploy_saying_why(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], aws_ecr: MotoEcr,
) -> None:
    owner = member_in(region, "Lapsed")
    image, credential = _ecr_image(owner, registry_basic, busybox_image, "lapsed")
    app = app_create(actor=owner.user, membership=owner.membership, name="api", image=image,
                     command=["/bin/sh", "-c", "sleep 300"])
    aws_ecr.stop()
    refresh.login_token_refresh_soon(credential=credential)
    assert refresh.login_tokens_refresh_due().failed == 1
    try:
        # ECR stops accepting the token (12 hours later, in real life).
        registry_basic.set_password("AWS", "expired-" + secrets.token_hex(8))
        attempt = deploy_one(owner, app.pk)  # its expiry is unknown: the registry decides
        run_agent()
        attempt.refresh_from_db()
    finally:
        registry_basic.set_password("AWS", MOTO_ECR_PASSWORD)
    assert (attempt.status, attempt.error_code) == ("failed", "registry_unauthorized")
    assert "'ecr'" in attempt.error_message
    assert "The token of 'ecr' could not be refreshed: refresh failing since " \
        in attempt.error_message
    assert "The ECR token service at http://127.0.0.1:" in attempt.error_message
    shown = Client().get(f"/api/v1/credentials/{credential.pk}", headers=owner.auth).json()
    assert shown["token"]["status"] == "failing"


def test_a_private_image_deploys_with_a_google_service_account_key(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], docker_client: docker.DockerClient,
    google_tokens: GoogleTokenEndpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    owner = member_in(region, "Globex")
    repository = f"gar/web-{secrets.token_hex(3)}"
    image = busybox_image(registry_basic, repository, "2.0", marker=repository)
    key = google_tokens.new_key()
    credential = services.credential_create(
        actor=owner.user, membership=owner.membership, type="container_registry", name="gar",
        server=registry_basic.host, login_source="gcp_service_account", secret=key)
    [access_token] = google_tokens.tokens_for(json.loads(key)["client_email"])
    _htpasswd(registry_basic, "oauth2accesstoken", access_token)
    port = free_port()
    app = app_create(actor=owner.user, membership=owner.membership, name="web", image=image,
                     port=port, command=_serve(port))
    deployment = deploy_one(owner, app.pk)
    run_agent()
    deployment.refresh_from_db()
    assert deployment.status == "running", (deployment.error_code, deployment.error_message)
    assert Credential.objects.get(pk=credential.pk).username == "oauth2accesstoken"
    lines = " ".join(deployment.logs.values_list("line", flat=True))
    assert "with 'gar' (revision 1), a token valid until " in lines
    private_key = json.loads(key)["private_key"]
    body_line = private_key.splitlines()[4]  # a line of the key's base64 body
    _nothing_leaks(body_line, owner=owner, region=region, agent_dir=tmp_path / "agent",
                   app_id=app.pk, log_text=caplog.text, docker_client=docker_client)
    assert files_containing(tmp_path / "agent", access_token) == []
