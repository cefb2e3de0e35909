"""Pytest fixtures for Django-side tests: accounts, members with roles, API clients."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from moorage.accounts.choices import Role
from moorage.testing import factories
from moorage.testing.factories import Member


@pytest.fixture
def owner(db: None) -> Member:
    """The owner of a fresh account, with an API token."""
    return factories.make_account("Acme")


@pytest.fixture
def other_owner(db: None) -> Member:
    """The owner of a second, unrelated account (for tenancy tests)."""
    return factories.make_account("Globex")


@pytest.fixture
def member_with_role(owner: Member) -> Callable[[Role], Member]:
    """A factory: a new user with the given role in ``owner``'s account."""
    return lambda role: factories.add_member(owner, role)
