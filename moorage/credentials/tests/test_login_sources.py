"""Exchanged login sources on the control plane: AWS ECR (moto's real server) and Google
service-account keys (a local token endpoint). Creating, rotating, testing, syncing and bad
input; the long-lived key never leaves the control plane (I10) nor shows anywhere (I3)."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from moorage.agent.replica import Replica
from moorage.credentials import services
from moorage.credentials.models import Credential, LoginToken
from moorage.errors import ApplicationError
from moorage.testing.api_checks import API, assert_api_error
from moorage.testing.cloud import MOTO_ACCOUNT, MOTO_ECR_PASSWORD, GoogleTokenEndpoint, MotoEcr
from moorage.testing.factories import Member
from moorage.testing.regions import make_region, member_in
from moorage.testing.registry import RegistryServer
from moorage.testing.secrets_search import database_text

pytestmark = pytest.mark.django_db

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
#: The canary: an AWS secret access key that must never leave the control plane.
SECRET = "Canary/" + secrets.token_urlsafe(24)


def _ecr(owner: Member, **overrides: Any) -> Credential:
    fields: dict[str, Any] = {"type": "container_registry", "name": "ecr",
                              "login_source": "aws_ecr", "aws_access_key_id": KEY_ID,
                              "aws_region": "eu-west-1", "secret": SECRET}
    fields.update(overrides)
    return services.credential_create(actor=owner.user, membership=owner.membership, **fields)


def _post(client: Client, owner: Member, body: dict[str, Any]) -> Any:
    return client.post(API + "/credentials", json.dumps(body), content_type="application/json",
                       headers=owner.auth)


def test_an_ecr_credential_is_exchanged_once_and_keeps_its_token_sealed(
    owner: Member, aws_ecr: MotoEcr,
) -> None:
    before = aws_ecr.token_requests
    credential = _ecr(owner)
    assert aws_ecr.token_requests == before + 1
    # The server defaults to the registry the exchange names; the user comes from the token.
    assert credential.server == f"{MOTO_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
    assert (credential.username, credential.revision, credential.is_default) == ("AWS", 1, True)
    token = LoginToken.objects.get(credential=credential)
    assert token.expires_at.year == 2015  # moto's stale expiry...
    assert token.valid_until() is None  # ...is not trusted,
    # and means "refresh at the shortest interval".
    assert timedelta(seconds=55) < token.refresh_due_at - token.refreshed_at \
        <= timedelta(seconds=60)
    text = database_text()
    assert SECRET not in text and MOTO_ECR_PASSWORD not in text


def test_any_registry_host_is_accepted_for_ecr(owner: Member, aws_ecr: MotoEcr) -> None:
    credential = _ecr(owner, server="https://ecr-proxy.example.com:8443/")
    assert credential.server == "ecr-proxy.example.com:8443"


def test_the_api_takes_the_source_fields_and_answers_the_token_state_never_a_secret(
    client: Client, owner: Member, aws_ecr: MotoEcr,
) -> None:
    created = _post(client, owner, {"name": "ecr", "login_source": "aws_ecr",
                                    "aws_access_key_id": KEY_ID, "aws_region": "us-east-1",
                                    "secret": SECRET})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["login_source"] == "aws_ecr" and body["aws_region"] == "us-east-1"
    assert body["username"] == "AWS"
    assert body["token"]["status"] == "ok"
    assert body["token"]["summary"].startswith("ECR token, refreshed ")
    assert "expiry unknown" in body["token"]["summary"]
    listed = client.get(API + "/credentials", headers=owner.auth)
    [row] = listed.json()
    assert row["token"]["summary"] == body["token"]["summary"]
    for answer in (created, listed, client.get(API + f"/credentials/{body['id']}",
                                                headers=owner.auth)):
        assert SECRET not in answer.content.decode()
        assert MOTO_ECR_PASSWORD not in answer.content.decode()


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"aws_region": "mars-north-1"}, "aws_region_unknown", "aws_region"),
    ({"aws_region": ""}, "aws_region_required", "aws_region"),
    ({"aws_access_key_id": "not-a-key"}, "aws_access_key_id_invalid", "aws_access_key_id"),
    ({"aws_access_key_id": "ASIAIOSFODNN7EXAMPLE"}, "aws_access_key_id_temporary",
     "aws_access_key_id"),
    ({"secret": "two words"}, "aws_secret_invalid", "secret"),
    ({"username": "robot"}, "username_fixed", "username"),
    ({"login_source": "azure_magic"}, "validation_error", None),
])
def test_bad_ecr_input_is_refused_before_any_exchange(
    client: Client, owner: Member, aws_ecr: MotoEcr, body: dict[str, Any], code: str,
    field: str | None,
) -> None:
    before = aws_ecr.token_requests
    answer = _post(client, owner, {"name": "ecr", "login_source": "aws_ecr",
                                   "aws_access_key_id": KEY_ID, "aws_region": "eu-west-1",
                                   "secret": SECRET, **body})
    assert_api_error(answer, 422, code)
    if field:
        assert field in answer.json()["detail"]["fields"]
    assert aws_ecr.token_requests == before
    assert not Credential.objects.exists() and not LoginToken.objects.exists()


def test_an_unreachable_token_service_stores_nothing(
    client: Client, owner: Member, aws_ecr: MotoEcr,
) -> None:
    aws_ecr.stop()
    answer = _post(client, owner, {"name": "ecr", "login_source": "aws_ecr",
                                   "aws_access_key_id": KEY_ID, "aws_region": "eu-west-1",
                                   "secret": SECRET})
    assert_api_error(answer, 502, "exchange_unreachable")
    assert "The ECR token service at http://127.0.0.1:" in answer.json()["message"]
    assert SECRET not in answer.content.decode()
    assert not Credential.objects.exists()


def test_a_google_key_is_exchanged_for_an_access_token(
    owner: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    key = google_tokens.new_key()
    credential = services.credential_create(
        actor=owner.user, membership=owner.membership, type="container_registry", name="gar",
        server="europe-docker.pkg.dev", login_source="gcp_service_account", secret=key)
    email = json.loads(key)["client_email"]
    [issued] = google_tokens.tokens_for(email)
    assert credential.username == "oauth2accesstoken"
    token = LoginToken.objects.get(credential=credential)
    assert token.valid_until() is not None
    assert timedelta(minutes=59) < token.expires_at - token.refreshed_at <= timedelta(hours=1)
    # Half its remaining life: 30 minutes.
    assert abs((token.refresh_due_at - token.refreshed_at) - timedelta(minutes=30)) \
        < timedelta(seconds=2)
    text = database_text()
    private_key = json.loads(key)["private_key"].splitlines()[5]
    assert private_key not in text and issued not in text


@pytest.mark.parametrize(("secret", "code"), [
    ("{not json", "gcp_key_invalid"),
    ('["a", "list"]', "gcp_key_invalid"),
    (json.dumps({"type": "authorized_user", "client_id": "x", "refresh_token": "y"}),
     "gcp_key_wrong_type"),
    (json.dumps({"type": "service_account", "client_email": "a@b.iam.gserviceaccount.com"}),
     "gcp_key_invalid"),
    (json.dumps({"type": "service_account", "client_email": "a@b.iam.gserviceaccount.com",
                 "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
                 "token_uri": "https://oauth2.googleapis.com/token"}), "gcp_key_invalid"),
])
def test_bad_google_keys_are_refused_with_their_reason(
    client: Client, owner: Member, secret: str, code: str,
) -> None:
    answer = _post(client, owner, {"name": "gar", "login_source": "gcp_service_account",
                                   "server": "europe-docker.pkg.dev", "secret": secret})
    assert_api_error(answer, 422, code)
    assert answer.json()["detail"]["fields"] == {"secret": answer.json()["message"]}
    assert not Credential.objects.exists()


def test_a_token_uri_without_tls_off_this_machine_is_refused(
    client: Client, owner: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    key = json.loads(google_tokens.new_key())
    key["token_uri"] = "http://oauth.example.com/token"
    answer = _post(client, owner, {"name": "gar", "login_source": "gcp_service_account",
                                   "server": "europe-docker.pkg.dev", "secret": json.dumps(key)})
    assert_api_error(answer, 422, "gcp_token_uri_invalid")


@pytest.mark.parametrize(("mode", "status", "code"), [
    ("garbage", 502, "exchange_answer_invalid"),
    ("no_token", 502, "exchange_answer_invalid"),
    ("lying_expiry", 502, "token_expiry_invalid"),
])
def test_a_token_service_answering_nonsense_stores_nothing(
    client: Client, owner: Member, google_tokens: GoogleTokenEndpoint, mode: str, status: int,
    code: str,
) -> None:
    key = google_tokens.new_key()
    google_tokens.mode = mode
    answer = _post(client, owner, {"name": "gar", "login_source": "gcp_service_account",
                                   "server": "europe-docker.pkg.dev", "secret": key})
    assert_api_error(answer, status, code)
    assert not Credential.objects.exists()


def test_a_google_key_the_service_rejects_is_not_stored(
    client: Client, owner: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    key = google_tokens.new_key()
    google_tokens.forget(json.loads(key)["client_email"])  # the key was deleted in IAM
    answer = _post(client, owner, {"name": "gar", "login_source": "gcp_service_account",
                                   "server": "europe-docker.pkg.dev", "secret": key})
    assert_api_error(answer, 422, "exchange_rejected")
    assert "invalid_grant" in answer.json()["message"]


def test_a_rotation_to_a_refused_key_changes_nothing_and_keeps_the_token(
    owner: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    key = google_tokens.new_key()
    credential = services.credential_create(
        actor=owner.user, membership=owner.membership, type="container_registry", name="gar",
        server="europe-docker.pkg.dev", login_source="gcp_service_account", secret=key)
    before = LoginToken.objects.get(credential=credential)
    replacement = google_tokens.new_key()
    google_tokens.forget(json.loads(replacement)["client_email"])
    with pytest.raises(ApplicationError) as refused:
        services.credential_update(actor=owner.user, membership=owner.membership,
                                   credential_id=credential.pk, secret=replacement)
    assert refused.value.code == "exchange_rejected"
    credential.refresh_from_db()
    after = LoginToken.objects.get(credential=credential)
    assert credential.revision == 1
    assert (after.token, after.expires_at) == (before.token, before.expires_at)

    good = google_tokens.new_key()
    rotated = services.credential_update(actor=owner.user, membership=owner.membership,
                                         credential_id=credential.pk, secret=good)
    assert rotated.revision == 2
    assert LoginToken.objects.get(credential=credential).token != before.token


def test_switching_sources_both_ways(owner: Member, aws_ecr: MotoEcr) -> None:
    static = services.credential_create(
        actor=owner.user, membership=owner.membership, type="container_registry", name="reg",
        server="registry.example.com", username="robot", secret="a password")
    with pytest.raises(ApplicationError) as missing:
        services.credential_update(actor=owner.user, membership=owner.membership,
                                   credential_id=static.pk, login_source="aws_ecr",
                                   aws_access_key_id=KEY_ID, aws_region="eu-west-1")
    assert missing.value.code == "secret_required"
    ecr = services.credential_update(actor=owner.user, membership=owner.membership,
                                     credential_id=static.pk, login_source="aws_ecr",
                                     aws_access_key_id=KEY_ID, aws_region="eu-west-1",
                                     secret=SECRET)
    assert (ecr.login_source, ecr.username, ecr.server) == ("aws_ecr", "AWS",
                                                           "registry.example.com")
    assert LoginToken.objects.filter(credential=ecr).exists()
    back = services.credential_update(actor=owner.user, membership=owner.membership,
                                      credential_id=static.pk, login_source="static",
                                      username="robot", secret="another password")
    assert (back.login_source, back.aws_access_key_id, back.username) == ("static", "", "robot")
    assert not LoginToken.objects.filter(credential=back).exists()
    assert SECRET not in database_text()


def test_regions_receive_the_token_and_its_expiry_never_the_key(
    client: Client, aws_ecr: MotoEcr, tmp_path: Any,
) -> None:
    region = make_region("eu-1")
    owner = member_in(region, "Acme")
    credential = _ecr(owner)
    snapshot = region.snapshot(client)
    [sent] = snapshot["credentials"]
    assert sent["expires_at"] == "2015-01-01T00:00:00Z"
    assert sent["username"] == "AWS"
    assert SECRET not in json.dumps(snapshot)
    # The agent stores it, and what opens in the region is the short-lived password.
    replica = Replica(tmp_path / "replica.sqlite3", region.key)
    replica.apply_snapshot(snapshot)
    held = replica.get_credential(credential.pk)
    assert held.expires_at is not None and held.expires_at.year == 2015
    assert replica.open_secret(credential.pk).password == MOTO_ECR_PASSWORD
    replica.close()
    assert SECRET.encode() not in (tmp_path / "replica.sqlite3").read_bytes()


def test_test_connection_exchanges_then_logs_in(
    owner: Member, aws_ecr: MotoEcr, registry_basic: RegistryServer,
) -> None:
    registry_basic.add_user("AWS", MOTO_ECR_PASSWORD)
    credential = _ecr(owner, server=registry_basic.host)
    before = aws_ecr.token_requests
    outcome = services.credential_test(actor=owner.user, membership=owner.membership,
                                       credential_id=credential.pk)
    assert outcome.ok, outcome.message
    assert outcome.message.startswith("Exchanged the key for a fresh ECR token.")
    assert aws_ecr.token_requests == before + 1
    aws_ecr.stop()
    failed = services.credential_test(actor=owner.user, membership=owner.membership,
                                      credential_id=credential.pk)
    assert (failed.result, failed.ok) == ("exchange_failed", False)
    assert "could not be reached" in failed.message


def test_export_writes_the_current_token_and_says_until_when(
    owner: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    key = google_tokens.new_key()
    services.credential_create(
        actor=owner.user, membership=owner.membership, type="container_registry", name="gar",
        server="europe-docker.pkg.dev", login_source="gcp_service_account", secret=key)
    [entry] = services.credentials_export(actor=owner.user, membership=owner.membership,
                                          names=["gar"])
    [issued] = google_tokens.tokens_for(json.loads(key)["client_email"])
    assert (entry.login.username, entry.login.password) == ("oauth2accesstoken", issued)
    assert entry.label == "Google access token"
    assert entry.expires_at is not None and entry.expires_at > timezone.now()


def test_an_ecr_token_that_is_not_base64_is_refused(owner: Member) -> None:
    from moorage.registry.ecr import _issued
    from moorage.registry.logins import LoginSourceError

    with pytest.raises(LoginSourceError) as garbage:
        _issued({"authorizationData": [{"authorizationToken": "%%%",
                                        "expiresAt": timezone.now()}]}, "ECR",
                now=timezone.now())
    assert garbage.value.code == "exchange_answer_invalid"
    token = base64.b64encode(b"AWS:pw").decode()
    with pytest.raises(LoginSourceError) as lying:
        _issued({"authorizationData": [{"authorizationToken": token,
                                        "expiresAt": timezone.now() + timedelta(days=400)}]},
                "ECR", now=timezone.now())
    assert lying.value.code == "token_expiry_invalid"


def test_a_token_uri_in_a_blocked_network_gets_nothing(
    client: Client, owner: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    key = json.loads(google_tokens.new_key())
    key["token_uri"] = "https://169.254.169.254/token"  # a cloud metadata service
    answer = _post(client, owner, {"name": "gar", "login_source": "gcp_service_account",
                                   "server": "europe-docker.pkg.dev", "secret": json.dumps(key)})
    body = assert_api_error(answer, 502, "exchange_unreachable")
    assert "in a network Moorage never connects to (169.254.0.0/16)" in body["message"]
    assert not Credential.objects.exists()


def test_saving_unchanged_fields_exchanges_nothing(owner: Member, aws_ecr: MotoEcr) -> None:
    credential = _ecr(owner)
    before = aws_ecr.token_requests
    same = services.credential_update(
        actor=owner.user, membership=owner.membership, credential_id=credential.pk,
        name="ecr-prod", aws_access_key_id=KEY_ID, aws_region="eu-west-1")
    assert aws_ecr.token_requests == before
    assert (same.name, same.revision) == ("ecr-prod", 1)
