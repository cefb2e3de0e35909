"""A region's real agent in the test process: sync loop, deployer, log server, runtime.

It talks to the live server over HTTP with the region's real token and key, and to the
session's real dockerd. Two ways to drive it:

* :meth:`InProcessAgent.run_until_idle` — a few sync steps without waiting (``wait=0``), in
  the test's thread: a deploy test runs it after queuing its deployment;
* :meth:`InProcessAgent.start` — ``run_forever`` in a thread, long-polling like ``moorage
  agent`` does, for tests that need the agent to answer while they wait (logs requests).
  :meth:`InProcessAgent.stop` ends it at once (the long poll is abandoned).

The runtime is a docker runtime on ``docker_host``, or, with ``runtime_for``, whatever the
region's settings ask for (the agent follows them as ``moorage agent`` does): a swarm
region's tests give a factory making a :class:`~moorage.agent.runtime.SwarmRuntime`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from moorage.agent.applogs import LogServer
from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.deployer import Deployer
from moorage.agent.replica import Replica
from moorage.agent.runtime import DockerRuntime, Runtime
from moorage.agent.sync import SyncLoop
from moorage.protocol.enums import Runtime as RuntimeKind
from moorage.testing.regions import AgentView

#: Long-poll seconds of a started agent: a stop abandons the poll, so this costs nothing.
BACKGROUND_WAIT = 20


class InProcessAgent:
    """One region's agent with its data dir in ``data_dir`` (builds go to ``data_dir/builds``).

    The replica (SQLite) belongs to the thread that made it, so the pieces are made in the
    thread that runs them: the caller's for :meth:`run_until_idle`, the agent's own for
    :meth:`start`.
    """

    def __init__(self, region: AgentView, *, url: str, docker_host: str, data_dir: Path,
                 background: bool = False,
                 runtime_for: Callable[[RuntimeKind], Runtime] | None = None) -> None:
        self.region = region
        self.runtime_for = runtime_for
        self.docker_host = docker_host
        self.data_dir = data_dir
        self.stop_event = threading.Event()
        self.config = AgentConfig(url=url, token=region.token, region_key=region.key,
                                  data_dir=data_dir / "agent", docker_host=docker_host,
                                  wait=BACKGROUND_WAIT if background else 0)
        self.loop: SyncLoop | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _build(self) -> SyncLoop:
        client = ControlPlaneClient(self.config)
        replica = Replica.in_dir(self.config.data_dir, self.region.key)
        logger = logging.getLogger("moorage.agent")
        runtime: Runtime = DockerRuntime(self.docker_host, region=self.region.slug,
                                         pull_timeout=60, ready_timeout=20, stop_timeout=1)
        if self.runtime_for is not None:
            runtime = self.runtime_for(replica.settings().known_runtime or RuntimeKind.DOCKER)
        builds = self.data_dir / "builds"
        builds.mkdir(parents=True, exist_ok=True)
        deployer = Deployer(replica, client, runtime, logger, build_dir=builds,
                            stop_event=self.stop_event, runtime_factory=self.runtime_for)
        log_server = LogServer(replica, client, lambda: deployer.runtime, logger,
                               stop_event=self.stop_event)
        return SyncLoop(self.config, client, replica, logger, self.stop_event,
                        deployer=deployer, log_server=log_server)

    def run_until_idle(self) -> None:
        """Sync, deploy and report until there is nothing left (a few steps, no waiting)."""
        if self.loop is None:
            self.loop = self._build()
        for _ in range(4):
            self.loop.run_once(backoff=False)

    def start(self) -> None:
        """Run the agent in a thread until :meth:`stop`."""
        def run() -> None:
            loop = self._build()
            try:
                loop.run_forever()
            except BaseException as exc:  # handed to the test by stop()
                self.error = exc
            finally:
                loop.client.close()
                loop.replica.close()

        self._thread = threading.Thread(target=run, name="moorage-test-agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the agent and release what it holds; raise what its thread died of."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the in-process agent did not stop"
        if self.loop is not None:
            self.loop.client.close()
            self.loop.replica.close()
        if self.error is not None:
            raise self.error
