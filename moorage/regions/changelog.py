"""Writing the change log that region agents follow.

Call :func:`record_change` inside the transaction of the change itself. It takes the next
revision from :class:`SyncCounter` under a row lock held until commit, so a reader that sees
revision ``R`` knows every change up to ``R`` is committed (no gaps to skip). On PostgreSQL
it also queues a NOTIFY, delivered at commit, that wakes the agents' long polls in every
control-plane process; in this process they are woken at commit directly
(:mod:`moorage.regions.wakeup`).
"""

from __future__ import annotations

from functools import partial

from django.db import connection, transaction

from moorage.regions import wakeup
from moorage.regions.choices import ChangeKind
from moorage.regions.models import Change, SyncCounter


def stop_waiting() -> None:
    """The server is stopping: every waiting long poll of this process answers now."""
    wakeup.hub.stop()


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
            cursor.execute("SELECT pg_notify(%s, %s)", [
                wakeup.NOTIFY_CHANNEL,
                wakeup.notify_payload(counter.revision, account_id, region_id)])
    transaction.on_commit(partial(wakeup.hub.publish, counter.revision, account_id, region_id))
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
    # One wake-up per account (its newest revision): it concerns the same waiting polls.
    newest = {account_id: first + i for i, (account_id, _, _) in enumerate(changes)}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for account_id, revision in newest.items():
                cursor.execute("SELECT pg_notify(%s, %s)", [
                    wakeup.NOTIFY_CHANNEL, wakeup.notify_payload(revision, account_id, None)])
    for account_id, revision in newest.items():
        transaction.on_commit(partial(wakeup.hub.publish, revision, account_id, None))
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
