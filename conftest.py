"""Repository-wide pytest set-up: the fixture plugins every test package can use, and
``--database-tests-only``."""

import functools
import inspect

import pytest

pytest_plugins = [
    "moorage.testing.fixtures",
    "moorage.testing.django_fixtures",
    "moorage.testing.sealed",
]

#: Fixtures through which a test reaches the session's database (pytest-django's).
_DATABASE_FIXTURES = frozenset({"db", "transactional_db", "live_server",
                                "django_db_reset_sequences", "django_db_serialized_rollback"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database-tests-only", action="store_true",
        help="Run only the tests whose outcome can depend on the database engine: those that "
             "use the test database, and those that start Moorage processes on a database "
             "like the session's. .ci/run uses it for its PostgreSQL pass, after which the "
             "whole suite runs on SQLite: the rest would only run again unchanged.")


@functools.cache
def _module_starts_processes_on_the_database(path: str) -> bool:
    """A module that starts the control plane as a process (``moorage.testing.processes``)
    or hands ``DATABASE_URL`` to one runs it on the session's database engine."""
    with open(path, encoding="utf-8") as source:
        text = source.read()
    return "moorage.testing.processes" in text or "DATABASE_URL" in text


def _uses_database(item: pytest.Item) -> bool:
    if item.get_closest_marker("django_db") is not None:
        return True
    if _DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    module = getattr(item, "module", None)
    return module is not None and _module_starts_processes_on_the_database(
        inspect.getfile(module))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--database-tests-only"):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (kept if _uses_database(item) else dropped).append(item)
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept
