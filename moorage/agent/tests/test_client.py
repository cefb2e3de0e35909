"""The client: verified envelopes only, and errors sorted by what the agent does next."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from moorage import protocol
from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.errors import (
    AgentAuthError,
    ConfigurationError,
    MalformedPayload,
    ProtocolError,
    TamperedPayload,
    TransientError,
)
from moorage.agent.tests.fakes import TOKEN, FakeControlPlane
from moorage.sealing import Key, generate_key


def answering(config: AgentConfig, envelope: Any, status: int = 200) -> ControlPlaneClient:
    """Always the same answer, whatever was asked (so, also, a replay)."""
    return ControlPlaneClient(config, transport=httpx.MockTransport(
        lambda request: httpx.Response(status, json=envelope)))


def echoing(config: AgentConfig, payload: dict[str, Any], key: Key) -> ControlPlaneClient:
    """``payload`` signed afresh for each request, echoing its nonce as the server does."""
    return ControlPlaneClient(config, transport=httpx.MockTransport(
        lambda request: httpx.Response(200, json=protocol.sign(
            payload | {"nonce": request.url.params.get("nonce")}, key))))


def test_requests_carry_the_token_and_the_ack_has_the_protocols_shape(
    fake: FakeControlPlane, config: AgentConfig
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fake.handle(request)

    client = ControlPlaneClient(config, transport=httpx.MockTransport(handler))
    fake.add_account(1, "acme")
    assert client.snapshot()["revision"] == 1
    assert client.changes(1, 0)["changes"] == []
    client.ack(1, {18: 1, 17: 3}, [12], False)
    assert [str(r.url.copy_remove_param("nonce")) for r in seen] == [
        "http://control-plane.test/api/v1/agent/snapshot",
        "http://control-plane.test/api/v1/agent/changes?since=1&wait=0",
        "http://control-plane.test/api/v1/agent/ack",
    ]
    nonces = [r.url.params.get("nonce") for r in seen[:2]]
    assert all(nonces) and nonces[0] != nonces[1]  # fresh for every request
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in seen)
    assert fake.acks == [{"revision": 1, "snapshot": False, "credentials": {"17": 3, "18": 1},
                          "removed": [12]}]


def test_timeouts_follow_the_wait_and_the_environment_is_ignored(
    config: AgentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:1")
    client = ControlPlaneClient(AgentConfig(url=config.url, token=TOKEN,
                                            region_key=config.region_key,
                                            data_dir=config.data_dir, wait=25))
    timeout = client._http.timeout
    assert (timeout.connect, timeout.read) == (5.0, 40.0)
    assert client._http.trust_env is False
    client.close()


def test_an_altered_payload_or_mac_is_refused(fake: FakeControlPlane, config: AgentConfig) -> None:
    fake.add_account(1, "acme")
    envelope = protocol.sign(fake.snapshot_payload(), fake.key)
    body = base64.urlsafe_b64decode(envelope["payload"]).replace(b"acme", b"evil")
    altered_payload = {**envelope, "payload": base64.urlsafe_b64encode(body).decode()}
    mac = bytearray(base64.urlsafe_b64decode(envelope["mac"]))
    mac[0] ^= 1
    altered_mac = {**envelope, "mac": base64.urlsafe_b64encode(bytes(mac)).decode()}
    other_key = protocol.sign(fake.snapshot_payload(), generate_key("other"))
    for bad in (altered_payload, altered_mac, other_key, {"payload": "x"}, ["not", "a", "dict"]):
        with pytest.raises(TamperedPayload):
            answering(config, bad).snapshot()
    assert echoing(config, fake.snapshot_payload(), fake.key).snapshot()["accounts"] == [
        {"id": 1, "slug": "acme"}]


def test_a_replayed_answer_is_refused(fake: FakeControlPlane, config: AgentConfig) -> None:
    fake.add_account(1, "acme")
    recorded = protocol.sign(fake.snapshot_payload() | {"nonce": "an-old-request-1"}, fake.key)
    with pytest.raises(MalformedPayload, match="nonce"):
        answering(config, recorded).snapshot()
    unsigned_nonce = protocol.sign(fake.changes_payload(0), fake.key)
    with pytest.raises(MalformedPayload, match="nonce"):
        answering(config, unsigned_nonce).changes(0, 0)


def test_a_payload_for_another_region_is_refused(
    fake: FakeControlPlane, config: AgentConfig
) -> None:
    client = echoing(config, fake.snapshot_payload() | {"region": "us-1"}, fake.key)
    assert client.snapshot()["region"] == "us-1"  # region not known yet: learned from it
    client.region = "eu-1"
    with pytest.raises(MalformedPayload, match="for region 'us-1', this agent serves 'eu-1'"):
        client.snapshot()


def test_an_answer_of_the_wrong_kind_or_since_is_refused(
    fake: FakeControlPlane, config: AgentConfig
) -> None:
    snapshot = protocol.sign(fake.snapshot_payload(), fake.key)
    with pytest.raises(MalformedPayload, match="expected a changes payload"):
        answering(config, snapshot).changes(0, 0)
    old = protocol.sign(fake.changes_payload(3) | {"revision": 5}, fake.key)
    with pytest.raises(MalformedPayload, match="since 3, not since 4"):
        answering(config, old).changes(4, 0)
    backwards = protocol.sign(
        fake.changes_payload(4) | {"revision": 2, "snapshot_required": False}, fake.key)
    with pytest.raises(MalformedPayload, match="before 4"):
        answering(config, backwards).changes(4, 0)


@pytest.mark.parametrize(("status", "code", "error"), [
    (401, "region_token_invalid", AgentAuthError),
    (401, "region_token_revoked", AgentAuthError),
    (401, "not_authenticated", AgentAuthError),
    (401, "something_else", ProtocolError),
    (403, "permission_denied", ProtocolError),
    (404, "not_found", ProtocolError),
    (422, "sync_parameters_invalid", ProtocolError),
    (429, "rate_limited", TransientError),
    (500, "server_error", TransientError),
    (503, "", TransientError),
])
def test_error_answers_are_sorted_by_what_the_agent_does(
    config: AgentConfig, status: int, code: str, error: type[Exception]
) -> None:
    body = {"code": code, "message": "Told so.", "detail": {}} if code else "<html>"
    with pytest.raises(error) as raised:
        answering(config, body, status).changes(0, 0)
    if isinstance(raised.value, AgentAuthError):
        assert raised.value.code == code
        hint = "rotated or the region removed" if code.endswith("revoked") else "token is wrong"
        assert hint in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_connection_errors_are_transient(config: AgentConfig) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = ControlPlaneClient(config, transport=httpx.MockTransport(refuse))
    with pytest.raises(TransientError, match="connection refused"):
        client.snapshot()
    with pytest.raises(TransientError):
        client.ack(1, {}, [], True)


def test_a_non_json_answer_is_refused(config: AgentConfig) -> None:
    client = ControlPlaneClient(config, transport=httpx.MockTransport(
        lambda request: httpx.Response(200, text="<html>captive portal</html>")))
    with pytest.raises(MalformedPayload, match="not JSON"):
        client.snapshot()


def test_the_config_hides_the_token_and_refuses_what_would_fail_later(tmp_path: Path) -> None:
    key = generate_key("k")
    config = AgentConfig(url="https://cp.example/", token=TOKEN, region_key=key,
                         data_dir=tmp_path)
    assert TOKEN not in repr(config)
    assert key.material.hex() not in repr(config)
    assert config.api_url == "https://cp.example/api/v1/agent/"
    for bad in ({"url": "cp.example"}, {"token": "mrr_short"}, {"wait": 61},
                {"region": "EU 1"}):
        with pytest.raises(ConfigurationError):
            AgentConfig(**({"url": "https://cp.example", "token": TOKEN, "region_key": key,
                            "data_dir": tmp_path} | bad))  # type: ignore[arg-type]
    assert json.dumps(str(ConfigurationError("x")))
