"""Benchmark: the credentials list API with 1,000 credentials in one account.

Measures p50/p95 latency of ``GET /api/v1/credentials`` through Django's full request stack
(middleware, token auth, serialisation) and the SQL queries per request, which must stay
constant as the number of credentials grows (no query per row).

    .venv/bin/python bench/credentials.py            # SQLite (a temp file)
    DATABASE_URL=postgres://postgres@127.0.0.1/moorage .venv/bin/python bench/credentials.py

Run by hand; record the figures in bench/README.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("MOORAGE_DATA_DIR", tempfile.mkdtemp(prefix="moorage-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moorage.config.settings_test")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import (  # noqa: E402
    CaptureQueriesContext,
    get_runner,
    setup_test_environment,
)

CREDENTIALS = 1000
REQUESTS = 200


def main() -> int:
    setup_test_environment()
    runner = get_runner(settings)(verbosity=0, interactive=False)
    old_config = runner.setup_databases()
    try:
        return run()
    finally:
        runner.teardown_databases(old_config)


def run() -> int:
    from moorage.testing import factories
    from moorage.testing.credentials import make_credential

    owner = factories.make_account("Bench")
    started = time.perf_counter()
    for n in range(CREDENTIALS):
        make_credential(owner, name=f"registry-{n:04d}", server=f"registry{n % 50}.example.com")
    print(f"created {CREDENTIALS} credentials in {time.perf_counter() - started:.1f}s")

    small = factories.make_account("Small")
    for n in range(10):
        make_credential(small, name=f"registry-{n:04d}")

    client = Client()
    queries: dict[int, int] = {}
    for member, size in ((small, 10), (owner, CREDENTIALS)):
        client.get("/api/v1/credentials", headers=member.auth)  # warm up, token use recorded
        with CaptureQueriesContext(connection) as captured:
            response = client.get("/api/v1/credentials", headers=member.auth)
        assert response.status_code == 200, response.content[:200]
        assert len(response.json()) == size
        queries[size] = len(captured.captured_queries)
    timings = []
    for _ in range(REQUESTS):
        begin = time.perf_counter()
        response = client.get("/api/v1/credentials", headers=owner.auth)
        timings.append((time.perf_counter() - begin) * 1000)
        assert len(response.json()) == CREDENTIALS
    timings.sort()
    p50 = statistics.median(timings)
    p95 = timings[int(len(timings) * 0.95) - 1]
    print(f"database: {connection.vendor}")
    print(f"GET /api/v1/credentials with {CREDENTIALS} credentials, {REQUESTS} requests:")
    print(f"  p50 {p50:.1f} ms   p95 {p95:.1f} ms")
    print(f"  SQL queries per request: {queries[10]} with 10 credentials, "
          f"{queries[CREDENTIALS]} with {CREDENTIALS}")
    return 0 if queries[10] == queries[CREDENTIALS] else 1


if __name__ == "__main__":
    sys.exit(main())
