"""Benchmark: region sync with real processes — a control plane under uvicorn, three agents.

1. Rotation latency: 100 accounts with 10 container-registry credentials each (1,000), all
   enabled in three regions, each region served by a ``moorage agent`` subprocess (default
   25 s long poll). 50 times: rotate one credential through the REST API and poll
   ``GET /api/v1/credentials/{id}/sync`` until all three regions acknowledged the new
   revision. Targets: p50 ≤ 1 s, p99 ≤ 2 s.
2. Change-log scaling: for one change, ``GET /api/v1/agent/changes?since=<revision before
   it>`` with 100 and with 10,000 entries in the change log: server time (Django's full
   request stack, in process, and over HTTP through uvicorn), SQL queries and bytes sent.
   They must not grow with the log.

    .venv/bin/python bench/sync.py                                   # SQLite (a temp dir)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/sync.py

With ``DATABASE_URL`` the benchmark creates its own database on that server and drops it at
the end. Run by hand; record the figures in bench/README.md. Exits 1 when a target is missed
or the answer grows with the log.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moorage.testing.processes import (
    AgentProcess,
    ControlPlane,
    fresh_postgres_database,
    wait_until,
)

ACCOUNTS = 100
PER_ACCOUNT = 10
SLUGS = ("bench-1", "bench-2", "bench-3")
ROTATIONS = 50
SMALL_LOG, BIG_LOG = 100, 10_000
REQUESTS = 20
POLL = 0.01  # seconds between two looks at /sync while waiting for the acks
TARGET_P50, TARGET_P99 = 1.0, 2.0

SETUP = """
from django.core.management import call_command
from django.db import transaction
from moorage.accounts import services as accounts
from moorage.accounts.models import Membership
from moorage.credentials import services as credentials
from moorage.regions import services as regions
from pathlib import Path

call_command("migrate", interactive=False, verbosity=0)
user, _ = accounts.user_create(actor=None, email="bench@example.com", is_platform_staff=True)
for slug in data["slugs"]:
    made = regions.region_create(actor=None, slug=slug, enabled_for_new_accounts=True)
    regions.write_agent_files(Path(data["agent_files"]) / slug, token=made.token, key=made.key)
result = []
with transaction.atomic():
    for a in range(data["accounts"]):
        account = accounts.account_create(actor=user, name=f"Bench {a:03d}")
        membership = Membership.objects.get(user=user, account=account)
        ids = [credentials.credential_create(
                   actor=user, membership=membership, type="container_registry",
                   name=f"registry-{c}", server=f"registry{c}.example.com", username="robot",
                   secret=data["password"] + f"-{a}-{c}").pk
               for c in range(data["per_account"])]
        _, token = accounts.api_token_create(actor=user, membership=membership, name="bench")
        result.append({"account": account.pk, "token": token, "credentials": ids})
"""

LOG_SIZE = """
from moorage.regions.models import Change
result = Change.objects.count()
"""

COMPACT = """
from moorage.regions import changelog
from moorage.regions.models import Change
changelog.compact(keep=data)
result = Change.objects.count()
"""

GROW = """
# Grow the log to ``data`` entries with the rows the services write for a credential change
# (record_change is what every credential service calls), 1,000 per transaction.
from django.db import transaction
from moorage.credentials.models import Credential
from moorage.regions import changelog
from moorage.regions.choices import ChangeKind
from moorage.regions.models import Change
rows = list(Credential.objects.values_list("id", "account_id"))
missing = data - Change.objects.count()
while missing > 0:
    with transaction.atomic():
        for n in range(min(missing, 1000)):
            cid, aid = rows[n % len(rows)]
            changelog.record_change(account_id=aid, kind=ChangeKind.CREDENTIAL, object_id=cid)
    missing -= 1000
result = Change.objects.count()
"""

MEASURE = """
# One change (a rotation through the service), then the agent's request for it through
# Django's full stack (middleware, region-token auth, signing), timed and counted in process.
import time
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from moorage.accounts.models import Membership
from moorage.credentials import services
from moorage.regions import changelog
from moorage.regions.models import Change

before = changelog.current_revision()[0]
membership = Membership.objects.select_related("user", "account").get(account_id=data["account"])
services.credential_update(actor=membership.user, membership=membership,
                           credential_id=data["credential"], secret=data["password"])
client = Client(HTTP_HOST="127.0.0.1")  # an allowed host of the real settings
auth = {"Authorization": "Bearer " + data["token"]}
url = f"/api/v1/agent/changes?since={before}&wait=0&nonce=bench-nonce-1"
times, sizes = [], set()
for n in range(data["requests"] + 1):
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(url, headers=auth)
        elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.content[:300]
    if n:  # the first one warms up
        times.append(elapsed)
        sizes.add(len(response.content))
result = {"since": before, "entries": Change.objects.count(), "times": times,
          "bytes": sorted(sizes), "queries": len(queries.captured_queries)}
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="moorage-bench-sync-"))
    url = os.environ.get("DATABASE_URL", "")
    try:
        with ExitStack() as stack:
            database = None
            if url.startswith(("postgres://", "postgresql://")):
                database = stack.enter_context(fresh_postgres_database(url))
            return run(root, database, stack)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, database: str | None, stack: ExitStack) -> int:
    plane = ControlPlane(root / "control-plane", database_url=database)
    password = "Bench-Pw-" + secrets.token_hex(6)
    started = time.monotonic()
    accounts: list[dict[str, Any]] = plane.django(SETUP, {
        "slugs": SLUGS, "agent_files": str(root / "agent-files"), "accounts": ACCOUNTS,
        "per_account": PER_ACCOUNT, "password": password})
    print(f"set up {ACCOUNTS} accounts, {ACCOUNTS * PER_ACCOUNT} credentials, "
          f"{len(SLUGS)} regions in {time.monotonic() - started:.1f} s")
    stack.callback(plane.stop)
    plane.start()
    agents = []
    for slug in SLUGS:
        agent = AgentProcess(root / "agents" / slug, agent_dir=root / "agent-files" / slug,
                             url=plane.url, env=plane.env, wait=25)
        stack.callback(agent.stop)
        agent.start()
        agents.append(agent)
    first = accounts[0]
    api = stack.enter_context(httpx.Client(base_url=plane.url + "/api/v1", trust_env=False,
                                           timeout=30.0))
    auth = {"Authorization": f"Bearer {first['token']}"}

    def caught_up() -> bool:
        return all(r["lag_revisions"] == 0 and r["status"] == "online"
                   for r in api.get("/regions", headers=auth).json())

    started = time.monotonic()
    wait_until(caught_up, timeout=120, what="three agents with their snapshots")
    for agent in agents:
        with agent.replica() as replica:
            assert len(replica.credentials_held()) == ACCOUNTS * PER_ACCOUNT
    print(f"three agents took their snapshots in {time.monotonic() - started:.1f} s")

    # 1. rotation latency ---------------------------------------------------------------------
    latencies, api_times = [], []
    for n in range(ROTATIONS):
        account = accounts[(n * 37) % ACCOUNTS]
        credential_id = account["credentials"][n % PER_ACCOUNT]
        headers = {"Authorization": f"Bearer {account['token']}"}
        time.sleep(0.2)  # let the agents settle back into their long polls
        begin = time.perf_counter()
        response = api.patch(f"/credentials/{credential_id}", headers=headers,
                             json={"secret": f"{password}-rotated-{n}"})
        api_times.append(time.perf_counter() - begin)
        assert response.status_code == 200, response.text
        revision = response.json()["revision"]
        while True:
            state = api.get(f"/credentials/{credential_id}/sync", headers=headers).json()
            if state["revision"] == revision and state["synced_regions"] == 3:
                break
            if time.perf_counter() - begin > 30:
                raise SystemExit(f"rotation {n} not acknowledged within 30 s: {state}")
            time.sleep(POLL)
        latencies.append(time.perf_counter() - begin)
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)

    # 2. change-log scaling -------------------------------------------------------------------
    token = (root / "agent-files" / SLUGS[0] / "token").read_text().strip()
    answers = {}
    for size in (SMALL_LOG, BIG_LOG):
        if size == SMALL_LOG:
            entries = plane.django(COMPACT, SMALL_LOG)
        else:
            started = time.monotonic()
            entries = plane.django(GROW, BIG_LOG)
            print(f"grew the change log to {entries} entries in "
                  f"{time.monotonic() - started:.1f} s")
        wait_until(caught_up, timeout=300, what="the agents to follow the log")
        assert plane.django(LOG_SIZE) == entries
        measured = plane.django(MEASURE, {
            "account": first["account"], "credential": first["credentials"][0],
            "password": f"{password}-log-{size}", "token": token, "requests": REQUESTS})
        over_http, http_bytes = [], set()
        with httpx.Client(trust_env=False, timeout=30.0) as agent_http:
            for n in range(REQUESTS + 1):
                begin = time.perf_counter()
                response = agent_http.get(
                    f"{plane.url}/api/v1/agent/changes",
                    params={"since": measured["since"], "wait": 0, "nonce": f"bench-{n:04d}"},
                    headers={"Authorization": f"Bearer {token}"})
                if n:
                    over_http.append(time.perf_counter() - begin)
                    http_bytes.add(len(response.content))
                assert response.status_code == 200, response.text
        answers[size] = measured | {"http": over_http, "http_bytes": sorted(http_bytes)}

    # report ----------------------------------------------------------------------------------
    vendor = "PostgreSQL" if database else "SQLite"
    print(f"\ndatabase: {vendor}; {os.cpu_count()} cores")
    print(f"\nRotation → acknowledged by all {len(SLUGS)} regions "
          f"({ROTATIONS} rotations, {ACCOUNTS * PER_ACCOUNT} credentials):")
    print(f"  {'':<28}{'p50':>10}{'p99':>10}{'max':>10}")
    print(f"  {'until all three acked':<28}{p50 * 1000:>8.0f} ms{p99 * 1000:>8.0f} ms"
          f"{max(latencies) * 1000:>8.0f} ms   (targets {TARGET_P50 * 1000:.0f} / "
          f"{TARGET_P99 * 1000:.0f} ms)")
    print(f"  {'the PATCH itself':<28}{statistics.median(api_times) * 1000:>8.0f} ms"
          f"{percentile(api_times, 0.99) * 1000:>8.0f} ms{max(api_times) * 1000:>8.0f} ms")
    print(f"\nGET /agent/changes?since=<revision before one change>, median of {REQUESTS}:")
    print(f"  {'log entries':>12}{'in-process':>13}{'over HTTP':>12}{'queries':>9}"
          f"{'bytes':>8}")
    for answer in answers.values():
        print(f"  {answer['entries']:>12,}{statistics.median(answer['times']) * 1000:>10.1f} ms"
              f"{statistics.median(answer['http']) * 1000:>9.1f} ms{answer['queries']:>9}"
              f"{'/'.join(map(str, answer['http_bytes'])):>8}")

    ok = True
    if p50 > TARGET_P50 or p99 > TARGET_P99:
        print(f"\nMISSED: rotation latency p50 {p50:.2f} s / p99 {p99:.2f} s")
        ok = False
    small, big = answers[SMALL_LOG], answers[BIG_LOG]
    if small["queries"] != big["queries"] or \
            abs(max(big["http_bytes"]) - max(small["http_bytes"])) > 64:
        print("\nMISSED: the answer for one change grows with the log")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
