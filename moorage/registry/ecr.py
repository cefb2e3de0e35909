"""The ``aws_ecr`` login source: an AWS access key exchanged for a 12-hour ECR token.

boto3's ``ecr`` client calls ``GetAuthorizationToken`` with the credential's own access key
(never the machine's AWS profile, environment credentials or instance role: explicit keys
win in boto3's credential chain) and honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_ECR``
as boto3 does, for VPC endpoints, FIPS endpoints and the tests' moto server. The answer is a
base64 ``AWS:<password>``, an ``expiresAt`` and the registry's ``proxyEndpoint``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import threading
from typing import TYPE_CHECKING, Any

from moorage.registry.hosts import InvalidRegistryHost, normalize_registry_host
from moorage.registry.logins import (
    EXCHANGE_TIMEOUT,
    IssuedLogin,
    LoginParams,
    LoginSource,
    LoginSourceError,
    SourceName,
    check_expiry,
)
from moorage.registry.policy import ProbePolicy

if TYPE_CHECKING:
    import boto3

__all__ = ["EcrSource", "known_regions"]

_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")
_REGION = re.compile(r"^[a-z]{2,}(-[a-z]+)+-\d+$")
_REJECTED = {
    "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
    "SignatureDoesNotMatch", "IncompleteSignature", "AuthFailure", "ExpiredTokenException",
    "InvalidAccessKeyId",
}
_FORBIDDEN = {"AccessDeniedException", "AccessDenied"}
_THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException",
              "RequestLimitExceeded"}

_lock = threading.Lock()
_session: boto3.session.Session | None = None
_regions: frozenset[str] | None = None


def _boto_session() -> boto3.session.Session:
    """One boto3 session for every exchange: it caches the service model, so making a client
    per credential costs milliseconds. It holds no credentials; each client gets its own."""
    global _session
    if _session is None:
        import boto3

        _session = boto3.session.Session()
    return _session


def known_regions() -> frozenset[str]:
    """Every region boto3 knows ECR in, over all partitions (aws, aws-cn, aws-us-gov...)."""
    global _regions
    with _lock:
        if _regions is None:
            session = _boto_session()
            found: set[str] = set()
            for partition in session.get_available_partitions():
                found.update(session.get_available_regions("ecr", partition_name=partition))
            _regions = frozenset(found)
        return _regions


class EcrSource(LoginSource):
    """AWS ECR: ``GetAuthorizationToken`` with an access key; user ``AWS``, 12-hour token."""

    name = SourceName.AWS_ECR
    label = "ECR token"
    exchanged = True
    fixed_username = "AWS"
    fields = ("aws_access_key_id", "aws_region")
    server_from_exchange = True

    def check(self, params: LoginParams) -> None:
        """The key id's shape, a region boto3 knows, a one-line secret key."""
        key_id = params.aws_access_key_id
        if not key_id:
            raise LoginSourceError("Give the AWS access key id (it starts with AKIA).",
                                   code="aws_access_key_id_required", field="aws_access_key_id")
        if not _KEY_ID.match(key_id):
            raise LoginSourceError(
                "The AWS access key id is 16 to 128 capital letters and digits, like "
                "AKIAIOSFODNN7EXAMPLE.", code="aws_access_key_id_invalid",
                field="aws_access_key_id")
        if key_id.startswith("ASIA"):
            raise LoginSourceError(
                "ASIA… keys are temporary session credentials that expire on their own; give "
                "an IAM user's access key (AKIA…) allowed to call ecr:GetAuthorizationToken.",
                code="aws_access_key_id_temporary", field="aws_access_key_id")
        region = params.aws_region
        if not region:
            raise LoginSourceError("Give the AWS region of the registry, like eu-west-1.",
                                   code="aws_region_required", field="aws_region")
        if not _REGION.match(region) or region not in known_regions():
            raise LoginSourceError(
                f"{region[:40]!r} is not an AWS region with ECR that this installation knows "
                "(like eu-west-1 or us-east-1).", code="aws_region_unknown", field="aws_region")
        secret = params.secret
        if not secret or any(c.isspace() for c in secret) or len(secret) > 256:
            raise LoginSourceError(
                "The secret access key is one word of up to 256 characters (40 for AWS keys).",
                code="aws_secret_invalid", field="secret")

    def login(self, params: LoginParams, *, timeout: float = EXCHANGE_TIMEOUT,
              policy: ProbePolicy | None = None) -> IssuedLogin:
        """Exchange the access key for an ECR token now.

        ``policy`` is not needed: the token service is AWS's (or the operator's
        ``AWS_ENDPOINT_URL``), never an address the tenant chose.
        """
        self.check(params)
        client = _client(params, timeout)
        where = f"The ECR token service at {client.meta.endpoint_url}"
        try:
            answer = client.get_authorization_token()
        except Exception as exc:
            raise _classified(exc, where, params) from None
        finally:
            client.close()
        return _issued(answer, where, now=dt.datetime.now(dt.UTC))


def _client(params: LoginParams, timeout: float) -> Any:
    from botocore.config import Config

    config = Config(
        connect_timeout=min(5.0, timeout), read_timeout=timeout / 2,
        retries={"total_max_attempts": 2, "mode": "standard"},
        user_agent_extra="moorage",
    )
    with _lock:  # a boto3 session makes clients one at a time
        return _boto_session().client(
            "ecr", region_name=params.aws_region, aws_access_key_id=params.aws_access_key_id,
            aws_secret_access_key=params.secret, aws_session_token=None, config=config,
        )


def _classified(exc: Exception, where: str, params: LoginParams) -> LoginSourceError:
    """Name what went wrong in the user's words; never repeat the secret key."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )
    from botocore.parsers import ResponseParserError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))[:80]
        said = _scrub(str(error.get("Message", "")), params)[:200]
        key = params.aws_access_key_id
        if code in _REJECTED:
            return LoginSourceError(
                f"{where} rejected the access key {key} ({code}: {said}). Check the key id "
                "and the secret access key, and that the key is active.",
                code="exchange_rejected")
        if code in _FORBIDDEN:
            return LoginSourceError(
                f"{where} accepted the access key {key}, but it may not call "
                f"ecr:GetAuthorizationToken ({code}). Allow that action in its IAM policy.",
                code="exchange_forbidden")
        if code in _THROTTLED:
            return LoginSourceError(f"{where} is rate limiting requests ({code}); retrying "
                                    "later.", code="exchange_rate_limited")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return LoginSourceError(f"{where} answered HTTP {status} {code or 'without an error code'}"
                                f"{': ' + said if said else ''}.", code="exchange_failed")
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return LoginSourceError(f"{where} did not answer in time.", code="exchange_unreachable")
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError):
        return LoginSourceError(f"{where} could not be reached.", code="exchange_unreachable")
    if isinstance(exc, ResponseParserError | ValueError):
        return LoginSourceError(f"{where} answered something that is not an ECR answer.",
                                code="exchange_answer_invalid")
    return LoginSourceError(f"{where} failed: {type(exc).__name__}.", code="exchange_failed")


def _scrub(text: str, params: LoginParams) -> str:
    return text.replace(params.secret, "***") if params.secret else text


def _issued(answer: Any, where: str, *, now: dt.datetime) -> IssuedLogin:
    """Read the token, its expiry and the registry host; refuse an answer that lacks one."""
    garbage = LoginSourceError(f"{where} answered without a usable authorization token.",
                               code="exchange_answer_invalid")
    data = answer.get("authorizationData") if isinstance(answer, dict) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise garbage
    entry = data[0]
    token = entry.get("authorizationToken")
    if not isinstance(token, str):
        raise garbage
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise garbage from None
    username, _, password = decoded.partition(":")
    if not username or not password or any(c.isspace() for c in username):
        raise garbage
    expires_at = entry.get("expiresAt")
    if not isinstance(expires_at, dt.datetime):
        raise LoginSourceError(f"{where} answered without the token's expiry.",
                               code="exchange_answer_invalid")
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=dt.UTC)
    check_expiry(expires_at, now=now, issuer=where)
    server: str | None = None
    endpoint = entry.get("proxyEndpoint")
    if isinstance(endpoint, str) and endpoint:
        try:
            server = normalize_registry_host(endpoint)
        except InvalidRegistryHost:
            raise LoginSourceError(f"{where} named a registry that is not a valid host.",
                                   code="exchange_answer_invalid") from None
    return IssuedLogin(username, password, expires_at.astimezone(dt.UTC), server)
