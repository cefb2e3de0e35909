"""The generic API checks every object endpoint must pass, from one place.

Each domain lists its object endpoints as :class:`ObjectEndpoint` and runs
:func:`check_endpoint` for the three generic cases: anonymous → 401 ``not_authenticated``,
another account's object → 404, a role without the needed action → 403.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pytest
from django.test import Client

from moorage.accounts.choices import Role
from moorage.accounts.permissions import MATRIX, Action
from moorage.testing import factories
from moorage.testing.factories import Member

API = "/api/v1"


class Case(StrEnum):
    ANONYMOUS = "anonymous"
    OTHER_ACCOUNT = "other_account"
    ROLE_TOO_LOW = "role_too_low"


@dataclass(frozen=True)
class ObjectEndpoint:
    """An API endpoint addressing one object of an account.

    ``make`` creates the object in the given member's account and returns its id;
    ``action`` is what the caller's role must allow.
    """

    method: str
    path: str  # relative to /api/v1, with "{id}"
    make: Callable[[Member], int]
    action: Action
    body: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def generic_cases(endpoints: list[ObjectEndpoint]) -> list[Any]:
    """``pytest.param(endpoint, case)`` for every endpoint and applicable generic case.

    Every role may view, so "role too low" exists only for actions some role lacks.
    """
    return [
        pytest.param(endpoint, case, id=f"{endpoint} {case}")
        for endpoint in endpoints
        for case in Case
        if not (case is Case.ROLE_TOO_LOW and weakest_role_without(endpoint.action) is None)
    ]


def assert_api_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the one error shape, with the given status and code; return the body."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "detail"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


def call(client: Client, endpoint: ObjectEndpoint, object_id: int, member: Member | None) -> Any:
    path = API + endpoint.path.format(id=object_id)
    headers = member.auth if member is not None else {}
    body = json.dumps(endpoint.body) if endpoint.method in ("POST", "PUT", "PATCH") else None
    return client.generic(
        endpoint.method, path, data=body or "", content_type="application/json", headers=headers
    )


def weakest_role_without(action: Action) -> Role | None:
    """The most powerful role that may not do ``action`` (``None`` when every role may)."""
    for role in (Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER):
        if action not in MATRIX[role]:
            return role
    return None


def check_endpoint(client: Client, endpoint: ObjectEndpoint, case: Case) -> None:
    """Run one generic check against ``endpoint`` in fresh accounts."""
    owner = factories.make_account()
    object_id = endpoint.make(owner)
    if case is Case.ANONYMOUS:
        assert_api_error(call(client, endpoint, object_id, None), 401, "not_authenticated")
    elif case is Case.OTHER_ACCOUNT:
        stranger = factories.make_account()
        response = call(client, endpoint, object_id, stranger)
        assert response.status_code == 404, (response.status_code, response.content[:300])
        assert response.json()["code"].endswith("not_found")
    else:
        role = weakest_role_without(endpoint.action)
        assert role is not None, f"every role may {endpoint.action}; nothing to check"
        limited = factories.add_member(owner, role)
        assert_api_error(call(client, endpoint, object_id, limited), 403, "permission_denied")
