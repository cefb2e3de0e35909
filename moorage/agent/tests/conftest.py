"""Fixtures for the agent's unit tests: a fake control plane and an agent wired to it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from moorage.agent.backoff import Backoff
from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.replica import Replica
from moorage.agent.sync import SyncLoop
from moorage.agent.tests.fakes import TOKEN, FakeControlPlane, always


@pytest.fixture
def fake() -> FakeControlPlane:
    return FakeControlPlane()


@pytest.fixture
def config(fake: FakeControlPlane, tmp_path: Path) -> AgentConfig:
    return AgentConfig(url="http://control-plane.test", token=TOKEN, region_key=fake.key,
                       data_dir=tmp_path / "agent", wait=0)


@pytest.fixture
def client(config: AgentConfig, fake: FakeControlPlane) -> Iterator[ControlPlaneClient]:
    with ControlPlaneClient(config, transport=fake.transport()) as c:
        yield c


@pytest.fixture
def replica(config: AgentConfig) -> Iterator[Replica]:
    r = Replica.in_dir(config.data_dir, config.region_key)
    yield r
    r.close()


class Sleeps(list[float]):
    """A fake sleep that records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_loop(
    config: AgentConfig, client: ControlPlaneClient, replica: Replica, sleeps: Sleeps
) -> Callable[..., SyncLoop]:
    """Build a loop over the fixtures (again, to simulate a restart on the same replica)."""

    def make(stop: threading.Event | None = None, **kwargs: Any) -> SyncLoop:
        return SyncLoop(config, client, replica, logging.getLogger("moorage.agent"),
                        stop or threading.Event(), **({"sleep": sleeps} | kwargs),
                        backoff=Backoff(rand=always(0.5)))

    return make


@pytest.fixture
def loop(make_loop: Callable[..., SyncLoop]) -> SyncLoop:
    return make_loop()
