"""Background tasks of the credentials domain, run by the task worker (``moorage worker``).

Thin: they call one service and own their scheduling. Never run in a web request.
"""

from __future__ import annotations

from django.tasks import task


@task()
def refresh_login_tokens() -> dict[str, object]:
    """Refresh every exchanged token that is due, then queue the next run for the next one.

    Runs once at a time per token however many workers there are (the service claims rows);
    a crash leaves the next run to ``moorage worker``'s start, which queues one.
    """
    from moorage.credentials.refresh import (
        login_tokens_refresh_due,
        refresh_runs_prune,
        refresh_schedule,
    )

    report = login_tokens_refresh_due()
    refresh_schedule(at=report.next_due)
    refresh_runs_prune()
    return {"refreshed": report.refreshed, "failed": report.failed, "skipped": report.skipped,
            "failures": report.failures}
