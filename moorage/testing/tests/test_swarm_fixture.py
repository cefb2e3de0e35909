"""The session's swarm: three real engines, one manager, and what the tests do to it."""

from __future__ import annotations

import time

import docker
import pytest

from moorage.testing.fixtures import TEST_LABEL
from moorage.testing.swarm import Swarm

pytestmark = pytest.mark.docker


def test_three_engines_form_one_swarm_with_one_manager(swarm: Swarm,
                                                        swarm_client: docker.DockerClient) -> None:
    nodes = swarm_client.api.nodes()
    assert len(nodes) == 3
    assert sorted(n["Spec"]["Role"] for n in nodes) == ["manager", "worker", "worker"]
    assert {n["ID"] for n in nodes} == {node.node_id for node in swarm.nodes}
    assert all(n["Status"]["State"] == "ready" for n in nodes)
    # Three separate engines, not one engine seen three times.
    assert len({engine.base_url for engine in swarm.engines}) == 3


def test_a_frozen_node_is_seen_down_and_comes_back(swarm: Swarm,
                                                   swarm_client: docker.DockerClient) -> None:
    worker = swarm.nodes[1]
    with swarm.frozen(worker.engine):
        deadline = time.monotonic() + 30
        while swarm.node_states()[worker.node_id][0] != "down":
            assert time.monotonic() < deadline, swarm.node_states()
            time.sleep(0.2)
    swarm.restore()
    assert swarm.node_states()[worker.node_id] == ("ready", "active")


def test_services_made_by_a_test_are_removed_with_their_containers(swarm: Swarm) -> None:
    from moorage.testing.fixtures import _remove_services

    client = swarm.client()
    try:
        before = {s["ID"] for s in client.api.services()}
        # An image every engine has without a registry: none. So a service whose image
        # cannot be pulled: its tasks are rejected, and the service must still go.
        created = client.api.create_service(
            docker.types.TaskTemplate(docker.types.ContainerSpec("127.0.0.1:9/none:1", ["true"])),
            name="moorage-test-cleanup", labels={TEST_LABEL: "1"})
        assert _remove_services(swarm, before) == []
        assert created["ID"] not in {s["ID"] for s in client.api.services()}
    finally:
        client.close()
