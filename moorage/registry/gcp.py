"""The ``gcp_service_account`` login source: a service-account key exchanged for an access
token, the login Google recommends for Artifact Registry (user ``oauth2accesstoken``).

Imported only by :func:`moorage.registry.logins.login_sources` (the agent never loads
google-auth). google-auth signs a JWT with the key and posts it to the key's own
``token_uri`` (Google's, or a local endpoint in tests). The post goes through
:class:`_Transport`: httpx without the process's proxies, no redirects, one deadline for the
whole exchange (google-auth retries), a cap on the answer's size, and HTTPS only, except to a
loopback address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx
from google.auth import exceptions
from google.auth import transport as google_transport

from moorage.registry.hosts import InvalidRegistryHost, is_loopback
from moorage.registry.logins import (
    EXCHANGE_TIMEOUT,
    IssuedLogin,
    LoginParams,
    LoginSource,
    LoginSourceError,
    SourceName,
    check_expiry,
)
from moorage.registry.policy import AddressBlocked, GuardedTransport, ProbePolicy

__all__ = ["ACCESS_TOKEN_USER", "SCOPE", "GcpServiceAccountSource"]

ACCESS_TOKEN_USER = "oauth2accesstoken"  # noqa: S105 - Google's fixed user name
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: A token answer is a few hundred bytes; more than this is not one.
MAX_ANSWER_BYTES = 64 * 1024
_KEY_HELP = ("Paste the whole JSON key file of a service account (IAM → Service accounts → "
             "Keys → Add key → JSON).")
_REJECTED = {"invalid_grant", "invalid_client", "unauthorized_client", "access_denied",
             "invalid_scope"}


class GcpServiceAccountSource(LoginSource):
    """Google Artifact Registry / GCR: a service-account key → an OAuth access token."""

    name = SourceName.GCP_SERVICE_ACCOUNT
    label = "Google access token"
    exchanged = True
    fixed_username = ACCESS_TOKEN_USER

    def check(self, params: LoginParams) -> None:
        """A service-account key JSON with a usable private key and token address."""
        _credentials(_key_info(params.secret))

    def login(self, params: LoginParams, *, timeout: float = EXCHANGE_TIMEOUT,
              policy: ProbePolicy | None = None) -> IssuedLogin:
        """Exchange the key for an access token now (to the key's ``token_uri``, within
        ``policy``'s blocked networks and size cap when given)."""
        info = _key_info(params.secret)
        credentials = _credentials(info)
        token_uri = str(info["token_uri"])
        where = f"The token service at {_origin(token_uri)}"
        transport = _Transport(timeout, policy)
        try:
            credentials.refresh(transport)
        except exceptions.TransportError:
            raise LoginSourceError(f"{where} could not be reached"
                                   f"{': ' + transport.problem if transport.problem else ''}.",
                                   code="exchange_unreachable") from None
        except exceptions.RefreshError as exc:
            raise _refused(exc, where, info, transport.last_status) from None
        except (TypeError, KeyError, ValueError):
            # google-auth indexes into what the endpoint answered: garbage lands here.
            raise LoginSourceError(f"{where} answered something that is not an OAuth token "
                                   "answer.", code="exchange_answer_invalid") from None
        token = credentials.token
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise LoginSourceError(f"{where} answered without a usable access token.",
                                   code="exchange_answer_invalid")
        expiry = credentials.expiry
        if not isinstance(expiry, dt.datetime):
            raise LoginSourceError(f"{where} did not say when its token expires "
                                   "(no expires_in); it cannot be refreshed in time.",
                                   code="token_expiry_invalid")
        expires_at = expiry.replace(tzinfo=dt.UTC) if expiry.tzinfo is None else expiry
        check_expiry(expires_at, now=dt.datetime.now(dt.UTC), issuer=where)
        return IssuedLogin(ACCESS_TOKEN_USER, token, expires_at.astimezone(dt.UTC))


def _key_info(secret: str) -> dict[str, Any]:
    """The key JSON as a dict, checked for what a service-account key must hold."""
    try:
        info = json.loads(secret)
    except ValueError:
        raise LoginSourceError("The key is not valid JSON. " + _KEY_HELP,
                               code="gcp_key_invalid", field="secret") from None
    if not isinstance(info, dict):
        raise LoginSourceError("The key is not a JSON object. " + _KEY_HELP,
                               code="gcp_key_invalid", field="secret")
    kind = info.get("type")
    if kind != "service_account":
        what = f"a key of type {str(kind)[:40]!r}" if kind else "a JSON file without a type"
        raise LoginSourceError(
            f"This is {what}, not a service-account key (\"type\": \"service_account\"); a "
            "user's gcloud login or a workload identity configuration cannot be stored. "
            + _KEY_HELP, code="gcp_key_wrong_type", field="secret")
    missing = [k for k in ("client_email", "private_key", "token_uri")
               if not isinstance(info.get(k), str) or not info.get(k)]
    if missing:
        raise LoginSourceError(f"The key lacks {', '.join(missing)}. " + _KEY_HELP,
                               code="gcp_key_invalid", field="secret")
    _check_token_uri(str(info["token_uri"]))
    return info


def _check_token_uri(uri: str) -> None:
    """HTTPS, or plain HTTP to a loopback address only: the signed assertion is a credential."""
    bad = LoginSourceError("The key's token_uri is not an https:// address (Google's is "
                           "https://oauth2.googleapis.com/token).",
                           code="gcp_token_uri_invalid", field="secret")
    try:
        url = httpx.URL(uri)
    except (httpx.InvalidURL, ValueError):
        raise bad from None
    if url.scheme == "https" and url.host:
        return
    if url.scheme == "http" and url.host:
        host = f"[{url.host}]" if ":" in url.host else url.host
        try:
            if is_loopback(host):
                return
        except InvalidRegistryHost:
            pass
    raise bad


def _credentials(info: Mapping[str, Any]) -> Any:
    from google.oauth2 import service_account

    try:
        return service_account.Credentials.from_service_account_info(dict(info), scopes=[SCOPE])
    except (ValueError, TypeError, KeyError):
        # The library's message may quote part of the key: say it in our words.
        raise LoginSourceError("The key's private_key is not a valid PEM private key. "
                               + _KEY_HELP, code="gcp_key_invalid", field="secret") from None


def _origin(uri: str) -> str:
    url = httpx.URL(uri)
    return f"{url.scheme}://{url.netloc.decode()}"


def _refused(exc: Exception, where: str, info: Mapping[str, Any],
             status: int | None) -> LoginSourceError:
    """A RefreshError in plain words: rejected key, garbage answer, or a failing service."""
    answer = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(answer, dict):
        error = str(answer.get("error", ""))[:80]
        description = str(answer.get("error_description", ""))[:200]
        if error in _REJECTED or status in (400, 401, 403):
            said = f"{error}: {description}" if description else error or f"HTTP {status}"
            return LoginSourceError(
                f"{where} rejected the service account {str(info['client_email'])[:200]} "
                f"({said}). Check that the key is not deleted or disabled.",
                code="exchange_rejected")
        if "access_token" not in answer and status == 200:
            return LoginSourceError(f"{where} answered without an access token.",
                                    code="exchange_answer_invalid")
    if status == 200:
        return LoginSourceError(f"{where} answered something that is not an OAuth token "
                                "answer.", code="exchange_answer_invalid")
    if status == 429:
        return LoginSourceError(f"{where} is rate limiting requests (HTTP 429); retrying later.",
                                code="exchange_rate_limited")
    return LoginSourceError(f"{where} answered HTTP {status}.", code="exchange_failed")


class _Response:
    """google-auth's view of an HTTP answer."""

    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data


class _Transport(google_transport.Request):
    """google-auth's HTTP requests over httpx, within one deadline and a size cap."""

    def __init__(self, timeout: float, policy: ProbePolicy | None = None) -> None:
        self.deadline = time.monotonic() + timeout
        self.policy = policy
        self.last_status: int | None = None
        self.problem = ""

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _client(self, limit: httpx.Timeout) -> httpx.Client:
        guarded = None if self.policy is None else GuardedTransport(self.policy, self._remaining)
        return httpx.Client(trust_env=False, follow_redirects=False, timeout=limit,
                            transport=guarded)

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> _Response:
        _check_token_uri(url)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.problem = "no answer in time"
            raise exceptions.TransportError(self.problem)
        limit = httpx.Timeout(min(remaining, timeout or remaining))
        cap = min(MAX_ANSWER_BYTES, self.policy.max_response_bytes if self.policy else
                  MAX_ANSWER_BYTES)
        try:
            self._refuse_blocked_literal(url)
            with self._client(limit) as http, \
                    http.stream(method, url, content=body, headers=dict(headers or {})) as answer:
                data = bytearray()
                for chunk in answer.iter_bytes():
                    data.extend(chunk)
                    if len(data) > cap:
                        self.problem = f"its answer is larger than {cap} bytes"
                        raise exceptions.TransportError(self.problem)
        except AddressBlocked as exc:
            self.problem = (f"{exc.name} is {exc.address}, in a network Moorage never connects "
                            f"to ({exc.network}); nothing was sent to it")
            raise exceptions.TransportError(self.problem) from None
        except httpx.TimeoutException:
            self.problem = "no answer in time"
            raise exceptions.TransportError(self.problem) from None
        except httpx.HTTPError as exc:
            self.problem = _reason(exc)
            raise exceptions.TransportError(self.problem) from None
        self.last_status = answer.status_code
        return _Response(answer.status_code, dict(answer.headers), bytes(data))

    def _refuse_blocked_literal(self, url: str) -> None:
        """An address written in the URL is checked before anything is sent (names are
        checked where they are resolved, in the guarded transport)."""
        if self.policy is None:
            return
        host = httpx.URL(url).host
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return
        network = self.policy.blocking(address)
        if network is not None:
            raise AddressBlocked(host, address, network)


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "name resolution" in text:
        return "its host name does not resolve"
    if "certificate" in text or "ssl" in text:
        return "TLS failed"
    return type(exc).__name__
