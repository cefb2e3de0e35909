"""A real multi-node Docker Swarm on one machine: several private dockerd engines joined.

The recipe (checked here with Debian's docker.io 20.10): each engine is a
:class:`~moorage.testing.dockerd.Dockerd` with its own data root, exec root, pidfile and
socket; the first runs ``swarm init`` listening and advertising on ``127.0.0.1:<free port>``,
the others ``swarm join`` it, each on its own free port. Every node then has the address
127.0.0.1, so services use host networking (overlay networks and the routing mesh are not
reliable here) and **all nodes share one network namespace**: two tasks of one service on
two nodes cannot both bind a port. Tests of apps with a port account for that.

The dispatcher heartbeat is shortened (1 s instead of 5 s) so that a node that stops
answering (:meth:`Swarm.freeze`) is seen down within seconds.

Start and stop cost about 1 s and 10 s for three engines; tests share one swarm per session
(the ``swarm`` fixture) and put it back after each test (the ``swarm_client`` fixture).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from moorage.testing.dockerd import Dockerd
from moorage.testing.ports import LOOPBACK, ComponentStartError, free_port

#: Nanoseconds; swarmkit's default is 5 s, and a node is declared down after a few misses.
HEARTBEAT_NS = 1_000_000_000


@dataclass(frozen=True)
class SwarmNode:
    """One engine of the swarm and its node id."""

    engine: Dockerd
    node_id: str
    manager: bool


class Swarm:
    """``size`` real engines joined as one swarm: the first is the (only) manager.

    :attr:`base_url` is the manager's Engine API, what a swarm region's agent is given.
    """

    def __init__(self, size: int = 3) -> None:
        if size < 1:
            raise ValueError("a swarm has at least one node")
        self.size = size
        self.nodes: list[SwarmNode] = []
        self._engines: list[Dockerd] = []

    def __repr__(self) -> str:
        """Show the manager and the node count."""
        return f"<Swarm of {len(self.nodes)} nodes, manager {self._engines[:1]}>"

    def __enter__(self) -> Swarm:
        """Start the engines and join them."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop every engine."""
        self.stop()

    @property
    def manager(self) -> Dockerd:
        """The manager's engine (builds run here; the agent talks to it)."""
        if not self._engines:
            raise RuntimeError("the swarm is not started")
        return self._engines[0]

    @property
    def workers(self) -> list[Dockerd]:
        """The engines of the worker nodes."""
        return self._engines[1:]

    @property
    def engines(self) -> list[Dockerd]:
        """Every engine, the manager first."""
        return list(self._engines)

    @property
    def base_url(self) -> str:
        """The manager's Engine API address."""
        return self.manager.base_url

    def client(self, *, timeout: int = 60) -> docker.DockerClient:
        """A fresh docker-py client for the manager (see :meth:`Dockerd.client`)."""
        return self.manager.client(timeout=timeout)

    def engine_of(self, node_id: str) -> Dockerd:
        """The engine running the node ``node_id``."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node.engine
        raise KeyError(node_id)

    # ----- lifecycle

    def start(self, *, timeout: float = 60.0) -> Swarm:
        """Start the engines, init the swarm on the first and join the others to it."""
        try:
            for _ in range(self.size):
                self._engines.append(Dockerd().start(timeout=timeout))
            manager_port = free_port()
            client = self.manager.client()
            try:
                client.swarm.init(advertise_addr=f"{LOOPBACK}:{manager_port}",
                                  listen_addr=f"{LOOPBACK}:{manager_port}",
                                  dispatcher_heartbeat_period=HEARTBEAT_NS)
                token = client.swarm.attrs["JoinTokens"]["Worker"]
                self.nodes.append(SwarmNode(self.manager, client.info()["Swarm"]["NodeID"],
                                            manager=True))
            finally:
                client.close()
            for engine in self.workers:
                port = free_port()
                worker = engine.client()
                try:
                    worker.swarm.join(remote_addrs=[f"{LOOPBACK}:{manager_port}"],
                                      join_token=token, listen_addr=f"{LOOPBACK}:{port}",
                                      advertise_addr=f"{LOOPBACK}:{port}")
                    self.nodes.append(SwarmNode(engine, worker.info()["Swarm"]["NodeID"],
                                                manager=False))
                finally:
                    worker.close()
            self.wait_ready(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every engine (workers first) and remove their files. Safe to call twice."""
        for engine in reversed(self._engines):
            engine.stop()
        self._engines = []
        self.nodes = []

    # ----- nodes

    def node_states(self) -> dict[str, tuple[str, str]]:
        """Node id → ``(state, availability)`` as the manager reports them now."""
        client = self.client(timeout=10)
        try:
            return {n["ID"]: (n["Status"]["State"], n["Spec"]["Availability"])
                    for n in client.api.nodes()}
        finally:
            client.close()

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        """Until every node is ``ready`` and ``active``; raises ComponentStartError."""
        deadline = time.monotonic() + timeout
        states: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            try:
                states = self.node_states()
            except (docker.errors.DockerException, OSError):
                states = {}
            if len(states) == self.size and all(s == ("ready", "active")
                                                for s in states.values()):
                return
            time.sleep(0.2)
        raise ComponentStartError(f"the swarm's nodes are not all ready: {states}")

    def set_availability(self, node_id: str, availability: str) -> None:
        """``active``, ``pause`` or ``drain`` a node (drain moves its tasks elsewhere)."""
        client = self.client(timeout=10)
        try:
            node = client.api.inspect_node(node_id)
            spec: dict[str, Any] = dict(node["Spec"])
            spec["Availability"] = availability
            client.api.update_node(node_id, node["Version"]["Index"], spec)
        finally:
            client.close()

    @contextlib.contextmanager
    def frozen(self, engine: Dockerd) -> Iterator[None]:
        """Freeze ``engine``'s dockerd for the block (its node goes down, or the manager stops
        answering), then thaw it."""
        engine.freeze()
        try:
            yield
        finally:
            engine.thaw()

    def restore(self, *, timeout: float = 60.0) -> None:
        """Put the nodes back after a test: thaw every engine, make every node active, wait
        until all are ready."""
        for engine in self._engines:
            engine.thaw()
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = self.node_states()
                break
            except (docker.errors.DockerException, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for node_id, (_, availability) in states.items():
            if availability != "active":
                self.set_availability(node_id, "active")
        self.wait_ready(timeout=timeout)
