"""Deployment progress reports, sent in the background: in order, retried, never in the way.

A deploy reports ``pulling``, ``starting`` (``building`` for builds) and log lines as it goes.
Waiting for each report's round trip would add it to every deploy, so the deployer only
:meth:`ReportQueue.put`\\ s them and goes on; one background thread sends them in the order
they were put. A report that fails transiently (unreachable, 5xx) is retried in place, with
backoff, before anything after it; a report the control plane refuses (4xx) is dropped, since
repeating it cannot help. Reports of one deployment still queued behind another are merged
(the newer status and fields, the log lines of both in order), so a slow control plane gets
fewer, larger reports instead of a backlog.

The **final** report of a deployment does not go through the queue: the deployer writes it to
its replica first and sends it itself, after :meth:`ReportQueue.drain` says every progress
report of that deployment has left, so the control plane never receives ``starting`` after
``running``. The thread runs only while there is something to send.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moorage.agent.backoff import Backoff
from moorage.agent.errors import AgentAuthError, ProtocolError, TransientError

#: How long the deployer waits for a deployment's progress reports to leave before it sends
#: the final one (otherwise the final report stays owed and is tried at the next step).
DRAIN_TIMEOUT = 10.0


@dataclass
class _Report:
    deployment_id: int
    body: dict[str, Any]
    in_flight: bool = field(default=False)


class ReportQueue:
    """Progress reports waiting to be sent, and the thread that sends them.

    ``send(deployment_id, body)`` is the client's one attempt (``ControlPlaneClient.report``);
    ``wait(seconds)`` sleeps between retries (a stop event's ``wait`` cuts it short).
    """

    def __init__(
        self, send: Callable[[int, dict[str, Any]], None], logger: logging.Logger, *,
        backoff: Backoff | None = None, wait: Callable[[float], Any] | None = None,
        log_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._send = send
        self._logger = logger
        self._backoff = backoff or Backoff()
        self._retry_wait = wait or threading.Event().wait
        self._log_extra = log_extra or dict
        self._queue: collections.deque[_Report] = collections.deque()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._backing_off = False
        self._failure: AgentAuthError | None = None

    def put(self, deployment_id: int, body: dict[str, Any]) -> None:
        """Queue a progress report (returns at once)."""
        with self._changed:
            if self._failure is not None:
                return
            last = self._queue[-1] if self._queue else None
            if last is not None and last.deployment_id == deployment_id and not last.in_flight:
                last.body = {**last.body, **body,
                             "log": [*last.body.get("log", []), *body.get("log", [])]}
            else:
                self._queue.append(_Report(deployment_id, dict(body)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="moorage-agent-reports")
                self._thread.start()
            self._changed.notify_all()

    def pending(self, deployment_id: int) -> bool:
        """Whether a progress report of this deployment has not left yet."""
        with self._changed:
            return any(r.deployment_id == deployment_id for r in self._queue)

    def drain(self, deployment_id: int, timeout: float = DRAIN_TIMEOUT) -> bool:
        """Wait until every progress report of this deployment has left (sent, or refused for
        good); ``False`` when one is still waiting for a retry, or after ``timeout``."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not any(r.deployment_id == deployment_id for r in self._queue)
                or self._backing_off, timeout) \
                and not any(r.deployment_id == deployment_id for r in self._queue)

    def raise_if_failed(self) -> None:
        """Re-raise, in the deployer's thread, a refusal of the token met by the sender."""
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._queue:
                    self._thread = None
                    self._changed.notify_all()
                    return
                report = self._queue[0]
                report.in_flight = True
                body = dict(report.body)
            try:
                self._send(report.deployment_id, body)
            except TransientError as exc:
                delay = self._backoff.next_delay(retry_after=exc.retry_after)
                self._logger.warning("could not report deployment %d (%s), retrying in %.1f s: "
                                     "%s", report.deployment_id, body["status"], delay, exc,
                                     extra=self._log_extra())
                with self._changed:
                    report.in_flight = False
                    self._backing_off = True
                    self._changed.notify_all()
                self._retry_wait(delay)
                with self._changed:
                    self._backing_off = False
                continue
            except ProtocolError as exc:
                self._logger.log(refusal_level(exc), "the control plane refused a report of "
                                 "deployment %d (%s): %s", report.deployment_id,
                                 body["status"], exc, extra=self._log_extra())
            except AgentAuthError as exc:
                with self._changed:
                    self._failure = exc
                    self._queue.clear()
                    self._thread = None
                    self._changed.notify_all()
                return
            except Exception as exc:  # a bug must not leave the queue stuck
                self._logger.error("reporting deployment %d failed unexpectedly (%s)",
                                   report.deployment_id, type(exc).__name__,
                                   extra=self._log_extra())
            self._backoff.reset()
            with self._changed:
                self._queue.popleft()
                self._changed.notify_all()


def refusal_level(exc: ProtocolError) -> int:
    """How loud a refused report is logged: a deployment the control plane no longer knows
    (its app was deleted while the agent ran it) is expected, and dropped quietly (INFO);
    any other refusal is a bug or a version mismatch (ERROR)."""
    if exc.status == 404 and exc.code == "deployment_not_found":
        return logging.INFO
    return logging.ERROR
