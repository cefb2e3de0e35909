"""Writing the change log that region agents follow.

Call :func:`record_change` inside the transaction of the change itself. It takes the next
revision from :class:`SyncCounter` under a row lock held until commit, so a reader that sees
revision ``R`` knows every change up to ``R`` is committed (no gaps to skip). On PostgreSQL
it also queues a NOTIFY, delivered at commit, that wakes the agents' long polls.
"""

from __future__ import annotations

import threading

from django.db import connection, transaction

from moorage.regions.choices import ChangeKind
from moorage.regions.models import Change, SyncCounter

NOTIFY_CHANNEL = "moorage_sync"

# Long polls waiting in this process: woken at once when a change commits here, and told to
# answer when the server is stopping (a sleeping poll would otherwise hold the exit up).
_local = threading.Condition()
_stopping = threading.Event()


def _wake_local_waiters() -> None:
    with _local:
        _local.notify_all()


def wait_for_local_change(timeout: float) -> None:
    """Block until a change commits in this process, ``timeout`` passes, or shutdown."""
    with _local:
        if not _stopping.is_set():
            _local.wait(timeout)


def stop_waiting() -> None:
    """The server is stopping: every waiting long poll answers now."""
    _stopping.set()
    _wake_local_waiters()


def stopping() -> bool:
    return _stopping.is_set()


def counter_for_update() -> SyncCounter:
    counter = SyncCounter.objects.select_for_update().filter(pk=1).first()
    if counter is None:  # created by a migration; recreated if someone emptied the table
        counter, _ = SyncCounter.objects.get_or_create(pk=1)
    return counter


def record_change(
    *, account_id: int, kind: ChangeKind, object_id: int, region_id: int | None = None
) -> int:
    """Append a change and return its revision (inside the caller's transaction)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("record_change must run inside the transaction of the change")
    counter = counter_for_update()
    counter.revision += 1
    counter.save(update_fields=["revision"])
    Change.objects.create(revision=counter.revision, account_id=account_id, kind=kind,
                          object_id=object_id, region_id=region_id)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, str(counter.revision)])
    transaction.on_commit(_wake_local_waiters)
    return counter.revision


def record_changes(changes: list[tuple[int, ChangeKind, int]]) -> list[int]:
    """Append several changes ``(account_id, kind, object_id)`` at once: one counter lock,
    one insert and one wake-up for a batch (the token refresher's writes). Inside the
    caller's transaction; returns their revisions in order."""
    if not changes:
        return []
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("record_changes must run inside the transaction of the changes")
    counter = counter_for_update()
    first = counter.revision + 1
    counter.revision += len(changes)
    counter.save(update_fields=["revision"])
    Change.objects.bulk_create([
        Change(revision=first + i, account_id=account_id, kind=kind, object_id=object_id)
        for i, (account_id, kind, object_id) in enumerate(changes)
    ])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, str(counter.revision)])
    transaction.on_commit(_wake_local_waiters)
    return list(range(first, counter.revision + 1))


def current_revision() -> tuple[int, int]:
    """``(revision, compacted_through)`` as committed now."""
    counter = SyncCounter.objects.filter(pk=1).first()
    return (counter.revision, counter.compacted_through) if counter else (0, 0)


@transaction.atomic
def compact(*, keep: int) -> int:
    """Drop all but the newest ``keep`` changes; agents further behind take a snapshot."""
    counter = counter_for_update()
    horizon = counter.revision - keep
    if horizon <= counter.compacted_through:
        return 0
    deleted, _ = Change.objects.filter(revision__lte=horizon).delete()
    counter.compacted_through = horizon
    counter.save(update_fields=["compacted_through"])
    return deleted
