"""Reads of apps, scoped to an account."""

from __future__ import annotations

from django.db.models import QuerySet

from moorage.accounts.models import Account
from moorage.apps.models import App
from moorage.errors import NotFound


def apps_of(*, account: Account) -> QuerySet[App]:
    return (App.objects.filter(account=account)
            .select_related("runtime_pull_credential", "git_credential", "build_pull_credential",
                            "source_archive")
            .prefetch_related("env", "regions", "running_services__region").order_by("name"))


def app_get(*, account: Account, app_id: int) -> App:
    app = apps_of(account=account).filter(id=app_id).first()
    if app is None:
        raise NotFound("No such app in this account.", code="app_not_found")
    return app


def app_by_name(*, account: Account, name: str) -> App:
    app = apps_of(account=account).filter(name=name.strip().lower()).first()
    if app is None:
        raise NotFound(f"No app named {name!r} in this account.", code="app_not_found")
    return app
