"""Template context shared by every page: the current account and the user's others."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from moorage.accounts import selectors
from moorage.accounts.choices import Role
from moorage.accounts.permissions import MATRIX, Action


def current_account(request: HttpRequest) -> dict[str, Any]:
    membership = getattr(request, "membership", None)
    if not request.user.is_authenticated:
        return {"current_membership": None, "memberships": [], "allowed": frozenset()}
    # Shown in the top bar, so an invited person finds the way in from any page.
    waiting = selectors.invitations_for_user(user=request.user).count()
    if membership is None:
        return {"current_membership": None, "memberships": [], "allowed": frozenset(),
                "invitations_waiting": waiting}
    return {
        "invitations_waiting": waiting,
        "current_membership": membership,
        "current_account": membership.account,
        "memberships": list(selectors.memberships_of_user(user=request.user)),
        # Templates ask ``"manage_members" in allowed`` to show or hide a button; the server
        # checks again on submit.
        "allowed": frozenset(str(a) for a in MATRIX[Role(membership.role)]),
        "Action": Action,
    }
