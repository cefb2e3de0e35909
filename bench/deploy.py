"""Benchmark: deploy request → running container, against a raw docker-py pull + run.

Real components, all started here in temp dirs and stopped at the end (even on failure): a
private ``dockerd`` and a Basic-auth ``docker-registry`` (``moorage.testing``), a control plane
(Django on a fresh SQLite file, or a fresh PostgreSQL database when ``DATABASE_URL`` is set,
migrated, served by a real uvicorn in a thread of this process), and one region agent (the
real ``SyncLoop`` + ``Deployer`` + ``DockerRuntime``, ``run_forever`` in a thread, default
25 s long poll). One account, one container-registry credential for the registry, one app
running busybox ``httpd -f -p PORT``.

Each round runs the two sides in alternating order; before each, the same untimed steps:
push a fresh busybox image (a new marker, so the pull downloads a layer nobody has), pause
0.5 s; after each, remove every container and image (untimed):

* **Moorage**: ``deployment_create`` → the agent's long poll wakes, it applies the batch
  (its ack leaves in the background), queues ``pulling`` (progress reports leave in the
  background), pulls with the credential, queues ``starting``, starts the container and
  waits until the port accepts TCP, reports ``running``. Timed until the control plane has
  recorded ``running`` (the final report's answer, which comes after the commit; checked in
  the DB).
* **raw**: docker-py ``APIClient.pull`` with the same auth, ``create_container``, ``start``,
  and a connect loop (every 5 ms) until the port accepts TCP.

So every side is a first deploy of a fresh image after the same history (with both images
pushed before the first side, the first side ran slower whichever it was). One warm-up round
is discarded. The agent's clean-up after its final report (restart policy) is off the clock,
but the next step waits for it. The agent's client and runtime are thin subclasses that
only record timestamps (no product code is changed), which gives the breakdown.

    .venv/bin/python bench/deploy.py                                        # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/deploy.py

With ``DATABASE_URL`` the benchmark creates its own database on that server and drops it at
the end. Run by hand; record the figures in bench/README.md. Exits 1 when the median ratio
misses the target (≤ 1.10).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moorage.agent.client import ControlPlaneClient
from moorage.agent.runtime import DockerRuntime, PullResult
from moorage.agent.runtime.docker import RunResult
from moorage.testing.dockerd import Dockerd
from moorage.testing.images import push_busybox_image
from moorage.testing.ports import free_port, wait_for_port
from moorage.testing.registry import RegistryServer

ROUNDS = 20
WARMUP = 1
TARGET_RATIO = 1.10
RAW_POLL = 0.005  # the raw side's readiness connect loop
SETTLE = 0.5  # pause before each timed side: the agent is back in its long poll
ROUND_TIMEOUT = 60.0

# -- timestamps from inside the agent (bench-only subclasses) -----------------------------------


class Marks:
    """First-occurrence timestamps (``time.perf_counter``) of the current round."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.at: dict[str, float] = {}
        self.final = threading.Event()
        self.settled = threading.Event()
        self.snapshot = threading.Event()

    def reset(self) -> None:
        with self._lock:
            self.at = {}
            self.final.clear()
            self.settled.clear()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        with self._lock:
            self.at.setdefault(name, now)


MARKS = Marks()


class TimedClient(ControlPlaneClient):
    """The agent's real client, recording when a change arrives and each report's round trip."""

    def snapshot(self) -> dict[str, Any]:
        payload = super().snapshot()
        MARKS.snapshot.set()
        return payload

    def changes(self, since: int, wait: int) -> dict[str, Any]:
        payload = super().changes(since, wait)
        if payload["changes"]:
            MARKS.mark("changes_received")
        return payload

    def ack(self, revision: int, credentials: dict[int, int], removed: list[int],
            snapshot: bool) -> None:
        MARKS.mark("ack_start")
        super().ack(revision, credentials, removed, snapshot)
        MARKS.mark("ack_end")

    def report(self, deployment_id: int, body: dict[str, Any]) -> None:
        status = body["status"]
        MARKS.mark(f"report_{status}_start")
        try:
            super().report(deployment_id, body)
        finally:
            MARKS.mark(f"report_{status}_end")
            if status in ("running", "failed"):
                MARKS.final.set()


class TimedRuntime(DockerRuntime):
    """The agent's real runtime, recording the pull, the run and the readiness wait."""

    def pull(self, *args: Any, **kwargs: Any) -> PullResult:
        MARKS.mark("pull_start")
        try:
            return super().pull(*args, **kwargs)
        finally:
            MARKS.mark("pull_end")

    def run(self, *args: Any, **kwargs: Any) -> RunResult:
        MARKS.mark("run_start")
        try:
            return super().run(*args, **kwargs)
        finally:
            MARKS.mark("run_end")

    def _wait_ready(self, *args: Any, **kwargs: Any) -> None:
        MARKS.mark("ready_start")
        try:
            super()._wait_ready(*args, **kwargs)
        finally:
            MARKS.mark("ready_end")

    def settle(self, *args: Any, **kwargs: Any) -> None:
        MARKS.mark("settle_start")
        try:
            super().settle(*args, **kwargs)
        finally:
            MARKS.mark("settle_end")
            MARKS.settled.set()


# -- the two sides ----------------------------------------------------------------------------

#: Moorage's timeline: (mark, what happened since the previous mark). Consecutive, so the
#: steps sum to the total; the group says whose overhead a step is.
MOORAGE_TIMELINE: tuple[tuple[str, str, str], ...] = (
    ("t0", "", ""),
    ("created", "deployment_create (service, commit)", "control plane"),
    ("changes_received", "long-poll wake-up + changes answer", "control plane"),
    ("pull_start", "agent: apply, credential (ack, report queued)", "sync"),
    ("pull_end", "pull (runtime.pull, with inspect)", "engine"),
    ("run_start", "agent: log lines, env secrets, spec", "agent"),
    ("ready_start", "list/create/start container", "engine"),
    ("ready_end", "readiness wait (10 ms polls, backing off)", "readiness"),
    ("run_end", "runtime returns (clean-up after report)", "engine"),
    ("report_running_start", "agent: record final in replica", "agent"),
    ("report_running_end", "report 'running' round trip", "reports"),
)
MOORAGE_STEPS: tuple[tuple[str, str, str, str], ...] = tuple(
    (label, group, MOORAGE_TIMELINE[i - 1][0], mark)
    for i, (mark, label, group) in enumerate(MOORAGE_TIMELINE) if i)
#: Progress reports leave in the background (off the timeline): their own round trips.
BACKGROUND_REPORTS = ("pulling", "starting")
RAW_STEPS: tuple[tuple[str, str, str], ...] = (
    ("pull", "t0", "pulled"),
    ("create + start container", "pulled", "started"),
    ("readiness wait (5 ms connects)", "started", "ready"),
)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _serve(port: int) -> list[str]:
    return ["/bin/sh", "-c", f"exec httpd -f -p {port}"]


def moorage_side(ctx: dict[str, Any]) -> dict[str, float]:
    from moorage.deployments.models import Deployment
    from moorage.deployments.services import deployment_create

    owner = ctx["owner"]
    MARKS.reset()
    t0 = time.perf_counter()
    [deployment] = deployment_create(actor=owner.user, membership=owner.membership,
                                     app_id=ctx["app_id"])
    created = time.perf_counter()
    if not MARKS.final.wait(ROUND_TIMEOUT):
        raise SystemExit(f"deployment {deployment.pk} did not finish in {ROUND_TIMEOUT:.0f} s")
    # The agent's clean-up after the final report (restart policy) is off the clock, but the
    # next side starts only once it is done, so it never overlaps the raw side's work.
    if not MARKS.settled.wait(ROUND_TIMEOUT):
        raise SystemExit(f"deployment {deployment.pk}: the agent's clean-up did not end")
    status, error = Deployment.objects.filter(pk=deployment.pk).values_list(
        "status", "error_message").get()
    if status != "running":
        raise SystemExit(f"deployment {deployment.pk} ended {status}: {error}")
    marks = dict(MARKS.at, t0=t0, created=created)
    missing = {mark for mark, _, _ in MOORAGE_TIMELINE} - set(marks)
    if missing:
        raise SystemExit(f"the agent left marks unset: {sorted(missing)}")
    return marks | {"total": marks["report_running_end"] - t0}


def raw_side(ctx: dict[str, Any]) -> dict[str, float]:
    api = ctx["raw_api"]
    port = ctx["raw_port"]
    t0 = time.perf_counter()
    for event in api.pull(ctx["raw_name"], tag="latest", stream=True, decode=True,
                          auth_config=ctx["auth"]):
        if "error" in event or "errorDetail" in event:
            raise SystemExit(f"raw pull failed: {event}")
    pulled = time.perf_counter()
    container = api.create_container(
        ctx["raw_ref"], command=_serve(port), detach=True,
        host_config=api.create_host_config(network_mode="host"))
    api.start(container["Id"])
    started = time.perf_counter()
    deadline = started + ROUND_TIMEOUT
    while not _accepts(port):
        if time.perf_counter() > deadline:
            raise SystemExit("the raw container never accepted connections")
        time.sleep(RAW_POLL)
    ready = time.perf_counter()
    ctx["raw_container"] = container["Id"]
    return {"t0": t0, "pulled": pulled, "started": started, "ready": ready, "total": ready - t0}


def clean_up_round(ctx: dict[str, Any]) -> None:
    """Remove both sides' containers and images: the next round starts from nothing."""
    api = ctx["raw_api"]
    for container in api.containers(all=True):
        api.remove_container(container["Id"], force=True)
    for image in api.images():
        api.remove_image(image["Id"], force=True)
    for port in (ctx["app_port"], ctx["raw_port"]):
        deadline = time.monotonic() + 10
        while _accepts(port) and time.monotonic() < deadline:
            time.sleep(0.05)


# -- set-up -----------------------------------------------------------------------------------


@contextmanager
def fresh_postgres_database(url: str) -> Iterator[str]:
    """Create an empty database on the server of ``url``; yield its URL; drop it after."""
    import psycopg

    name = f"moorage_bench_deploy_{os.getpid()}_{secrets.token_hex(4)}"
    admin_url = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(url)._replace(path=f"/{name}").geturl()
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="moorage-bench-deploy-"))
    url = os.environ.get("DATABASE_URL", "")
    try:
        with ExitStack() as stack:
            if url.startswith(("postgres://", "postgresql://")):
                os.environ["DATABASE_URL"] = stack.enter_context(fresh_postgres_database(url))
            else:
                os.environ.pop("DATABASE_URL", None)
            os.environ["MOORAGE_DATA_DIR"] = str(root / "data")
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moorage.config.settings_test")
            return run(root, stack)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, stack: ExitStack) -> int:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from moorage.apps.services import app_create
    from moorage.regions import services as region_services
    from moorage.testing import factories
    from moorage.testing.credentials import make_credential
    from moorage.testing.regions import make_region

    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.monotonic()
    dockerd = stack.enter_context(Dockerd())
    registry = stack.enter_context(RegistryServer("basic"))
    call_command("migrate", interactive=False, verbosity=0)
    print(f"dockerd, registry and a migrated {connection.vendor} database in "
          f"{time.monotonic() - started:.1f} s")

    # The control plane's state: a region, an account in it, a credential, an app.
    region = make_region("bench-1")
    owner = factories.make_account("Bench")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=[region.slug])
    user, password = "bench-" + secrets.token_hex(3), "Bench-Pw-" + secrets.token_hex(8)
    registry.add_user(user, password)
    make_credential(owner, name="bench-registry", server=registry.host, username=user,
                    secret=password)
    app_port, raw_port = free_port(), free_port()
    app_name, raw_name = f"{registry.host}/bench/app", f"{registry.host}/bench/raw"
    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     image=f"{app_name}:latest", port=app_port, command=_serve(app_port))

    # The control plane, served by uvicorn in a thread of this process.
    import uvicorn

    from moorage.config.asgi import application

    cp_port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=cp_port,
                                           lifespan="off", log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=1))
    server_thread = threading.Thread(target=server.run, name="bench-uvicorn", daemon=True)
    server_thread.start()

    def stop_server() -> None:
        # The agent's last long poll is still sleeping in a worker thread: uvicorn cancels
        # it after the grace period and would log that cancellation as an error.
        # (PostgreSQL: dropping the database then cuts that poll's connection.)
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        logging.getLogger("moorage.config.api").setLevel(logging.CRITICAL)
        server.should_exit = True
        server_thread.join(10)

    stack.callback(stop_server)
    wait_for_port(cp_port, timeout=20)

    # The agent, running continuously with the default long poll.
    from moorage.agent.config import AgentConfig
    from moorage.agent.deployer import Deployer
    from moorage.agent.replica import Replica
    from moorage.agent.sync import SyncLoop
    from moorage.protocol.constants import DEFAULT_WAIT

    config = AgentConfig(url=f"http://127.0.0.1:{cp_port}", token=region.token,
                         region_key=region.key, data_dir=root / "agent",
                         docker_host=dockerd.base_url, wait=DEFAULT_WAIT)
    logger = logging.getLogger("moorage.agent")
    logger.setLevel(logging.WARNING)
    stop = threading.Event()

    def agent() -> None:
        # The replica's SQLite connection belongs to the thread that opens it.
        replica = Replica.in_dir(config.data_dir, region.key)
        client = TimedClient(config)
        try:
            runtime = TimedRuntime(dockerd.base_url, region=region.slug)
            deployer = Deployer(replica, client, runtime, logger, stop_event=stop)
            SyncLoop(config, client, replica, logger, stop, deployer=deployer).run_forever()
        finally:
            client.close()  # also ends the long poll it abandoned on stop
            replica.close()

    agent_thread = threading.Thread(target=agent, name="bench-agent", daemon=True)
    agent_thread.start()

    def stop_agent() -> None:
        stop.set()
        agent_thread.join(10)

    stack.callback(stop_agent)
    if not MARKS.snapshot.wait(30):
        raise SystemExit("the agent took no snapshot within 30 s")

    docker_client = dockerd.client()
    stack.callback(docker_client.close)
    ctx: dict[str, Any] = {
        "owner": owner, "app_id": app.pk, "app_port": app_port, "raw_port": raw_port,
        "raw_api": docker_client.api, "raw_name": raw_name, "raw_ref": f"{raw_name}:latest",
        "auth": {"username": user, "password": password, "serveraddress": registry.host},
    }
    rounds: list[tuple[dict[str, float], dict[str, float]]] = []
    print(f"{'round':>5}  {'order':<12}{'moorage':>10}{'raw':>10}{'ratio':>8}"
          f"{'overhead':>10}")
    for n in range(-WARMUP, ROUNDS):
        moorage_first = n % 2 == 0
        result: dict[str, dict[str, float]] = {}
        for side in (("moorage", "raw") if moorage_first else ("raw", "moorage")):
            # The same untimed steps before each side: push its fresh image, pause; after
            # it, remove every container and image. (With both pushes before the first side,
            # that side ran slower whichever it was, and the order decided the ratio.)
            name = app_name if side == "moorage" else raw_name
            push_busybox_image(docker_client, registry, name.split("/", 1)[1],
                               marker=f"{name}-{n}-{secrets.token_hex(8)}")
            time.sleep(SETTLE)
            result[side] = moorage_side(ctx) if side == "moorage" else raw_side(ctx)
            clean_up_round(ctx)
        m, r = result["moorage"]["total"], result["raw"]["total"]
        label = "warm-up" if n < 0 else f"{n + 1}"
        order = "moorage→raw" if moorage_first else "raw→moorage"
        print(f"{label:>5}  {order:<12}{m * 1000:>8.0f} ms{r * 1000:>7.0f} ms"
              f"{m / r:>8.2f}{(m - r) * 1000:>7.0f} ms")
        if n >= 0:
            rounds.append((result["moorage"], result["raw"]))
    return report(rounds, connection.vendor)


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def report(rounds: list[tuple[dict[str, float], dict[str, float]]], vendor: str) -> int:
    ratios = [m["total"] / r["total"] for m, r in rounds]
    ratio = statistics.median(ratios)
    moorage_total = _median_ms([m["total"] for m, _ in rounds])
    raw_total = _median_ms([r["total"] for _, r in rounds])
    print(f"\ndatabase: {vendor}; {os.cpu_count()} cores; {len(rounds)} rounds")
    print(f"median deploy → running: Moorage {moorage_total:.0f} ms, raw docker-py "
          f"{raw_total:.0f} ms")
    print(f"median ratio: {ratio:.2f} (target ≤ {TARGET_RATIO:.2f}; per round "
          f"{min(ratios):.2f} to {max(ratios):.2f})")
    print("\nMoorage timeline (median ms per step; the steps are consecutive):")
    for label, group, start, end in MOORAGE_STEPS:
        print(f"  {label:<40}{group:<15}{_median_ms([m[end] - m[start] for m, _ in rounds]):>8.1f}")
    print(f"  {'total':<55}{moorage_total:>8.1f}")
    print("progress reports sent in the background, round trip (median ms):")
    for status in BACKGROUND_REPORTS:
        trips = [m[f"report_{status}_end"] - m[f"report_{status}_start"] for m, _ in rounds
                 if f"report_{status}_end" in m]
        if trips:
            print(f"  {status:<55}{_median_ms(trips):>8.1f}")
    print("off the critical path (median ms): ack round trip (sent while the deploy runs) "
          f"{_median_ms([m['ack_end'] - m['ack_start'] for m, _ in rounds]):.1f}; clean-up "
          "after the final report (restart policy, old containers) "
          f"{_median_ms([m['settle_end'] - m['settle_start'] for m, _ in rounds]):.1f}")
    print("raw docker-py (median ms):")
    for label, start, end in RAW_STEPS:
        print(f"  {label:<55}{_median_ms([r[end] - r[start] for _, r in rounds]):>8.1f}")
    print(f"  {'total':<55}{raw_total:>8.1f}")
    print("\nMoorage by group (median of each round's sum, ms):")
    for group in dict.fromkeys(group for _, group, _, _ in MOORAGE_STEPS):
        sums = [sum(m[end] - m[start] for _, g, start, end in MOORAGE_STEPS if g == group)
                for m, _ in rounds]
        print(f"  {group:<55}{_median_ms(sums):>8.1f}")
    overhead = [m["total"] - r["total"] for m, r in rounds]
    print(f"  {'(Moorage minus raw, per round)':<55}{_median_ms(overhead):>8.1f}")
    # The engine's own times swing by 2x between rounds on a busy machine, which swamps the
    # ratio. Everything outside Moorage's pull and its create/start steps is Moorage's own
    # time; added to the raw round's time, it gives the ratio an equally fast engine gives.
    outside = [m["total"] - (m["pull_end"] - m["pull_start"])
               - (m["ready_start"] - m["run_start"]) for m, _ in rounds]
    steady = statistics.median([(r["total"] + o) / r["total"]
                                for (_, r), o in zip(rounds, outside, strict=True)])
    print(f"\nMoorage's time outside the pull and the create/start: "
          f"{_median_ms(outside):.0f} ms (median);")
    print(f"the same engine time on both sides would give a median ratio of {steady:.2f}")
    if ratio > TARGET_RATIO:
        print(f"\nMISSED: median ratio {ratio:.2f} > {TARGET_RATIO:.2f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
