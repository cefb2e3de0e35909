"""Schemathesis against the real app: every operation of the OpenAPI document is called with
generated valid and invalid input, in process (WSGI), on the test database.

Bounded and deterministic (``derandomize``, a fixed number of examples per operation, no
example database), so it runs the same cases on every machine in seconds. It must find no
server error and no answer outside the document: status codes, content types and bodies,
error answers included.

"Test connection" is left out: it talks to whatever registry host the generated input names,
and nothing here may send traffic off this machine; the registry library's own tests cover it
against real registries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from pytest_django.fixtures import Settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from moorage.testing.factories import Member

#: Generated examples per operation (schemathesis adds its boundary-value cases on top).
EXAMPLES = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


from moorage.config.wsgi import application  # noqa: E402 - Django is set up by now

# The source upload's body is raw gzip bytes: sent as schemathesis sends any binary body.
schemathesis.serializer.alias("application/gzip", "application/octet-stream")

# Loaded eagerly through the app itself (schemathesis' lazy fixture loader does not run on
# pytest 9). Reading the document touches no database.
schema = schemathesis.openapi.from_wsgi(
    "/api/v1/openapi.json",
    application,
    # Valid and invalid input from a fixed seed; the coverage phase's exhaustive boundary
    # cases (about 1,500 more) are left to a manual run: this one stays in the suite's budget.
    config=schemathesis.Config.from_dict({"seed": 20261201,
                                          "phases": {"coverage": {"enabled": False}}}),
).exclude(path="/api/v1/credentials/{credential_id}/test")


@pytest.fixture
def in_process(settings: Settings, tmp_path: Path) -> Iterator[None]:
    """Calls straight into the WSGI app, on the test transaction's connection."""
    settings.DATA_DIR = tmp_path / "data"  # source uploads land here
    # As Django's test client does: the request signals must not close the test
    # transaction's connection between calls.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.django_db
def test_the_api_keeps_to_its_document(
    case: schemathesis.Case, owner: Member, in_process: None
) -> None:
    case.call_and_validate(headers=owner.auth, checks=CHECKS)
