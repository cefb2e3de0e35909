"""The OCI distribution auth flow over httpx: challenge, Basic, Bearer tokens and their cache.

``GET /v2/`` answers 200 (no auth), or 401 with a ``WWW-Authenticate`` challenge: ``Basic``
(send ``user:password`` on every request) or ``Bearer realm=...,service=...,scope=...`` (ask
the realm for a token for the scopes you need, then send the token). A token is *not* proof
of access: issuers hand out tokens for the intersection of what was asked and what is
granted, possibly nothing. Only the registry's answer to a real request proves access
(:mod:`moorage.registry.access`).

Where a password may go (I4): to the registry host it was made for, and to the token realm
that registry names only over HTTPS, or over plain HTTP when the realm is on the registry's own
host *name* (a loopback registry and its token service: ``127.0.0.1:5000`` naming
``http://127.0.0.1:5001/token``). Any other realm is refused (:class:`RealmRefused`) before a
byte is sent to it. Every conversation is also bounded by a :class:`ProbePolicy`: blocked
networks, one overall deadline, a cap on the size of each answer.

Secrets: the password lives only in :class:`RegistryLogin` (whose repr hides it) and in the
``Authorization`` headers httpx sends. Exceptions carry a person-readable message built from
the host, user name and status, never from request data; :func:`scrub` is a second fence.
httpx clients are made with ``trust_env=False`` so that no proxy or netrc from the process
environment redirects tenant traffic or adds credentials of the machine.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx

from moorage.registry.hosts import api_base_url, host_name, normalize_registry_host
from moorage.registry.policy import AddressBlocked, GuardedTransport, ProbePolicy

__all__ = [
    "DEFAULT_TIMEOUT",
    "MANIFEST_ACCEPT",
    "Authorization",
    "Challenge",
    "LoginRejected",
    "NetworkBlocked",
    "RealmRefused",
    "RegistryClient",
    "RegistryError",
    "RegistryLogin",
    "RegistryProtocolError",
    "RegistryRateLimited",
    "RegistryTimeout",
    "RegistryUnreachable",
    "ResponseTooLarge",
    "Token",
    "TokenCache",
    "parse_www_authenticate",
    "pull_scope",
    "scrub",
]

DEFAULT_TIMEOUT = 10.0
#: Token lifetime when the issuer does not say, and the least the spec lets it say.
MIN_TOKEN_LIFETIME = 60
#: Tokens are dropped this many seconds before they expire, for the request still in flight.
TOKEN_EXPIRY_MARGIN = 5.0

#: Every manifest type a pull may meet; without the index types, a multi-arch image answers
#: 404 on some registries, which would read as "not found".
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)

_USER_AGENT = "moorage-registry/0.1"


# --------------------------------------------------------------------------------------------
# Login
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegistryLogin:
    """A user name and password (or token) for one registry.

    The password is hidden from ``repr``/``str`` so a login in a log line, a traceback's
    locals or an assertion message does not leak it.
    """

    username: str
    password: str = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        """Refuse what cannot be sent as Basic ``user:password``."""
        if not self.username:
            raise ValueError("a registry login needs a user name")
        if ":" in self.username:
            raise ValueError("a registry user name cannot contain ':'")

    def __repr__(self) -> str:
        """Show the user name only."""
        return f"RegistryLogin(username={self.username!r}, password='***')"

    __str__ = __repr__

    def basic_auth(self) -> tuple[str, str]:
        """``(username, password)`` for httpx's Basic auth."""
        return (self.username, self.password)


def scrub(text: str, login: RegistryLogin | None) -> str:
    """Remove the login's password (and its Basic encoding) from ``text``, just in case."""
    if login is None or not login.password:
        return text
    basic = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
    return text.replace(login.password, "***").replace(basic, "***")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class RegistryError(Exception):
    """A registry conversation failed; ``message`` is plain words and holds no secret."""

    def __init__(self, message: str, *, host: str, http_status: int | None = None) -> None:
        """Keep the message, the registry host and the HTTP status if there was one."""
        super().__init__(message)
        self.message = message
        self.host = host
        self.http_status = http_status


class RegistryUnreachable(RegistryError):
    """Connection refused, name not resolved, TLS failure."""


class RegistryTimeout(RegistryUnreachable):
    """The conversation's deadline passed (or one operation's timeout) before an answer."""


class RegistryProtocolError(RegistryError):
    """The registry or its token service answered something the protocol does not allow."""


class ResponseTooLarge(RegistryProtocolError):
    """An answer was larger than the policy's cap; reading stopped there."""


class RealmRefused(RegistryError):
    """The registry named a token service the credential may not be sent to (I4)."""


class NetworkBlocked(RegistryError):
    """The registry or its token service is in a network probes never reach."""


class LoginRejected(RegistryError):
    """The registry (or its token service) refused the user name and password."""


class RegistryRateLimited(RegistryError):
    """HTTP 429; ``retry_after`` holds the ``Retry-After`` header when sent."""

    def __init__(
        self,
        message: str,
        *,
        host: str,
        http_status: int | None = 429,
        retry_after: str | None = None,
    ) -> None:
        """Keep ``Retry-After`` too."""
        super().__init__(message, host=host, http_status=http_status)
        self.retry_after = retry_after


# --------------------------------------------------------------------------------------------
# WWW-Authenticate
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a lower-cased scheme and its parameters.

    Parameter names are lower-cased (they are case-insensitive); values are unquoted.
    """

    scheme: str
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter (the token URL for Bearer)."""
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        """The ``service`` parameter of a Bearer challenge."""
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        """The ``scope`` parameter of a Bearer challenge, if any."""
        return self.params.get("scope")


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def parse_www_authenticate(values: str | Iterable[str]) -> list[Challenge]:
    """Parse one or several ``WWW-Authenticate`` header values into challenges (RFC 7235).

    Handles quoted values holding commas, spaces, ``=`` and ``\\"`` escapes
    (``scope="repository:a:pull,push"``), several challenges in one header
    (``Bearer realm="x", Basic realm="y"``), token68 values and stray whitespace. Malformed
    tails are dropped rather than guessed at.
    """
    headers = [values] if isinstance(values, str) else list(values)
    challenges: list[Challenge] = []
    for header in headers:
        challenges.extend(_parse_one_header(header))
    return challenges


def _parse_one_header(text: str) -> list[Challenge]:
    """Scan ``scheme [name=value|name="quoted"]*`` groups; a bare token starts a challenge."""
    challenges: list[Challenge] = []
    pos, end = 0, len(text)
    scheme: str | None = None
    params: dict[str, str] = {}

    def skip(chars: str) -> None:
        nonlocal pos
        while pos < end and text[pos] in chars:
            pos += 1

    def read_token() -> str:
        nonlocal pos
        start = pos
        while pos < end and text[pos] in _TOKEN_CHARS:
            pos += 1
        return text[start:pos]

    def read_quoted() -> str | None:
        nonlocal pos
        pos += 1  # the opening quote
        out: list[str] = []
        while pos < end:
            ch = text[pos]
            if ch == "\\" and pos + 1 < end:
                out.append(text[pos + 1])
                pos += 2
            elif ch == '"':
                pos += 1
                return "".join(out)
            else:
                out.append(ch)
                pos += 1
        return None  # unterminated: drop the value

    while pos < end:
        skip(" \t,")
        token = read_token()
        if not token:
            break  # garbage: stop rather than guess
        skip(" \t")
        if pos < end and text[pos] == "=":
            if scheme is None:
                break  # a parameter before any scheme
            pos += 1
            skip(" \t")
            value = read_quoted() if pos < end and text[pos] == '"' else read_token()
            if value is None:
                break
            params.setdefault(token.lower(), value)
            skip(" \t")
            if pos < end and text[pos] != ",":
                break
        else:
            if scheme is not None:
                challenges.append(Challenge(scheme=scheme.lower(), params=params))
            scheme, params = token, {}
    if scheme is not None:
        challenges.append(Challenge(scheme=scheme.lower(), params=params))
    return challenges


def pull_scope(path: str) -> str:
    """The token scope that allows pulling ``path``: ``repository:PATH:pull``."""
    return f"repository:{path}:pull"


# --------------------------------------------------------------------------------------------
# Tokens and their cache
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Token:
    """A Bearer token and when (on the cache's clock) it stops being used."""

    value: str = dataclasses.field(repr=False)
    expires_at: float
    expires_in: int
    issued_at: dt.datetime | None = None

    def __repr__(self) -> str:
        """Hide the token itself: it is a credential too."""
        return f"Token(expires_in={self.expires_in}, expires_at={self.expires_at})"


_CacheKey = tuple[str, str | None, str, tuple[str, ...]]


class TokenCache:
    """Bearer tokens per (registry host, user, secret fingerprint, scopes), until they expire.

    The key includes a fingerprint of the password (an HMAC under a per-cache random key, so
    it is useless outside this object): two tenants can share a user name on one registry
    (``AWS`` on ECR, ``_json_key`` on GCR, ``oauth2accesstoken``), and a tenant with a wrong
    password must never be handed the token another tenant earned. One cache per client by
    default; share one explicitly when it is meant to be shared. ``clock`` is injectable so
    expiry can be tested; it defaults to :func:`time.monotonic`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """An empty cache reading time from ``clock``."""
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._tokens: dict[_CacheKey, Token] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        """Count only: the keys name users."""
        return f"<TokenCache {len(self._tokens)} tokens>"

    def key(self, host: str, login: RegistryLogin | None, scopes: Iterable[str]) -> _CacheKey:
        """The cache key for a token request."""
        if login is None:
            return (host, None, "", tuple(sorted(set(scopes))))
        fingerprint = hmac.new(
            self._key, f"{login.username}\0{login.password}".encode(), hashlib.sha256
        ).hexdigest()
        return (host, login.username, fingerprint, tuple(sorted(set(scopes))))

    def get(self, key: _CacheKey) -> Token | None:
        """The cached token for ``key`` if it has not expired (expired ones are dropped)."""
        with self._lock:
            token = self._tokens.get(key)
            if token is None:
                return None
            if self.clock() >= token.expires_at:
                del self._tokens[key]
                return None
            return token

    def put(self, key: _CacheKey, token: Token) -> None:
        """Remember ``token`` for ``key``."""
        with self._lock:
            self._tokens[key] = token

    def clear(self) -> None:
        """Forget every token (e.g. after a credential rotation)."""
        with self._lock:
            self._tokens.clear()

    def __len__(self) -> int:
        """How many tokens are held (expired ones included until looked up)."""
        with self._lock:
            return len(self._tokens)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Authorization:
    """How to authenticate requests to one registry for one login and set of scopes.

    ``scheme`` is ``none`` (the registry answered ``/v2/`` anonymously), ``basic`` or
    ``bearer``. ``headers`` holds the ``Authorization`` header (hidden from repr).
    """

    scheme: str
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)


class RegistryClient:
    """Talks to registries for one tenant operation (or one shared, explicit cache).

    Holds an httpx client (``trust_env=False``, no redirects followed: a redirect would move
    the ``Authorization`` header's use to a place we did not choose), a :class:`TokenCache`
    and the challenges seen per host (not secret). Use as a context manager or call
    :meth:`close`.

    ``policy`` bounds every conversation (:class:`ProbePolicy`): its blocked networks are
    enforced where connections are made (:class:`GuardedTransport`), its deadline covers one
    :meth:`flow` (a single request outside a flow is a flow of its own), and no answer is read
    past its size cap. ``transport`` replaces the guarded transport (tests' fakes only).
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token_cache: TokenCache | None = None,
        clock: Callable[[], float] | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
        policy: ProbePolicy | None = None,
    ) -> None:
        """Make the httpx client; ``clock`` builds the default cache (ignored with a cache)."""
        self.tokens = (
            token_cache if token_cache is not None else TokenCache(clock or time.monotonic)
        )
        self.policy = policy if policy is not None else ProbePolicy()
        self._challenges: dict[str, Challenge | None] = {}
        self._flow = threading.local()
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            trust_env=False,
            follow_redirects=False,
            transport=transport
            if transport is not None
            else GuardedTransport(self.policy, self._remaining, verify=verify),
            headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
        )

    def __repr__(self) -> str:
        """No secrets here."""
        return f"<RegistryClient {self.tokens!r}>"

    def __enter__(self) -> RegistryClient:
        """Use as a context manager."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the HTTP connections."""
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    # ----- deadline

    @contextlib.contextmanager
    def flow(self, deadline: float | None = None) -> Iterator[None]:
        """Give everything inside one overall deadline (default: the policy's).

        Flows nest: an inner flow never extends the deadline of the one around it. The
        deadline is per thread, so a client shared between threads bounds each caller's own
        conversation.
        """
        seconds = self.policy.deadline if deadline is None else deadline
        outer: float | None = getattr(self._flow, "ends_at", None)
        ends_at = time.monotonic() + seconds
        self._flow.ends_at = ends_at if outer is None else min(outer, ends_at)
        try:
            yield
        finally:
            self._flow.ends_at = outer

    def _remaining(self) -> float | None:
        """Seconds left in the current thread's flow; None outside any flow."""
        ends_at: float | None = getattr(self._flow, "ends_at", None)
        return None if ends_at is None else ends_at - time.monotonic()

    # ----- low level

    def request(
        self,
        method: str,
        url: str,
        *,
        host: str,
        headers: Mapping[str, str] | None = None,
        params: Any = None,
        auth: tuple[str, str] | None = None,
        login: RegistryLogin | None = None,
    ) -> httpx.Response:
        """Send one request within the policy; map failures to :class:`RegistryError` types.

        The answer is streamed and read only up to the policy's size cap (small JSON answers:
        this library never downloads blobs); the returned response holds the whole body.
        Raises :class:`RegistryTimeout`, :class:`NetworkBlocked`, :class:`ResponseTooLarge`,
        :class:`RegistryUnreachable`.
        """
        with self.flow():
            return self._request(
                method, url, host=host, headers=headers, params=params, auth=auth, login=login
            )

    def _request(
        self,
        method: str,
        url: str,
        *,
        host: str,
        headers: Mapping[str, str] | None,
        params: Any,
        auth: tuple[str, str] | None,
        login: RegistryLogin | None,
    ) -> httpx.Response:
        target = httpx.URL(url)
        self._refuse_blocked_literal(target, host)
        try:
            with self._http.stream(
                method, url, headers=headers, params=params, auth=auth
            ) as streamed:
                body = self._read_capped(streamed, host)
        except AddressBlocked as exc:
            raise NetworkBlocked(_blocked_message(host, target, exc), host=host) from None
        except httpx.TimeoutException:
            raise RegistryTimeout(
                f"The registry {host} did not answer within {self.policy.deadline:g} seconds "
                "(or one step of the conversation took too long).",
                host=host,
            ) from None
        except httpx.ConnectError as exc:
            raise RegistryUnreachable(
                f"The registry {host} could not be reached: {_connect_reason(exc, login)}.",
                host=host,
            ) from None
        except httpx.TransportError as exc:
            raise RegistryUnreachable(
                f"The connection to the registry {host} failed: {scrub(_short(exc), login)}.",
                host=host,
            ) from None
        kept = [
            (name, value)
            for name, value in streamed.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            streamed.status_code, headers=kept, content=body, request=streamed.request
        )

    def _refuse_blocked_literal(self, url: httpx.URL, host: str) -> None:
        """An address written in the URL is checked before anything else happens.

        (Names are checked where they are resolved, in :class:`GuardedTransport`.)
        """
        try:
            address = ipaddress.ip_address(url.host)
        except ValueError:
            return
        network = self.policy.blocking(address)
        if network is not None:
            blocked = AddressBlocked(url.host, address, network)
            raise NetworkBlocked(_blocked_message(host, url, blocked), host=host)

    def _read_capped(self, response: httpx.Response, host: str) -> bytes:
        """The body, read only up to the cap (and decoded within it when compressed)."""
        cap = self.policy.max_response_bytes
        too_large = ResponseTooLarge(
            f"The registry {host} (or its token service) sent an answer larger than "
            f"{cap} bytes; it was cut off there.",
            host=host,
            http_status=response.status_code,
        )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise too_large
        raw = self._raw_body(response, cap, too_large)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise RegistryProtocolError(
                f"The registry {host} answered with a {encoding!r}-compressed body although "
                "none was asked for.",
                host=host,
                http_status=response.status_code,
            )
        # A small compressed answer can unpack to gigabytes: decode within the cap too.
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 32 if "gzip" in encoding else zlib.MAX_WBITS)
        try:
            decoded = decoder.decompress(raw, cap + 1)
        except zlib.error:
            raise RegistryProtocolError(
                f"The registry {host} sent a body that does not decompress.",
                host=host,
                http_status=response.status_code,
            ) from None
        if len(decoded) > cap or decoder.unconsumed_tail:
            raise too_large
        return decoded

    @staticmethod
    def _raw_body(response: httpx.Response, cap: int, too_large: ResponseTooLarge) -> bytes:
        try:
            raw = response.content  # already in memory: a fake transport's answer
        except httpx.ResponseNotRead:
            pass
        else:
            if len(raw) > cap:
                raise too_large
            return raw
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > cap:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    # ----- challenge

    def challenge(self, host: str, *, refresh: bool = False) -> Challenge | None:
        """The registry's auth challenge from ``GET /v2/``; None if it needs no auth.

        Remembered per host for the life of the client (it holds nothing secret).
        """
        host = normalize_registry_host(host)
        if not refresh and host in self._challenges:
            return self._challenges[host]
        response = self.request("GET", f"{api_base_url(host)}/v2/", host=host)
        result = self._challenge_from(response, host)
        self._challenges[host] = result
        return result

    def _challenge_from(self, response: httpx.Response, host: str) -> Challenge | None:
        if response.status_code == 200:
            return None
        if response.status_code == 429:
            raise _rate_limited(response, host)
        if response.status_code != 401:
            raise RegistryProtocolError(
                f"The registry {host} answered HTTP {response.status_code} to /v2/ instead of "
                "200 or 401; is it an OCI registry?",
                host=host,
                http_status=response.status_code,
            )
        challenges = parse_www_authenticate(response.headers.get_list("www-authenticate"))
        for wanted in ("bearer", "basic"):
            for challenge in challenges:
                if challenge.scheme == wanted:
                    if wanted == "bearer" and not challenge.realm:
                        raise RegistryProtocolError(
                            f"The registry {host} asked for a token but named no token "
                            "service (no realm).",
                            host=host,
                            http_status=401,
                        )
                    return challenge
        raise RegistryProtocolError(
            f"The registry {host} asked for authentication this client does not speak "
            f"({', '.join(c.scheme for c in challenges) or 'no WWW-Authenticate header'}).",
            host=host,
            http_status=401,
        )

    # ----- tokens

    def fetch_token(
        self,
        host: str,
        challenge: Challenge,
        login: RegistryLogin | None,
        scopes: Iterable[str] = (),
    ) -> Token:
        """A Bearer token for ``scopes`` from the challenge's realm, from the cache if fresh.

        ``GET realm?service=S&scope=...`` (one ``scope`` parameter per scope), with Basic
        ``user:password`` when a login is given, anonymous otherwise. Raises
        :class:`LoginRejected` on 401/403, :class:`RegistryRateLimited`,
        :class:`RegistryProtocolError` on anything else unusable.
        """
        host = normalize_registry_host(host)
        scope_list = list(dict.fromkeys(scopes))
        key = self.tokens.key(host, login, scope_list)
        cached = self.tokens.get(key)
        if cached is not None:
            return cached
        realm = challenge.realm
        if not realm:
            raise RegistryProtocolError(
                f"The registry {host} named no token service.", host=host, http_status=401
            )
        realm_url = _checked_realm(realm, host, login)
        params: list[tuple[str, str]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        for scope in scope_list:
            params.append(("scope", scope))
        if login is not None:
            params.append(("account", login.username))
        started = self.tokens.clock()
        response = self.request(
            "GET",
            str(realm_url),
            host=host,
            params=params,
            auth=login.basic_auth() if login else None,
            login=login,
        )
        if response.status_code in (401, 403):
            who = f"user {login.username!r}" if login else "anonymous requests"
            raise LoginRejected(
                f"The registry {host} rejected the credential for {who}."
                if login
                else f"The registry {host} requires a login: it refused {who}.",
                host=host,
                http_status=response.status_code,
            )
        if response.status_code == 429:
            raise _rate_limited(response, host)
        if response.status_code != 200:
            raise RegistryProtocolError(
                f"The token service of the registry {host} answered HTTP {response.status_code}.",
                host=host,
                http_status=response.status_code,
            )
        token = _parse_token(response, host, started)
        self.tokens.put(key, token)
        return token

    def authorize(
        self, host: str, login: RegistryLogin | None, scopes: Iterable[str] = ()
    ) -> Authorization:
        """The headers to send to ``host`` for ``login`` and ``scopes`` (Bearer or Basic).

        Basic with no login, and a Bearer token refused with 401, raise
        :class:`LoginRejected`.
        """
        host = normalize_registry_host(host)
        challenge = self.challenge(host)
        if challenge is None:
            return Authorization(scheme="none")
        if challenge.scheme == "basic":
            if login is None:
                raise LoginRejected(
                    f"The registry {host} requires a login and none was given.",
                    host=host,
                    http_status=401,
                )
            raw = f"{login.username}:{login.password}".encode()
            header = "Basic " + base64.b64encode(raw).decode()
            return Authorization(scheme="basic", headers={"Authorization": header})
        token = self.fetch_token(host, challenge, login, scopes)
        return Authorization(scheme="bearer", headers={"Authorization": f"Bearer {token.value}"})

    def get_base(self, host: str, authorization: Authorization) -> httpx.Response:
        """``GET /v2/`` with the given authorization (verifies a login)."""
        host = normalize_registry_host(host)
        return self.request(
            "GET", f"{api_base_url(host)}/v2/", host=host, headers=dict(authorization.headers)
        )

    def head_manifest(
        self, host: str, path: str, ref: str, authorization: Authorization
    ) -> httpx.Response:
        """``HEAD /v2/PATH/manifests/REF`` with the full ``Accept`` list.

        HEAD, not GET: it proves the same access, transfers nothing and Docker Hub does not
        count it against the pull rate limit.
        """
        host = normalize_registry_host(host)
        headers = {"Accept": MANIFEST_ACCEPT, **authorization.headers}
        url = f"{api_base_url(host)}/v2/{path}/manifests/{ref}"
        return self.request("HEAD", url, host=host, headers=headers)


def _checked_realm(realm: str, host: str, login: RegistryLogin | None) -> httpx.URL:
    """The token realm, if the rule of I4 lets us ask it; :class:`RealmRefused` otherwise.

    HTTPS anywhere (Docker Hub's realm is ``auth.docker.io``, not its registry's host).
    Plain HTTP only when the registry itself is spoken to over plain HTTP (a loopback
    registry, :func:`api_base_url`) *and* the realm is on the registry's own host name
    (``127.0.0.1:P`` may name ``http://127.0.0.1:Q``; ``localhost:P`` may not). The rule
    holds for anonymous token requests too: a realm is an address the tenant chose, and
    plain HTTP to other hosts would make "Test connection" a probe of the machine's network.
    """
    try:
        url = httpx.URL(realm)
    except (httpx.InvalidURL, ValueError):
        raise RegistryProtocolError(
            f"The registry {host} named an invalid token service address.", host=host
        ) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise RegistryProtocolError(
            f"The registry {host} named a token service that is not an http(s) address.",
            host=host,
        )
    if url.userinfo:
        raise RealmRefused(
            f"The registry {host} named a token service address holding a user name; refused.",
            host=host,
        )
    if url.scheme == "http":
        realm_name = f"[{url.host}]" if ":" in url.host else url.host
        registry_plain = api_base_url(host).startswith("http://")
        if not registry_plain or _same_host_name(realm_name, host) is False:
            what = "the credential" if login is not None else "a token request"
            raise RealmRefused(
                f"The registry {host} asked to send {what} to {url.host} over plain HTTP; "
                "refused: a token service must use HTTPS, or be on the registry's own host "
                "name.",
                host=host,
            )
    return url


def _same_host_name(realm_name: str, host: str) -> bool:
    """Whether the realm's host name is the registry's (ports aside), in canonical spelling."""
    try:
        return host_name(realm_name) == host_name(host)
    except ValueError:
        return False


def _blocked_message(host: str, url: httpx.URL, blocked: AddressBlocked) -> str:
    return (
        f"{url.host} (asked while talking to the registry {host}) is {blocked.address}, in a "
        f"network Moorage never connects to ({blocked.network}); nothing was sent to it."
    )


def _parse_token(response: httpx.Response, host: str, started: float) -> Token:
    """Read ``token``/``access_token``, ``expires_in`` and ``issued_at`` from a token answer.

    Expiry is counted on our clock from when the request was sent (``issued_at`` is kept but
    not trusted for timing: the issuer's clock may be skewed against ours).
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RegistryProtocolError(
            f"The token service of the registry {host} did not answer with JSON.",
            host=host,
            http_status=response.status_code,
        )
    value = body.get("token") or body.get("access_token")
    if not isinstance(value, str) or not value:
        raise RegistryProtocolError(
            f"The token service of the registry {host} answered without a token.",
            host=host,
            http_status=response.status_code,
        )
    raw_expires = body.get("expires_in", MIN_TOKEN_LIFETIME)
    expires_in = MIN_TOKEN_LIFETIME
    if isinstance(raw_expires, int | float) and not isinstance(raw_expires, bool):
        expires_in = max(MIN_TOKEN_LIFETIME, int(raw_expires))
    issued_at: dt.datetime | None = None
    raw_issued = body.get("issued_at")
    if isinstance(raw_issued, str):
        try:
            issued_at = dt.datetime.fromisoformat(raw_issued.replace("Z", "+00:00"))
        except ValueError:
            issued_at = None
    return Token(
        value=value,
        expires_at=started + expires_in - TOKEN_EXPIRY_MARGIN,
        expires_in=expires_in,
        issued_at=issued_at,
    )


def _rate_limited(response: httpx.Response, host: str) -> RegistryRateLimited:
    retry_after = response.headers.get("retry-after")
    message = f"The registry {host} is rate limiting requests (HTTP 429)"
    message += f"; retry after {retry_after} seconds." if retry_after else "; try again later."
    return RegistryRateLimited(message, host=host, retry_after=retry_after)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


def _connect_reason(exc: httpx.ConnectError, login: RegistryLogin | None) -> str:
    """Name the failure in plain words: refused, unknown name, TLS, else the raw reason."""
    text = _short(exc)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused (is it running, and is the port right?)"
    if (
        "name or service not known" in lowered
        or "nodename nor servname" in lowered
        or ("name resolution" in lowered)
    ):
        return "its host name does not resolve"
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        return f"TLS failed ({scrub(text, login)})"
    return scrub(text, login)
