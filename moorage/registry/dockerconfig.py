"""Docker ``config.json`` documents and the Engine's registry auth headers.

* :func:`build_docker_config` / :func:`parse_docker_config`: ``{"auths": {KEY: {...}}}`` as
  docker, skopeo, podman and kubelet read it. Docker Hub's key must be exactly
  ``https://index.docker.io/v1/``.
* :func:`build_k8s_secret`: a ``kubernetes.io/dockerconfigjson`` Secret (kubelet reads only
  ``auths``, and ``auth`` wins over ``username``/``password``).
* :func:`registry_auth_header` (``X-Registry-Auth``, pulls and services) and
  :func:`registry_config_header` (``X-Registry-Config``, classic builds).

Both headers are **URL-safe** base64: the engine decodes them with Go's
``base64.URLEncoding`` and silently ignores a decode failure for ``X-Registry-Config``, so
standard base64 (``+``, ``/``) would quietly turn into "no credentials" for some passwords.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from moorage.registry.auth import RegistryLogin
from moorage.registry.hosts import (
    InvalidRegistryHost,
    docker_config_key,
    normalize_registry_host,
    server_address,
)

__all__ = [
    "DOCKERCONFIGJSON_TYPE",
    "DockerConfigEntry",
    "InvalidDockerConfig",
    "ParsedDockerConfig",
    "SkippedEntry",
    "build_docker_config",
    "build_k8s_secret",
    "dump_docker_config",
    "parse_docker_config",
    "registry_auth_header",
    "registry_config_header",
]

DOCKERCONFIGJSON_TYPE = "kubernetes.io/dockerconfigjson"
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

#: What :func:`build_docker_config` takes: (registry host, login, email or None).
ConfigInput = tuple[str, RegistryLogin, str | None]


class InvalidDockerConfig(ValueError):
    """The document as a whole is not a docker config (not JSON, not an object...)."""


@dataclasses.dataclass(frozen=True)
class DockerConfigEntry:
    """A usable credential found in a docker config; the password is hidden from repr."""

    host: str
    username: str
    password: str = dataclasses.field(repr=False)
    email: str | None = None

    def __repr__(self) -> str:
        """Host and user only."""
        return (
            f"DockerConfigEntry(host={self.host!r}, username={self.username!r}, "
            f"password='***', email={self.email!r})"
        )

    __str__ = __repr__

    @property
    def login(self) -> RegistryLogin:
        """The entry as a :class:`RegistryLogin`."""
        return RegistryLogin(self.username, self.password)


@dataclasses.dataclass(frozen=True)
class SkippedEntry:
    """An ``auths`` key (or credential helper) that cannot be used, and why, in plain words."""

    key: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ParsedDockerConfig:
    """What :func:`parse_docker_config` found: usable entries, and the ones it skipped.

    Iterating (and ``len``) goes over the usable entries.
    """

    entries: tuple[DockerConfigEntry, ...]
    skipped: tuple[SkippedEntry, ...] = ()

    def __iter__(self) -> Iterator[DockerConfigEntry]:
        """Iterate over the usable entries."""
        return iter(self.entries)

    def __len__(self) -> int:
        """How many usable entries."""
        return len(self.entries)

    def for_host(self, host: str) -> DockerConfigEntry | None:
        """The entry for ``host`` (any spelling), if any."""
        wanted = normalize_registry_host(host)
        return next((e for e in self.entries if e.host == wanted), None)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _auth_entry(login: RegistryLogin, email: str | None) -> dict[str, str]:
    entry = {
        "auth": _b64(f"{login.username}:{login.password}"),
        "username": login.username,
        "password": login.password,
    }
    if email:
        entry["email"] = email
    return entry


def build_docker_config(entries: Iterable[ConfigInput]) -> dict[str, Any]:
    """A docker config document ``{"auths": {KEY: {"auth", "username", "password", ...}}}``.

    Keys come from :func:`docker_config_key` (Hub: ``https://index.docker.io/v1/``). Two
    entries for the same registry raise ``ValueError``: a file cannot say which one to use.
    """
    auths: dict[str, dict[str, str]] = {}
    for host, login, email in entries:
        key = docker_config_key(host)
        if key in auths:
            raise ValueError(f"two credentials for the registry {normalize_registry_host(host)}")
        auths[key] = _auth_entry(login, email)
    return {"auths": auths}


def dump_docker_config(entries: Iterable[ConfigInput]) -> str:
    """:func:`build_docker_config` as JSON text, ready to be written to a 0600 file."""
    return json.dumps(build_docker_config(entries), indent=2, sort_keys=True) + "\n"


def parse_docker_config(text: str | bytes) -> ParsedDockerConfig:
    """Read the usable ``auths`` entries of a docker config, and say which were skipped.

    ``auth`` (base64 ``user:password``) wins over ``username``/``password``, as in
    Kubernetes. Skipped, with a reason, instead of failing: entries whose secret lives in a
    credential helper (``credsStore``, ``credHelpers``), identity-token-only entries,
    undecodable ``auth``, keys that are not one registry host (kubelet globs and paths).
    A host met twice keeps the entry under its canonical key (else the first).
    Raises :class:`InvalidDockerConfig` when the document itself is unusable.
    """
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise InvalidDockerConfig("The docker config is not valid JSON.") from None
    if not isinstance(document, dict):
        raise InvalidDockerConfig("The docker config must be a JSON object.")
    auths = document.get("auths", {})
    if not isinstance(auths, dict):
        raise InvalidDockerConfig('The docker config\'s "auths" must be an object.')
    creds_store = document.get("credsStore")
    helpers = document.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        helpers = {}

    skipped: list[SkippedEntry] = []
    found: dict[str, tuple[str, DockerConfigEntry]] = {}
    for raw_key, value in auths.items():
        key = str(raw_key)
        entry, reason = _parse_entry(key, value, creds_store, helpers)
        if entry is None:
            skipped.append(SkippedEntry(key, reason))
            continue
        if entry.host in found:
            kept_key, _ = found[entry.host]
            loser = kept_key
            if kept_key == docker_config_key(entry.host) or key != docker_config_key(entry.host):
                loser = key
            else:
                found[entry.host] = (key, entry)
            skipped.append(SkippedEntry(loser, f"another entry for {entry.host} is used instead"))
            continue
        found[entry.host] = (key, entry)
    for key, helper in helpers.items():
        if str(key) not in auths:
            skipped.append(
                SkippedEntry(
                    str(key),
                    f"its credential is kept by the credential helper docker-credential-{helper}, "
                    "which Moorage does not run",
                )
            )
    return ParsedDockerConfig(
        entries=tuple(entry for _, entry in found.values()), skipped=tuple(skipped)
    )


def _parse_entry(
    key: str, value: Any, creds_store: Any, helpers: dict[str, Any]
) -> tuple[DockerConfigEntry | None, str]:
    """One ``auths`` entry → (entry, "") or (None, reason)."""
    try:
        host = normalize_registry_host(key)
    except InvalidRegistryHost as exc:
        return None, f"the key is not a single registry host ({exc.message})"
    if not isinstance(value, dict):
        return None, "the entry is not a JSON object"
    email = value.get("email") if isinstance(value.get("email"), str) else None
    username = value.get("username") if isinstance(value.get("username"), str) else ""
    password = value.get("password") if isinstance(value.get("password"), str) else ""
    auth = value.get("auth")
    if isinstance(auth, str) and auth.strip():
        try:
            decoded = base64.b64decode(auth.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None, 'its "auth" value is not base64 of "user:password"'
        user, sep, secret = decoded.partition(":")
        if not sep or not user:
            return None, 'its "auth" value does not hold "user:password"'
        username, password = user, secret
    if username and password:
        if ":" in username:
            return None, "its user name contains ':'"
        return DockerConfigEntry(host, username, password, email), ""
    if isinstance(value.get("identitytoken"), str) and value.get("identitytoken"):
        return None, "it holds only an identity token (OAuth), not a user name and password"
    if key in helpers:
        return None, (
            f"its credential is kept by the credential helper docker-credential-{helpers[key]}, "
            "which Moorage does not run"
        )
    if creds_store:
        return None, (
            f"its credential is kept by the credential store docker-credential-{creds_store}, "
            "which Moorage does not run"
        )
    return None, "it holds no user name and password"


def build_k8s_secret(name: str, namespace: str, entries: Iterable[ConfigInput]) -> dict[str, Any]:
    """A ``kubernetes.io/dockerconfigjson`` Secret manifest for ``imagePullSecrets``."""
    if len(name) > 253 or not _DNS_SUBDOMAIN_RE.match(name):
        raise ValueError(f"{name!r} is not a valid Kubernetes object name")
    if len(namespace) > 63 or not _DNS_LABEL_RE.match(namespace):
        raise ValueError(f"{namespace!r} is not a valid Kubernetes namespace")
    config = json.dumps(build_docker_config(entries), separators=(",", ":"), sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": DOCKERCONFIGJSON_TYPE,
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }


def _urlsafe_json(value: Any) -> str:
    data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(data).decode()


def engine_auth_config(login: RegistryLogin, host: str) -> dict[str, str]:
    """The Engine API's auth config for ``login`` on ``host`` (an image's registry host).

    ``{"username", "password", "serveraddress"}``, ``serveraddress`` a host without scheme
    (Docker Hub: ``index.docker.io``, the spelling every engine's containerd image store maps
    to Hub; it drops credentials for a mismatching host).
    """
    return {
        "username": login.username,
        "password": login.password,
        "serveraddress": server_address(host),
    }


def registry_auth_header(login: RegistryLogin, host: str) -> str:
    """The ``X-Registry-Auth`` value for a pull from ``host`` (or a swarm service): URL-safe
    base64 of :func:`engine_auth_config` (standard base64 silently means "no credentials"
    to the engine when the encoding holds ``+`` or ``/``)."""
    return _urlsafe_json(engine_auth_config(login, host))


def registry_config_header(entries: Sequence[tuple[str, RegistryLogin]]) -> str:
    """The ``X-Registry-Config`` value for a classic build: one auth config per registry.

    URL-safe base64 of ``{KEY: {"username", "password", "serveraddress"}}`` keyed by
    :func:`docker_config_key` (Hub: exactly ``https://index.docker.io/v1/``, any other Hub
    key is silently unused). Duplicate registries raise ``ValueError``.
    """
    configs: dict[str, dict[str, str]] = {}
    for host, login in entries:
        key = docker_config_key(host)
        if key in configs:
            raise ValueError(f"two credentials for the registry {normalize_registry_host(host)}")
        configs[key] = {
            "username": login.username,
            "password": login.password,
            "serveraddress": key,
        }
    return _urlsafe_json(configs)
