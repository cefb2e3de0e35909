"""Forwarded headers are believed only from MOORAGE_TRUSTED_PROXIES, on a real ``moorage up``.

A client on loopback sending ``X-Forwarded-For`` must not pick the address the login rate
limit counts (uvicorn trusts loopback by default: 20 tries looked like 20 addresses).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from moorage.cli.server import uvicorn_config
from moorage.registry import parse_networks
from moorage.testing.processes import ControlPlane, database_like_this_session

ATTEMPTS = settings.LOGIN_FAILURES_PER_ADDRESS + 1


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root: Path = tmp_path_factory.mktemp("forwarded")
    with ExitStack() as stack:
        database_url = stack.enter_context(database_like_this_session())
        control = ControlPlane(root / "control-plane", database_url=database_url)
        control.root.mkdir()
        stack.callback(control.stop)
        yield control


def _guess(api: httpx.Client, n: int, forwarded_for: str) -> httpx.Response:
    # A different unknown e-mail each time: only the per-address limit can stop these.
    return api.post("/auth/token", headers={"X-Forwarded-For": forwarded_for},
                    json={"email": f"nobody{n}@example.com", "password": "wrong", "name": "x"})


def _recorded_addresses(plane: ControlPlane) -> list[str]:
    addresses: list[str] = plane.django(
        "from moorage.accounts.models import LoginAttempt\n"
        "result = sorted(set(LoginAttempt.objects.values_list('address', flat=True)))\n"
        "LoginAttempt.objects.all().delete()\n"
    )
    return addresses


def test_forwarded_headers_are_ignored_unless_the_proxy_is_trusted(plane: ControlPlane) -> None:
    plane.env.pop("MOORAGE_TRUSTED_PROXIES", None)
    plane.start()
    try:
        with httpx.Client(base_url=plane.url + "/api/v1", trust_env=False, timeout=30) as api:
            answers = [_guess(api, n, f"203.0.113.{n}").status_code for n in range(ATTEMPTS)]
            # The loopback client is one address, whatever it claims: the limit hits.
            assert answers[:-1] == [401] * (ATTEMPTS - 1)
            limited = _guess(api, 999, "198.51.100.1")
            assert limited.status_code == 429 and limited.headers["Retry-After"].isdigit()
            assert limited.json()["code"] == "login_rate_limited"
            # And a body over the limit, on the real server: 413 in the error shape.
            big = api.post("/auth/token", content=json.dumps({"password": "x" * 3_000_000}),
                           headers={"Content-Type": "application/json"})
            assert big.status_code == 413 and big.json()["code"] == "request_too_large"
    finally:
        plane.stop()
    assert _recorded_addresses(plane) == ["127.0.0.1"]
    assert "Traceback" not in plane.log.read_text(errors="replace")


def test_a_trusted_proxys_forwarded_address_is_used(plane: ControlPlane) -> None:
    plane.env["MOORAGE_TRUSTED_PROXIES"] = "127.0.0.1, ::1"
    plane.start()
    try:
        with httpx.Client(base_url=plane.url + "/api/v1", trust_env=False, timeout=30) as api:
            answers = [_guess(api, n, f"203.0.113.{n}").status_code for n in range(ATTEMPTS)]
            assert answers == [401] * ATTEMPTS  # each forwarded address is its own
            # The proxy appends the peer it saw: the rightmost untrusted entry counts.
            _guess(api, 1000, "198.51.100.7, 203.0.113.200")
    finally:
        plane.stop()
    recorded = _recorded_addresses(plane)
    assert "127.0.0.1" not in recorded
    assert len(recorded) == ATTEMPTS + 1 and "203.0.113.200" in recorded
    assert "198.51.100.7" not in recorded


def test_uvicorn_gets_no_proxy_headers_without_trusted_proxies() -> None:
    none = uvicorn_config(host="127.0.0.1", port=8000, trusted_proxies=())
    assert none.proxy_headers is False and none.forwarded_allow_ips == []
    some = uvicorn_config(host="127.0.0.1", port=8000,
                          trusted_proxies=parse_networks("10.0.0.1, 192.168.0.0/24"))
    assert some.proxy_headers is True
    assert some.forwarded_allow_ips == ["10.0.0.1/32", "192.168.0.0/24"]
