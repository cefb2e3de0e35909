"""Answering the control plane's requests for an app's logs (``docs/sync.md``, "App logs").

The control plane never calls an agent: a member's request reaches the agent as a
``logs.request`` op of its ``changes`` answer, and the sync loop hands it to
:meth:`LogServer.submit`. The answer goes back in numbered chunks to ``POST /agent/logs/{id}``.

Why it is built this way:

* **Never in the sync loop's way.** Reads run in a few worker threads: a follow window lasts
  up to 30 s and the loop runs deploys inline, so neither may wait for the other. The queue is
  bounded; a request that finds it full is answered ``agent_busy`` at once.
* **Only the region's own accounts.** The replica hands on requests for accounts it holds
  only, and the runtime finds the app by its account, app and region labels.
* **Masked, then cut, then bounded.** Every line has the app's secret env values masked
  (:mod:`.masking`, as the deployer does for a crashed container's last lines) *before* it is
  cut to :data:`~moorage.protocol.logs.MAX_LINE_CHARS`, so a secret is never half shown; an
  answer stops at :data:`~moorage.protocol.logs.MAX_ANSWER_BYTES`. A one-off tail keeps the
  newest lines that fit; a follow window (or a read after a cursor) sends them in order and
  ends early at the limit, its cursor saying where the next one starts.
* **Nothing of the lines in the agent's own log**: it says which request, which app and how
  many lines, never what they hold.
* **Idempotent uploads.** A chunk carries its ``seq``; the control plane ignores one it has,
  so a chunk is retried on a transient error without being shown twice. A 404 means the
  request is gone (read and deleted, expired): the answer stops.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moorage.agent.client import ControlPlaneClient
from moorage.agent.errors import AgentAuthError, LogsError, ProtocolError, TransientError
from moorage.agent.masking import mask_secrets
from moorage.agent.replica import Replica
from moorage.agent.runtime.base import Runtime
from moorage.agent.streaming import read_ticking
from moorage.protocol.logs import (
    MAX_ANSWER_BYTES,
    MAX_CHUNK_LINES,
    LogLine,
    LogRequestSpec,
    cut_line,
    format_timestamp,
)

#: Requests read at the same time, and waiting for a worker; more are answered agent_busy.
WORKERS = 2
QUEUE_LIMIT = 8
#: How often lines batched during a follow window are uploaded.
FLUSH_INTERVAL = 0.5
#: Attempts of one chunk upload on transient errors, and the pause between them.
UPLOAD_ATTEMPTS = 3
UPLOAD_PAUSE = 0.5
#: Request ids remembered, so a batch applied twice does not answer a request twice.
REMEMBERED = 512


class _Gone(Exception):
    """The control plane no longer wants this answer (read, expired, or refused)."""


@dataclass
class _Job:
    request: LogRequestSpec
    runtime: Runtime
    secrets: list[str] = field(repr=False)


class _Upload:
    """The chunks of one answer, numbered from 0; the last one is ``final``."""

    def __init__(self, server: LogServer, request_id: int, *,
                 attempts: int = UPLOAD_ATTEMPTS) -> None:
        self.server = server
        self.request_id = request_id
        self.attempts = attempts
        self.seq = 0
        self.lines = 0

    def send(self, lines: list[LogLine], *, final: bool = False, **fields: Any) -> None:
        for start in range(0, max(len(lines), 1), MAX_CHUNK_LINES):
            part = lines[start:start + MAX_CHUNK_LINES]
            last = final and start + MAX_CHUNK_LINES >= len(lines)
            if not part and not last:
                return
            body = {"seq": self.seq, "lines": [{"at": ln.at, "text": ln.text} for ln in part],
                    "final": last, **(fields if last else {})}
            self._post(body)
            self.seq += 1
            self.lines += len(part)

    def _post(self, body: dict[str, Any]) -> None:
        for attempt in range(self.attempts):
            try:
                self.server.client.log_chunk(self.request_id, body)
                return
            except TransientError as exc:
                if attempt + 1 == self.attempts or self.server.stop_event.is_set():
                    raise _Gone(f"could not upload: {exc}") from None
                self.server.stop_event.wait(UPLOAD_PAUSE * 2 ** attempt)
            except ProtocolError as exc:
                raise _Gone(f"the control plane refused it: {exc}") from None


class LogServer:
    """Answers logs requests on the region's runtime, in worker threads.

    ``runtime`` gives the runtime to read from at the moment a request comes (the agent may
    pick its runtime only once it knows the region's). :meth:`submit` runs on the sync loop's
    thread (it reads the replica, which belongs to that thread); :meth:`answer` runs one
    request to its end and is what the workers call.
    """

    def __init__(
        self,
        replica: Replica,
        client: ControlPlaneClient,
        runtime: Callable[[], Runtime],
        logger: logging.Logger,
        *,
        stop_event: threading.Event | None = None,
        workers: int = WORKERS,
        flush_interval: float = FLUSH_INTERVAL,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.replica = replica
        self.client = client
        self.runtime = runtime
        self.logger = logger
        self.stop_event = stop_event or threading.Event()
        self.workers = workers
        self.flush_interval = flush_interval
        self.max_bytes = max_bytes
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._threads: list[threading.Thread] = []
        self._seen: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._region = "-"

    # -- handing over (the sync loop's thread) -----------------------------------------------

    def submit(self, request: LogRequestSpec) -> None:
        """Queue ``request`` for a worker, or answer ``agent_busy`` when the queue is full."""
        self._region = self.replica.region() or "-"
        if request.id in self._seen:
            return
        self._seen[request.id] = None
        while len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        job = _Job(request=request, runtime=self.runtime(),
                   secrets=self.replica.app_secret_values(request.account_id, request.app_id))
        self._start_workers()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._log(logging.WARNING, "logs request %d (%s): too many at once, answered busy",
                      request.id, request.app)
            self._finish_with_error(request.id, LogsError(
                "agent_busy", "The region's agent is answering too many logs requests at "
                "once; try again in a moment."))

    def _start_workers(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._work, name="moorage-agent-logs",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while not self.stop_event.is_set():
            try:
                job = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.answer(job.request, runtime=job.runtime, secrets=job.secrets)
            except AgentAuthError:
                return  # the sync loop meets it too, and stops the agent
            except Exception as exc:  # a bug must not kill the worker
                self._log(logging.ERROR, "logs request %d: unexpected %s", job.request.id,
                          type(exc).__name__)
            finally:
                job.secrets.clear()

    # -- one request -------------------------------------------------------------------------

    def answer(self, request: LogRequestSpec, *, runtime: Runtime, secrets: list[str]) -> None:
        """Read the lines ``request`` asks for and upload them; never raises but
        :class:`AgentAuthError` (an answer the control plane does not take is dropped)."""
        upload = _Upload(self, request.id)
        started = time.time_ns()
        try:
            try:
                lines = runtime.logs(request.account_id, request.app_id, tail=request.tail,
                                     since=request.since, follow=float(request.follow))
            except LogsError as exc:
                upload.send([], final=True, cursor=request.since, truncated=False,
                            error={"code": exc.code, "message": exc.message})
                return
            if request.follow == 0 and request.tail is not None:
                rest, cursor, truncated, error = self._tail(request, lines, secrets)
            else:
                rest, cursor, truncated, error = self._stream(request, lines, upload, secrets)
            if cursor is None and upload.lines == 0 and not rest and error is None:
                # Nothing at all yet: the next window starts from when this one did, so a
                # line printed in between is not missed (nor, there being none, repeated).
                cursor = format_timestamp(started)
            upload.send(rest, final=True, cursor=cursor, truncated=truncated, error=error)
        except _Gone as exc:
            self._log(logging.INFO, "logs request %d (%s): stopped, %s", request.id,
                      request.app, exc)
            return
        self._log(logging.INFO, "logs request %d (%s): %d lines sent%s", request.id,
                  request.app, upload.lines, " (cut at the limit)" if truncated else "")

    def _tail(
        self, request: LogRequestSpec, lines: Any, secrets: list[str]
    ) -> tuple[list[LogLine], str | None, bool, dict[str, str] | None]:
        """A one-off tail: the newest lines that fit, oldest first (sent with the final)."""
        kept: collections.deque[tuple[LogLine, int]] = collections.deque()
        size, truncated, error = 0, False, None
        try:
            for line in lines:
                shown = _shown(line, secrets)
                cost = len(shown.text.encode("utf-8")) + 1
                kept.append((shown, cost))
                size += cost
                while size > self.max_bytes and kept:
                    size -= kept.popleft()[1]
                    truncated = True
        except LogsError as exc:
            error = {"code": exc.code, "message": exc.message}
        finally:
            _close(lines)
        out = [line for line, _ in kept]
        cursor = out[-1].at if out and out[-1].at else request.since
        return out, cursor, truncated, error

    def _stream(
        self, request: LogRequestSpec, lines: Any, upload: _Upload, secrets: list[str]
    ) -> tuple[list[LogLine], str | None, bool, dict[str, str] | None]:
        """A follow window (or a read after a cursor): lines in order, uploaded every
        ``flush_interval``, until the window ends, the limit is reached or the agent stops."""
        batch: list[LogLine] = []
        size, truncated, error = 0, False, None
        cursor = request.since
        flushed = time.monotonic()
        ticking = read_ticking(iter(lines), tick=self.flush_interval,
                               name="moorage-agent-logs-read")
        try:
            for line in ticking:
                if line is not None:
                    shown = _shown(line, secrets)
                    cost = len(shown.text.encode("utf-8")) + 1
                    if size + cost > self.max_bytes:
                        truncated = True
                        break
                    size += cost
                    batch.append(shown)
                    if shown.at:
                        cursor = shown.at
                if self.stop_event.is_set():
                    break
                if batch and time.monotonic() - flushed >= self.flush_interval:
                    upload.send(batch)
                    batch, flushed = [], time.monotonic()
        except LogsError as exc:
            error = {"code": exc.code, "message": exc.message}
        finally:
            ticking.close()
        return batch, cursor, truncated, error

    def _finish_with_error(self, request_id: int, exc: LogsError) -> None:
        """One attempt only: this runs on the sync loop's thread."""
        try:
            _Upload(self, request_id, attempts=1).send([], final=True, cursor=None, truncated=False,
                                           error={"code": exc.code, "message": exc.message})
        except _Gone:
            pass

    def _log(self, level: int, message: str, *args: object) -> None:
        self.logger.log(level, message, *args, extra={"region": self._region})


def _shown(line: LogLine, secrets: list[str]) -> LogLine:
    """The line as it may leave the region: secrets masked first, then cut."""
    return LogLine(at=line.at, text=cut_line(mask_secrets(line.text, secrets)))


def _close(lines: Any) -> None:
    close = getattr(lines, "close", None)
    if close is not None:
        close()
