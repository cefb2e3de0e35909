"""Pytest fixtures for Django-side tests: accounts, members with roles, API clients, region
agents running in the test process against the live server, a key file in charge of the
keyring."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from django.test import override_settings

from moorage.accounts.choices import Role
from moorage.regions import wakeup
from moorage.testing import factories
from moorage.testing.agents import InProcessAgent
from moorage.testing.dockerd import Dockerd
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's test database, and at its end the sync listener of this process
    closed first: its LISTEN connection would keep the database from being dropped."""
    yield
    wakeup.hub.stop()  # no poll starts a new listener from here on
    wakeup.hub.close_listener()


@pytest.fixture
def owner(db: None) -> Member:
    """The owner of a fresh account, with an API token."""
    return factories.make_account("Acme")


@pytest.fixture
def other_owner(db: None) -> Member:
    """The owner of a second, unrelated account (for tenancy tests)."""
    return factories.make_account("Globex")


@pytest.fixture
def member_with_role(owner: Member) -> Callable[[Role], Member]:
    """A factory: a new user with the given role in ``owner``'s account."""
    return lambda role: factories.add_member(owner, role)


@pytest.fixture
def start_agent(
    live_server: Any, dockerd: Dockerd, tmp_path: Path, docker_client: docker.DockerClient,
) -> Iterator[Callable[[AgentView], InProcessAgent]]:
    """A factory: start a region's real agent in a thread (long-polling the live server,
    running on the session's dockerd); every one started is stopped at teardown, and the
    engine is put back by ``docker_client``."""
    started: list[InProcessAgent] = []

    def start(region: AgentView) -> InProcessAgent:
        agent = InProcessAgent(region, url=str(live_server.url), docker_host=dockerd.base_url,
                               data_dir=tmp_path / f"agent-{region.slug}", background=True)
        agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Iterator[Path]:
    """The embedded default: a key file in the data dir is in charge of the keyring (the test
    settings' ``MOORAGE_KEYS`` is set aside). Created with one key on first use."""
    from moorage.keys import keyring

    path = tmp_path / "keys"
    with override_settings(MOORAGE_KEYS=None, MOORAGE_KEY_FILE=path):
        yield path
    keyring.keyring(reload=True)
