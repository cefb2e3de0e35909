"""``--database-tests-only`` (the root conftest), which .ci/run's PostgreSQL pass uses: it
keeps every test whose outcome can depend on the database engine, and only those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _collected(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}


def test_the_database_pass_keeps_database_and_process_tests_and_drops_the_rest() -> None:
    every = _collected("moorage/registry/tests/test_hosts.py",
                       "moorage/credentials/tests/test_services.py",
                       "moorage/regions/tests/test_fleet.py",
                       "moorage/agent/tests/test_package.py")
    kept = _collected("--database-tests-only", "moorage/registry/tests/test_hosts.py",
                      "moorage/credentials/tests/test_services.py",
                      "moorage/regions/tests/test_fleet.py",
                      "moorage/agent/tests/test_package.py")
    assert len(every) == 4
    # The test database (django_db) and `moorage up` on the session's database stay; pure
    # parsing and import-structure tests are dropped.
    assert kept == {"moorage/credentials/tests/test_services.py",
                    "moorage/regions/tests/test_fleet.py"}
