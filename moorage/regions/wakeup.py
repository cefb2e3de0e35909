"""Waking the agents' waiting long polls: one listener per process, no thread per poll.

A waiting ``GET /agent/changes`` (:func:`moorage.regions.sync.changes`) registers a
:class:`Waiter` — its region, the accounts enabled there, the revision it holds — and awaits
an asyncio event. It holds no thread and no database connection while it waits. The
:class:`Hub` of the process sets the events of the waiters a committed change concerns (the
same rule as the answer's: a change of the waiter's region, or of an account enabled there):

* a change committed **in this process** (both databases): ``record_change`` publishes it
  with ``transaction.on_commit``, at once;
* a change committed **in another process** on PostgreSQL: the ``NOTIFY`` queued by
  ``record_change`` (payload ``"<revision> <account id> <region id or ->"``) reaches the one
  ``LISTEN`` connection of this process, an asyncio psycopg connection in the hub's thread.
  After a lost connection the hub reconnects with backoff and wakes every waiter, since a
  change may have slipped by meanwhile;
* a change committed **in another process** on SQLite (the CLI, another worker): SQLite has
  no NOTIFY, so while polls wait the hub's thread reads the change log after the last revision
  it saw every :data:`SQLITE_POLL_INTERVAL` seconds (one small query per process, not one per
  poll).

No change is lost between a poll's look at the database and its wait: a waiter registers
before it looks, and the listener is listening before the look (a waiter that finds it not
listening yet, or reconnecting, looks again every :data:`FALLBACK_INTERVAL` seconds).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from django.db import connection

from moorage.config import metrics

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "moorage_sync"
#: SQLite: how often the hub looks for changes committed by other processes, while polls wait.
SQLITE_POLL_INTERVAL = 0.2
#: How often a waiter looks at the database itself while the listener is not listening.
FALLBACK_INTERVAL = 1.0
#: PostgreSQL: the listener's reconnection delays (doubling), and how long it waits for a
#: notification before it checks whether it should stop.
RECONNECT_INITIAL = 0.5
RECONNECT_MAX = 10.0
LISTEN_TICK = 1.0


def notify_payload(revision: int, account_id: int, region_id: int | None) -> str:
    """What a change's ``NOTIFY`` carries: enough to tell which waiters it concerns."""
    return f"{revision} {account_id} {'-' if region_id is None else region_id}"


def parse_payload(payload: str) -> tuple[int, int, int | None] | None:
    """``(revision, account id, region id)`` of a payload, or ``None`` if it is not one."""
    parts = payload.split()
    try:
        if len(parts) == 3:
            return int(parts[0]), int(parts[1]), None if parts[2] == "-" else int(parts[2])
    except ValueError:
        pass
    return None


class Waiter:
    """One waiting poll: woken (its event set) by a change that concerns its region."""

    def __init__(self, hub: Hub, region_id: int) -> None:
        self.hub = hub
        self.region_id = region_id
        # Until the poll's first look says which accounts the region has, every change of an
        # account may concern it.
        self.accounts: frozenset[int] | None = None
        self.loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def concerns(self, account_id: int, region_id: int | None) -> bool:
        if region_id is not None:
            return region_id == self.region_id
        return self.accounts is None or account_id in self.accounts

    def scope(self, accounts: Iterable[int]) -> None:
        """The accounts enabled in the region as of the poll's last look."""
        self.accounts = frozenset(accounts)

    def _set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Until woken or ``timeout`` passes; then look again (the event is cleared)."""
        if not self.hub.listening:
            timeout = min(timeout, FALLBACK_INTERVAL)
        try:
            await asyncio.wait_for(self._event.wait(), max(timeout, 0))
        except TimeoutError:
            pass
        self._event.clear()


class Hub:
    """The waiters of this process, and the one listener that wakes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[Waiter] = set()
        self._waiting = threading.Event()  # set while any poll waits (the SQLite poller's cue)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # the server stops: polls answer now
        # Set to end the running listener (server stop, a test's end); one per listener thread.
        self._quit = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._pid = 0
        self.listening = False

    # -- the polls' side ---------------------------------------------------------------------

    @asynccontextmanager
    async def waiter(self, region_id: int) -> AsyncIterator[Waiter]:
        """Register a waiter for the duration of one poll (before its first look)."""
        waiter = Waiter(self, region_id)
        self._ensure_listener()
        with self._lock:
            self._waiters.add(waiter)
            self._waiting.set()
        metrics.POLLS_WAITING.inc()
        try:
            yield waiter
        finally:
            metrics.POLLS_WAITING.dec()
            with self._lock:
                self._waiters.discard(waiter)
                if not self._waiters:
                    self._waiting.clear()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def waiting(self) -> int:
        """How many polls wait in this process now."""
        with self._lock:
            return len(self._waiters)

    # -- the wake-ups ------------------------------------------------------------------------

    def publish(self, revision: int, account_id: int, region_id: int | None) -> None:
        """A change committed: wake the waiters it concerns (from any thread)."""
        with self._lock:
            woken = [w for w in self._waiters if w.concerns(account_id, region_id)]
        _wake(woken)

    def wake_all(self) -> None:
        """Every waiter looks again (the listener was away, or the server stops)."""
        with self._lock:
            waiters = list(self._waiters)
        _wake(waiters)

    def stop(self) -> None:
        """The server is stopping: every waiting poll answers now, no new one waits."""
        self._stop.set()
        self.wake_all()
        self.close_listener(timeout=0)  # (called from a signal handler: do not wait on it)

    def close_listener(self, timeout: float = 5.0) -> None:
        """End the listener and close its connection (a later poll starts a new one)."""
        with self._lock:
            thread, loop, task = self._thread, self._loop, self._task
            self._quit.set()
            self._quit = threading.Event()  # the next listener's
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # its loop already ended
                pass
        if thread is not None and thread is not threading.current_thread() and timeout > 0:
            thread.join(timeout)
        with self._lock:
            if self._thread is thread:
                self._thread = self._loop = self._task = None
            self.listening = False

    # -- the listener ------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        import os

        with self._lock:
            if self._stop.is_set():  # stopping: no new listener (the polls answer at once)
                return
            # A forked worker inherits the object, not the thread: start its own.
            if self._thread is not None and self._pid == os.getpid() \
                    and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._quit = threading.Event()
            self.listening = False
            target = self._listen_postgres if connection.vendor == "postgresql" \
                else self._poll_sqlite
            self._thread = threading.Thread(target=target, args=(self._quit,),
                                            name="moorage-sync-listener", daemon=True)
            self._thread.start()

    def _listen_postgres(self, ended: threading.Event) -> None:
        params = _listener_params()
        asyncio.run(self._listen_until_closed(params, ended))

    async def _listen_until_closed(self, params: dict[str, Any], ended: threading.Event) -> None:
        task = asyncio.create_task(self._listen(params, ended))
        with self._lock:
            if ended.is_set():
                task.cancel()
            else:
                self._loop, self._task = asyncio.get_running_loop(), task
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            self.listening = False

    async def _listen(self, params: dict[str, Any], ended: threading.Event) -> None:
        import psycopg

        delay = RECONNECT_INITIAL
        while not ended.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(**params,
                                                                 autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening = True
                    delay = RECONNECT_INITIAL
                    self.wake_all()  # anything committed before LISTEN: look again
                    while not ended.is_set():
                        async for notify in conn.notifies(timeout=LISTEN_TICK):
                            self._dispatch(notify.payload)
            except (psycopg.Error, OSError) as exc:
                if self.listening:
                    logger.warning("the sync listener lost its connection (%s); reconnecting",
                                   type(exc).__name__)
                else:
                    logger.warning("the sync listener cannot connect (%s); retrying in %.1f s",
                                   type(exc).__name__, delay)
                self.listening = False
                self.wake_all()
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX, delay * 2)

    def _dispatch(self, payload: str) -> None:
        parsed = parse_payload(payload)
        if parsed is None:
            self.wake_all()
        else:
            self.publish(*parsed)

    def _poll_sqlite(self, ended: threading.Event) -> None:
        from django.db import close_old_connections

        from moorage.regions.models import Change, SyncCounter

        seen: int | None = None
        while not ended.is_set():
            self.listening = True
            if not self._waiting.wait(LISTEN_TICK):
                continue
            try:
                counter = SyncCounter.objects.filter(pk=1).values_list(
                    "revision", "compacted_through").first() or (0, 0)
                revision, compacted = counter
                if seen is not None and revision > seen:
                    rows = list(Change.objects.filter(revision__gt=seen, revision__lte=revision)
                                .values_list("revision", "account_id", "region_id"))
                    if seen < compacted:  # some rows are gone: do not guess whom they concern
                        self.wake_all()
                    for row in rows:
                        self.publish(*row)
                seen = revision
            except Exception:
                logger.warning("the sync poller could not read the change log", exc_info=True)
                self.wake_all()
            finally:
                close_old_connections()
            time.sleep(SQLITE_POLL_INTERVAL)
        self.listening = False


def _wake(waiters: list[Waiter]) -> None:
    """Set the waiters' events, from any thread: one call into each event loop, so that all
    the polls one change concerns resume together (and look at the log in one batch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Waiter]] = {}
    for waiter in waiters:
        by_loop.setdefault(waiter.loop, []).append(waiter)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all, group)
        except RuntimeError:  # that loop is closed: its polls have answered already
            pass


def _set_all(waiters: list[Waiter]) -> None:
    for waiter in waiters:
        waiter._set()


def _listener_params() -> dict[str, Any]:
    """The default database's connection parameters, for a plain psycopg connection."""
    params = dict(connection.get_connection_params())
    for django_only in ("cursor_factory", "context", "pool"):
        params.pop(django_only, None)
    return params


#: The hub of this process.
hub = Hub()
