"""Does the registry accept this login, and may it pull this image? Answered in plain words.

:func:`check_login` is "Test connection": a log-in only. :func:`check_access` proves pull
access to one image the way a pull would meet it, without downloading anything: a token for
``repository:PATH:pull`` (a token alone proves nothing: issuers hand out empty grants), then
``HEAD /v2/PATH/manifests/REF``. Both return an :class:`AccessResult` rather than raising for
anything the registry or the network may do, so callers map one status to one user message.
Each check is one flow of its client (:meth:`RegistryClient.flow`): the policy's deadline
covers the whole check, challenge and token request included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import Iterator

import httpx

from moorage.registry.auth import (
    DEFAULT_TIMEOUT,
    Authorization,
    LoginRejected,
    NetworkBlocked,
    RealmRefused,
    RegistryClient,
    RegistryError,
    RegistryLogin,
    RegistryRateLimited,
    RegistryTimeout,
    RegistryUnreachable,
    ResponseTooLarge,
    pull_scope,
    scrub,
)
from moorage.registry.hosts import normalize_registry_host
from moorage.registry.policy import ProbePolicy
from moorage.registry.reference import ImageReference, parse_reference

__all__ = ["AccessResult", "AccessStatus", "check_access", "check_login"]


class AccessStatus(enum.StrEnum):
    """What a registry said about a login or an image, in the words people need."""

    OK = "ok"
    #: The login was refused (or a login is needed and none was given).
    UNAUTHORIZED = "unauthorized"
    #: The login is valid but gives no pull access to this repository.
    FORBIDDEN = "forbidden"
    #: Repository or tag/digest not found, or hidden from this credential.
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    #: Connection refused, DNS, TLS.
    UNREACHABLE = "unreachable"
    #: The registry answered something the protocol does not allow.
    PROTOCOL_ERROR = "protocol_error"
    #: The registry named a token service the credential may not go to (plain HTTP to
    #: another host): nothing was sent there (I4).
    REALM_REFUSED = "realm_refused"
    #: The registry or its token service is in a network probes never reach (by default
    #: link-local, where cloud metadata services live): nothing was sent there.
    NETWORK_BLOCKED = "network_blocked"
    #: The whole check did not finish within the policy's deadline.
    TIMEOUT = "timeout"
    #: An answer was larger than the policy's cap; reading stopped there.
    RESPONSE_TOO_LARGE = "response_too_large"


@dataclasses.dataclass(frozen=True)
class AccessResult:
    """The outcome of a check: a status, a message naming the registry (never a secret).

    ``http_status`` is the registry's HTTP status when one decided the outcome;
    ``retry_after`` the ``Retry-After`` header of a 429; ``digest`` the manifest digest the
    registry named for an image it allows (``Docker-Content-Digest``), so a caller can pin
    exactly what was proven.
    """

    status: AccessStatus
    message: str
    http_status: int | None = None
    host: str | None = None
    retry_after: str | None = None
    digest: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the registry accepted (the login, or the pull)."""
        return self.status is AccessStatus.OK


@contextlib.contextmanager
def _using(
    client: RegistryClient | None, timeout: float, policy: ProbePolicy | None
) -> Iterator[RegistryClient]:
    """The caller's client (left open), or a fresh one closed afterwards; one flow either way."""
    if client is not None:
        with client.flow():
            yield client
        return
    with RegistryClient(timeout=timeout, policy=policy) as fresh, fresh.flow():
        yield fresh


def _from_error(error: RegistryError, login: RegistryLogin | None) -> AccessResult:
    """Map a registry conversation error to a result (messages are scrubbed once more)."""
    message = scrub(error.message, login)
    status: AccessStatus
    if isinstance(error, LoginRejected):
        status = AccessStatus.UNAUTHORIZED
    elif isinstance(error, RegistryRateLimited):
        return AccessResult(
            AccessStatus.RATE_LIMITED,
            message,
            error.http_status,
            host=error.host,
            retry_after=error.retry_after,
        )
    elif isinstance(error, RealmRefused):
        status = AccessStatus.REALM_REFUSED
    elif isinstance(error, NetworkBlocked):
        status = AccessStatus.NETWORK_BLOCKED
    elif isinstance(error, RegistryTimeout):
        status = AccessStatus.TIMEOUT
    elif isinstance(error, RegistryUnreachable):
        status = AccessStatus.UNREACHABLE
    elif isinstance(error, ResponseTooLarge):
        status = AccessStatus.RESPONSE_TOO_LARGE
    else:
        status = AccessStatus.PROTOCOL_ERROR
    return AccessResult(status, message, error.http_status, host=error.host)


def _who(login: RegistryLogin | None) -> str:
    return f"user {login.username!r}" if login else "anonymous requests"


def check_login(
    login: RegistryLogin | None,
    host: str,
    *,
    client: RegistryClient | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    policy: ProbePolicy | None = None,
) -> AccessResult:
    """Log in to ``host`` and say whether the registry accepted ``login``.

    Basic registries: ``GET /v2/`` with the credentials. Bearer registries: a token request
    (401 = rejected), then ``GET /v2/`` with the token (the registry accepts the issuer).
    A registry answering ``/v2/`` anonymously has nothing to check: ok, and the message says
    so. ``host`` is any spelling :func:`normalize_registry_host` accepts (raises
    ``InvalidRegistryHost`` otherwise). ``timeout`` (per operation) and ``policy`` apply
    only to a client made here.
    """
    canonical = normalize_registry_host(host)
    with _using(client, timeout, policy) as registry:
        try:
            challenge = registry.challenge(canonical)
            if challenge is None:
                return AccessResult(
                    AccessStatus.OK,
                    f"The registry {canonical} needs no login: it answers without "
                    "credentials, so there is nothing to check.",
                    200,
                    host=canonical,
                )
            authorization = registry.authorize(canonical, login, ())
            response = registry.get_base(canonical, authorization)
        except RegistryError as error:
            return _from_error(error, login)
        return _login_outcome(response, canonical, login, authorization)


def _login_outcome(
    response: httpx.Response,
    host: str,
    login: RegistryLogin | None,
    authorization: Authorization,
) -> AccessResult:
    status = response.status_code
    if status == 200:
        if login is None:
            message = (
                f"The registry {host} gives anonymous access tokens; whether an image can be "
                "pulled without a login depends on its repository."
            )
        else:
            message = f"The registry {host} accepted the credential for user {login.username!r}."
        return AccessResult(AccessStatus.OK, message, 200, host=host)
    if status in (401, 403):
        if authorization.scheme == "bearer":
            message = (
                f"The registry {host} refused the token its token service issued for {_who(login)}."
            )
        else:
            message = f"The registry {host} rejected the credential for {_who(login)}."
        return AccessResult(AccessStatus.UNAUTHORIZED, message, status, host=host)
    if status == 429:
        retry = response.headers.get("retry-after")
        return AccessResult(
            AccessStatus.RATE_LIMITED,
            _rate_message(host, retry),
            429,
            host=host,
            retry_after=retry,
        )
    return AccessResult(
        AccessStatus.PROTOCOL_ERROR,
        f"The registry {host} answered HTTP {status} to a login check.",
        status,
        host=host,
    )


def _rate_message(host: str, retry_after: str | None) -> str:
    message = f"The registry {host} is rate limiting requests (HTTP 429)"
    return message + (f"; retry after {retry_after} seconds." if retry_after else "; try later.")


def check_access(
    login: RegistryLogin | None,
    reference: ImageReference | str,
    *,
    client: RegistryClient | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    policy: ProbePolicy | None = None,
) -> AccessResult:
    """Prove (or disprove) that ``login`` may pull ``reference``, without pulling it.

    200 → ok; 401/403 → ``forbidden`` (the login works, this repository is not granted), or
    ``unauthorized`` when the login itself is rejected or none was given; 404 →
    ``not_found``; 429 → ``rate_limited``; network failures → ``unreachable``; anything else
    → ``protocol_error``; the policy's refusals are ``realm_refused``, ``network_blocked``,
    ``timeout`` and ``response_too_large``. The login is sent to the reference's registry: the
    caller must have checked that it was made for that host
    (:func:`moorage.registry.hosts_match`). ``timeout`` (per operation) and ``policy`` apply
    only to a client made here.
    """
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    host = ref.domain
    image = f"{ref.path}{'@' if ref.digest else ':'}{ref.pull_ref}"
    with _using(client, timeout, policy) as registry:
        try:
            authorization = registry.authorize(host, login, [pull_scope(ref.path)])
            response = registry.head_manifest(host, ref.path, ref.pull_ref, authorization)
            status = response.status_code
            if status in (401, 403) and authorization.scheme == "basic" and login is not None:
                # Basic sends the password with every request: tell "wrong password" apart
                # from "no access to this repository" by asking /v2/ with the same header.
                base = registry.get_base(host, authorization)
                if base.status_code in (401, 403):
                    return AccessResult(
                        AccessStatus.UNAUTHORIZED,
                        f"The registry {host} rejected the credential for {_who(login)}.",
                        base.status_code,
                        host=host,
                    )
        except RegistryError as error:
            return _from_error(error, login)
    return _access_outcome(status, response, host, ref, image, login)


def _access_outcome(
    status: int,
    response: httpx.Response,
    host: str,
    ref: ImageReference,
    image: str,
    login: RegistryLogin | None,
) -> AccessResult:
    if status == 200:
        digest = response.headers.get("docker-content-digest") or None
        return AccessResult(
            AccessStatus.OK,
            f"The registry {host} allows {_who(login)} to pull {image}.",
            200,
            host=host,
            digest=digest if digest and digest.startswith("sha256:") else None,
        )
    if status in (401, 403):
        if login is None:
            return AccessResult(
                AccessStatus.UNAUTHORIZED,
                f"The registry {host} requires a login to pull {image}, and no credential "
                "was given.",
                status,
                host=host,
            )
        return AccessResult(
            AccessStatus.FORBIDDEN,
            f"The registry {host} accepted the credential for user {login.username!r}, but it "
            f"gives no pull access to the repository {ref.path!r}.",
            status,
            host=host,
        )
    if status == 404:
        what = "digest" if ref.digest else "tag"
        return AccessResult(
            AccessStatus.NOT_FOUND,
            f"The registry {host} has no image {image} for {_who(login)}: repository or "
            f"{what} not found, or hidden from this credential.",
            404,
            host=host,
        )
    if status == 429:
        retry = response.headers.get("retry-after")
        return AccessResult(
            AccessStatus.RATE_LIMITED, _rate_message(host, retry), 429, host=host, retry_after=retry
        )
    return AccessResult(
        AccessStatus.PROTOCOL_ERROR,
        f"The registry {host} answered HTTP {status} when asked for {image}.",
        status,
        host=host,
    )
