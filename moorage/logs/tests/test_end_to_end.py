"""App logs end to end: the REST API of a live server, the region's real agent running in a
thread (long-polling, as ``moorage agent`` does), and a real container on the real dockerd."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
import httpx
import pytest

from moorage.accounts.choices import Role
from moorage.apps.models import App
from moorage.logs.models import LogRequest
from moorage.protocol.logs import CUT_MARK, MAX_ANSWER_BYTES, MAX_LINE_CHARS
from moorage.testing import factories
from moorage.testing.agents import InProcessAgent
from moorage.testing.apps import running_container, script_app
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, make_region, member_in
from moorage.testing.registry import RegistryServer
from moorage.testing.secrets_search import database_text

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

SECRET = "Kelp-" + secrets.token_hex(8) + "-teal"
#: Prints its secret, then twenty numbered lines, then sleeps (PID 1 keeps the log open).
SCRIPT = ('echo "token is $APP_TOKEN"; i=1; while [ $i -le 20 ]; do echo "line $i"; '
          'i=$((i+1)); done; exec sleep 3600')


@dataclass
class Running:
    owner: Member
    app: App
    url: str
    container: Any


@pytest.fixture
def running(
    live_server: Any, registry_basic: RegistryServer, busybox_image: Callable[..., str],
    start_agent: Callable[[AgentView], InProcessAgent], docker_client: docker.DockerClient,
    request: pytest.FixtureRequest,
) -> Running:
    """An app printing SCRIPT's lines in region eu-1, served by its agent."""
    region = make_region("eu-1")
    owner = member_in(region, "Acme")
    image = busybox_image(registry_basic, f"logs/{request.node.name[:40].lower()}", "1.0")
    app, deployment = script_app(owner, registry=registry_basic, image=image, script=SCRIPT,
                                 secrets={"APP_TOKEN": SECRET})
    start_agent(region)
    container = running_container(deployment, docker_client, printed="line 20")
    return Running(owner=owner, app=app, url=str(live_server.url), container=container)


def _read(running: Running, member: Member, body: dict[str, Any],
          during: Callable[[], None] | None = None) -> dict[str, Any]:
    """Ask for the app's logs and read the one answer to its end; return the last read with
    every line collected. ``during`` runs once the first lines are in."""
    api = f"{running.url}/api/v1/apps/{running.app.pk}/logs"
    created = httpx.post(api, json=body, headers=member.auth, timeout=10)
    assert created.status_code == 201, created.text
    [started] = created.json()
    lines: list[dict[str, str]] = []
    after, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = httpx.get(f"{api}/{started['id']}", params={"after": after},
                           headers=member.auth, timeout=10)
        assert answer.status_code == 200, answer.text
        read = answer.json()
        lines += read["lines"]
        after = read["next"]
        if during is not None and lines:
            during()
            during = None
        if read["finished"]:
            return read | {"lines": lines}
        time.sleep(0.2)
    raise AssertionError("the logs request never finished")


def test_a_viewer_reads_the_tail_with_the_secret_masked_and_nothing_is_kept(
    running: Running, caplog: pytest.LogCaptureFixture,
) -> None:
    viewer = factories.add_member(running.owner, Role.VIEWER)
    caplog.set_level(logging.DEBUG)
    five = _read(running, viewer, {"tail": 5})
    assert five["status"] == "done" and five["error"] is None and not five["truncated"]
    assert [line["text"] for line in five["lines"]] == [f"line {i}" for i in range(16, 21)]
    # What the engine itself shows, timestamps included: the cursor is the last one.
    engine = running.container.logs(tail=5, timestamps=True).decode().splitlines()
    assert [f"{line['at']} {line['text']}" for line in five["lines"]] == engine
    assert five["cursor"] == five["lines"][-1]["at"]

    everything = _read(running, running.owner, {"tail": 100})
    texts = [line["text"] for line in everything["lines"]]
    assert texts[0] == "token is ***" and len(texts) == 21
    assert SECRET not in str(everything)
    # Read and gone: no row, no line of the app's output in the database, nor in any log
    # line of the control plane or the agent.
    assert not LogRequest.objects.exists()
    assert "line 20" not in database_text() and SECRET not in database_text()
    assert "line 20" not in caplog.text and SECRET not in caplog.text
    assert any("lines sent" in r.getMessage() for r in caplog.records)  # the agent did log


def test_a_follow_window_brings_a_new_line_and_its_cursor_continues_without_repeats(
    running: Running,
) -> None:
    marker = "printed-after-start-" + secrets.token_hex(4)

    def print_marker() -> None:
        result = running.container.exec_run(["/bin/sh", "-c", f"echo {marker} > /proc/1/fd/1"])
        assert result.exit_code == 0, result.output

    window = _read(running, running.owner, {"tail": 2, "follow": 4}, during=print_marker)
    texts = [line["text"] for line in window["lines"]]
    assert texts == ["line 19", "line 20", marker], texts
    assert window["cursor"] == window["lines"][-1]["at"]

    print_marker_2 = marker + "-2"
    running.container.exec_run(["/bin/sh", "-c", f"echo {print_marker_2} > /proc/1/fd/1"])
    then = _read(running, running.owner, {"tail": None, "since": window["cursor"]})
    assert [line["text"] for line in then["lines"]] == [print_marker_2]


def test_a_flood_is_cut_at_the_limit(
    live_server: Any, registry_basic: RegistryServer, busybox_image: Callable[..., str],
    start_agent: Callable[[AgentView], InProcessAgent], docker_client: docker.DockerClient,
) -> None:
    region = make_region("eu-1")
    owner = member_in(region, "Floods")
    image = busybox_image(registry_basic, "logs/flood", "1.0")
    # 1200 lines of 400 characters, then one of 10,000 (made in the shell: a command's
    # arguments are limited), then "last".
    script = ('r=yyyyyyyyyy; r="$r$r$r$r$r$r$r$r$r$r"; r="$r$r$r$r"; '
              'l="$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r$r"; '
              'i=1; while [ $i -le 1200 ]; do echo "$i $r"; i=$((i+1)); done; '
              'echo "$l"; echo last; exec sleep 3600')
    app, deployment = script_app(owner, registry=registry_basic, image=image, script=script,
                                 name="flood")
    start_agent(region)
    running_container(deployment, docker_client, printed="last")
    running = Running(owner=owner, app=app, url=str(live_server.url), container=None)
    answer = _read(running, owner, {"tail": 1000})
    texts = [line["text"] for line in answer["lines"]]
    assert answer["truncated"] and answer["status"] == "done"
    assert texts[-1] == "last"  # the newest lines are the ones kept
    assert texts[-2] == "y" * MAX_LINE_CHARS + CUT_MARK
    assert sum(len(t.encode()) + 1 for t in texts) <= MAX_ANSWER_BYTES
    assert 100 < len(texts) < 1000
    numbers = [int(t.split()[0]) for t in texts[:-2]]
    assert numbers == list(range(numbers[0], 1201))  # a run of the newest, none missing
