"""Building users, accounts and tokens for tests through the real services."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from moorage.accounts import services
from moorage.accounts.choices import Role
from moorage.accounts.models import Account, Membership, User

PASSWORD = "correct horse battery staple 42"
_counter = itertools.count(1)


@dataclass
class Member:
    """A user with a role in an account, and a bearer token acting as them there."""

    user: User
    account: Account
    membership: Membership
    token: str

    @property
    def auth(self) -> dict[str, str]:
        """Headers for the Django test client: ``client.get(url, headers=member.auth)``."""
        return {"Authorization": f"Bearer {self.token}"}


def make_user(email: str | None = None, *, password: str = PASSWORD, staff: bool = False) -> User:
    email = email or f"user{next(_counter)}@example.com"
    user, _ = services.user_create(
        actor=None, email=email, password=password, is_platform_staff=staff
    )
    return user


def make_account(name: str | None = None, *, owner: User | None = None) -> Member:
    """A fresh account with its owner (a new user unless given) and the owner's token."""
    owner = owner or make_user()
    account = services.account_create(actor=owner, name=name or f"Account {next(_counter)}")
    return _member(owner, account)


def add_member(owner: Member, role: Role, email: str | None = None) -> Member:
    """Add a new user with ``role`` to ``owner``'s account: invited, then accepted."""
    user = make_user(email)
    invitation = services.invitation_create(
        actor=owner.user, membership=owner.membership, email=user.email, role=role
    )
    services.invitation_accept(actor=user, invitation_id=invitation.id)
    return _member(user, owner.account)


def _member(user: User, account: Account) -> Member:
    membership = Membership.objects.select_related("user", "account").get(
        user=user, account=account
    )
    _, token = services.api_token_create(
        actor=user, membership=membership, name=f"test token {next(_counter)}"
    )
    return Member(user=user, account=account, membership=membership, token=token)
