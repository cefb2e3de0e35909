"""Benchmark: a fleet of agents long-polling real ``moorage up`` processes.

N simulated agents (async httpx; each a real region with its own token, its answers verified
with its region key on a sample) against one or two ``moorage up --no-agent`` processes on the
same database, the agents split between them. One account with one registry credential is
enabled in every region. Each round:

1. every agent starts a long poll (``wait=30``) and the script waits until ``/metrics`` of the
   processes count all N waiting;
2. while they wait: ``GET /api/v1/credentials`` 100 times (one at a time), and the database
   connections seen in ``pg_stat_activity`` (sampled every 0.1 s all round long);
3. the credential is rotated with ``PATCH /api/v1/credentials/{id}``; every poll must answer
   with it. Timed from just before the PATCH to each answer's arrival.

Targets (exit 1 when missed): 0 errors, rotation → all answers p99 ≤ 2 s, credentials list
p95 ≤ 100 ms while they wait, ≤ 20 connections in ``pg_stat_activity``.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/fleet.py
    DATABASE_URL=… .venv/bin/python bench/fleet.py --processes 2
    .venv/bin/python bench/fleet.py --agents 200                     # SQLite

With ``DATABASE_URL`` the script creates its own database on that server and drops it at the
end. The open-files limit of this process (and so of the servers it starts) is raised to the
hard limit: each agent holds a socket on both sides. Run by hand; record in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moorage.testing.fleet import (
    Fleet,
    PollFailed,
    SimAgent,
    database_connections,
    rotate,
    seed_fleet,
)
from moorage.testing.processes import (
    ControlPlane,
    database_like_this_session,
    wait_until,
)

WAIT = 30
VERIFY_EVERY = 10  # verify the MAC of one answer in this many (all answers are decoded)
# Agents per HTTP client: httpx's pool scans its connections on every request, so one client
# for a thousand concurrent polls would make the benchmark measure httpx, not the server.
AGENTS_PER_CLIENT = 25
TARGET_P99 = 2.0
TARGET_LIST_P95 = 0.100
TARGET_CONNECTIONS = 20


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def waiting(cp: ControlPlane) -> float:
    text = httpx.get(f"{cp.url}/metrics", timeout=30, trust_env=False).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("moorage_agent_polls_waiting"))


def cpu_seconds(cp: ControlPlane) -> float:
    """CPU time (user + system) a control-plane process has used so far."""
    assert cp.process is not None
    fields = Path(f"/proc/{cp.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Sampler(threading.Thread):
    """The most connections to the database seen, sampled every 0.1 s."""

    def __init__(self, url: str | None) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while self.url and not self.stop.wait(0.1):
            try:
                self.peak = max(self.peak, database_connections(self.url))
            except Exception:  # noqa: S110 - a sample may fail under load; the next one counts
                pass


async def snapshots(planes: list[ControlPlane], agents: list[SimAgent]) -> None:
    clients = [httpx.AsyncClient(base_url=cp.url, timeout=120, trust_env=False)
               for cp in planes]
    gate = asyncio.Semaphore(20)

    async def one(n: int, agent: SimAgent) -> None:
        async with gate:
            await agent.snapshot(clients[n % len(clients)])

    try:
        await asyncio.gather(*(one(n, a) for n, a in enumerate(agents)))
    finally:
        for client in clients:
            await client.aclose()


async def one_round(planes: list[ControlPlane], fleet: Fleet,
                    url: str | None) -> dict[str, Any]:
    agents = fleet.agents
    limits = httpx.Limits(max_connections=AGENTS_PER_CLIENT + 5)
    groups = -(-len(agents) // AGENTS_PER_CLIENT)
    clients = [httpx.AsyncClient(base_url=planes[n % len(planes)].url, timeout=WAIT + 60,
                                 limits=limits, trust_env=False) for n in range(groups)]
    arrivals: list[float] = []
    errors: list[str] = []
    changed = 0
    sampler = Sampler(url)
    sampler.start()

    async def poll(n: int, agent: SimAgent) -> None:
        nonlocal changed
        try:
            payload = await agent.changes(clients[n // AGENTS_PER_CLIENT], wait=WAIT,
                                          verify=n % VERIFY_EVERY == 0)
        except (PollFailed, httpx.HTTPError, AssertionError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        arrivals.append(time.monotonic())
        if any(c.get("credential", {}).get("id") == fleet.credential_id
               for c in payload["changes"]):
            changed += 1

    try:
        polls = [asyncio.create_task(poll(n, a)) for n, a in enumerate(agents)]
        started = time.monotonic()
        await asyncio.to_thread(
            wait_until, lambda: sum(waiting(cp) for cp in planes) >= len(agents),
            timeout=300, what="every poll waiting", interval=0.5)
        settled = time.monotonic() - started
        with httpx.Client(base_url=planes[0].url, trust_env=False, timeout=30,
                          headers=fleet.auth) as http:
            lists = []
            for _ in range(100):
                began = time.monotonic()
                response = await asyncio.to_thread(http.get, "/api/v1/credentials")
                lists.append(time.monotonic() - began)
                if response.status_code != 200:
                    errors.append(f"credentials list: HTTP {response.status_code}")
            waiting_connections = database_connections(url) if url else 0
            cpu_before = [cpu_seconds(cp) for cp in planes], time.process_time()
            rotated = await asyncio.to_thread(rotate, http, fleet)
        await asyncio.gather(*polls)
        cpu = ([cpu_seconds(cp) - b for cp, b in zip(planes, cpu_before[0], strict=True)],
               time.process_time() - cpu_before[1])
    finally:
        sampler.stop.set()
        for client in clients:
            await client.aclose()
    latencies = [t - rotated for t in arrivals]
    return {"errors": errors, "changed": changed, "latencies": latencies, "lists": lists,
            "server_cpu": cpu[0], "client_cpu": cpu[1],
            "settled": settled, "waiting_connections": waiting_connections,
            "peak_connections": sampler.peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--processes", type=int, choices=(1, 2), default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=None,
                        help="MOORAGE_DB_POOL_SIZE of each process (default: Moorage's)")
    args = parser.parse_args()
    files = raise_open_files()
    with tempfile.TemporaryDirectory(prefix="moorage-bench-fleet-") as tmp, \
            database_like_this_session() as url:
        root = Path(tmp)
        planes: list[ControlPlane] = []
        try:
            for n in range(args.processes):
                (root / f"cp{n}").mkdir()
                cp = ControlPlane(root / f"cp{n}", database_url=url)
                if planes:
                    cp.env = dict(planes[0].env)  # the same data dir: keys, secret key
                if args.pool:
                    cp.env["MOORAGE_DB_POOL_SIZE"] = str(args.pool)
                cp.start()
                planes.append(cp)
            began = time.monotonic()
            fleet = seed_fleet(planes[0], args.agents, prefix="bench")
            print(f"{args.agents} regions seeded in {time.monotonic() - began:.1f} s; "
                  f"{args.processes} process(es); {'PostgreSQL' if url else 'SQLite'}; "
                  f"open files limit {files}")
            began = time.monotonic()
            asyncio.run(snapshots(planes, fleet.agents))
            print(f"{args.agents} snapshots in {time.monotonic() - began:.1f} s")
            results = []
            for n in range(args.rounds):
                result = asyncio.run(one_round(planes, fleet, url))
                results.append(result)
                lat = result["latencies"]
                print(f"round {n + 1}: {len(result['errors'])} errors, "
                      f"{result['changed']}/{args.agents} answered with the rotation; "
                      f"answer after PATCH p50 {quantile(lat, 0.5):.3f} s, "
                      f"p99 {quantile(lat, 0.99):.3f} s, max {max(lat):.3f} s; "
                      f"credentials list p95 {quantile(result['lists'], 0.95) * 1000:.0f} ms; "
                      f"connections waiting {result['waiting_connections']}, peak "
                      f"{result['peak_connections']}; all waiting after "
                      f"{result['settled']:.1f} s; CPU from the PATCH to the last answer: "
                      f"server {'+'.join(f'{c:.2f}' for c in result['server_cpu'])} s, "
                      f"this client {result['client_cpu']:.2f} s")
                for error in result["errors"][:5]:
                    print("   ", error)
        finally:
            for cp in planes:
                cp.stop()
    latencies = [x for r in results for x in r["latencies"]]
    lists = [x for r in results for x in r["lists"]]
    errors = sum(len(r["errors"]) for r in results)
    missing = sum(args.agents - r["changed"] for r in results)
    peak = max(r["peak_connections"] for r in results)
    p99, list_p95 = quantile(latencies, 0.99), quantile(lists, 0.95)
    print(f"\nall rounds: {errors} errors, {missing} polls without the rotation; answers p50 "
          f"{statistics.median(latencies):.3f} s p99 {p99:.3f} s; credentials list p50 "
          f"{statistics.median(lists) * 1000:.0f} ms p95 {list_p95 * 1000:.0f} ms; "
          f"peak connections {peak}")
    missed = []
    if errors or missing:
        missed.append(f"{errors} errors, {missing} polls without the rotation")
    if p99 > TARGET_P99:
        missed.append(f"p99 {p99:.2f} s > {TARGET_P99} s")
    if list_p95 > TARGET_LIST_P95:
        missed.append(f"credentials p95 {list_p95 * 1000:.0f} ms > 100 ms")
    if url and peak > TARGET_CONNECTIONS:
        missed.append(f"{peak} connections > {TARGET_CONNECTIONS}")
    if missed:
        print("MISSED: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
