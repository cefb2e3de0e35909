"""The control plane's side of app logs, through the real API: asking, the op in the region's
changes feed, the agent's chunks (played here through the agent endpoint with the region's
real token), reading, bounds, timeouts and expiry."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from moorage.accounts.choices import Role
from moorage.accounts.permissions import Action
from moorage.apps.services import app_create
from moorage.logs import services as log_services
from moorage.logs.models import LogRequest
from moorage.logs.services import MAX_OPEN_PER_APP
from moorage.protocol.logs import CUT_MARK, MAX_ANSWER_BYTES, MAX_LINE_CHARS
from moorage.regions import services as region_services
from moorage.regions.models import Change, Region
from moorage.testing import factories
from moorage.testing.api_checks import (
    API,
    Case,
    ObjectEndpoint,
    assert_api_error,
    check_endpoint,
    generic_cases,
)
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, make_region

pytestmark = pytest.mark.django_db

AT = "2026-11-29T10:11:12.123456789Z"


def _call(client: Client, method: str, path: str, member: Member | AgentView,
          body: Any = None, **params: Any) -> Any:
    query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
    return client.generic(method, API + path + query,
                          json.dumps(body) if body is not None else "",
                          content_type="application/json", headers=member.auth)


def _app(owner: Member, regions: tuple[str, ...] = ("eu-1",)) -> int:
    for slug in regions:
        if not Region.objects.filter(slug=slug).exists():
            make_region(slug)
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=list(regions))
    return app_create(actor=owner.user, membership=owner.membership, name="api",
                      image="ghcr.io/acme/api:1.4", runtime_pull="none").pk


OBJECT_ENDPOINTS = [ObjectEndpoint("POST", "/apps/{id}/logs", _app, Action.VIEW,
                                   body={"tail": 5})]


@pytest.mark.parametrize(("endpoint", "case"), generic_cases(OBJECT_ENDPOINTS))
def test_generic_checks(client: Client, endpoint: ObjectEndpoint, case: Case) -> None:
    check_endpoint(client, endpoint, case)


@pytest.fixture
def eu(owner: Member) -> AgentView:
    return make_region("eu-1")


def _ask(client: Client, member: Member, app_id: int, **body: Any) -> list[dict[str, Any]]:
    response = _call(client, "POST", f"/apps/{app_id}/logs", member, body)
    assert response.status_code == 201, response.content
    answers: list[dict[str, Any]] = response.json()
    return answers


def _chunk(client: Client, agent: AgentView, request_id: int, seq: int, texts: list[str],
           **fields: Any) -> Any:
    return _call(client, "POST", f"/agent/logs/{request_id}", agent,
                 {"seq": seq, "lines": [{"at": AT, "text": t} for t in texts]} | fields)


def test_a_request_reaches_its_regions_agent_as_an_op_while_it_waits(
    client: Client, owner: Member, eu: AgentView
) -> None:
    us = make_region("us-1")
    app_id = _app(owner, ("eu-1", "us-1"))
    since = eu.snapshot(client)["revision"]
    viewer = factories.add_member(owner, Role.VIEWER)  # viewers may read logs
    started = _ask(client, viewer, app_id, tail=7, follow=3)
    assert [a["region"] for a in started] == ["eu-1", "us-1"]
    assert all(a["status"] == "pending" and not a["finished"] for a in started)
    [op] = eu.changes(client, since)["changes"]
    assert op["op"] == "logs.request"
    assert op["request"] == {"id": started[0]["id"], "account_id": owner.account.pk,
                             "app_id": app_id, "app": "api", "tail": 7, "since": None,
                             "follow": 3}
    assert [c["request"]["id"] for c in us.changes(client, since)["changes"]] == [
        started[1]["id"]]

    # Answered: the op is no longer sent (the change-log row stays; it names no content).
    assert _chunk(client, eu, started[0]["id"], 0, ["hello"], final=True,
                  cursor=AT).status_code == 204
    assert eu.changes(client, since)["changes"] == []
    # Timed out: no longer sent either.
    LogRequest.objects.filter(pk=started[1]["id"]).update(
        answer_by=timezone.now() - timedelta(seconds=1))
    assert us.changes(client, since)["changes"] == []


def test_chunks_are_taken_once_in_order_and_read_from_an_index(
    client: Client, owner: Member, eu: AgentView
) -> None:
    app_id = _app(owner)
    [started] = _ask(client, owner, app_id, tail=10, follow=5)
    request_id = started["id"]
    # Only the request's own region answers it; only the app's own account reads it.
    other_region = make_region("us-1")
    assert_api_error(_chunk(client, other_region, request_id, 0, ["forged"]), 404,
                     "log_request_not_found")
    stranger = factories.make_account("Globex")
    assert_api_error(_call(client, "GET", f"/apps/{app_id}/logs/{request_id}", stranger), 404,
                     "log_request_not_found")
    assert _chunk(client, eu, request_id, 0, ["one", "two"]).status_code == 204
    assert _chunk(client, eu, request_id, 0, ["one", "two"]).status_code == 204  # a retry
    assert_api_error(_chunk(client, eu, request_id, 2, ["four"]), 409,
                     "log_chunk_out_of_order")
    read = _call(client, "GET", f"/apps/{app_id}/logs/{request_id}", owner).json()
    assert [line["text"] for line in read["lines"]] == ["one", "two"]
    assert (read["status"], read["finished"], read["next"], read["cursor"]) == (
        "streaming", False, 2, None)

    assert _chunk(client, eu, request_id, 1, ["three"], final=True, cursor=AT).status_code \
        == 204
    assert_api_error(_chunk(client, eu, request_id, 2, ["late"]), 409, "log_request_closed")
    read = _call(client, "GET", f"/apps/{app_id}/logs/{request_id}", owner, after=2).json()
    assert [line for line in read["lines"]] == [{"at": AT, "text": "three"}]
    assert (read["status"], read["finished"], read["next"], read["cursor"]) == (
        "done", True, 3, AT)
    # Read to its end: gone, for the reader and for the agent.
    assert not LogRequest.objects.filter(pk=request_id).exists()
    assert_api_error(_call(client, "GET", f"/apps/{app_id}/logs/{request_id}", owner), 404,
                     "log_request_not_found")
    assert_api_error(_chunk(client, eu, request_id, 2, ["late"]), 404,
                     "log_request_not_found")


def test_an_agent_error_and_an_agent_that_never_answers_finish_the_request(
    client: Client, owner: Member, eu: AgentView
) -> None:
    app_id = _app(owner)
    [failed] = _ask(client, owner, app_id)
    _chunk(client, eu, failed["id"], 0, [], final=True,
           error={"code": "app_not_running", "message": "Nothing of this app runs."})
    read = _call(client, "GET", f"/apps/{app_id}/logs/{failed['id']}", owner).json()
    assert read["status"] == "failed" and read["error"] == {
        "code": "app_not_running", "message": "Nothing of this app runs."}

    [silent] = _ask(client, owner, app_id)
    waiting = _call(client, "GET", f"/apps/{app_id}/logs/{silent['id']}", owner).json()
    assert (waiting["status"], waiting["finished"]) == ("pending", False)
    LogRequest.objects.filter(pk=silent["id"]).update(
        answer_by=timezone.now() - timedelta(seconds=1))
    read = _call(client, "GET", f"/apps/{app_id}/logs/{silent['id']}", owner).json()
    assert read["status"] == "failed" and read["error"]["code"] == "agent_timeout"
    assert "did not answer in time" in read["error"]["message"]


def test_the_answer_is_bounded_whatever_the_agent_sends(
    client: Client, owner: Member, eu: AgentView
) -> None:
    app_id = _app(owner)
    [started] = _ask(client, owner, app_id, tail=1000)
    too_long = _chunk(client, eu, started["id"], 0, ["a" * (MAX_LINE_CHARS + 10)])
    assert_api_error(too_long, 422, "validation_error")
    line = "b" * (MAX_LINE_CHARS - 1) + "é"  # 2001 bytes + the newline
    for seq in range(0, 200):
        response = _chunk(client, eu, started["id"], seq, [line] * 5)
        assert response.status_code == 204
    request = LogRequest.objects.get(pk=started["id"])
    assert request.truncated and request.size <= MAX_ANSWER_BYTES
    assert len(request.lines) == MAX_ANSWER_BYTES // 2002
    cut = _chunk(client, eu, started["id"], 200, ["c" * MAX_LINE_CHARS + CUT_MARK],
                 final=True)
    assert cut.status_code == 204


def test_what_an_app_may_print_is_stored_whatever_the_database(
    client: Client, owner: Member, eu: AgentView
) -> None:
    """PostgreSQL refuses NUL in text and JSON, and its error would quote the line."""
    app_id = _app(owner)
    [started] = _ask(client, owner, app_id)
    surrogate = _chunk(client, eu, started["id"], 0, ["bad \ud800 surrogate"])
    body = assert_api_error(surrogate, 422, "validation_error")
    assert "surrogate" not in body["message"]
    sent = _call(client, "POST", f"/agent/logs/{started['id']}", eu, {
        "seq": 0, "final": True, "lines": [{"at": "\u0000", "text": "nul\u0000 here"}],
        "error": {"code": "logs_failed", "message": "engine said \u0000"}})
    assert sent.status_code == 204, sent.content
    read = _call(client, "GET", f"/apps/{app_id}/logs/{started['id']}", owner).json()
    assert read["lines"] == [{"at": "", "text": "nul\ufffd here"}]
    assert read["error"]["message"] == "engine said \ufffd"


def test_bad_asks_name_what_is_wrong(client: Client, owner: Member, eu: AgentView) -> None:
    app_id = _app(owner)
    for body, status, code in (
            ({"tail": 1001}, 422, "validation_error"),
            ({"follow": 31}, 422, "validation_error"),
            ({"tail": None}, 422, "logs_tail_invalid"),
            ({"tail": None, "since": "yesterday"}, 422, "logs_since_invalid"),
            ({"region": "us-1"}, 422, "region_not_enabled")):
        assert_api_error(_call(client, "POST", f"/apps/{app_id}/logs", owner, body),
                         status, code)
    nowhere = app_create(actor=owner.user, membership=owner.membership, name="nowhere",
                         image="busybox:1", runtime_pull="none", regions=[])
    assert_api_error(_call(client, "POST", f"/apps/{nowhere.pk}/logs", owner, {}), 422,
                     "app_has_no_region")
    for _ in range(MAX_OPEN_PER_APP):
        _ask(client, owner, app_id)
    busy = _call(client, "POST", f"/apps/{app_id}/logs", owner, {})
    assert_api_error(busy, 429, "logs_busy")
    assert busy["Retry-After"] == "2"


def test_an_unread_answer_goes_at_its_expiry_even_if_nobody_asks_again(
    client: Client, owner: Member, eu: AgentView, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id = _app(owner)
    since = eu.snapshot(client)["revision"]
    [started] = _ask(client, owner, app_id)
    _chunk(client, eu, started["id"], 0, ["unread"], final=True)
    eu.changes(client, since)
    assert LogRequest.objects.filter(pk=started["id"]).exists()  # not expired yet
    LogRequest.objects.filter(pk=started["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1))
    monkeypatch.setattr(log_services, "_swept_at", time.monotonic() - 61)
    eu.changes(client, since)  # the region's next poll
    assert not LogRequest.objects.exists()
    # The change-log row stays; it names the request, nothing of its lines.
    assert Change.objects.filter(kind="logs", object_id=started["id"]).exists()
