"""Bearer-token authentication for the REST API."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from moorage.accounts.models import Membership
from moorage.accounts.services import api_token_authenticate


def client_address(request: HttpRequest) -> str:
    """The address a request came from, as login rate limits count it.

    ``REMOTE_ADDR`` is the socket's peer, or the address a *trusted* proxy forwarded:
    ``moorage up`` believes ``X-Forwarded-For`` only from MOORAGE_TRUSTED_PROXIES, so a
    client cannot choose its own address by sending the header itself.
    """
    return str(request.META.get("REMOTE_ADDR") or "unknown")


class ApiTokenAuth(HttpBearer):
    """``Authorization: Bearer mrg_…``: the request acts as the token's user in its account.

    A bad token raises :class:`moorage.errors.AuthenticationFailed`, which the API turns into
    a 401 with a precise code; a missing header is a 401 ``not_authenticated``.
    """

    def authenticate(self, request: HttpRequest, token: str) -> Membership:
        membership = api_token_authenticate(token=token)
        request.user = membership.user
        request.membership = membership  # type: ignore[attr-defined]
        request.account = membership.account  # type: ignore[attr-defined]
        return membership
