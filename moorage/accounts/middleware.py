"""Which account a logged-in person is working in right now."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.deprecation import MiddlewareMixin

from moorage.accounts import selectors
from moorage.accounts.models import Membership
from moorage.errors import NotFound

SESSION_ACCOUNT_KEY = "moorage_account_id"


class CurrentAccountMiddleware(MiddlewareMixin):
    """Sets ``request.membership`` (and ``request.account``) for pages.

    The chosen account lives in the session; when it is missing or the user left it, the first
    account of the user is used. A user who logged in with a one-time password is sent to the
    password page until they choose their own. (``MiddlewareMixin``: it also runs in an async
    middleware chain, which the agents' long poll needs to hold no thread.)
    """

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        request.membership = None  # type: ignore[attr-defined]
        request.account = None  # type: ignore[attr-defined]
        if request.path.startswith("/api/"):
            return None  # API requests name their account by their token
        user = request.user
        if user.is_authenticated:
            membership = None
            account_id = request.session.get(SESSION_ACCOUNT_KEY)
            if account_id is not None:
                membership = selectors.membership_of(user=user, account_id=account_id)
            if membership is None:
                membership = selectors.memberships_of_user(user=user).first()
                if membership is not None:
                    request.session[SESSION_ACCOUNT_KEY] = membership.account_id
            request.membership = membership  # type: ignore[attr-defined]
            request.account = membership.account if membership else None  # type: ignore[attr-defined]
            if user.must_change_password and request.path not in _PASSWORD_EXEMPT_PATHS():
                return redirect("password_change")
        return None


def _PASSWORD_EXEMPT_PATHS() -> set[str]:
    return {reverse("password_change"), reverse("logout")}


def current_membership(request: HttpRequest) -> Membership:
    """The membership a page acts as; :class:`NotFound` for a user without any account."""
    membership: Membership | None = getattr(request, "membership", None)
    if membership is None:
        raise NotFound(
            "You do not belong to any account yet. Ask an account admin to add you.",
            code="no_account",
        )
    return membership
