"""The ``swarm`` runtime: one Docker Swarm service per app, driven through a manager.

Why it looks the way it does (``docs/runtimes.md`` says it for operators):

* **One service per app per region**, named ``moorage-<account>-<app>`` and labelled
  ``moorage.*`` (account, app, deployment, region, port, and the credential revision its
  registry auth carries), so :meth:`SwarmRuntime.running` reads back what runs and an agent
  that lost its data directory updates the service instead of creating a second one.
* **Host networking.** Overlay networks and the routing mesh are not needed to serve, and not
  reliable everywhere. Two tasks cannot bind one port on one node, so an app with a port runs
  at most one replica per node (``MaxReplicas`` 1) and updates **stop-first**, one node at a
  time: with two or more replicas the other nodes keep serving; with one there is a gap, and
  the deployment's log says so. An app without a port updates **start-first**.
* **Rolling updates roll back by themselves** (``FailureAction: rollback`` with a monitor
  period): a new version that fails on a node leaves the previous version serving, and the
  deployment fails with ``update_rolled_back``. An update that cannot finish in time (no node
  to place a replica on, a node gone down) is rolled back by the agent (``update_stalled``).
  A service that cannot start at all when first created is removed again: nothing is left
  half made.
* **Registry auth is the tenant's, and only theirs.** ``X-Registry-Auth`` is built by the agent
  from the replica's credential (:func:`~moorage.registry.dockerconfig.registry_auth_header`)
  and sent on every create and update — ``e30=`` (no credentials) for an anonymous pull, since
  an update without the header would keep the previous login. docker-py's service calls take
  auth only from its loaded docker config, which is wiped (the machine's logins never apply),
  so the calls are made here with the header set explicitly.
* **A cache is not an authorization (I9).** A worker whose pull fails runs the image anyway
  if it has it cached. So before any service is created or updated — and before a rotated
  login is handed to one — the agent proves pull access with the resolved credential (a
  manifest ``HEAD`` through :mod:`moorage.registry`) and pins the image to the digest the
  registry named. No access: a classified error naming the credential and the image, and no
  change to any service.
* **Rotation without restart (I12).** :meth:`SwarmRuntime.refresh_auth` updates a service's
  registry auth and its credential label with the *same* spec: swarmkit does not restart tasks
  for a change of ``PullOptions`` or service labels (no ``ForceUpdate``), and tasks rescheduled
  later pull with the new login.
* **Readiness:** every desired task of the new deployment running and, with a port, the port
  accepting TCP connections on each node that runs one (the agent must reach the nodes'
  addresses) within the app's readiness timeout from then on (Swarm does not probe ports:
  a version that runs but never listens is rolled back by the agent). A task that cannot
  start is ``container_start_failed``, in the engine's words.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors
import requests
from docker.tls import TLSConfig
from docker.types.daemon import CancellableStream

from moorage.agent.errors import DeployError, LogsError
from moorage.agent.runtime.base import (
    LABEL_ACCOUNT,
    LABEL_APP,
    LABEL_CREDENTIAL,
    LABEL_DEPLOYMENT,
    LABEL_PORT,
    LABEL_REGION,
    AppSpec,
    DeployEvents,
    DeployResult,
    ImageSource,
    RunningApp,
    Runtime,
    parse_credential_label,
)
from moorage.agent.runtime.docker import (
    API_TIMEOUT,
    DEFAULT_DOCKER_HOST,
    PULL_TIMEOUT,
    DockerRuntime,
    _EngineClient,
    classify_pull_error,
    is_start_failure,
    start_failure_reason,
)
from moorage.agent.runtime.enginelogs import engine_since
from moorage.protocol.enums import NodeState
from moorage.protocol.enums import Runtime as RuntimeKind
from moorage.protocol.logs import DEFAULT_TAIL, LogLine
from moorage.protocol.runtime_report import NodeReport
from moorage.registry import RegistryLogin
from moorage.registry.access import AccessResult, AccessStatus, check_access
from moorage.registry.auth import scrub
from moorage.registry.dockerconfig import registry_auth_header
from moorage.registry.reference import ImageReference, InvalidReference, parse_reference

logger = logging.getLogger("moorage.agent.runtime.swarm")

#: ``X-Registry-Auth`` for "no credentials": URL-safe base64 of ``{}``.
ANONYMOUS_AUTH = "e30="
#: Seconds a rolled-out task is watched for a failure before the update moves on.
MONITOR = 5.0
#: Seconds the first tasks of a new service (or the end of an update) may take, besides
#: the per-replica time (monitor + stop grace) of a rolling update.
READY_TIMEOUT = 60.0
#: Seconds per replica, besides monitor and stop grace, for a task to be replaced.
TASK_SLACK = 5.0
STOP_TIMEOUT = 10
ACCESS_TIMEOUT = 30.0
#: Seconds an I9 proof stands for another service of the same image and login (refreshes).
PROOF_REUSE = 10.0
LOG_TAIL = 20
#: Seconds between two looks at a deploy's tasks for its first :data:`POLL_FAST_FOR` seconds
#: (tasks usually run within a few), then four times that.
POLL_INTERVAL = 0.01
POLL_FAST_FOR = 5.0
_NS = 1_000_000_000
_FINAL_ROLLBACK = ("rollback_completed", "rollback_paused")
_FAILED_TASK = ("failed", "rejected")


class _SwarmClient(_EngineClient):
    """An ``APIClient`` whose service calls carry exactly the ``X-Registry-Auth`` given.

    docker-py's ``create_service``/``update_service`` look the login up in the client's loaded
    docker config (wiped here, I5) and send nothing without one, which to an update means
    "keep the previous login": the tenant's login (or ``e30=``) must be sent explicitly.
    """

    def service_create(self, spec: dict[str, Any], auth: str) -> str:
        """``POST /services/create``; returns the service id."""
        response = self._post_json(self._url("/services/create"), data=spec,
                                   headers={"X-Registry-Auth": auth})
        return str(self._result(response, json=True)["ID"])

    def service_log_stream(self, service_id: str, *, tail: int | None, since: int | None,
                           follow: bool) -> CancellableStream:
        """``GET /services/{id}/logs`` with timestamps, as a closable stream of frames
        (docker-py's ``service_logs`` gives a bare generator, which cannot be cut off)."""
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 1,
                                  "follow": int(follow), "tail": "all" if tail is None else tail}
        if since is not None:
            params["since"] = since
        response = self._get(self._url("/services/{0}/logs", service_id), params=params,
                             stream=True)
        self._raise_for_status(response)
        # Services are made without a TTY: the answer is multiplexed, like a container's.
        return CancellableStream(self._multiplexed_response_stream_helper(response), response)

    def service_update(self, service_id: str, version: int, spec: dict[str, Any], *,
                       auth: str | None, rollback: bool = False) -> None:
        """``POST /services/{id}/update``; ``rollback`` asks for the previous spec (and its
        login) instead of ``spec``."""
        params: dict[str, Any] = {"version": version}
        headers = {}
        if rollback:
            params |= {"rollback": "previous", "registryAuthFrom": "previous-spec"}
        elif auth is not None:
            headers["X-Registry-Auth"] = auth
        response = self._post_json(self._url("/services/{0}/update", service_id), data=spec,
                                   params=params, headers=headers)
        self._raise_for_status(response)


class SwarmRuntime(Runtime):
    """A Docker Swarm reached through one manager's Engine API at ``docker_host``.

    ``monitor`` is how long each rolled-out task is watched; ``ready_timeout`` bounds a
    deploy besides ``monitor`` + ``stop_timeout`` + ``task_slack`` per replica (a rolling
    update replaces one task at a time); ``api_timeout`` bounds every
    call to the manager (a manager that does not answer is ``engine_unreachable``).
    ``access_check`` proves pull access (I9); tests may pass a recorder around the real one.
    ``tls`` is docker-py's TLS configuration for a ``tcp://`` manager, as for the docker
    runtime (``False``: none).
    """

    kind = RuntimeKind.SWARM

    def __init__(
        self,
        docker_host: str = DEFAULT_DOCKER_HOST,
        *,
        region: str = "",
        tls: TLSConfig | bool = False,
        ready_timeout: float = READY_TIMEOUT,
        monitor: float = MONITOR,
        stop_timeout: int = STOP_TIMEOUT,
        api_timeout: int = API_TIMEOUT,
        pull_timeout: float = PULL_TIMEOUT,
        access_timeout: float = ACCESS_TIMEOUT,
        access_check: Callable[..., AccessResult] = check_access,
        poll_interval: float = POLL_INTERVAL,
        task_slack: float = TASK_SLACK,
    ) -> None:
        self.docker_host = docker_host
        self.ready_timeout = ready_timeout
        self.monitor = monitor
        self.stop_timeout = stop_timeout
        self.api_timeout = api_timeout
        self.access_timeout = access_timeout
        self.access_check = access_check
        self.poll_interval = poll_interval
        self.task_slack = task_slack
        self._engine = DockerRuntime(docker_host, region=region, tls=tls,
                                     pull_timeout=pull_timeout, api_timeout=api_timeout,
                                     stop_timeout=stop_timeout)
        self._region = region
        #: Recent I9 proofs, keyed by a digest of login and reference (never the password).
        self._proofs: dict[str, tuple[float, ImageReference]] = {}

    @property
    def region(self) -> str:
        """The region whose labels this runtime reads and writes."""
        return self._region

    @region.setter
    def region(self, value: str) -> None:
        self._region = value
        self._engine.region = value

    @property
    def engine(self) -> DockerRuntime:
        """The manager's engine: builds run there, then go to the region registry."""
        return self._engine

    def keeps_logins(self) -> bool:
        """A service keeps its registry auth (that is what I12 refreshes)."""
        return True

    # -- clients -----------------------------------------------------------------------------

    @contextmanager
    def _client(self) -> Iterator[_SwarmClient]:
        api = self._engine.client(_SwarmClient)
        assert isinstance(api, _SwarmClient)
        try:
            yield api
        except requests.exceptions.RequestException as exc:
            raise DeployError(
                "engine_unreachable",
                f"The Swarm manager at {self.docker_host} did not answer within "
                f"{self.api_timeout} s ({type(exc).__name__}); nothing more was changed."
            ) from None
        finally:
            api.close()

    # -- reads -------------------------------------------------------------------------------

    def _services(self, api: docker.APIClient, *labels: str) -> list[dict[str, Any]]:
        wanted = [f"{LABEL_REGION}={self.region}", *labels]
        return list(api.services(filters={"label": wanted}))

    def _app_services(self, api: docker.APIClient, account_id: int,
                      app_id: int) -> list[dict[str, Any]]:
        return self._services(api, f"{LABEL_ACCOUNT}={account_id}", f"{LABEL_APP}={app_id}")

    def running(self) -> list[RunningApp]:
        """The region's services, with their running/desired replicas and credential label."""
        with self._client() as api:
            services = self._services(api)
            running: dict[str, int] = {}
            for task in api.tasks(filters={"desired-state": "running"}):
                if task.get("Status", {}).get("State") == "running":
                    running[task["ServiceID"]] = running.get(task["ServiceID"], 0) + 1
        apps = []
        for service in services:
            labels = service["Spec"].get("Labels") or {}
            try:
                account_id, app_id = int(labels[LABEL_ACCOUNT]), int(labels[LABEL_APP])
                deployment_id = int(labels.get(LABEL_DEPLOYMENT, "0"))
            except (KeyError, ValueError):
                continue
            apps.append(RunningApp(
                account_id=account_id, app_id=app_id, deployment_id=deployment_id,
                ids=[service["ID"]], running=running.get(service["ID"], 0),
                desired=_replicas(service), name=service["Spec"]["Name"],
                image=_image_of(service["Spec"]),
                credential=parse_credential_label(labels.get(LABEL_CREDENTIAL)),
                auth_label=str(labels.get(LABEL_CREDENTIAL) or "")))
        return apps

    def leftovers(self) -> int:
        """The region's services and every task of its apps, shutting-down ones included:
        a removed service's tasks (and their containers) go a little after it does."""
        with self._client() as api:
            services = self._services(api)
            tasks = [t for t in api.tasks()
                     if (t.get("Spec", {}).get("ContainerSpec", {}).get("Labels") or {})
                     .get(LABEL_REGION) == self.region]
        return len(services) + len(tasks)

    def nodes(self) -> list[NodeReport]:
        """Every node of the swarm as the manager sees it."""
        with self._client() as api:
            found = api.nodes()
        nodes = []
        for node in found:
            status = node.get("Status") or {}
            manager = node.get("ManagerStatus") or {}
            state = str(status.get("State") or NodeState.UNKNOWN)
            nodes.append(NodeReport(
                id=str(node["ID"]), hostname=str(node.get("Description", {}).get("Hostname", "")),
                address=_node_address(node), role=str(node["Spec"].get("Role", "")),
                state=state, availability=str(node["Spec"].get("Availability", "")),
                leader=bool(manager.get("Leader"))))
        return sorted(nodes, key=lambda n: (n.role != "manager", n.hostname, n.id))

    def logs(
        self, account_id: int, app_id: int, *, tail: int | None = DEFAULT_TAIL,
        since: str | None = None, follow: float = 0.0,
    ) -> Iterator[LogLine]:
        """The lines the app's service's tasks wrote (``GET /services/{id}/logs``), on every
        node, read like a container's (:mod:`.enginelogs`): same bounds, same cursor."""
        try:
            api = self._engine.client(_SwarmClient)
        except DeployError as exc:
            raise LogsError(exc.code, exc.message) from None
        assert isinstance(api, _SwarmClient)
        try:
            services = self._app_services(api, account_id, app_id)
            if not services:
                raise LogsError("app_not_running",
                                f"Nothing of this app runs in region {self.region} (no "
                                "service): deploy it first.")
            stream = api.service_log_stream(services[0]["ID"], tail=tail,
                                            since=engine_since(since), follow=follow > 0)
        except requests.exceptions.RequestException as exc:
            api.close()
            raise LogsError("engine_unreachable", f"The Swarm manager at {self.docker_host} "
                            f"did not answer: {type(exc).__name__}") from None
        except docker.errors.APIError as exc:
            api.close()
            raise LogsError("logs_failed", "The Swarm manager did not give the logs: "
                            f"{_short(exc)}") from None
        except BaseException:
            api.close()
            raise
        return self._engine.read_logs(api, stream, since=since, follow=follow)

    # -- removal -----------------------------------------------------------------------------

    def remove_app(self, account_id: int, app_id: int) -> int:
        """Remove the app's service(s) in this region; the swarm stops their tasks."""
        with self._client() as api:
            found = self._app_services(api, account_id, app_id)
            for service in found:
                try:
                    api.remove_service(service["ID"])
                except docker.errors.NotFound:
                    pass
        return len(found)

    # -- I9 ----------------------------------------------------------------------------------

    def prove_access(self, image: ImageSource, *, reuse: bool = False) -> ImageReference:
        """Prove with the registry that ``image``'s login may pull it (I9); return the
        reference pinned to the digest the registry named. Raises :class:`DeployError`.

        ``reuse``: a proof made for the same login and reference in the last
        :data:`PROOF_REUSE` seconds stands (a rotation handed to 20 services of one image
        asks the registry once); a deploy always asks afresh.
        """
        try:
            ref = image.reference if isinstance(image.reference, ImageReference) \
                else parse_reference(image.reference)
        except InvalidReference as exc:
            raise DeployError("invalid_image", exc.message) from None
        key = _proof_key(image.login, ref)
        now = time.monotonic()
        if reuse and key in self._proofs and now - self._proofs[key][0] < PROOF_REUSE:
            return self._proofs[key][1]
        who = _who(image.login, image.credential_label)
        result = self.access_check(image.login, ref, timeout=self.access_timeout)
        if not result.ok:
            self._proofs.pop(key, None)
            raise _access_error(result, ref, who, image.login)
        digest = result.digest or ref.digest
        pinned = dataclasses.replace(ref, digest=digest) if digest else ref
        self._proofs = {k: v for k, v in self._proofs.items() if now - v[0] < PROOF_REUSE}
        self._proofs[key] = (now, pinned)
        return pinned

    # -- deploy ------------------------------------------------------------------------------

    def deploy(self, spec: AppSpec, image: ImageSource, events: DeployEvents) -> DeployResult:
        """Create or update the app's service to run ``image`` with ``spec.replicas`` tasks.

        Pull access is proven first (I9); then the service is created, or updated as a
        rolling update that rolls back on failure. Returns when every task of this
        deployment runs (and, with a port, accepts connections).
        """
        if image.local:
            raise DeployError("agent_error",
                              "A swarm service runs an image every node can pull; an image "
                              "built here must be pushed to the region registry first.")
        who = _who(image.login, image.credential_label)
        pinned = self.prove_access(image)
        events.line(f"The registry {pinned.registry_host} allows {who} to pull {pinned.familiar}"
                    " (proven before the service changes)")
        if pinned.digest:
            events.pulled(pinned.digest)
        auth = _auth_header(image.login, pinned)
        with self._client() as api:
            usable = [n for n in api.nodes() if _usable(n)] if spec.port is not None else []
            if spec.port is not None and spec.replicas > len(usable):
                raise DeployError(
                    "not_enough_nodes",
                    f"{spec.app} asks for {spec.replicas} replicas with port {spec.port}, but "
                    f"the swarm has {len(usable)} ready node(s): with a port, at most one "
                    "replica runs per node (two cannot bind one port). Lower the replicas or "
                    "add nodes.")
            found = self._app_services(api, spec.account_id, spec.app_id)
            body = self._service_spec(spec, str(pinned), image)
            if not found:
                return self._create(api, spec, body, auth, events, pinned)
            return self._update(api, spec, found[0], body, auth, events, pinned)

    def _service_spec(self, spec: AppSpec, image: str, source: ImageSource) -> dict[str, Any]:
        order = "stop-first" if spec.port is not None else "start-first"
        monitor = int(self.monitor * _NS)
        container: dict[str, Any] = {
            "Image": image,
            "Labels": spec.labels,
            "Env": [f"{k}={v}" for k, v in spec.env.items()],
            "StopGracePeriod": int(self.stop_timeout * _NS),
        }
        if spec.command:
            container["Args"] = list(spec.command)
        placement: dict[str, Any] = {}
        if spec.port is not None:
            placement["MaxReplicas"] = 1
        labels = dict(spec.labels)
        labels[LABEL_CREDENTIAL] = source.label
        return {
            "Name": spec.app_name,
            "Labels": labels,
            "TaskTemplate": {
                "ContainerSpec": container,
                "Networks": [{"Target": "host"}],
                "Placement": placement,
                "RestartPolicy": {"Condition": "any", "Delay": _NS, "MaxAttempts": 0},
            },
            "Mode": {"Replicated": {"Replicas": spec.replicas}},
            "UpdateConfig": {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback",
                             "Monitor": monitor, "MaxFailureRatio": 0, "Order": order},
            "RollbackConfig": {"Parallelism": 1, "Delay": 0, "FailureAction": "pause",
                               "Monitor": monitor, "MaxFailureRatio": 0, "Order": order},
        }

    def _budget(self, spec: AppSpec) -> float:
        """Seconds a deploy of ``spec`` may take: a rolling update replaces one task at a
        time (stop, start, monitor); an app's longer readiness timeout extends it."""
        per_replica = self.monitor + self.stop_timeout + self.task_slack
        return max(self.ready_timeout, spec.ready_timeout or 0) + spec.replicas * per_replica

    def _create(self, api: _SwarmClient, spec: AppSpec, body: dict[str, Any], auth: str,
                events: DeployEvents, pinned: ImageReference) -> DeployResult:
        events.line(f"Creating service {spec.app_name}: {_replicas_words(spec)}")
        try:
            service_id = api.service_create(body, auth)
        except docker.errors.APIError as exc:
            raise DeployError("service_failed",
                              f"The Swarm manager refused to create {spec.app_name}: "
                              f"{_short(exc)}") from None
        # Reported once the swarm has it: the report travels while the nodes pull.
        events.phase("starting")
        try:
            tasks = self._wait(api, service_id, spec, events, previous_update=None)
        except BaseException:
            # A first version that cannot run leaves nothing behind.
            try:
                api.remove_service(service_id)
            except (docker.errors.APIError, requests.exceptions.RequestException):
                logger.warning("could not remove the failed new service %s", spec.app_name)
            raise
        return DeployResult(digest=pinned.digest, ids=[service_id], removed=[],
                            replicas=len(tasks))

    def _update(self, api: _SwarmClient, spec: AppSpec, current: dict[str, Any],
                body: dict[str, Any], auth: str, events: DeployEvents,
                pinned: ImageReference) -> DeployResult:
        service_id = current["ID"]
        labels = current["Spec"].get("Labels") or {}
        previous = labels.get(LABEL_DEPLOYMENT, "?")
        order = body["UpdateConfig"]["Order"]
        events.line(f"Updating service {spec.app_name} from deployment {previous}: "
                    f"{_replicas_words(spec)}, a rolling update ({order}, one task at a "
                    "time) that rolls back on failure")
        if spec.port is not None and spec.replicas == 1:
            events.line(f"With one replica and port {spec.port}, {spec.app} does not serve "
                        "while its task is replaced (two tasks cannot bind one port on one "
                        "node); run 2 or more replicas to keep serving during updates.")
        started = (current.get("UpdateStatus") or {}).get("StartedAt")
        try:
            api.service_update(service_id, current["Version"]["Index"], body, auth=auth)
        except docker.errors.APIError as exc:
            raise DeployError("service_failed",
                              f"The Swarm manager refused to update {spec.app_name}: "
                              f"{_short(exc)}") from None
        events.phase("starting")
        tasks = self._wait(api, service_id, spec, events, previous_update=started or "")
        return DeployResult(digest=pinned.digest, ids=[service_id], removed=[],
                            replicas=len(tasks))

    def _wait(self, api: _SwarmClient, service_id: str, spec: AppSpec, events: DeployEvents,
              *, previous_update: str | None) -> list[dict[str, Any]]:
        """Until every task of this deployment runs (and serves); returns them.

        ``previous_update`` is the ``UpdateStatus.StartedAt`` before an update (``None`` for
        a new service): a status with another start is this update's. Raises
        :class:`DeployError` after a rollback (the previous version serving again) or, at the
        deadline, after rolling back (update) or with the service to be removed (create).
        """
        begun = time.monotonic()
        deadline = begun + self._budget(spec)
        creating = previous_update is None
        mine = str(spec.deployment_id)
        shown = -1
        #: Once every task runs, the port has the app's readiness timeout to answer, not
        #: what is left of the whole budget: a version that runs but never listens is
        #: rolled back then.
        ready = spec.ready_timeout or self.ready_timeout
        listen_by: float | None = None
        addresses: dict[str, str] = {}
        while True:
            # A new service has no update status: its tasks are all there is to look at.
            status = {} if creating else \
                api.inspect_service(service_id).get("UpdateStatus") or {}
            state = status.get("State") if not creating and status.get("StartedAt") \
                != previous_update else None
            if state == "paused":  # not asked for (FailureAction is rollback); undo it
                self._rollback(api, service_id)
                state = "rollback_started"
            if state is not None and state.startswith("rollback"):
                self._finish_rollback(api, service_id, state,
                                      time.monotonic() + self.ready_timeout)
                raise self._rolled_back(api, service_id, spec, status)
            tasks = api.tasks(filters={"service": service_id})
            ours = [t for t in tasks if _deployment_of(t) == mine]
            running = [t for t in ours if t.get("DesiredState") == "running"
                       and t["Status"]["State"] == "running"]
            others = [t for t in tasks if _deployment_of(t) != mine
                      and t.get("DesiredState") == "running"]
            if creating:
                failed = [t for t in ours if t["Status"]["State"] in _FAILED_TASK]
                if failed:
                    raise self._task_failure(api, failed[-1], spec)
            if len(running) != shown:
                shown = len(running)
                events.line(f"{shown}/{spec.replicas} replica(s) of deployment {mine} running")
            if len(running) >= spec.replicas and not others and state in (None, "completed"):
                waiting = self._not_serving(api, running, spec.port, addresses)
                if not waiting:
                    if spec.port is not None:
                        events.line(f"Port {spec.port} accepts connections on every node "
                                    "running a replica")
                    return running
                listen_by = listen_by or time.monotonic() + ready
            now = time.monotonic()
            if now >= deadline or (listen_by is not None and now >= listen_by):
                reason = self._stall_reason(ours, running, spec)
                if listen_by is not None and now >= listen_by:
                    reason = (f"Every replica of deployment {mine} runs, but port {spec.port} "
                              f"did not accept connections on every node within {ready:g} s "
                              "(the app's readiness timeout).")
                if not creating:
                    self._rollback(api, service_id)
                    self._finish_rollback(api, service_id, "rollback_started",
                                          time.monotonic() + self.ready_timeout)
                    reason += " Moorage rolled the service back: the previous version serves."
                raise DeployError("update_stalled" if not creating else "container_not_ready",
                                  reason)
            # Tasks usually run within seconds: look often at first, then less.
            time.sleep(self.poll_interval if now - begun < POLL_FAST_FOR
                       else self.poll_interval * 4)

    def _not_serving(self, api: docker.APIClient, running: list[dict[str, Any]],
                     port: int | None, addresses: dict[str, str] | None = None) -> list[str]:
        """Addresses of nodes running a task where ``port`` does not accept connections.

        ``addresses`` (node id → address) can be kept across the looks of one deploy; the
        nodes are listed again only for a task on a node not in it.
        """
        if port is None:
            return []
        addresses = {} if addresses is None else addresses
        if any(task.get("NodeID", "") not in addresses for task in running):
            addresses.update((node["ID"], _node_address(node)) for node in api.nodes())
        waiting = []
        for task in running:
            address = addresses.get(task.get("NodeID", ""), "")
            if not address or not _accepts(address, port):
                waiting.append(address or task.get("NodeID", "?"))
        return waiting

    def _stall_reason(self, ours: list[dict[str, Any]], running: list[dict[str, Any]],
                      spec: AppSpec) -> str:
        budget = self._budget(spec)
        errors = sorted({str(t["Status"].get("Err") or t["Status"].get("Message") or "")
                         for t in ours if t.get("DesiredState") == "running"
                         and t["Status"]["State"] != "running"} - {""})
        what = (f"{len(running)} of {spec.replicas} replica(s) of deployment "
                f"{spec.deployment_id} ran within {budget:.0f} s")
        if len(running) >= spec.replicas and spec.port is not None:
            what += f", but port {spec.port} did not accept connections on every node"
        if errors:
            what += f"; Swarm said: {'; '.join(errors)[:300]}"
        return what + "."

    def _rollback(self, api: _SwarmClient, service_id: str) -> None:
        service = api.inspect_service(service_id)
        try:
            api.service_update(service_id, service["Version"]["Index"], service["Spec"],
                               auth=None, rollback=True)
        except docker.errors.APIError as exc:
            logger.warning("could not roll back %s: %s", service_id[:12], _short(exc))

    def _finish_rollback(self, api: docker.APIClient, service_id: str, state: str,
                         deadline: float) -> None:
        """Wait (bounded) until a rollback under way has put the previous version back.

        Swarm calls a rollback ``completed`` once it has *scheduled* the previous tasks, a
        moment before they run and, with a port, accept connections. The failure reported
        afterwards says the previous deployment "keeps serving", so wait for that too.
        """
        while state not in _FINAL_ROLLBACK and time.monotonic() < deadline:
            time.sleep(self.poll_interval)
            status = api.inspect_service(service_id).get("UpdateStatus") or {}
            state = str(status.get("State") or "")
        while time.monotonic() < deadline and not self._previous_serves(api, service_id):
            time.sleep(self.poll_interval)

    def _previous_serves(self, api: docker.APIClient, service_id: str) -> bool:
        """Whether the service's current spec runs every replica (and no task of another
        deployment is still meant to run) and, with a port, serves."""
        service = api.inspect_service(service_id)
        labels = service["Spec"].get("Labels") or {}
        deployment = str(labels.get(LABEL_DEPLOYMENT, ""))
        wanted = _replicas(service)
        meant = [t for t in api.tasks(filters={"service": service_id})
                 if t.get("DesiredState") == "running"]
        running = [t for t in meant
                   if _deployment_of(t) == deployment and t["Status"]["State"] == "running"]
        if len(running) < wanted or any(_deployment_of(t) != deployment for t in meant):
            return False
        port = labels.get(LABEL_PORT)
        return not self._not_serving(api, running, int(port) if port else None)

    def _rolled_back(self, api: docker.APIClient, service_id: str, spec: AppSpec,
                     status: dict[str, Any]) -> DeployError:
        tasks = api.tasks(filters={"service": service_id})
        failed = [t for t in tasks if _deployment_of(t) == str(spec.deployment_id)
                  and t["Status"]["State"] in _FAILED_TASK]
        labels = api.inspect_service(service_id)["Spec"].get("Labels") or {}
        serving = labels.get(LABEL_DEPLOYMENT, "the previous one")
        said = ""
        logs: list[str] = []
        if failed:
            newest = max(failed, key=lambda t: str(t.get("UpdatedAt", "")))
            err = str(newest["Status"].get("Err") or "")
            if is_start_failure(err):
                return DeployError(
                    "container_start_failed",
                    f"The new version of {spec.app} could not start: "
                    f"{start_failure_reason(err)}. Swarm rolled the service back: deployment "
                    f"{serving} keeps serving. A task said: {err[:300]}")
            said = f" A task said: {err or newest['Status']['State']}."
            logs = self._task_tail(api, newest["ID"])
        return DeployError(
            "update_rolled_back",
            f"The new version of {spec.app} failed on a node and Swarm rolled the service "
            f"back: deployment {serving} keeps serving.{said}"
            + (f" ({status.get('Message')})" if status.get("Message") else ""),
            logs=logs)

    def _task_failure(self, api: docker.APIClient, task: dict[str, Any],
                      spec: AppSpec) -> DeployError:
        err = str(task["Status"].get("Err") or task["Status"].get("Message") or "")
        low = err.lower()
        if is_start_failure(err):  # first: the command itself may say "pull" or "manifest"
            return DeployError(
                "container_start_failed",
                f"A task of {spec.app} could not start: {start_failure_reason(err)}. No "
                f"service was left behind. A task said: {err[:300]}")
        if "no such image" in low or "pull" in low or "manifest" in low:
            ref = parse_reference(_image_of({"TaskTemplate": task["Spec"]}))
            return classify_pull_error(err, None, ref=ref, host=ref.registry_host,
                                       who="on a node")
        lines = self._task_tail(api, task["ID"])
        return DeployError(
            "container_exited",
            f"A task of {spec.app} stopped before it was ready ({err or 'no reason given'})."
            + (" Last log lines: " + " | ".join(lines[-5:]) if lines else ""),
            logs=lines)

    def _task_tail(self, api: docker.APIClient, task_id: str) -> list[str]:
        try:
            response = api._get(api._url("/tasks/{0}/logs", task_id),
                                params={"stdout": 1, "stderr": 1, "tail": LOG_TAIL})
            api._raise_for_status(response)
            raw = b"".join(api._multiplexed_buffer_helper(response))
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return []
        text = raw.decode("utf-8", "replace")
        return [line[:300] for line in text.splitlines() if line.strip()][-LOG_TAIL:]

    # -- I12 ---------------------------------------------------------------------------------

    def refresh_auth(self, account_id: int, app_id: int, image: ImageSource) -> bool:
        """Give the app's service ``image``'s login and credential label, without a restart.

        The spec is sent back unchanged but for the label (no ``ForceUpdate``): swarmkit keeps
        the running tasks, and tasks scheduled later pull with the new login. Pull access to
        the image the service runs is proven with the new login first (I9). Returns
        ``False`` when there is no service or it already carries this credential revision.
        """
        wanted = image.label
        with self._client() as api:
            found = self._app_services(api, account_id, app_id)
            if not found:
                return False
            service = api.inspect_service(found[0]["ID"])
            spec = service["Spec"]
            labels = dict(spec.get("Labels") or {})
            if labels.get(LABEL_CREDENTIAL, "") == wanted:
                return False
            running = _image_of(spec)
            pinned = self.prove_access(dataclasses.replace(image, reference=running),
                                       reuse=True)
            labels[LABEL_CREDENTIAL] = wanted
            spec = {**spec, "Labels": labels}
            try:
                api.service_update(service["ID"], service["Version"]["Index"], spec,
                                   auth=_auth_header(image.login, pinned))
            except docker.errors.APIError as exc:
                raise DeployError("service_failed",
                                  f"The Swarm manager refused the new registry login of "
                                  f"{spec['Name']}: {_short(exc)}") from None
        return True


def _auth_header(login: RegistryLogin | None, ref: ImageReference) -> str:
    return ANONYMOUS_AUTH if login is None else registry_auth_header(login, ref.registry_host)


def _access_error(result: AccessResult, ref: ImageReference, who: str,
                  login: RegistryLogin | None) -> DeployError:
    """The registry's answer to the I9 check as a deployment error naming credential and
    image. The registry's message holds no secret (scrubbed once more anyway)."""
    said = scrub(result.message, login)
    image = ref.familiar
    codes = {
        AccessStatus.UNAUTHORIZED: "registry_unauthorized",
        AccessStatus.FORBIDDEN: "registry_forbidden",
        AccessStatus.NOT_FOUND: "image_not_found",
        AccessStatus.RATE_LIMITED: "registry_rate_limited",
        AccessStatus.UNREACHABLE: "registry_unreachable",
    }
    code = codes.get(result.status, "pull_failed")
    return DeployError(
        code,
        f"Pulling {image} {who} is not allowed: {said} No service was created or changed: a "
        "node that has this image cached would run it without access.")


def _proof_key(login: RegistryLogin | None, ref: ImageReference) -> str:
    """What a proof is for, hashed: the memo never holds a password."""
    who = "" if login is None else f"{login.username}\0{login.password}"
    return hashlib.sha256(f"{who}\0{ref}".encode()).hexdigest()


def _who(login: RegistryLogin | None, label: str | None) -> str:
    if login is None:
        return "anonymously"
    return f"with {label}" if label else f"as user {login.username!r}"


def _replicas_words(spec: AppSpec) -> str:
    words = f"{spec.replicas} replica{'s' if spec.replicas != 1 else ''}"
    if spec.port is not None:
        words += f" on port {spec.port}, at most one per node"
    return words


def _replicas(service: dict[str, Any]) -> int:
    mode = service["Spec"].get("Mode") or {}
    return int((mode.get("Replicated") or {}).get("Replicas") or 0)


def _image_of(spec: dict[str, Any]) -> str:
    return str(spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", ""))


def _deployment_of(task: dict[str, Any]) -> str:
    labels = task.get("Spec", {}).get("ContainerSpec", {}).get("Labels") or {}
    return str(labels.get(LABEL_DEPLOYMENT, ""))


def _usable(node: dict[str, Any]) -> bool:
    return node.get("Status", {}).get("State") == NodeState.READY \
        and node["Spec"].get("Availability") == "active"


def _node_address(node: dict[str, Any]) -> str:
    """The node's address; a manager may report ``0.0.0.0`` there and its real one in
    ``ManagerStatus.Addr`` (``host:port``)."""
    address = str((node.get("Status") or {}).get("Addr") or "")
    if address in ("", "0.0.0.0"):  # noqa: S104 - compared, not bound
        manager = str((node.get("ManagerStatus") or {}).get("Addr") or "")
        address = manager.rsplit(":", 1)[0] if manager else address
    return address


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _short(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)[:300]
    return str(exc)[:300]
