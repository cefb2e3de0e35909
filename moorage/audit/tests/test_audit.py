"""The audit trail: written with the change, refuses secrets, scoped per account."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import Client

from moorage.accounts.choices import Role
from moorage.audit.choices import AuditAction
from moorage.audit.models import AuditEvent
from moorage.audit.services import audit_record
from moorage.testing import factories
from moorage.testing.factories import Member

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("key", ["password", "secret", "api_token", "auth", "private_key"])
def test_details_that_look_like_secrets_are_refused(owner: Member, key: str) -> None:
    with pytest.raises(ValueError, match="looks like a secret"), transaction.atomic():
        audit_record(account=owner.account, actor=owner.user,
                     action=AuditAction.ACCOUNT_RENAMED, target=owner.account,
                     details={key: "x"})


def test_audit_must_run_inside_the_change_transaction(owner: Member) -> None:
    # pytest-django wraps each test in a transaction, so leave it to see the guard work.
    connection = transaction.get_connection()
    saved = connection.in_atomic_block
    connection.in_atomic_block = False
    try:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            audit_record(account=owner.account, actor=owner.user,
                         action=AuditAction.ACCOUNT_RENAMED, target=owner.account)
    finally:
        connection.in_atomic_block = saved


def test_a_failed_change_leaves_no_audit_row(owner: Member) -> None:
    from moorage.accounts import services
    from moorage.errors import ApplicationError

    before = AuditEvent.objects.count()
    with pytest.raises(ApplicationError):
        services.invitation_create(actor=owner.user, membership=owner.membership,
                                   email="bad", role="member")
    assert AuditEvent.objects.count() == before


def test_api_lists_only_the_token_accounts_events(
    client: Client, owner: Member, other_owner: Member
) -> None:
    factories.add_member(owner, Role.MEMBER, "in-acme@example.com")
    events = client.get("/api/v1/audit/events", headers=owner.auth).json()
    assert {e["action"] for e in events} >= {"account.created", "member.added"}
    assert all("in-acme" not in str(e) for e in
               client.get("/api/v1/audit/events", headers=other_owner.auth).json())


def test_api_pages_through_events(client: Client, owner: Member) -> None:
    for n in range(5):
        factories.add_member(owner, Role.VIEWER, f"v{n}@example.com")
    first = client.get("/api/v1/audit/events?limit=3", headers=owner.auth).json()
    assert len(first) == 3
    rest = client.get(f"/api/v1/audit/events?limit=50&before={first[-1]['id']}",
                      headers=owner.auth).json()
    assert [e["id"] for e in rest] == sorted((e["id"] for e in rest), reverse=True)
    assert not {e["id"] for e in first} & {e["id"] for e in rest}
    bad = client.get("/api/v1/audit/events?limit=1000", headers=owner.auth)
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
