"""The reconcile loop: snapshot once, then long-poll changes, apply, acknowledge.

One step (:meth:`SyncLoop.run_once`):

1. resend the pending acknowledgement, if the last one did not get through;
2. without a revision, take a snapshot; else long-poll ``changes`` since the revision
   (``snapshot_required`` → take a snapshot);
3. apply it to the replica in one transaction;
4. acknowledge it — for a batch, the credentials it wrote and removed; for a snapshot, the
   whole replica. The acknowledgement stays pending until the control plane has it. With a
   deployer, a batch's acknowledgement is sent while the deployer runs what the batch brought
   (a deploy does not wait for it; the step still ends only once it has left, and a failed one
   is retried as before).

A batch's ``logs.request`` ops are handed to the log server (:mod:`.applogs`) as soon as the
batch is applied; it answers them in its own threads, so a log read never waits for a deploy
of this loop, nor a deploy for a log read.

After a restart the first thing sent is a full acknowledgement of the replica, because an
agent stopped between applying a batch and acknowledging it lost that acknowledgement; the
server's ack is idempotent, so re-sending it is harmless.

Failures: :class:`~moorage.agent.errors.TransientError` (unreachable, 5xx) and refused
payloads (:class:`~moorage.protocol.envelopes.TamperedPayload`, which is never applied) are
retried after a capped exponential backoff with full jitter (:mod:`moorage.agent.backoff`:
a random wait in a window of 5 s for the first retries after a success, then doubling to
30 s, and at least the server's ``Retry-After``), so that a fleet of agents cut off by a
control-plane restart comes back spread over several seconds instead of all at once;
:class:`~moorage.agent.errors.AgentAuthError` is logged and re-raised: the agent stops.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from moorage.agent.backoff import RECONNECT_SPREAD, Backoff
from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig
from moorage.agent.errors import (
    AgentAuthError,
    ConfigurationError,
    ProtocolError,
    ReplicaError,
    TamperedPayload,
    TransientError,
)
from moorage.agent.replica import Replica

if TYPE_CHECKING:
    from moorage.agent.applogs import LogServer
    from moorage.agent.deployer import Deployer

T = TypeVar("T")

# How often a request in progress checks whether the agent was asked to stop.
STOP_CHECK_INTERVAL = 0.1
# With ``wait`` 0 the control plane answers at once; do not turn that into a busy loop.
MIN_POLL_INTERVAL = 1.0


class Outcome(enum.Enum):
    """How one step ended, for the caller deciding whether to go on."""

    SYNCED = "synced"  # the replica is up to date with the answer (maybe nothing was new)
    RETRY = "retry"  # it failed; logged, and (with backoff) waited for
    STOPPED = "stopped"  # the stop event was set; nothing half-done


@dataclass(frozen=True)
class Ack:
    """An acknowledgement to send, kept until the control plane has it."""

    revision: int
    credentials: dict[int, int] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)
    snapshot: bool = False


class _Stopped(BaseException):
    """The stop event was set while waiting for the control plane.

    A ``BaseException`` so that it passes through the deployer's last-resort ``except
    Exception`` when a stop comes during the credential sync a deployment asked for."""


class SyncLoop:
    """Keeps the replica in step with the control plane until stopped.

    ``sleep`` waits between retries (default: waiting on ``stop_event``, so a stop cuts the
    wait short); tests pass a recorder. ``interruptible`` runs each request in a helper
    thread so a stop abandons a long poll at once instead of after up to ``wait`` seconds
    (the thread is a daemon and dies with the process; its answer is dropped).
    """

    def __init__(
        self,
        config: AgentConfig,
        client: ControlPlaneClient,
        replica: Replica,
        logger: logging.Logger,
        stop_event: threading.Event,
        *,
        sleep: Callable[[float], Any] | None = None,
        backoff: Backoff | None = None,
        interruptible: bool = True,
        deployer: Deployer | None = None,
        log_server: LogServer | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.replica = replica
        self.logger = logger
        self.stop_event = stop_event
        self.backoff = backoff if backoff is not None else Backoff(spread=RECONNECT_SPREAD)
        self._sleep = sleep if sleep is not None else stop_event.wait
        self._interruptible = interruptible
        held_region = replica.region()
        if config.region is not None and held_region is not None \
                and config.region != held_region:
            raise ConfigurationError(
                f"The replica in {config.data_dir} belongs to region {held_region!r}, not "
                f"{config.region!r}; give each region's agent its own data dir.")
        self.region = config.region or held_region
        client.region = self.region
        replaced = replica.take_key()
        if replaced is not None:
            self._log(logging.INFO, "the region key changed from %s to %s: dropping what was "
                      "sealed with the old one and taking a fresh snapshot", replaced,
                      config.region_key.id)
        held = replica.revision()
        # An ack may have been lost when the agent last stopped: report everything held.
        self.pending_ack: Ack | None = None if held is None else Ack(
            revision=held, credentials=replica.credentials_held(), snapshot=True)
        self.deployer = deployer
        self.log_server = log_server
        #: A batch's acknowledgement being sent while the deployer runs (thread, outcome).
        self._acking: tuple[threading.Thread, dict[str, BaseException]] | None = None
        if deployer is not None:
            deployer.refresh = self.sync_now
            deployer.stop_event = stop_event

    # -- running -----------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Sync until ``stop_event`` is set; raises :class:`AgentAuthError` (fatal)."""
        self._log(logging.INFO, "syncing with %s", self.config.url)
        while not self.stop_event.is_set():
            if self.run_once() is Outcome.SYNCED and self.config.wait == 0:
                self.stop_event.wait(MIN_POLL_INTERVAL)
        self._log(logging.INFO, "stopped")

    def run_once(self, *, backoff: bool = True) -> Outcome:
        """One step; on a failure, log it and (with ``backoff``) wait before returning.

        Raises :class:`AgentAuthError` after logging it: retrying cannot help.
        """
        if self.stop_event.is_set():
            return Outcome.STOPPED
        try:
            self._step()
        except _Stopped:
            return Outcome.STOPPED
        except AgentAuthError as exc:
            self._log(logging.ERROR, "%s; stopping", exc)
            raise
        except TransientError as exc:
            return self._retry(logging.WARNING, "control plane unreachable", exc, backoff)
        except TamperedPayload as exc:
            return self._retry(logging.ERROR, "rejected a payload that failed its integrity "
                               "check", exc, backoff)
        except (ProtocolError, ReplicaError) as exc:
            return self._retry(logging.ERROR, "sync failed", exc, backoff)
        self.backoff.reset()
        return Outcome.SYNCED

    def _retry(self, level: int, what: str, exc: Exception, backoff: bool) -> Outcome:
        if not backoff:
            self._log(level, "%s: %s", what, exc)
            return Outcome.RETRY
        delay = self.backoff.next_delay(retry_after=getattr(exc, "retry_after", None))
        self._log(level, "%s, retrying in %.1f s: %s", what, delay, exc)
        self._sleep(delay)
        return Outcome.STOPPED if self.stop_event.is_set() else Outcome.RETRY

    # -- one step ----------------------------------------------------------------------------

    def _step(self) -> None:
        if self.pending_ack is not None:
            self._send_ack(self.pending_ack)
        # Without a revision the replica has nothing trustworthy to run (a first start, or
        # a region key that changed): take the snapshot first.
        if self.deployer is not None and self.replica.revision() is not None:
            self.deployer.step()
        if self.deployer is None:
            self._poll(self.config.wait)
            return
        self._poll(self.config.wait, ack=False)
        self._ack_in_background()
        try:
            self.deployer.step()
        except BaseException:
            self._acked(quiet=True)
            raise
        self._acked()

    def sync_now(self) -> None:
        """One changes poll without waiting, applied and acknowledged (for the deployer)."""
        self._acked()  # the batch's ack first: a failed one must not be overwritten
        self._poll(0)

    def _ack_in_background(self) -> None:
        """Send the pending acknowledgement in a helper thread; :meth:`_acked` waits for it."""
        ack = self.pending_ack
        if ack is None:
            return
        outcome: dict[str, BaseException] = {}

        def send() -> None:
            try:
                self._send_ack(ack)
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=send, name="moorage-agent-ack", daemon=True)
        self._acking = (thread, outcome)
        thread.start()

    def _acked(self, *, quiet: bool = False) -> None:
        """Wait for the acknowledgement sent in the background, then raise its failure (not
        with ``quiet``); it stays pending then, for the next step to send again."""
        if self._acking is None:
            return
        thread, outcome = self._acking
        while thread.is_alive():
            thread.join(STOP_CHECK_INTERVAL)
            if self.stop_event.is_set() and thread.is_alive():
                self._acking = None
                raise _Stopped
        self._acking = None
        if "error" in outcome and not quiet:
            raise outcome["error"]

    def _poll(self, wait: int, *, ack: bool = True) -> None:
        held = self.replica.revision()
        if held is None:
            self._snapshot()
            return
        payload = self._call(lambda: self.client.changes(held, wait))
        if payload["snapshot_required"]:
            self._log(logging.INFO, "revision %d is no longer in the control plane's change "
                      "log: taking a snapshot", held)
            self._snapshot()
            return
        result = self.replica.apply_changes(payload)
        if self.log_server is not None:
            for request in result.log_requests:
                self.log_server.submit(request)  # answered in its own threads
        if result.applied:
            self._log(logging.INFO, "applied revision %d: %d changes", result.revision,
                      result.applied)
        elif result.revision != result.previous:
            self._log(logging.DEBUG, "revision %d: nothing for this region", result.revision)
        if result.applied or result.revision != result.previous:
            self.pending_ack = Ack(revision=result.revision, credentials=result.upserted,
                                   removed=result.removed)
            if ack:
                self._send_ack(self.pending_ack)

    def _snapshot(self) -> None:
        payload = self._call(self.client.snapshot)
        result = self.replica.apply_snapshot(payload)
        if self.region is None:
            self.region = self.client.region = result.region
        self._log(logging.INFO, "took a snapshot at revision %d: %d accounts, %d credentials",
                  result.revision, result.accounts, len(result.credentials))
        self.pending_ack = Ack(revision=result.revision, credentials=result.credentials,
                               snapshot=True)
        self._send_ack(self.pending_ack)

    def _send_ack(self, ack: Ack) -> None:
        try:
            self._call(lambda: self.client.ack(ack.revision, ack.credentials, ack.removed,
                                               ack.snapshot))
        except ProtocolError as exc:
            # Refused (it names something the control plane did not send, a revision it does
            # not know...): sending it again cannot help, and would hold the sync up forever.
            # The next full ack, at the next start, reports the replica again.
            self._sent(ack)
            self._log(logging.ERROR, "the control plane refused the acknowledgement of "
                      "revision %d; dropped: %s", ack.revision, exc)
            return
        self._sent(ack)
        self._log(logging.DEBUG, "acknowledged revision %d%s: %d credentials, %d removed",
                  ack.revision, " (snapshot)" if ack.snapshot else "", len(ack.credentials),
                  len(ack.removed))

    def _sent(self, ack: Ack) -> None:
        if self.pending_ack is ack:
            self.pending_ack = None

    def _call(self, request: Callable[[], T]) -> T:
        """Run one request; with ``interruptible``, give up on it as soon as a stop comes."""
        if self.stop_event.is_set():
            raise _Stopped
        if not self._interruptible:
            return request()
        done = threading.Event()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = request()
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name="moorage-agent-request", daemon=True).start()
        while not done.wait(STOP_CHECK_INTERVAL):
            if self.stop_event.is_set():
                raise _Stopped
        if "error" in box:
            raise box["error"]
        result: T = box["result"]
        return result

    def _log(self, level: int, message: str, *args: object) -> None:
        self.logger.log(level, message, *args, extra={"region": self.region or "-"})
