"""Who may do what inside an account: the one role matrix used by pages, API and CLI.

The matrix is documented in the README; keep the two in step.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from moorage.accounts.choices import Role
from moorage.errors import PermissionDenied

if TYPE_CHECKING:
    from moorage.accounts.models import Membership, User


class Action(StrEnum):
    """Things a member can do inside an account."""

    VIEW = "view"  # see the account: apps, deployments, credential names, activity
    MANAGE_OWN_TOKENS = "manage_own_tokens"  # create and revoke one's own API tokens
    DEPLOY = "deploy"  # create and change apps, deploy them, test credentials
    MANAGE_CREDENTIALS = "manage_credentials"  # add, rotate, delete credentials
    MANAGE_MEMBERS = "manage_members"  # add members, change non-owner roles, revoke tokens
    CHOOSE_REGIONS = "choose_regions"  # enable and disable the regions the account uses
    MANAGE_OWNERS = "manage_owners"  # make, demote and remove owners; rename the account


_VIEWER = frozenset({Action.VIEW, Action.MANAGE_OWN_TOKENS})
_MEMBER = _VIEWER | {Action.DEPLOY}
_ADMIN = _MEMBER | {Action.MANAGE_CREDENTIALS, Action.MANAGE_MEMBERS, Action.CHOOSE_REGIONS}
_OWNER = _ADMIN | {Action.MANAGE_OWNERS}

MATRIX: dict[Role, frozenset[Action]] = {
    Role.VIEWER: _VIEWER,
    Role.MEMBER: frozenset(_MEMBER),
    Role.ADMIN: frozenset(_ADMIN),
    Role.OWNER: frozenset(_OWNER),
}

_ACTION_PHRASES: dict[Action, str] = {
    Action.VIEW: "view this account",
    Action.MANAGE_OWN_TOKENS: "manage API tokens",
    Action.DEPLOY: "change or deploy apps",
    Action.MANAGE_CREDENTIALS: "manage credentials",
    Action.MANAGE_MEMBERS: "manage members",
    Action.CHOOSE_REGIONS: "choose the account's regions",
    Action.MANAGE_OWNERS: "manage owners",
}


def can(membership: Membership | None, action: Action) -> bool:
    """Whether the member's role allows ``action`` in their account."""
    if membership is None:
        return False
    return action in MATRIX[Role(membership.role)]


def require(membership: Membership | None, action: Action) -> None:
    """Raise :class:`PermissionDenied` unless the member's role allows ``action``."""
    if not can(membership, action):
        role = membership.role if membership is not None else "none"
        raise PermissionDenied(
            f"Your role ({role}) may not {_ACTION_PHRASES[action]} in this account.",
            code="permission_denied",
            detail={"action": str(action), "role": role},
        )


def require_platform_staff(user: User) -> None:
    """Raise :class:`PermissionDenied` unless the user operates this installation."""
    if not user.is_platform_staff:
        raise PermissionDenied(
            "Only platform staff may do this.", code="platform_staff_required"
        )
