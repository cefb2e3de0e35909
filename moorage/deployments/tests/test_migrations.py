"""The migration to one running deployment per app and region settles an existing history:
the twelve "Running" rows of one container become one running and eleven replaced."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from moorage.apps.services import app_create
from moorage.deployments.models import Deployment
from moorage.testing.regions import deploy_one, make_region, member_in

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("deployments", "0003_deployment_default_host")]
AFTER = [("deployments", "0004_superseded_replaced_reported_at")]


def test_the_migration_keeps_the_newest_running_and_ends_the_rest() -> None:
    region = make_region("eu-1")
    owner = member_in(region, "Acme")
    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     image="ghcr.io/acme/api:1.4", runtime_pull="none")
    ids = [deploy_one(owner, app.pk).pk for _ in range(5)]
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps.get_model("deployments", "Deployment")
        # As today's main leaves it: #1-#3 ran (all still "running"), #4 never started,
        # #5 is pulling.
        old.objects.filter(pk__in=ids[:3]).update(status="running")
        old.objects.filter(pk=ids[4]).update(status="pulling")
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(AFTER)
    statuses = dict(Deployment.objects.filter(app=app).values_list("number", "status"))
    assert statuses == {1: "replaced", 2: "replaced", 3: "running", 4: "superseded",
                        5: "pulling"}
