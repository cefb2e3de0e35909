"""Benchmark: refreshing the tokens of 1,000 ECR credentials over 100 accounts.

moto's real server answers ``GetAuthorizationToken`` (``AWS_ENDPOINT_URL``), as in the
tests (``moorage.testing.cloud``). The 1,000 credentials are made through the real service
(one exchange each), then all made due, and one run of the refresh worker's service
(:func:`moorage.credentials.refresh.login_tokens_refresh_due`) is timed, with its SQL queries
counted: they must grow with the number of batches, not with the number of credentials
(no query per row beyond the exchange). A second run with 100 credentials due gives the
per-batch query count to compare.

    .venv/bin/python bench/refresh.py            # SQLite (a temp file)
    DATABASE_URL=postgres://postgres@127.0.0.1/moorage_bench .venv/bin/python bench/refresh.py

Run by hand; record the figures in bench/README.md. Exits 1 when a run misses its target:
all refreshed with exactly one exchange each, inside even the shortest refresh interval
(1 minute), at most 20 queries per batch whatever the number of credentials.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

os.environ.setdefault("MOORAGE_DATA_DIR", tempfile.mkdtemp(prefix="moorage-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moorage.config.settings_test")
for _name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(_name, None)
os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

import django  # noqa: E402 - the environment above must be set first

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import (  # noqa: E402
    CaptureQueriesContext,
    get_runner,
    setup_test_environment,
)
from django.utils import timezone  # noqa: E402

ACCOUNTS = 100
PER_ACCOUNT = 10


class MotoProcess:
    """moto's server in its own process (AWS is not in ours: no GIL shared with it), counting
    the ECR token requests through moto's own request log."""

    def __init__(self) -> None:
        from moorage.testing.ports import free_port

        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)
        server = os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        from moorage.testing.ports import wait_for_port

        wait_for_port(self.port, timeout=30)
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def token_requests(self) -> int:
        with open(self.log.name, "rb") as log:
            return log.read().count(b'"POST / HTTP/1.1" 200')

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        os.unlink(self.log.name)


def main() -> int:
    moto = MotoProcess()
    os.environ["AWS_ENDPOINT_URL"] = moto.url
    setup_test_environment()
    runner = get_runner(settings)(verbosity=0, interactive=False)
    old_config = runner.setup_databases()
    try:
        return run(moto)
    finally:
        runner.teardown_databases(old_config)
        moto.stop()


def _due(ids: list[int] | None = None) -> None:
    """Make these tokens (all: None) due now, and every other one due tomorrow."""
    from moorage.credentials.models import LoginToken

    now = timezone.now()
    LoginToken.objects.update(refresh_due_at=now + timedelta(days=1))
    tokens = LoginToken.objects.all() if ids is None else LoginToken.objects.filter(
        credential_id__in=ids)
    tokens.update(refresh_due_at=now)


def _timed_run(moto: object, expected: int) -> tuple[float, int, int, object]:
    from moorage.credentials.refresh import login_tokens_refresh_due

    before = moto.token_requests  # type: ignore[attr-defined]
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        report = login_tokens_refresh_due()
        elapsed = time.perf_counter() - started
    exchanges = moto.token_requests - before  # type: ignore[attr-defined]
    print(f"  {report.refreshed} refreshed, {report.failed} failed in {elapsed:.2f}s; "
          f"{exchanges} exchanges; {len(queries)} SQL queries")
    assert report.refreshed == expected, report
    return elapsed, exchanges, len(queries), report


def run(moto: object) -> int:
    from moorage.credentials import services
    from moorage.credentials.logins import MAX_REFRESH_INTERVAL, MIN_REFRESH_INTERVAL
    from moorage.credentials.models import Credential
    from moorage.credentials.refresh import BATCH
    from moorage.testing import factories

    started = time.perf_counter()
    for account in range(ACCOUNTS):
        owner = factories.make_account(f"Bench {account:03d}")
        for n in range(PER_ACCOUNT):
            services.credential_create(
                actor=owner.user, membership=owner.membership, type="container_registry",
                name=f"ecr-{n}", login_source="aws_ecr",
                aws_access_key_id=f"AKIABENCH{account:03d}{n:02d}EXAMPLE"[:20],
                aws_region=("eu-west-1", "us-east-1", "ap-southeast-2")[account % 3],
                secret=f"bench-secret-{account}-{n}")
    total = ACCOUNTS * PER_ACCOUNT
    print(f"created {total} ECR credentials over {ACCOUNTS} accounts in "
          f"{time.perf_counter() - started:.1f}s (one exchange each)")

    print(f"{connection.vendor}: refresh of 100 due credentials")
    _due(list(Credential.objects.order_by("id").values_list("id", flat=True)[:100]))
    _, _, small_queries, _ = _timed_run(moto, 100)
    print(f"{connection.vendor}: refresh of {total} due credentials")
    _due()
    elapsed, exchanges, queries, _ = _timed_run(moto, total)
    shortest = MIN_REFRESH_INTERVAL.total_seconds()
    ecr = MAX_REFRESH_INTERVAL.total_seconds()  # a 12-hour ECR token: every 6 hours
    batches, small_batches = -(-total // BATCH), -(-100 // BATCH)
    print(f"{elapsed:.1f}s: {100 * elapsed / ecr:.2f}% of a real ECR token's refresh interval "
          f"(6 h), {100 * elapsed / shortest:.0f}% of the shortest one (1 min, moto's stale "
          f"expiry); {queries / batches:.1f} queries per batch of {BATCH} "
          f"(100 credentials: {small_queries / small_batches:.1f})")
    ok = exchanges == total and elapsed < shortest and queries <= 20 * batches
    print("OK" if ok else "MISSED THE TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
