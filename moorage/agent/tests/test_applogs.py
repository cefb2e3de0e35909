"""App logs on the agent: the wire bounds and cursor, the Engine's log stream, the docker
runtime's ``logs()`` on a REAL dockerd, the replica handing requests on, and the log server's
answers (to the fake control plane of the agent's unit tests)."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from moorage.agent.applogs import LogServer
from moorage.agent.client import ControlPlaneClient
from moorage.agent.errors import LogsError, MalformedPayload
from moorage.agent.replica import Replica
from moorage.agent.runtime import DockerRuntime, LogLine, Runtime
from moorage.agent.runtime.enginelogs import engine_log_lines, engine_since
from moorage.agent.tests.fakes import FakeControlPlane, FakeDeployment
from moorage.protocol.logs import (
    CUT_MARK,
    MAX_LINE_CHARS,
    LogRequestSpec,
    cut_line,
    format_timestamp,
    timestamp_ns,
)
from moorage.testing.dockerd import Dockerd
from moorage.testing.images import build_busybox_rootfs_tar

SECRET = "Tern-" + secrets.token_hex(6) + "-ash"
T0 = "2026-11-29T10:11:12.000000100Z"
T1 = "2026-11-29T10:11:12.000000200Z"
T2 = "2026-11-29T10:11:13.5Z"


# ----- the wire: cursor and bounds


def test_timestamps_keep_nanoseconds_and_round_trip() -> None:
    assert timestamp_ns(T1) - timestamp_ns(T0) == 100
    assert timestamp_ns(T2) - timestamp_ns(T0) == 1_499_999_900
    assert format_timestamp(timestamp_ns(T2)) == "2026-11-29T10:11:13.500000000Z"
    assert timestamp_ns("2026-11-29T11:11:12+01:00") == timestamp_ns("2026-11-29T10:11:12Z")
    for bad in ("yesterday", "2026-11-29 10:11:12Z", "2026-11-29T10:11:12.1234567891Z", ""):
        with pytest.raises(ValueError):
            timestamp_ns(bad)
    assert engine_since(T2) == timestamp_ns(T2) // 1_000_000_000
    assert engine_since(None) is None


def test_a_log_request_is_checked_field_by_field() -> None:
    good = {"id": 7, "account_id": 1, "app_id": 3, "app": "api", "tail": 5, "since": None,
            "follow": 0}
    assert LogRequestSpec.from_payload(good) == LogRequestSpec(7, 1, 3, "api", 5, None, 0)
    assert LogRequestSpec.from_payload(good).to_payload() == good
    for change, field in ((("tail", 1001), "tail"), (("tail", True), "tail"),
                          (("follow", 31), "follow"), (("since", "soon"), "timestamp"),
                          (("app", ""), "app"), (("id", -1), "id")):
        with pytest.raises(ValueError, match=field):
            LogRequestSpec.from_payload(good | dict([change]))
    with pytest.raises(ValueError, match="neither"):
        LogRequestSpec.from_payload(good | {"tail": None})
    assert LogRequestSpec.from_payload(good | {"tail": None, "since": T0}).since == T0
    assert cut_line("a" * MAX_LINE_CHARS) == "a" * MAX_LINE_CHARS
    assert cut_line("a" * (MAX_LINE_CHARS + 1)) == "a" * MAX_LINE_CHARS + CUT_MARK


# ----- the Engine's stream


def test_lines_are_reassembled_across_frames_and_since_is_exclusive() -> None:
    frames = [f"{T0} first\n{T1} sec".encode(), b"ond\r\n", f"{T2} third".encode()]
    assert list(engine_log_lines(frames)) == [
        LogLine(T0, "first"), LogLine(T1, "second"), LogLine(T2, "third")]
    assert list(engine_log_lines(frames, since=T0)) == [LogLine(T1, "second"),
                                                        LogLine(T2, "third")]
    assert list(engine_log_lines(frames, since=T2)) == []


def test_an_endless_line_is_kept_bounded() -> None:
    def frames() -> Iterator[bytes]:
        yield f"{T0} ".encode()
        for _ in range(1000):  # 1 MB without a newline
            yield b"z" * 1000
        yield f"\n{T1} after\n".encode()

    lines = list(engine_log_lines(frames()))
    assert [line.at for line in lines] == [T0, T1]
    assert MAX_LINE_CHARS < len(lines[0].text) < 5 * MAX_LINE_CHARS
    assert lines[1].text == "after"


# ----- the docker runtime on a real engine


@pytest.fixture
def runtime(dockerd: Dockerd, docker_client: docker.DockerClient) -> DockerRuntime:
    return DockerRuntime(dockerd.base_url, region="eu-1")


@pytest.fixture
def app_container(docker_client: docker.DockerClient) -> Callable[[str], Any]:
    """Start ``sh -c SCRIPT`` as app 3 of account 1 in region eu-1 (the labels a deploy sets)."""
    docker_client.api.import_image_from_data(build_busybox_rootfs_tar(), repository="logs-rt",
                                             tag="1")

    def start(script: str) -> Any:
        container = docker_client.containers.run(
            "logs-rt:1", ["/bin/sh", "-c", script], detach=True, network_mode="host",
            labels={"moorage.account": "1", "moorage.app": "3", "moorage.region": "eu-1"})
        return container
    return start


PRINT_FIVE = 'for i in 1 2 3 4 5; do echo "line $i"; done; exec sleep 600'


@pytest.mark.docker
def test_the_docker_runtime_reads_a_tail_and_after_a_cursor(
    runtime: DockerRuntime, app_container: Callable[[str], Any]
) -> None:
    container = app_container(PRINT_FIVE)
    deadline = time.monotonic() + 10
    while b"line 5" not in container.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    tail = list(runtime.logs(1, 3, tail=2))
    assert [line.text for line in tail] == ["line 4", "line 5"]
    everything = list(runtime.logs(1, 3, tail=None, since="2000-01-01T00:00:00Z"))
    assert [line.text for line in everything] == [f"line {i}" for i in range(1, 6)]
    after = list(runtime.logs(1, 3, tail=None, since=everything[2].at))
    assert [line.text for line in after] == ["line 4", "line 5"]
    with pytest.raises(LogsError) as raised:
        list(runtime.logs(1, 4))
    assert raised.value.code == "app_not_running" and "eu-1" in raised.value.message
    other_region = DockerRuntime(runtime.docker_host, region="us-1")
    with pytest.raises(LogsError):  # the labels scope it to its own region
        list(other_region.logs(1, 3))


@pytest.mark.docker
def test_a_follow_window_yields_new_lines_then_ends_on_time(
    runtime: DockerRuntime, app_container: Callable[[str], Any]
) -> None:
    container = app_container(PRINT_FIVE)
    started = time.monotonic()
    seen: list[str] = []
    for line in runtime.logs(1, 3, tail=1, follow=2.0):
        seen.append(line.text)
        if seen == ["line 5"]:
            container.exec_run(["/bin/sh", "-c", "echo late > /proc/1/fd/1"])
    elapsed = time.monotonic() - started
    assert seen == ["line 5", "late"]
    assert 1.9 < elapsed < 5


# ----- the replica hands requests on


def _request(request_id: int, account_id: int = 1, **fields: Any) -> dict[str, Any]:
    return {"id": request_id, "account_id": account_id, "app_id": 3, "app": "api",
            "tail": 10, "since": None, "follow": 0} | fields


def test_the_replica_hands_on_requests_of_its_own_accounts_only(
    fake: FakeControlPlane, replica: Replica
) -> None:
    fake.add_account(1, "acme")
    replica.apply_snapshot(fake.snapshot_payload())
    held = fake.revision
    fake.request_logs(_request(5))
    fake.request_logs(_request(6, account_id=2))  # not an account of this region
    result = replica.apply_changes(fake.changes_payload(held))
    assert [r.id for r in result.log_requests] == [5]
    assert result.applied == 2 and replica.revision() == fake.revision
    again = replica.apply_changes(fake.changes_payload(held))  # a replayed batch
    assert again.log_requests == []

    fake.request_logs(_request(7, tail=5000))
    with pytest.raises(MalformedPayload, match="tail"):
        replica.apply_changes(fake.changes_payload(fake.revision - 1))


# ----- the log server


class ScriptedRuntime(DockerRuntime):
    """A runtime whose ``logs()`` yields given lines (with pauses): the log server's view of
    an engine, when what is tested is the server's bounds, masking and uploads."""

    def __init__(self, lines: list[LogLine | float], error: LogsError | None = None) -> None:
        super().__init__(region="eu-1")
        self.lines, self.error = lines, error
        self.closed = threading.Event()

    def logs(self, account_id: int, app_id: int, *, tail: int | None = 100,
             since: str | None = None, follow: float = 0.0) -> Iterator[LogLine]:
        if self.error is not None and not self.lines:
            raise self.error
        return self._lines()

    def _lines(self) -> Iterator[LogLine]:
        try:
            for item in self.lines:
                if isinstance(item, float):
                    time.sleep(item)
                else:
                    yield item
            if self.error is not None:
                raise self.error
        finally:
            self.closed.set()


def _stamp(n: int) -> str:
    return format_timestamp(timestamp_ns(T0) + n)


@pytest.fixture
def server(fake: FakeControlPlane, replica: Replica, client: ControlPlaneClient
           ) -> Callable[..., LogServer]:
    fake.add_account(1, "acme")
    fake.put_deployment(FakeDeployment(41, 1, 3, "api", 1, "registry.example/acme/api:1",
                                       secret_env={"TOKEN": SECRET}))
    replica.apply_snapshot(fake.snapshot_payload())

    def make(runtime: Runtime, **kwargs: Any) -> LogServer:
        return LogServer(replica, client, lambda: runtime, logging.getLogger("test"),
                         flush_interval=0.05, **kwargs)
    return make


def test_a_tail_is_masked_cut_and_keeps_the_newest_lines_that_fit(
    fake: FakeControlPlane, server: Callable[..., LogServer], replica: Replica
) -> None:
    lines: list[LogLine | float] = [LogLine(_stamp(i), f"{i} " + "a" * 98) for i in range(50)]
    lines.append(LogLine(_stamp(50), f"token={SECRET} " + "b" * 3000))
    logs = server(ScriptedRuntime(lines), max_bytes=2500)
    logs.answer(LogRequestSpec(9, 1, 3, "api", tail=100), runtime=logs.runtime(),
                secrets=replica.app_secret_values(1, 3))
    [(request_id, chunk)] = fake.log_chunks
    assert request_id == 9 and chunk["seq"] == 0 and chunk["final"] and chunk["truncated"]
    texts = [line["text"] for line in chunk["lines"]]
    assert texts[-1] == ("token=*** " + "b" * 3000)[:MAX_LINE_CHARS] + CUT_MARK
    # 2005 bytes for the cut line, 102 for each short one: four of them fit in 2500.
    assert [t.split()[0] for t in texts[:-1]] == ["46", "47", "48", "49"]
    assert chunk["cursor"] == _stamp(50)
    assert SECRET not in str(fake.log_chunks)


def test_a_follow_window_uploads_in_order_and_ends_at_the_limit(
    fake: FakeControlPlane, server: Callable[..., LogServer]
) -> None:
    lines: list[LogLine | float] = [LogLine(_stamp(1), "one"), 0.3, LogLine(_stamp(2), "two")]
    lines += [LogLine(_stamp(3 + i), "x" * 100) for i in range(100)]
    runtime = ScriptedRuntime(lines)
    logs = server(runtime, max_bytes=1000)
    logs.answer(LogRequestSpec(9, 1, 3, "api", tail=1, follow=5), runtime=runtime, secrets=[])
    chunks = [chunk for _, chunk in fake.log_chunks]
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert chunks[0]["lines"] == [{"at": _stamp(1), "text": "one"}]  # sent before "two" came
    assert [c["final"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    texts = [line["text"] for c in chunks for line in c["lines"]]
    # 4 + 4 + 9 * 101 bytes fit in 1000, a tenth long line would not.
    assert texts[:2] == ["one", "two"] and len(texts) == 2 + 9
    assert chunks[-1]["truncated"] and chunks[-1]["cursor"] == _stamp(3 + 8)
    assert runtime.closed.wait(5)  # the engine's stream is closed when the limit stops it


def test_an_engine_error_and_a_gone_request_end_the_answer(
    fake: FakeControlPlane, server: Callable[..., LogServer]
) -> None:
    logs = server(ScriptedRuntime([], LogsError("app_not_running", "Nothing runs.")))
    logs.answer(LogRequestSpec(9, 1, 3, "api", tail=5), runtime=logs.runtime(), secrets=[])
    [(_, chunk)] = fake.log_chunks
    assert chunk["final"] and chunk["error"] == {"code": "app_not_running",
                                                "message": "Nothing runs."}
    fake.log_chunks.clear()
    fake.logs_gone.add(10)
    runtime = ScriptedRuntime([LogLine(_stamp(1), "one"), 0.2, LogLine(_stamp(2), "two"),
                               5.0])
    started = time.monotonic()
    logs.answer(LogRequestSpec(10, 1, 3, "api", tail=1, follow=10), runtime=runtime,
                secrets=[])
    assert time.monotonic() - started < 3  # the 404 stopped it, not the window's end
    assert fake.log_chunks == []


def test_the_sync_loop_hands_requests_to_workers_and_a_full_queue_answers_busy(
    fake: FakeControlPlane, server: Callable[..., LogServer], make_loop: Callable[..., Any]
) -> None:
    release = threading.Event()

    class Slow(ScriptedRuntime):
        def _lines(self) -> Iterator[LogLine]:
            release.wait(10)
            yield LogLine(_stamp(1), "slow")

    logs = server(Slow([]), workers=1)
    loop = make_loop(log_server=logs)
    for request_id in range(1, 11):  # 1 read at a time, 8 waiting: the rest answered busy
        fake.request_logs(_request(request_id))
    loop.run_once(backoff=False)
    busy = {request_id for request_id, chunk in fake.log_chunks
            if chunk["final"] and (chunk["error"] or {}).get("code") == "agent_busy"}
    assert busy and busy <= {9, 10}
    release.set()
    deadline = time.monotonic() + 10
    while len({r for r, c in fake.log_chunks if c["final"]}) < 10:
        assert time.monotonic() < deadline, fake.log_chunks
        time.sleep(0.05)
    logs.stop_event.set()
