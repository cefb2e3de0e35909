"""Many agents at once against real ``moorage up`` processes (``docs/sync.md``, fleet scale):
waiting long polls hold no thread and no database connection, one change wakes them all, a
change made through one process wakes the polls waiting in another, and an overloaded
database answers 503 with Retry-After, never 500."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from moorage.testing.fleet import Fleet, SimAgent, database_connections, rotate, seed_fleet
from moorage.testing.processes import ControlPlane, database_like_this_session, wait_until

AGENTS = 150
POOL_SIZE = 4
WAIT = 30
#: The web server alone: its connections are the ones counted (no agent, no token worker).
WEB_ONLY = ("--no-agent", "--no-worker")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Fleet]]:
    """One control plane (``moorage up``, web only, pool of 4 on PostgreSQL) and 150 regions whose
    account has one credential."""
    with database_like_this_session() as url:
        cp = ControlPlane(tmp_path_factory.mktemp("fleet"), database_url=url)
        cp.env["MOORAGE_DB_POOL_SIZE"] = str(POOL_SIZE)
        cp.start(options=WEB_ONLY)
        try:
            yield cp, seed_fleet(cp, AGENTS)
        finally:
            cp.stop()


def _second(cp: ControlPlane, root: Path, **env: str) -> ControlPlane:
    """Another ``moorage up`` on the same database and data dir (keys, secret key)."""
    root.mkdir(parents=True, exist_ok=True)
    other = ControlPlane(root, database_url=cp.database_url)
    other.env = {**cp.env, **env}
    other.start(options=WEB_ONLY)
    return other


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:"))
               .split()[1])


def _waiting(cp: ControlPlane) -> float:
    text = httpx.get(f"{cp.url}/metrics", timeout=10, trust_env=False).text
    line = next(line for line in text.splitlines()
                if line.startswith("moorage_agent_polls_waiting"))
    return float(line.split()[-1])


async def _snapshots(url: str, agents: list[SimAgent]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
        gate = asyncio.Semaphore(10)

        async def one(agent: SimAgent) -> None:
            async with gate:
                await agent.snapshot(http)

        await asyncio.gather(*(one(a) for a in agents))


async def _polls_woken_by(url: str, agents: list[SimAgent], change: Any,
                          until_waiting: Any) -> list[tuple[dict[str, Any], float]]:
    """Start a long poll per agent, wait until they all wait, make ``change``; return each
    answer with the seconds it took after the change."""
    limits = httpx.Limits(max_connections=len(agents) + 10)
    async with httpx.AsyncClient(base_url=url, timeout=WAIT + 30, limits=limits,
                                 trust_env=False) as http:
        polls = [asyncio.create_task(a.changes(http, wait=WAIT)) for a in agents]
        await asyncio.to_thread(until_waiting)
        began = await asyncio.to_thread(change)
        answers = await asyncio.gather(*polls, return_exceptions=True)
        ended = time.monotonic()
    errors = [a for a in answers if isinstance(a, BaseException)]
    assert not errors, errors[:3]
    return [(a, ended - began) for a in answers if isinstance(a, dict)]


def test_150_waiting_polls_hold_no_thread_or_connection_and_one_change_wakes_them_all(
    plane: tuple[ControlPlane, Fleet],
) -> None:
    cp, fleet = plane
    assert cp.process is not None
    asyncio.run(_snapshots(cp.url, fleet.agents))
    seen: dict[str, int] = {}

    def until_waiting() -> None:
        wait_until(lambda: _waiting(cp) >= AGENTS, timeout=60, what="150 waiting polls")
        seen["threads"] = _threads(cp.process.pid)  # type: ignore[union-attr]
        if cp.database_url:
            seen["connections"] = database_connections(cp.database_url)

    with httpx.Client(base_url=cp.url, trust_env=False, timeout=30) as http:
        answers = asyncio.run(_polls_woken_by(cp.url, fleet.agents,
                                              lambda: rotate(http, fleet), until_waiting))
    assert len(answers) == AGENTS
    for payload, _ in answers:  # every poll answered with the rotation, none timed out
        [change] = payload["changes"]
        assert change["op"] == "credential.upsert"
        assert change["credential"]["id"] == fleet.credential_id
        assert change["credential"]["revision"] == 2
    assert max(seconds for _, seconds in answers) < WAIT / 2
    # A thread per waiting poll would be 150 more; a connection per poll past the pool.
    assert seen["threads"] < 40, seen
    if cp.database_url:
        assert seen["connections"] <= POOL_SIZE + 2, seen  # the pool and the one listener


def test_a_change_made_through_one_process_wakes_the_polls_waiting_in_another(
    plane: tuple[ControlPlane, Fleet], tmp_path: Path,
) -> None:
    cp, fleet = plane
    other = _second(cp, tmp_path / "second")
    try:
        agents = fleet.agents[:20]
        asyncio.run(_snapshots(other.url, agents))

        def until_waiting() -> None:
            wait_until(lambda: _waiting(other) >= len(agents), timeout=60,
                       what="20 polls waiting in the second process")

        with httpx.Client(base_url=cp.url, trust_env=False, timeout=30) as http:
            answers = asyncio.run(_polls_woken_by(other.url, agents,
                                                  lambda: rotate(http, fleet), until_waiting))
    finally:
        other.stop()
    assert [len(payload["changes"]) for payload, _ in answers] == [1] * len(agents)
    assert max(seconds for _, seconds in answers) < 5  # woken, not answered at the wait's end


def test_an_exhausted_database_answers_503_with_retry_after_never_500(
    plane: tuple[ControlPlane, Fleet], tmp_path: Path,
) -> None:
    """PostgreSQL: a process with a pool of one connection, held by a request stuck on a
    lock; the next request finds no connection within the pool's timeout. SQLite: a write
    that finds the database locked past its busy timeout."""
    cp, fleet = plane
    other = _second(cp, tmp_path / "small", MOORAGE_DB_POOL_SIZE="1")
    release = threading.Event()
    locked = threading.Event()

    def hold_lock() -> None:
        if cp.database_url:
            with psycopg.connect(cp.database_url) as conn:
                conn.execute("LOCK TABLE accounts_apitoken IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(60)
        else:
            import sqlite3

            lite = sqlite3.connect(cp.data_dir / "moorage.sqlite3", isolation_level=None)
            lite.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(60)
            lite.execute("ROLLBACK")
            lite.close()

    def stuck_request() -> None:
        with httpx.Client(base_url=other.url, trust_env=False, timeout=60,
                          headers=fleet.auth) as http:
            stuck_status.append(http.get("/api/v1/credentials").status_code)

    stuck_status: list[int] = []
    stuck = threading.Thread(target=stuck_request)
    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        with httpx.Client(base_url=other.url, trust_env=False, timeout=60,
                          headers=fleet.auth) as http:
            if cp.database_url:
                # The first request takes the pool's one connection and waits on the lock.
                stuck.start()
                time.sleep(0.5)
                response = http.get("/api/v1/credentials")
            else:
                response = http.patch(f"/api/v1/credentials/{fleet.credential_id}",
                                      json={"name": "renamed-while-locked"})
    finally:
        release.set()
        holder.join(30)
        if stuck.is_alive() or stuck_status:
            stuck.join(30)
        other.stop()
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "2"
    body = response.json()
    assert body["code"] == "service_unavailable" and body["detail"] == {"retry_after": 2}
    assert "try again" in body["message"]
    assert "Traceback" not in other.log.read_text()
    if cp.database_url:
        assert stuck_status == [200]  # the stuck one went on once the lock was gone


def test_metrics_show_polls_regions_and_the_pool(plane: tuple[ControlPlane, Fleet]) -> None:
    cp, fleet = plane
    text = httpx.get(f"{cp.url}/metrics", timeout=10, trust_env=False).text
    assert f'moorage_region_applied_revision{{region="{fleet.agents[0].slug}"}}' in text
    assert "moorage_agent_polls_waiting" in text and "moorage_agents_connected" in text
    if cp.database_url:
        assert f"moorage_db_pool_max_connections {float(POOL_SIZE)}" in text
    refused = httpx.get(f"{cp.url}/metrics", timeout=10, trust_env=False,
                        headers={"X-Forwarded-For": "203.0.113.9"})
    assert refused.status_code == 403 and refused.json()["code"] == "metrics_forbidden"
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None  # the test process is not one


def _children(pid: int) -> list[str]:
    """The command lines of a process's children."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                found.append(Path(f"/proc/{child}/cmdline").read_text().replace("\0", " "))
            except OSError:
                pass
    return found


def test_up_with_workers_runs_one_local_agent_and_wakes_polls_across_its_workers(
    plane: tuple[ControlPlane, Fleet], tmp_path: Path,
) -> None:
    cp, fleet = plane
    root = tmp_path / "workers"
    root.mkdir()
    workers = ControlPlane(root, database_url=cp.database_url)
    workers.env = dict(cp.env)
    workers.moorage("init", "--password-stdin", input="Workers-Password-91\n")
    workers.start(options=("--workers", "2"))
    try:
        assert workers.process is not None
        pid = workers.process.pid

        def started() -> list[str]:
            found = _children(pid)
            ready = sum("moorage agent" in x for x in found) == 1 \
                and sum("multiprocessing" in x for x in found) >= 2
            return found if ready else []

        children = wait_until(started, timeout=30, what="two workers and one agent")
        assert sum("moorage agent" in x for x in children) == 1, children
        agents = fleet.agents[20:60]
        asyncio.run(_snapshots(workers.url, agents))

        def until_waiting() -> None:
            wait_until(lambda: _waiting(workers) >= len(agents), timeout=60,
                       what="40 polls waiting in the workers")

        with httpx.Client(base_url=workers.url, trust_env=False, timeout=30) as http:
            answers = asyncio.run(_polls_woken_by(workers.url, agents,
                                                  lambda: rotate(http, fleet), until_waiting))
    finally:
        workers.stop()
    assert [len(payload["changes"]) for payload, _ in answers] == [1] * len(agents)
    assert max(seconds for _, seconds in answers) < 5


def test_the_served_long_poll_keeps_the_api_contract_for_bad_requests(
    plane: tuple[ControlPlane, Fleet],
) -> None:
    """Under ``moorage up`` the path is served from ASGI: the same errors as the operation."""
    cp, fleet = plane
    agent = fleet.agents[0]
    path = "/api/v1/agent/changes"
    good: dict[str, str | int] = {"since": 0, "wait": 0, "nonce": "abcdefgh12"}
    with httpx.Client(base_url=cp.url, trust_env=False, timeout=30) as http:
        missing = http.get(path, params=good)
        assert missing.status_code == 401 and missing.json()["code"] == "not_authenticated"
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="moorage-agent"'
        assert "region token" in missing.json()["message"]
        wrong = http.get(path, params=good,
                         headers={"Authorization": "Bearer mrr_" + "x" * 43})
        assert wrong.status_code == 401 and wrong.json()["code"] == "region_token_invalid"
        queries: list[dict[str, str | int]] = [
            {"since": -1, "nonce": "abcdefgh12"}, {"since": 0, "wait": 61, "nonce": "abcdefgh12"},
            {"since": "x"}, {}]
        for query in queries:
            invalid = http.get(path, params=query, headers=agent.headers)
            assert invalid.status_code == 422, invalid.text
            assert invalid.json()["code"] == "validation_error"
            assert set(invalid.json()["detail"]["fields"]) <= {"since", "wait", "nonce"}
        host = http.get(path, params=good, headers={**agent.headers, "Host": "evil.example"})
        assert host.status_code == 400 and host.json()["code"] == "bad_request"
        post = http.post(path, params=good, headers=agent.headers)
        assert post.status_code == 405 and post.json()["code"] == "method_not_allowed"
        ok = http.get(path, params=good, headers=agent.headers)
    assert ok.status_code == 200 and set(ok.json()) == {"payload", "mac"}
    assert ok.headers["X-Content-Type-Options"] == "nosniff"
    assert ok.headers["X-Frame-Options"] == "DENY"
    for response in (missing, wrong, invalid, host, post, ok):
        assert agent.token not in response.text
