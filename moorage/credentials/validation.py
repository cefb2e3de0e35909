"""Checking what people type into a credential, with the limits the README documents.

Each function returns the cleaned value or raises :class:`ValidationFailed` with a stable
code and ``detail["fields"]`` naming the field, so pages put the message on the right input.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email

from moorage import names
from moorage.credentials.choices import CredentialType
from moorage.errors import ValidationFailed
from moorage.registry.hosts import InvalidRegistryHost, normalize_registry_host
from moorage.registry.logins import LoginParams, LoginSource, LoginSourceError, login_source

NAME_MAX = 100
SERVER_MAX = 255
USERNAME_MAX = 255
EMAIL_MAX = 254
SECRET_MAX = 16 * 1024  # bytes of UTF-8; a Google service-account JSON key is ~2.4 KB
GCP_JSON_KEY_USER = "_json_key"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GIT_HOST = re.compile(
    r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$"  # name[:port]
    r"|^\[[0-9a-f:]+\](:[0-9]{1,5})?$"  # [ipv6][:port]
)


def _fail(field: str, code: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, detail={"fields": {field: message}})


def clean_type(value: str) -> CredentialType:
    try:
        return CredentialType(value)
    except ValueError:
        raise _fail(
            "type", "credential_type_invalid",
            f"Unknown credential type {value!r}; use container_registry or git.",
        ) from None


def _single_line(field: str, label: str, value: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise _fail(field, f"{field}_required", f"The {label} must not be empty.")
    if len(value) > limit:
        raise _fail(field, f"{field}_too_long", f"The {label} is longer than {limit} characters.")
    if _CONTROL.search(value):
        raise _fail(field, f"{field}_invalid", f"The {label} must be one line of text.")
    return value


def clean_name(value: str) -> str:
    return names.clean_name(value, max_length=NAME_MAX)


def clean_username(value: str) -> str:
    value = _single_line("username", "username", value, USERNAME_MAX)
    if ":" in value:
        # Registries and git servers take user:password (Basic auth): a colon cannot be sent.
        raise _fail("username", "username_invalid", "The username cannot contain ':'.")
    return value


def clean_email(value: str) -> str:
    value = value.strip()
    if not value:
        return ""
    if len(value) > EMAIL_MAX:
        raise _fail("email", "email_too_long", f"The e-mail is longer than {EMAIL_MAX} characters.")
    try:
        validate_email(value)
    except DjangoValidationError:
        raise _fail(
            "email", "email_invalid", "Enter a valid e-mail address or leave it empty."
        ) from None
    return value


def clean_server(kind: CredentialType, value: str) -> str:
    """The canonical host a credential is for: a registry host, or a git host."""
    if len(value) > SERVER_MAX:
        raise _fail(
            "server", "server_too_long", f"The server is longer than {SERVER_MAX} characters."
        )
    if kind is CredentialType.CONTAINER_REGISTRY:
        try:
            return normalize_registry_host(value)
        except InvalidRegistryHost as exc:
            raise _fail("server", exc.code, str(exc)) from None
    return clean_git_host(value)


def clean_git_host(value: str) -> str:
    """``github.com``, ``git.example.com:8443``, or ``https://github.com/`` → ``github.com``."""
    text = value.strip()
    if not text:
        raise _fail("server", "server_required", "The git host must not be empty.")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("https", "http"):
            raise _fail("server", "server_scheme_invalid",
                        "Give the git host (like github.com) or an https:// URL.")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise _fail("server", "server_has_path",
                        "Give only the git host, like github.com; the credential serves every "
                        "repository on it.")
        text = parts.netloc
    host = text.lower().rstrip("/")
    if not _GIT_HOST.match(host):
        raise _fail("server", "server_invalid",
                    f"{value.strip()!r} is not a host name; use something like github.com.")
    return host


def _secret_basics(value: str, label: str) -> None:
    if not value or not value.strip():
        raise _fail("secret", "secret_required", f"The {label} must not be empty.")
    if len(value.encode("utf-8", "surrogatepass")) > SECRET_MAX:
        # Bytes, not characters: what is sealed, stored and sent is UTF-8.
        raise _fail("secret", "secret_too_long",
                    f"The {label} is longer than {SECRET_MAX // 1024} KiB ({SECRET_MAX} bytes "
                    "of UTF-8).")
    if "\x00" in value:
        raise _fail("secret", "secret_invalid", f"The {label} holds a NUL character.")


def clean_secret(kind: CredentialType, username: str, value: str) -> str:
    """The password or token, kept exactly (a JSON key keeps its newlines)."""
    label = "token" if kind is CredentialType.GIT else "password"
    _secret_basics(value, label)
    if kind is CredentialType.CONTAINER_REGISTRY and username == GCP_JSON_KEY_USER:
        _check_json_key(value)
    else:
        # A pasted token often carries a trailing newline, never part of the secret. Spaces
        # stay: they can be part of a password.
        value = value.strip("\r\n")
        if _CONTROL.search(value):
            raise _fail("secret", "secret_invalid", f"The {label} must be one line of text.")
    return value


def _check_json_key(value: str) -> None:
    problem = "Paste the whole service-account JSON key file (it starts with {)."
    try:
        document = json.loads(value)
    except ValueError:
        raise _fail(
            "secret", "json_key_invalid", "The JSON key is not valid JSON. " + problem
        ) from None
    if not isinstance(document, dict):
        raise _fail("secret", "json_key_invalid", problem)
    missing = [k for k in ("type", "client_email", "private_key") if not document.get(k)]
    if missing or document.get("type") != "service_account":
        raise _fail(
            "secret", "json_key_invalid",
            "The JSON key is not a service-account key"
            + (f" (missing {', '.join(missing)})" if missing else "") + ". " + problem,
        )


def clean_login_source(kind: CredentialType, value: str) -> LoginSource:
    """The login source by name; only registry credentials are exchanged for tokens."""
    try:
        source = login_source(value)
    except LoginSourceError as exc:
        raise _fail("login_source", exc.code, exc.message) from None
    if source.exchanged and kind is not CredentialType.CONTAINER_REGISTRY:
        raise _fail("login_source", "login_source_invalid",
                    "Only container-registry credentials can be exchanged for tokens.")
    return source


#: What each exchanged source's secret is called, for messages.
_SECRET_LABELS = {"aws_ecr": "secret access key", "gcp_service_account": "service-account key"}


def clean_exchanged(
    source: LoginSource, *, server: str, username: str, secret: str,
    aws_access_key_id: str = "", aws_region: str = "",
) -> LoginParams:
    """Check what an exchanged credential is given, offline; the parameters of its exchange.

    The user name comes from the source (``AWS``, ``oauth2accesstoken``); the server may be
    left out where the exchange names it (ECR's ``proxyEndpoint``).
    """
    given = username.strip()
    if given and source.fixed_username and given != source.fixed_username:
        raise _fail("username", "username_fixed",
                    f"A {source.name} credential logs in as {source.fixed_username}; leave the "
                    "username out.")
    for field, value in (("aws_access_key_id", aws_access_key_id),
                         ("aws_region", aws_region)):
        if value.strip() and field not in source.fields:
            raise _fail(field, "field_not_allowed",
                        f"{field} is only for aws_ecr credentials.")
    host = ""
    if server.strip():
        host = clean_server(CredentialType.CONTAINER_REGISTRY, server)
    elif not source.server_from_exchange:
        raise _fail("server", "server_required",
                    "Give the registry host, like europe-docker.pkg.dev.")
    _secret_basics(secret, _SECRET_LABELS.get(source.name, "secret"))
    if "\n" not in secret.strip("\r\n"):
        secret = secret.strip("\r\n")  # a pasted key id or secret key ends with a newline
    params = LoginParams(secret=secret, server=host,
                         aws_access_key_id=aws_access_key_id.strip(),
                         aws_region=aws_region.strip())
    try:
        source.check(params)
    except LoginSourceError as exc:
        raise _fail(exc.field or "secret", exc.code, exc.message) from None
    return params
