"""``moorage apps logs`` against a live server, with the region's real agent in a thread and
the app's real container on the real dockerd. ``--follow`` runs as a real process, stopped
with a real SIGINT."""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

import docker
import pytest

from moorage.apps.services import app_create
from moorage.cli import applogs
from moorage.cli.tests.conftest import Cli
from moorage.deployments.models import Deployment
from moorage.regions import services as region_services
from moorage.testing.agents import InProcessAgent
from moorage.testing.apps import running_container, script_app
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, make_region
from moorage.testing.registry import RegistryServer

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

SECRET = "Skate-" + secrets.token_hex(8) + "-umber"
SCRIPT = ('echo "token is $APP_TOKEN"; i=1; while [ $i -le 20 ]; do echo "line $i"; '
          'i=$((i+1)); done; exec sleep 3600')


@pytest.fixture
def region(logged_in: Member, start_agent: Callable[[AgentView], InProcessAgent]) -> AgentView:
    """Region eu-1, the logged-in account deploying there, its agent running."""
    made = make_region("eu-1")
    region_services.account_regions_set(actor=logged_in.user, membership=logged_in.membership,
                                        slugs=[made.slug])
    start_agent(made)
    return made


@pytest.fixture
def container(
    logged_in: Member, region: AgentView, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], docker_client: docker.DockerClient,
) -> docker.models.containers.Container:
    """The app ``api`` of the logged-in account, printing SCRIPT's lines, running."""
    image = busybox_image(registry_basic, "cli-logs/api", "1.0")
    _, deployment = script_app(logged_in, registry=registry_basic, image=image,
                               script=SCRIPT, secrets={"APP_TOKEN": SECRET})
    return running_container(deployment, docker_client, printed="line 20")


def test_tail_shows_the_newest_lines_masked(run: Cli, container: object) -> None:
    five = run("apps", "logs", "api", "--tail", "5")
    assert five.exit_code == 0, five.output
    assert five.stdout.splitlines() == [f"line {i}" for i in range(16, 21)]

    stamped = run("apps", "logs", "api", "-n", "1", "--timestamps")
    assert stamped.exit_code == 0, stamped.output
    [line] = stamped.stdout.splitlines()
    assert line.endswith("Z line 20") and line.startswith("20")

    everything = run("apps", "logs", "api", "--region", "eu-1")
    assert everything.exit_code == 0, everything.output
    assert everything.stdout.splitlines()[0] == "token is ***"
    for output in run.outputs:
        assert SECRET not in output


def test_errors_name_what_is_wrong(run: Cli, logged_in: Member, region: AgentView,
                                   other_owner: Member) -> None:
    app_create(actor=logged_in.user, membership=logged_in.membership, name="idle",
               image="busybox:1", runtime_pull="none")
    never = run("apps", "logs", "idle")
    assert never.exit_code == 1, never.output
    assert "eu-1:" in never.stderr and "(app_not_running)" in never.stderr
    assert "deploy it first" in never.stderr

    elsewhere = run("apps", "logs", "idle", "--region", "us-9")
    assert elsewhere.exit_code == 1 and "(region_not_enabled)" in elsewhere.stderr
    app_create(actor=other_owner.user, membership=other_owner.membership, name="theirs",
               image="busybox:1", runtime_pull="none")
    theirs = run("apps", "logs", "theirs")
    assert theirs.exit_code == 1 and "(app_not_found)" in theirs.stderr
    assert not Deployment.objects.exists()


def test_follow_goes_on_from_window_to_window_without_repeats(
    run: Cli, container: docker.models.containers.Container, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows of 2 s: the marker printed during the second one shows once, and so does
    every line before it, however many windows pass."""
    monkeypatch.setattr(applogs, "WINDOW", 2)
    shown: list[str] = []
    emit = applogs._emit

    def recorded(text: str) -> None:
        shown.append(text)
        emit(text)

    monkeypatch.setattr(applogs, "_emit", recorded)
    marker = "between-windows-" + secrets.token_hex(4)
    start = time.monotonic()
    printed_at: list[float] = []

    def pause() -> None:
        now = time.monotonic() - start
        assert now < 60, f"the marker never came: {shown}"
        if not printed_at and now > 3:
            container.exec_run(["/bin/sh", "-c", f"echo {marker} > /proc/1/fd/1"])
            printed_at.append(now)
        if marker in shown and now > printed_at[0] + 5:
            raise KeyboardInterrupt
        time.sleep(applogs.POLL_SECONDS)

    monkeypatch.setattr(applogs, "_pause", pause)
    result = run("apps", "logs", "api", "-f", "-n", "3")
    assert result.exit_code == 130, result.output
    assert "Stopped following." in result.stderr
    assert shown == ["line 18", "line 19", "line 20", marker]


def test_on_a_terminal_control_characters_are_shown_not_acted_upon() -> None:
    assert applogs._terminal_safe("\x1b]0;pwned\x07ok\tcolumn\r\x9b2J") == (
        "\\x1b]0;pwned\\x07ok\tcolumn\\x0d\\x9b2J")


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))


def test_follow_shows_a_line_printed_after_it_started_and_stops_on_ctrl_c(
    container: docker.models.containers.Container,
) -> None:
    marker = "printed-after-start-" + secrets.token_hex(4)
    process = subprocess.Popen(
        [sys.executable, "-m", "moorage", "apps", "logs", "api", "--follow", "--tail", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert process.stdout is not None and process.stderr is not None
    seen: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, seen), daemon=True).start()
    got: list[str] = []

    def until(text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in got:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} never came; got {got}"
            try:
                got.append(seen.get(timeout=remaining))
            except queue.Empty:
                continue

    try:
        until("line 20", 30)
        assert got == ["line 19", "line 20"]
        result = container.exec_run(["/bin/sh", "-c", f"echo {marker} > /proc/1/fd/1"])
        assert result.exit_code == 0
        until(marker, 30)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    errors = process.stderr.read()
    assert code == 130, errors
    assert "Stopped following." in errors and "Traceback" not in errors
    while not seen.empty():
        got.append(seen.get())
    assert got == ["line 19", "line 20", marker]
