"""The agent against the REAL control plane: a live Django server, regions and credentials
made through the real services, the agent's real client, replica and loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.errors import AgentAuthError
from moorage.agent.replica import Replica
from moorage.agent.sync import Outcome, SyncLoop
from moorage.credentials import services as credential_services
from moorage.regions import services as region_services
from moorage.regions.models import CredentialReplica, Region
from moorage.sealing import Key
from moorage.testing import factories
from moorage.testing.credentials import make_credential
from moorage.testing.regions import AgentView, make_region

pytestmark = pytest.mark.django_db(transaction=True)


class Agent:
    """One agent process's parts, wired to the live server."""

    def __init__(self, url: str, view: AgentView, data_dir: Path, wait: int = 0) -> None:
        self.config = AgentConfig(url=url, token=view.token, region_key=view.key,
                                  data_dir=data_dir, wait=wait)
        self.client = ControlPlaneClient(self.config)
        self.replica = Replica.in_dir(data_dir, view.key)
        self.loop = SyncLoop(self.config, self.client, self.replica,
                             logging.getLogger("moorage.agent"), threading.Event(),
                             sleep=lambda seconds: None)

    def close(self) -> None:
        self.client.close()
        self.replica.close()


@pytest.fixture
def agent_for(live_server: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[Agent] = []

    def make(view: AgentView) -> Agent:
        made.append(Agent(str(live_server.url), view, tmp_path / view.slug))
        return made[-1]

    yield make
    for agent in made:
        agent.close()


def held_on_server(slug: str) -> dict[int, int]:
    return dict(CredentialReplica.objects.filter(region__slug=slug)
                .values_list("credential_id", "revision"))


def test_an_agent_follows_the_real_control_plane(agent_for: Any) -> None:
    owner = factories.make_account("Acme")
    view = make_region("eu-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-1"])
    hub = make_credential(owner, name="hub", username="octo", secret="E2E-Secret-1")
    agent = agent_for(view)

    assert agent.loop.run_once() is Outcome.SYNCED  # first start: snapshot + full ack
    assert agent.replica.region() == "eu-1"
    assert agent.replica.accounts() == {owner.account.pk: "acme"}
    login = agent.replica.open_secret(hub.pk)
    assert (login.username, login.password) == ("octo", "E2E-Secret-1")
    default = agent.replica.default_credential(owner.account.pk)
    assert default is not None and default.id == hub.pk
    assert held_on_server("eu-1") == {hub.pk: 1}

    credential_services.credential_update(actor=owner.user, membership=owner.membership,
                                          credential_id=hub.pk, secret="E2E-Secret-2")
    bot = make_credential(owner, name="bot", secret="E2E-Secret-3")
    assert agent.loop.run_once() is Outcome.SYNCED  # changes, applied and acknowledged
    assert agent.replica.open_secret(hub.pk).password == "E2E-Secret-2"
    assert agent.replica.credentials_held() == {hub.pk: 2, bot.pk: 1}
    assert held_on_server("eu-1") == {hub.pk: 2, bot.pk: 1}
    region = Region.objects.get(slug="eu-1")
    assert region.applied_revision == agent.replica.revision()

    credential_services.credential_delete(actor=owner.user, membership=owner.membership,
                                          credential_id=bot.pk)
    agent.loop.run_once()
    assert agent.replica.credentials_held() == {hub.pk: 2}
    assert held_on_server("eu-1") == {hub.pk: 2}

    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=[])
    agent.loop.run_once()
    assert agent.replica.accounts() == {}
    assert agent.replica.credentials_held() == {}
    assert held_on_server("eu-1") == {}

    for path in agent.replica.path.parent.iterdir():
        data = path.read_bytes()
        for secret in (b"E2E-Secret-1", b"E2E-Secret-2", b"E2E-Secret-3"):
            assert secret not in data, path

    region_services.region_rotate_token(actor=None, slug="eu-1")
    with pytest.raises(AgentAuthError) as raised:
        agent.loop.run_once()
    assert raised.value.code == "region_token_revoked"


def test_another_regions_agent_sees_nothing_of_this_one(agent_for: Any) -> None:
    owner = factories.make_account("Acme")
    eu, us = make_region("eu-1"), make_region("us-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-1"])
    make_credential(owner, name="hub", secret="Only-In-EU")
    agent = agent_for(us)
    assert agent.loop.run_once() is Outcome.SYNCED
    assert agent.replica.region() == "us-1"
    assert agent.replica.credentials_held() == {}
    # The eu-1 agent given us-1's key file is told so, and stops.
    wrong = agent_for(AgentView(slug="eu-1", token=eu.token, key=us.key))
    with pytest.raises(AgentAuthError) as refused:
        wrong.loop.run_once()
    assert refused.value.code == "region_key_unknown"
    assert f"holds region key {us.key.id!r}, which is not a key of region 'eu-1'" \
        in str(refused.value)
    assert wrong.replica.revision() is None
    # A key under eu-1's own key id but not its material cannot even read the answers.
    forged = agent_for(AgentView(slug="eu-1", token=eu.token,
                                 key=Key(eu.key.id, us.key.material)))
    assert forged.loop.run_once() is Outcome.RETRY
    assert forged.replica.revision() is None


def test_a_long_poll_wakes_on_a_change_and_a_stop_ends_it(
    live_server: Any, tmp_path: Path
) -> None:
    import time

    owner = factories.make_account("Acme")
    view = make_region("eu-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-1"])
    agent = Agent(str(live_server.url), view, tmp_path / "eu-1", wait=20)
    stop = threading.Event()
    loop = SyncLoop(agent.config, agent.client, agent.replica,
                    logging.getLogger("moorage.agent"), stop)
    try:
        assert loop.run_once() is Outcome.SYNCED  # snapshot
        threading.Timer(0.5, lambda: make_credential(owner, name="late",
                                                     secret="Late-Secret")).start()
        started = time.monotonic()
        assert loop.run_once() is Outcome.SYNCED
        assert time.monotonic() - started < 5  # woken by the change, not the 20 s wait
        assert len(agent.replica.credentials_held()) == 1

        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        assert loop.run_once() is Outcome.STOPPED
        assert time.monotonic() - started < 2
    finally:
        agent.close()


def test_an_unknown_token_is_refused_as_invalid(agent_for: Any) -> None:
    view = make_region("eu-1")
    agent = agent_for(AgentView(slug="eu-1", token="mrr_" + "B" * 43, key=view.key))
    with pytest.raises(AgentAuthError) as raised:
        agent.loop.run_once()
    assert raised.value.code == "region_token_invalid"
    assert "the region token is wrong" in str(raised.value)
