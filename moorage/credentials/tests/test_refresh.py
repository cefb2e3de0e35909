"""The background refresh of exchanged tokens: on schedule (the clock driven with
time-machine, the exchanges counted at moto's real server and the Google fake), once across
processes, failures shown and kept apart from the token in use, deploys refused once the
token expired."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from moorage.apps.services import app_create
from moorage.audit.models import AuditEvent
from moorage.credentials import refresh, services
from moorage.credentials.models import Credential, LoginToken
from moorage.credentials.tasks import refresh_login_tokens
from moorage.errors import ApplicationError
from moorage.regions.models import Change
from moorage.testing.api_checks import API
from moorage.testing.cloud import GoogleTokenEndpoint, MotoEcr
from moorage.testing.factories import Member
from moorage.testing.regions import deploy_one, make_region, member_in
from moorage.testing.secrets_search import database_text

pytestmark = pytest.mark.django_db(transaction=True)

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "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"


def _ecr(owner: Member, name: str = "ecr") -> Credential:
    return services.credential_create(
        actor=owner.user, membership=owner.membership, type="container_registry", name=name,
        login_source="aws_ecr", aws_access_key_id=KEY_ID, aws_region="eu-west-1", secret=SECRET)


def _gar(owner: Member, google: GoogleTokenEndpoint, name: str = "gar") -> Credential:
    return services.credential_create(
        actor=owner.user, membership=owner.membership, type="container_registry", name=name,
        server="europe-docker.pkg.dev", login_source="gcp_service_account",
        secret=google.new_key())


def _token(credential: Credential) -> LoginToken:
    return LoginToken.objects.get(credential=credential)


def test_an_ecr_token_with_a_stale_expiry_is_refreshed_every_minute(
    owner: Member, aws_ecr: MotoEcr,
) -> None:
    with time_machine.travel(timezone.now(), tick=False) as clock:
        credential = _ecr(owner)
        start = aws_ecr.token_requests
        clock.shift(timedelta(seconds=30))
        assert refresh.login_tokens_refresh_due().refreshed == 0
        assert aws_ecr.token_requests == start  # not due: no exchange at all

        clock.shift(timedelta(seconds=31))
        changes = Change.objects.count()
        report = refresh.login_tokens_refresh_due()
        assert (report.refreshed, report.failed) == (1, 0)
        assert aws_ecr.token_requests == start + 1
        credential.refresh_from_db()
        assert credential.revision == 2  # regions pick it up like a rotation
        assert Change.objects.count() == changes + 1
        token = _token(credential)
        assert token.refresh_due_at == timezone.now() + timedelta(minutes=1)
        assert report.next_due == token.refresh_due_at

        clock.shift(timedelta(minutes=1))
        assert refresh.login_tokens_refresh_due().refreshed == 1
        assert aws_ecr.token_requests == start + 2
    events = AuditEvent.objects.filter(action="credential.token_refreshed")
    assert events.count() == 2
    assert all(e.actor_label == "system" and e.details["name"] == "ecr" for e in events)
    assert SECRET not in json.dumps([e.details for e in AuditEvent.objects.all()])


def test_a_google_token_is_refreshed_at_half_its_life_clamped_to_six_hours(
    owner: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    with time_machine.travel(timezone.now(), tick=False) as clock:
        hourly = _gar(owner, google_tokens)
        google_tokens.expires_in = 20 * 3600
        long_lived = _gar(owner, google_tokens, name="gar-long")
        assert _token(long_lived).refresh_due_at == timezone.now() + timedelta(hours=6)
        google_tokens.expires_in = 3600
        granted = len(google_tokens.grants)

        clock.shift(timedelta(minutes=29))
        assert refresh.login_tokens_refresh_due().refreshed == 0
        clock.shift(timedelta(minutes=1))
        assert refresh.login_tokens_refresh_due().refreshed == 1
        assert len(google_tokens.grants) == granted + 1
        hourly.refresh_from_db()
        assert hourly.revision == 2
        clock.shift(timedelta(hours=6))
        report = refresh.login_tokens_refresh_due()
        assert report.refreshed == 2  # the hourly one again, and the long one at 6 h


def test_a_failing_refresh_keeps_the_token_shows_why_and_backs_off(
    client: Client, owner: Member, aws_ecr: MotoEcr,
) -> None:
    start = timezone.now().replace(hour=10, minute=41, second=0, microsecond=0)
    with time_machine.travel(start, tick=False) as clock:
        credential = _ecr(owner)
        before = _token(credential)
        aws_ecr.stop()
        clock.shift(timedelta(seconds=61))
        report = refresh.login_tokens_refresh_due()
        assert (report.refreshed, report.failed) == (0, 1)
        assert report.failures == {"exchange_unreachable": 1}
        token = _token(credential)
        assert token.token == before.token  # the previous token stays in use
        assert token.failing_since == timezone.now() and token.failures == 1
        credential.refresh_from_db()
        assert credential.revision == 1  # nothing for the regions to pick up
        assert token.refresh_due_at == timezone.now() + timedelta(minutes=1)

        shown = client.get(API + f"/credentials/{credential.pk}", headers=owner.auth).json()
        assert shown["token"]["status"] == "failing"
        assert shown["token"]["refresh_error"].startswith(
            "refresh failing since 10:42: The ECR token service at http://127.0.0.1:")
        assert shown["token"]["refresh_error_code"] == "exchange_unreachable"
        client.force_login(owner.user)
        page = client.get("/credentials/")
        assert "refresh failing since 10:42" in page.content.decode()

        clock.shift(timedelta(minutes=1))
        refresh.login_tokens_refresh_due()
        token = _token(credential)
        assert token.failures == 2
        # Its expiry is already past: retried at the shortest interval, no backoff.
        assert token.refresh_due_at == timezone.now() + timedelta(minutes=1)
        # One audit row when it started failing, not one per retry.
        assert AuditEvent.objects.filter(action="credential.token_refresh_failed").count() == 1
        assert refresh.login_refresh_health() == {"tokens": 1, "failing": 1,
                                                  "failures_total": 2}

        aws_ecr.start()
        clock.shift(timedelta(minutes=1))
        assert refresh.login_tokens_refresh_due().refreshed == 1
        token = _token(credential)
        assert token.failing_since is None and token.failure_message == ""
        recovered = AuditEvent.objects.filter(action="credential.token_refreshed").get()
        assert recovered.details["recovered"] is True


@pytest.mark.parametrize(("mode", "code"), [
    ("garbage", "exchange_answer_invalid"),
    ("lying_expiry", "token_expiry_invalid"),
    ("error", "exchange_failed"),
])
def test_nonsense_from_the_token_service_keeps_the_previous_token(
    owner: Member, google_tokens: GoogleTokenEndpoint, mode: str, code: str,
) -> None:
    with time_machine.travel(timezone.now(), tick=False) as clock:
        credential = _gar(owner, google_tokens)
        before = _token(credential)
        google_tokens.mode = mode
        clock.shift(timedelta(minutes=31))
        report = refresh.login_tokens_refresh_due()
        assert report.failures == {code: 1}
        token = _token(credential)
        assert (token.token, token.expires_at) == (before.token, before.expires_at)
        assert token.failure_code == code
        assert token.refresh_due_at == timezone.now() + timedelta(minutes=1)
        clock.shift(timedelta(minutes=1))
        refresh.login_tokens_refresh_due()
        # Backing off (the token in use is still valid for almost half an hour).
        assert _token(credential).refresh_due_at == timezone.now() + timedelta(minutes=2)


def test_an_expired_token_that_cannot_be_refreshed_refuses_deploys_saying_why(
    owner: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    region = make_region("eu-1")
    member = member_in(region, "Expiring")
    start = timezone.now().replace(hour=9, minute=0, second=0, microsecond=0)
    with time_machine.travel(start, tick=False) as clock:
        credential = _gar(member, google_tokens)
        app = app_create(actor=member.user, membership=member.membership, name="api",
                         image="europe-docker.pkg.dev/acme/api/web:1.0")
        google_tokens.stop()
        clock.shift(timedelta(minutes=31))
        refresh.login_tokens_refresh_due()
        # Failing, but the token is still valid: deploys go on with it.
        assert deploy_one(member, app.pk).credential_revision == credential.revision

        clock.shift(timedelta(minutes=30))  # past its expiry (10:00)
        with pytest.raises(ApplicationError) as refused:
            deploy_one(member, app.pk)
    assert refused.value.code == "credential_token_expired"
    assert "credential 'gar' expired at 10:00" in refused.value.message
    assert "refresh failing since 09:31: The token service at http://127.0.0.1:" \
        in refused.value.message


def test_a_token_is_refreshed_once_however_many_workers_run(
    owner: Member, aws_ecr: MotoEcr,
) -> None:
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for number in range(12):
            _ecr(owner, name=f"ecr-{number}")
        start = aws_ecr.token_requests
        changes = Change.objects.count()
        clock.shift(timedelta(minutes=2))
        reports: list[refresh.RefreshReport] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                reports.append(refresh.login_tokens_refresh_due(batch_size=3, concurrency=2))
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert sum(r.refreshed for r in reports) == 12
    assert aws_ecr.token_requests == start + 12
    assert Change.objects.count() == changes + 12
    assert set(Credential.objects.values_list("revision", flat=True)) == {2}


def test_a_new_key_given_during_a_refresh_wins(
    owner: Member, google_tokens: GoogleTokenEndpoint,
) -> None:
    with time_machine.travel(timezone.now(), tick=False) as clock:
        credential = _gar(owner, google_tokens)
        clock.shift(timedelta(minutes=31))
        claims = refresh._claim(10)
        assert [c.credential.pk for c in claims] == [credential.pk]
        assert refresh._claim(10) == []  # leased: another process gets nothing
        results = refresh._exchange_all(claims, 1)
        rotated = services.credential_update(actor=owner.user, membership=owner.membership,
                                             credential_id=credential.pk,
                                             secret=google_tokens.new_key())
        person_token = _token(rotated).token
        report = refresh.RefreshReport()
        refresh._record(claims, results, report)
        assert (report.refreshed, report.skipped) == (0, 1)
        assert _token(rotated).token == person_token
        rotated.refresh_from_db()
        assert rotated.revision == 2


def test_the_task_runs_the_refresh_and_queues_the_next_run_once(
    owner: Member, aws_ecr: MotoEcr,
) -> None:
    with time_machine.travel(timezone.now(), tick=False) as clock:
        _ecr(owner)
        queued = DBTaskResult.objects.filter(task_path=refresh_login_tokens.module_path,
                                             status="READY")
        # Adding the credential queued a run for when its token is due.
        [first] = queued
        assert first.run_after == timezone.now() + timedelta(minutes=1)
        refresh.refresh_schedule()  # asked again: still one
        assert queued.count() == 1
        clock.shift(timedelta(minutes=1))
        # The real worker, until the queue holds nothing due.
        call_command("db_worker", batch=True, reload=False, startup_delay=False, verbosity=0)
        first.refresh_from_db()
        assert first.status == "SUCCESSFUL", first.traceback
        assert first.return_value is not None and first.return_value["refreshed"] == 1
        assert queued.count() == 1
        assert queued.get().run_after == timezone.now() + timedelta(minutes=1)


def test_refreshes_leave_no_secret_behind(owner: Member, aws_ecr: MotoEcr) -> None:
    with time_machine.travel(timezone.now(), tick=False) as clock:
        _ecr(owner)
        clock.shift(timedelta(minutes=1))
        refresh.login_tokens_refresh_due()
    text = database_text()
    assert SECRET not in text
    assert "123456789012-auth-token" not in text

