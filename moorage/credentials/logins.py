"""How a stored credential becomes the login that is sent, on the control plane.

:mod:`moorage.registry.logins` is the seam that knows the login sources; this module adds what
the control plane keeps: the current token of an exchanged credential (sealed, in
:class:`~moorage.credentials.models.LoginToken`), when it is refreshed next, and the words
pages, the API and the CLI use for it. Regions, exports and tests of a credential all take
their login from :func:`current_login`: a static credential's password, or an exchanged
credential's current token, never its long-lived key (I10).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from moorage.credentials import vault
from moorage.credentials.models import Credential, LoginToken
from moorage.errors import ApplicationError, ValidationFailed
from moorage.registry.auth import RegistryLogin
from moorage.registry.logins import (
    EXCHANGE_TIMEOUT,
    IssuedLogin,
    LoginParams,
    LoginSource,
    LoginSourceError,
    login_source,
)

#: A token is refreshed at the latest at half its remaining life, within these bounds.
MIN_REFRESH_INTERVAL = timedelta(minutes=1)
MAX_REFRESH_INTERVAL = timedelta(hours=6)
#: After a failed refresh the next try waits this long, doubling, at most this long.
MAX_RETRY_INTERVAL = timedelta(minutes=30)


class LoginExchangeFailed(ApplicationError):
    """The token service could not be asked or answered nothing usable (not the user's input).

    ``code`` is the classified reason: ``exchange_unreachable``, ``exchange_rate_limited``,
    ``exchange_failed``, ``exchange_answer_invalid``, ``token_expiry_invalid``.
    """

    status = 502
    default_code = "exchange_failed"


def source_of(credential: Credential) -> LoginSource:
    """The credential's login source."""
    return login_source(credential.login_source)


def params_of(credential: Credential, *, secret: str | None = None) -> LoginParams:
    """What the credential's source needs to log in; the stored secret unless ``secret``."""
    return LoginParams(
        secret=vault.open_secret(credential) if secret is None else secret,
        username=credential.username, server=credential.server,
        aws_access_key_id=credential.aws_access_key_id, aws_region=credential.aws_region,
    )


def as_application_error(exc: LoginSourceError) -> ApplicationError:
    """A source's error as the API shows it: the user's input (422), or the service (502)."""
    if exc.field is not None or exc.code in ("exchange_rejected", "exchange_forbidden"):
        detail = {"fields": {exc.field: exc.message}} if exc.field else {}
        return ValidationFailed(exc.message, code=exc.code, detail=detail)
    return LoginExchangeFailed(exc.message, code=exc.code)


def ask(source: LoginSource, params: LoginParams) -> IssuedLogin:
    """Ask the source for a login now, within the installation's probe policy (a Google key's
    ``token_uri`` is an address the tenant chose). A network call for exchanged sources:
    call it outside any transaction. Raises :class:`LoginSourceError`."""
    return source.login(params, timeout=EXCHANGE_TIMEOUT, policy=settings.REGISTRY_PROBE_POLICY)


def exchange(source: LoginSource, params: LoginParams) -> IssuedLogin:
    """:func:`ask`, raising an :class:`ApplicationError` in the user's words."""
    try:
        return ask(source, params)
    except LoginSourceError as exc:
        raise as_application_error(exc) from None


def token_of(credential: Credential) -> LoginToken | None:
    """The credential's current token row, if it is exchanged (uses a prefetched row)."""
    try:
        return credential.login_token
    except LoginToken.DoesNotExist:
        return None


def current_login(credential: Credential) -> RegistryLogin:
    """The login to send for ``credential`` now: the password, or the current token."""
    token = token_of(credential) if source_of(credential).exchanged else None
    if token is None:
        return RegistryLogin(credential.username, vault.open_secret(credential))
    return RegistryLogin(credential.username, vault.open_login_token(token))


def expires_at(credential: Credential) -> datetime | None:
    """When the login regions receive stops working, as its issuer said (None: never)."""
    token = token_of(credential) if source_of(credential).exchanged else None
    return None if token is None else token.expires_at


def next_refresh(now: datetime, expires: datetime) -> datetime:
    """When a token that expires at ``expires``, got at ``now``, is refreshed: at half its
    remaining life, clamped to [1 minute, 6 hours]; an expiry already past means the shortest
    interval (the token is used until the registry refuses it)."""
    half = (expires - now) / 2
    return now + min(max(half, MIN_REFRESH_INTERVAL), MAX_REFRESH_INTERVAL)


def next_retry(now: datetime, expires: datetime, failures: int) -> datetime:
    """When a failed refresh is tried again: 1, 2, 4… minutes up to 30, but never later
    than the next regular refresh of the token still in use."""
    backoff = MIN_REFRESH_INTERVAL * (2 ** min(max(failures - 1, 0), 10))
    return min(now + min(backoff, MAX_RETRY_INTERVAL), next_refresh(now, expires))


def _hm(moment: datetime, now: datetime) -> str:
    local = timezone.localtime(moment)
    if local.date() == timezone.localtime(now).date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def failure_summary(token: LoginToken, now: datetime) -> str:
    """"refresh failing since 10:42: <reason>", or "" while refreshes succeed."""
    if token.failing_since is None:
        return ""
    return f"refresh failing since {_hm(token.failing_since, now)}: {token.failure_message}"


def token_summary(credential: Credential, token: LoginToken, now: datetime) -> str:
    """"ECR token, refreshed 10:42, valid until 22:42" (and how refreshing goes)."""
    state = token_state(credential.login_source, token, now)
    failing = state["refresh_error"]
    return f"{state['summary']}; {failing}" if failing else str(state["summary"])


def login_problem(credential: Credential, now: datetime | None = None) -> str | None:
    """Why deploys cannot use ``credential`` now, or None: its token expired and refreshing
    it fails."""
    token = token_of(credential) if source_of(credential).exchanged else None
    now = now or timezone.now()
    if token is None or not token.expired(now):
        return None
    why = failure_summary(token, now) or "it has not been refreshed yet"
    return (f"The {source_of(credential).label} of credential {credential.name!r} expired at "
            f"{_hm(token.expires_at, now)} and {why}.")


def token_state(login_source_name: str, token: LoginToken, now: datetime) -> dict[str, object]:
    """An exchanged credential's token as the API, pages and CLI show it (never the token).

    ``status`` is ``ok``, ``failing`` (the previous token is still in use) or ``expired``
    (failing, and the token is known to have expired: deploys are refused).
    """
    label = login_source(login_source_name).label
    failing = failure_summary(token, now)
    status = "ok"
    if token.failing_since is not None:
        status = "expired" if token.expired(now) else "failing"
    text = f"{label}, refreshed {_hm(token.refreshed_at, now)}, "
    until = token.valid_until()
    if until is None:
        text += (f"expiry unknown (its issuer said {token.expires_at:%Y-%m-%d %H:%M}), "
                 "refreshed every minute")
    elif until <= now:
        text += f"expired at {_hm(until, now)}"
    else:
        text += f"valid until {_hm(until, now)}"
    return {
        "status": status,
        "summary": text,
        "refreshed_at": token.refreshed_at,
        "expires_at": token.expires_at,
        "valid_until": until,
        "refresh_due_at": token.refresh_due_at,
        "refresh_failing_since": token.failing_since,
        "refresh_error_code": token.failure_code or None,
        "refresh_error": failing or None,
    }


def token_state_of_row(row: dict[str, object], now: datetime) -> dict[str, object] | None:
    """:func:`token_state` for a listing row (``token_<field>`` columns), None for a
    credential without a token."""
    if row.get("token_refreshed_at") is None:
        return None
    token = LoginToken(**{name: row[f"token_{name}"] for name in (
        "refreshed_at", "expires_at", "refresh_due_at", "failing_since", "failure_code",
        "failure_message")})
    return token_state(str(row["login_source"]), token, now)
