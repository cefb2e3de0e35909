"""Login sources: how a registry credential turns into a login (user, password, expiry).

A credential names its *login source*. ``static`` is a user name and password typed once.
The others are exchanged by the platform for a short-lived token from a long-lived cloud key:
``aws_ecr`` (access key id + secret access key + region → ``GetAuthorizationToken``, a
12-hour token for user ``AWS``) and ``gcp_service_account`` (a service-account key JSON →
an OAuth access token for user ``oauth2accesstoken``). This module is the one seam: every
caller asks :func:`login_source` for the source by name and calls :meth:`LoginSource.check`
(offline, before anything is stored) and :meth:`LoginSource.login`; no caller branches on
the source's name.

The long-lived key (the secret access key, the key JSON) is an input of :meth:`login` only:
it is never part of an :class:`IssuedLogin`, a :class:`LoginSourceError` or a ``repr``.
Nothing here imports Django; boto3 and google-auth are imported when an exchange runs, so
the region agent, which imports this package, never loads them.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping

from moorage.registry.auth import RegistryLogin
from moorage.registry.policy import ProbePolicy

__all__ = [
    "EXCHANGE_TIMEOUT",
    "MAX_TOKEN_LIFETIME",
    "IssuedLogin",
    "LoginParams",
    "LoginSource",
    "LoginSourceError",
    "SourceName",
    "login_source",
    "login_sources",
]

#: Seconds one exchange may take in all (connect, answer, retries included).
EXCHANGE_TIMEOUT = 20.0
#: No ECR or Google token lives longer than 12 hours; an issuer promising more than a day is
#: not believed (the token would be refreshed too late, or never).
MAX_TOKEN_LIFETIME = dt.timedelta(hours=24)


class SourceName(enum.StrEnum):
    """The login sources a container-registry credential can have."""

    STATIC = "static"
    AWS_ECR = "aws_ecr"
    GCP_SERVICE_ACCOUNT = "gcp_service_account"


@dataclasses.dataclass(frozen=True)
class LoginParams:
    """What a credential stores for its source: the secret and the source's own fields.

    ``secret`` is the password (static), the AWS secret access key (``aws_ecr``) or the
    service-account key JSON (``gcp_service_account``); it is hidden from ``repr``.
    """

    secret: str = dataclasses.field(repr=False)
    username: str = ""
    server: str = ""
    aws_access_key_id: str = ""
    aws_region: str = ""

    def __repr__(self) -> str:
        """Everything but the secret."""
        return (f"LoginParams(username={self.username!r}, server={self.server!r}, "
                f"aws_access_key_id={self.aws_access_key_id!r}, "
                f"aws_region={self.aws_region!r}, secret='***')")


@dataclasses.dataclass(frozen=True)
class IssuedLogin:
    """A login a source gave: user name, password, and when it stops working.

    ``expires_at`` is what the issuer said (timezone-aware UTC), ``None`` for a password that
    does not expire; it may already be in the past (moto answers 2015): callers do not trust
    it blindly. ``server`` is the registry host the exchange names (ECR's ``proxyEndpoint``),
    if it names one.
    """

    username: str
    password: str = dataclasses.field(repr=False)
    expires_at: dt.datetime | None = None
    server: str | None = None

    def __repr__(self) -> str:
        """Everything but the password."""
        return (f"IssuedLogin(username={self.username!r}, password='***', "
                f"expires_at={self.expires_at!r}, server={self.server!r})")

    @property
    def login(self) -> RegistryLogin:
        """The user name and password as the registry library sends them."""
        return RegistryLogin(self.username, self.password)


class LoginSourceError(Exception):
    """A source's input is wrong, or its exchange failed; ``message`` is plain words.

    ``code`` is stable (``aws_region_unknown``, ``gcp_key_invalid``, ``exchange_rejected``,
    ``exchange_unreachable``, ``exchange_answer_invalid``, ``token_expiry_invalid``...);
    ``field`` names the input at fault (``secret``, ``aws_region``...) when one is, so forms
    put the message on it. Neither ever holds a secret.
    """

    def __init__(self, message: str, *, code: str, field: str | None = None) -> None:
        """Keep the message, the code and the field at fault."""
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field

    @property
    def exchange_failed(self) -> bool:
        """Whether the exchange itself failed (rather than the input being wrong)."""
        return self.code.startswith(("exchange_", "token_"))


class LoginSource(abc.ABC):
    """One way of turning a stored credential into a registry login."""

    #: The name stored with the credential.
    name: SourceName
    #: Words for people: "password", "ECR token", "Google access token".
    label: str
    #: Whether the platform exchanges the secret for short-lived tokens and refreshes them.
    exchanged: bool
    #: The user name a token from this source always has, if it is known before exchanging.
    fixed_username: str | None = None
    #: The source's own fields, besides the secret (each must be given).
    fields: tuple[str, ...] = ()
    #: Whether the server may be left out (the exchange names it).
    server_from_exchange: bool = False

    def check(self, params: LoginParams) -> None:  # noqa: B027 - most sources check nothing
        """Refuse what cannot work, without any network call (:class:`LoginSourceError`)."""

    @abc.abstractmethod
    def login(self, params: LoginParams, *, timeout: float = EXCHANGE_TIMEOUT,
              policy: ProbePolicy | None = None) -> IssuedLogin:
        """The login to send now; exchanged sources call their token service.

        ``policy`` bounds a conversation with an address the *tenant* chose (a Google key's
        ``token_uri``): its blocked networks and answer size cap apply, as for registries.
        Raises :class:`LoginSourceError`, classified, holding no secret.
        """

    def describe(self) -> str:
        """The source in the words of an error or a page."""
        return self.label


class StaticSource(LoginSource):
    """A user name and password (or personal token) given by a person; never expires."""

    name = SourceName.STATIC
    label = "password"
    exchanged = False

    def login(self, params: LoginParams, *, timeout: float = EXCHANGE_TIMEOUT,
              policy: ProbePolicy | None = None) -> IssuedLogin:
        """The stored user name and password, as they are."""
        return IssuedLogin(params.username, params.secret)


def check_expiry(expires_at: dt.datetime | None, *, now: dt.datetime, issuer: str) -> None:
    """Refuse an expiry no token service would give: more than a day ahead.

    An expiry in the past is accepted (the token is used until the registry refuses it, and
    refreshed at the shortest interval).
    """
    if expires_at is not None and expires_at - now > MAX_TOKEN_LIFETIME:
        raise LoginSourceError(
            f"{issuer} said its token is valid until {expires_at:%Y-%m-%d %H:%M} UTC, more "
            "than 24 hours from now; no ECR or Google token lives that long, so it is not "
            "believed. The previous token stays in use.",
            code="token_expiry_invalid",
        )


def _registry() -> Mapping[str, LoginSource]:
    from moorage.registry.ecr import EcrSource
    from moorage.registry.gcp import GcpServiceAccountSource

    sources: list[LoginSource] = [StaticSource(), EcrSource(), GcpServiceAccountSource()]
    return {source.name.value: source for source in sources}


_SOURCES: Mapping[str, LoginSource] | None = None


def login_sources() -> Mapping[str, LoginSource]:
    """Every login source by name."""
    global _SOURCES
    if _SOURCES is None:
        _SOURCES = _registry()
    return _SOURCES


def login_source(name: str) -> LoginSource:
    """The login source called ``name``; ``LoginSourceError`` (``login_source_invalid``)."""
    try:
        return login_sources()[name]
    except KeyError:
        known = ", ".join(login_sources())
        raise LoginSourceError(f"Unknown login source {name!r}; use one of {known}.",
                               code="login_source_invalid", field="login_source") from None
