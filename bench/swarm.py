"""Benchmark: swarm regions — a 3-replica deploy against raw docker-py, and a rotation that
reaches 20 running services.

Real components, all started here and stopped at the end (even on failure), reusing
``moorage.testing``: a swarm of three real dockerd engines (:class:`~moorage.testing.swarm.Swarm`),
a Basic-auth ``docker-registry``, a control plane as a real process (``moorage up --no-agent``
on a fresh SQLite file, or a fresh PostgreSQL database when ``DATABASE_URL`` is set:
:class:`~moorage.testing.processes.ControlPlane`) and the region's agent as a real process
(``moorage agent --docker-host <manager>``, default 25 s long poll:
:class:`~moorage.testing.processes.AgentProcess`). The region's runtime is ``swarm``.

1. **Deploy, 3 replicas on 3 nodes.** Each round pushes two fresh busybox images (a new
   marker each, so every node pulls a layer it does not have) and, in alternating order:

   * **Moorage**: ``PATCH /apps/{id}`` with the new image, then ``POST /apps/{id}/deploy``;
     timed from just before the deploy request until the deployment's ``finished_at`` (when
     the control plane recorded ``running``; read from ``GET /deployments/{id}``, polled every
     0.2 s so the poll does not load the server the agent reports to). In between: the
     agent's long poll wakes, it proves pull access (I9),
     creates the service with the credential's ``X-Registry-Auth``, waits for 3 running
     tasks, reports.
   * **raw**: docker-py's low-level client posts ``/services/create`` with the same
     ``X-Registry-Auth`` and the same spec shape (host network, 3 replicas), then lists the
     service's tasks every 10 ms until 3 run.

   Each side gets the same untimed steps: before it, its fresh image is pushed and removed
   from the manager (nothing cached on any node), then an untimed raw service of another
   fresh image runs its 3 tasks (the first service created after a clean-up starts ~0.5 s
   slower, whichever side creates it: seen here); after it, every service, its containers
   and every image are removed from every node. So each side is a first deploy of a fresh
   image after the same history (with both sides after one clean-up, the first one ran
   slower whichever it was, and the order decided the ratio). One warm-up round is
   discarded. The control plane's log timestamps give Moorage's steps. Target: median
   ratio ≤ 1.10 over 20 rounds.
2. **Rotation reaching 20 services.** 20 apps (1 replica each) pull with one credential.
   Each round sets a new password at the registry, then ``PATCH /credentials/{id}`` with it;
   from just before the PATCH, the manager's services are listed every 20 ms until all 20
   carry the new revision in their ``moorage.credential`` label (the agent's refresh: same
   spec, new ``X-Registry-Auth``, no restart). Each service's latency is when its label
   was first seen. Target: p99 ≤ 2 s over all samples; the task ids must not change.

    .venv/bin/python bench/swarm.py                                        # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/swarm.py

Run by hand; record the figures in bench/README.md. Exits 1 when a target is missed.
``--deploy-only`` skips the rotation part.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from moorage.registry import RegistryLogin
from moorage.registry.dockerconfig import registry_auth_header
from moorage.testing.images import push_busybox_image
from moorage.testing.processes import (
    AgentProcess,
    ControlPlane,
    database_like_this_session,
    wait_until,
)
from moorage.testing.registry import RegistryServer
from moorage.testing.swarm import Swarm

ROUNDS = 20
WARMUP = 1
TARGET_RATIO = 1.10
SERVICES = 20
ROTATIONS = 10
TARGET_P99 = 2.0
POLL = 0.01
DEPLOY_POLL = 0.2
LABEL_POLL = 0.02
ROUND_TIMEOUT = 120.0
SETTLE = 0.5
REGION = "sw-bench"

SETUP = """
from pathlib import Path
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
from moorage.regions import services as regions
from moorage.testing import factories
from moorage.testing.credentials import make_credential
created = regions.region_create(actor=None, slug=data["region"], runtime="swarm",
                                enabled_for_new_accounts=True)
regions.write_agent_files(Path(data["agent_files"]), token=created.token, key=created.key)
owner = factories.make_account("Bench")
credential = make_credential(owner, name="bench-reg", server=data["host"],
                             username=data["user"], secret=data["password"])
result = {"token": owner.token, "credential": credential.pk}
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="moorage-bench-swarm-"))
    try:
        with ExitStack() as stack:
            database = stack.enter_context(database_like_this_session())
            return run(root, database, stack)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, database: str | None, stack: ExitStack) -> int:
    started = time.monotonic()
    swarm = stack.enter_context(Swarm(3))
    registry = stack.enter_context(RegistryServer("basic"))
    login = RegistryLogin("bench-" + secrets.token_hex(3), "Bench-Pw-" + secrets.token_hex(8))
    registry.add_user(login.username, login.password)
    plane = ControlPlane(root / "control-plane", database_url=database)
    setup = plane.django(SETUP, {"region": REGION, "agent_files": str(root / "agent-files"),
                                 "host": registry.host, "user": login.username,
                                 "password": login.password})
    stack.callback(plane.stop)
    plane.start()
    agent = AgentProcess(root / "agent", agent_dir=root / "agent-files", url=plane.url,
                         env=plane.env, wait=25, docker_host=swarm.base_url)
    stack.callback(agent.stop)
    agent.start()
    api = stack.enter_context(httpx.Client(
        base_url=plane.url + "/api/v1", trust_env=False, timeout=60.0,
        headers={"Authorization": f"Bearer {setup['token']}"}))
    wait_until(lambda: next(r for r in api.get("/regions").json()
                            if r["slug"] == REGION)["status"] == "online",
               timeout=60, what="the swarm region's agent online")
    client = swarm.client()
    stack.callback(client.close)
    print(f"a 3-node swarm, a registry, a control plane ({'PostgreSQL' if database else 'SQLite'})"
          f" and the region's agent in {time.monotonic() - started:.1f} s")
    ctx = {"api": api, "swarm": swarm, "client": client, "registry": registry,
           "login": login, "credential": setup["credential"]}
    ratio_ok = deploy_benchmark(ctx)
    rotation_ok = "--deploy-only" in sys.argv or rotation_benchmark(ctx)
    if "Traceback" in agent.log():
        print(agent.log()[-3000:])
        return 1
    return 0 if ratio_ok and rotation_ok else 1


# -- 1. deploy ----------------------------------------------------------------------------------


def _create_app(ctx: dict[str, Any], name: str, image: str, replicas: int) -> int:
    response = ctx["api"].post("/apps", json={
        "name": name, "image": image, "runtime_pull": "credential",
        "runtime_pull_credential_id": ctx["credential"], "replicas": replicas,
        "command": ["sleep", "3600"], "regions": [REGION]})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _breakdown(ctx: dict[str, Any], deployment_id: int) -> dict[str, float]:
    """When the control plane recorded each step's log line, in seconds after the queued one:
    the agent's 'Pulling …' (sync + ack + first report), 'Creating service …' (I9 proof,
    service create, report), and the last line (the final report)."""
    lines = ctx["api"].get(f"/deployments/{deployment_id}/logs").json()
    at = [(datetime.fromisoformat(line["at"]), line["line"]) for line in lines]
    start = at[0][0]

    def first(prefix: str) -> float:
        return next(((t - start).total_seconds() for t, text in at
                     if text.startswith(prefix)), float("nan"))

    return {"pulling": first("Pulling "), "created": first("Creating service "),
            "final": (at[-1][0] - start).total_seconds()}


def _deploy(ctx: dict[str, Any], app_id: int) -> tuple[float, dict[str, Any]]:
    """Deploy and wait until the control plane has it running; (seconds, deployment).

    The end is the deployment's ``finished_at`` (the control plane's clock, this machine's):
    polling the API every few ms to see it would load the very server the agent reports to.
    """
    api = ctx["api"]
    begin = time.perf_counter()
    wall = datetime.now(UTC)
    response = api.post(f"/apps/{app_id}/deploy")
    assert response.status_code == 201, response.text
    [deployment] = response.json()
    while True:
        current = api.get(f"/deployments/{deployment['id']}").json()
        if current["status"] == "running":
            finished = datetime.fromisoformat(current["finished_at"])
            return (finished - wall).total_seconds(), current
        if current["status"] == "failed":
            raise SystemExit(f"the deploy failed: {current['error_code']}: "
                             f"{current['error_message']}")
        if time.perf_counter() - begin > ROUND_TIMEOUT:
            raise SystemExit(f"the deploy did not finish in {ROUND_TIMEOUT:.0f} s")
        time.sleep(DEPLOY_POLL)


def _raw(ctx: dict[str, Any], image: str, name: str) -> float:
    """docker-py by hand: create the service with the same auth, wait for 3 running tasks."""
    api = ctx["client"].api
    login: RegistryLogin = ctx["login"]
    spec = {"Name": name, "Labels": {"bench": "raw"},
            "TaskTemplate": {"ContainerSpec": {"Image": image, "Args": ["sleep", "3600"]},
                             "Networks": [{"Target": "host"}]},
            "Mode": {"Replicated": {"Replicas": 3}}}
    header = registry_auth_header(login, ctx["registry"].host)
    begin = time.perf_counter()
    response = api._post_json(api._url("/services/create"), data=spec,
                              headers={"X-Registry-Auth": header})
    service_id = api._result(response, json=True)["ID"]
    while True:
        tasks = api.tasks(filters={"service": service_id, "desired-state": "running"})
        if sum(1 for t in tasks if t["Status"]["State"] == "running") >= 3:
            return time.perf_counter() - begin
        if time.perf_counter() - begin > ROUND_TIMEOUT:
            raise SystemExit("the raw service never ran 3 tasks")
        time.sleep(POLL)


def _clean(ctx: dict[str, Any]) -> None:
    """Remove every service, their containers and every image on every node."""
    swarm: Swarm = ctx["swarm"]
    api = ctx["client"].api
    removed = [s["ID"] for s in api.services()]
    for service_id in removed:
        api.remove_service(service_id)
    for engine in swarm.engines:
        node = engine.client()
        try:
            deadline = time.monotonic() + 60
            while True:
                left = [c for c in node.api.containers(all=True)
                        if c["Labels"].get("com.docker.swarm.service.id") in removed]
                if not left:
                    break
                for container in left:
                    try:
                        node.api.remove_container(container["Id"], force=True)
                    except Exception:  # noqa: S110 - already going; looked at again
                        pass
                if time.monotonic() > deadline:
                    raise SystemExit("task containers did not go away")
                time.sleep(0.1)
            for image in node.api.images():
                node.api.remove_image(image["Id"], force=True)
        finally:
            node.close()


def deploy_benchmark(ctx: dict[str, Any]) -> bool:
    registry: RegistryServer = ctx["registry"]
    client = ctx["client"]
    app_id = 0
    ratios, moorage, raw = [], [], []
    breakdowns: list[dict[str, float]] = []
    print(f"\n1. deploy, 3 replicas on 3 nodes\n{'round':>5}  {'order':<12}{'moorage':>10}"
          f"{'raw':>10}{'ratio':>8}")
    for n in range(-WARMUP, ROUNDS):
        tag = f"r{n + WARMUP}-{secrets.token_hex(3)}"
        result: dict[str, float] = {}
        moorage_first = n % 2 == 0
        for side in ("moorage", "raw") if moorage_first else ("raw", "moorage"):
            # The same untimed steps before each side: push its fresh image and a fresh
            # "warm" one, remove them from the manager, run a raw service of the warm one
            # (the first service after a clean-up starts ~0.5 s slower, whichever side makes
            # it: seen here), pause; after it, remove every service, container and image.
            # (With both sides after one clean-up, the first ran slower whichever it was,
            # and the order decided the ratio.)
            image = push_busybox_image(client, registry, f"bench/{side}", tag,
                                       marker=f"{side}-{tag}")
            warm = push_busybox_image(client, registry, f"bench/warm-{side}", tag,
                                      marker=f"warm-{side}-{tag}")
            if side == "moorage" and app_id == 0:
                app_id = _create_app(ctx, "api", image, 3)
            elif side == "moorage":
                assert ctx["api"].patch(f"/apps/{app_id}",
                                        json={"image": image}).status_code == 200
            _clean_images_only(ctx)
            _raw(ctx, warm, f"warm-{side}-{tag}")
            time.sleep(SETTLE)
            if side == "moorage":
                seconds, deployment = _deploy(ctx, app_id)
                assert deployment["image_digest"].startswith("sha256:")
                result[side] = seconds
                steps = _breakdown(ctx, deployment["id"])
                tasks = client.api.tasks(filters={"label": "moorage.app",
                                                  "desired-state": "running"})
                assert len({t["NodeID"] for t in tasks
                            if t["Status"]["State"] == "running"}) == 3
            else:
                result[side] = _raw(ctx, image, f"raw-{tag}")
            _clean(ctx)
        m, r = result["moorage"], result["raw"]
        label = "warm-up" if n < 0 else str(n + 1)
        print(f"{label:>5}  {'moorage→raw' if moorage_first else 'raw→moorage':<12}"
              f"{m * 1000:>8.0f} ms{r * 1000:>7.0f} ms{m / r:>8.2f}   (pulling at "
              f"{steps['pulling'] * 1000:.0f} ms, service created {steps['created'] * 1000:.0f}"
              f" ms, final report {steps['final'] * 1000:.0f} ms)")
        if n >= 0:
            moorage.append(m)
            raw.append(r)
            ratios.append(m / r)
            breakdowns.append(steps)
    median = statistics.median(ratios)
    print("median steps as the control plane recorded them: " + ", ".join(
        f"{key} {statistics.median(b[key] for b in breakdowns) * 1000:.0f} ms"
        for key in ("pulling", "created", "final")))
    print(f"median: moorage {statistics.median(moorage) * 1000:.0f} ms, raw "
          f"{statistics.median(raw) * 1000:.0f} ms, ratio {median:.2f} "
          f"(target ≤ {TARGET_RATIO:.2f}): {'ok' if median <= TARGET_RATIO else 'MISSED'}")
    return median <= TARGET_RATIO


def _clean_images_only(ctx: dict[str, Any]) -> None:
    """The pushes left the images on the manager: remove them so every node pulls."""
    for engine in ctx["swarm"].engines:
        node = engine.client()
        try:
            for image in node.api.images():
                node.api.remove_image(image["Id"], force=True)
        finally:
            node.close()


# -- 2. rotation --------------------------------------------------------------------------------


def rotation_benchmark(ctx: dict[str, Any]) -> bool:
    api, client = ctx["api"], ctx["client"]
    registry: RegistryServer = ctx["registry"]
    login: RegistryLogin = ctx["login"]
    image = push_busybox_image(client, registry, "bench/many", "1.0", marker="many")
    started = time.monotonic()
    app_ids = [_create_app(ctx, f"svc-{n}", image, 1) for n in range(SERVICES)]
    for app_id in app_ids:
        _deploy(ctx, app_id)
    print(f"\n2. rotation reaching {SERVICES} services ({SERVICES} deployed in "
          f"{time.monotonic() - started:.1f} s)")

    def labels() -> dict[str, str]:
        return {s["ID"]: s["Spec"]["Labels"].get("moorage.credential", "")
                for s in client.api.services(filters={"label": "moorage.app"})}

    def tasks() -> set[str]:
        return {t["ID"] for t in client.api.tasks(
            filters={"label": "moorage.app", "desired-state": "running"})}

    before = tasks()
    samples: list[float] = []
    patches: list[float] = []
    for n in range(ROTATIONS):
        password = f"Bench-Rotated-{n}-{secrets.token_hex(6)}"
        registry.set_password(login.username, password)
        time.sleep(SETTLE)
        begin = time.perf_counter()
        response = api.patch(f"/credentials/{ctx['credential']}", json={"secret": password})
        patches.append(time.perf_counter() - begin)
        assert response.status_code == 200, response.text
        wanted = f"{ctx['credential']}:{response.json()['revision']}"
        seen: dict[str, float] = {}
        while len(seen) < SERVICES:
            now = labels()
            elapsed = time.perf_counter() - begin
            for service_id, label in now.items():
                if label == wanted:
                    seen.setdefault(service_id, elapsed)
            if elapsed > 30:
                raise SystemExit(f"rotation {n}: {len(seen)} of {SERVICES} services updated "
                                 "after 30 s")
            time.sleep(LABEL_POLL)
        samples.extend(seen.values())
        print(f"  rotation {n + 1}: all {SERVICES} in {max(seen.values()) * 1000:.0f} ms "
              f"(PATCH {patches[-1] * 1000:.0f} ms)")
    same = tasks() == before
    p50, p99 = statistics.median(samples), percentile(samples, 0.99)
    ok = p99 <= TARGET_P99 and same
    print(f"{len(samples)} samples: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
          f"(target ≤ {TARGET_P99 * 1000:.0f} ms), max {max(samples) * 1000:.0f} ms; PATCH p50 "
          f"{statistics.median(patches) * 1000:.0f} ms; task ids unchanged: {same}: "
          f"{'ok' if ok else 'MISSED'}")
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
