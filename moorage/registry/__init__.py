"""Talking to container registries, without Django.

Image reference parsing (:mod:`.reference`), registry host normalisation (:mod:`.hosts`), the
OCI distribution auth flow — anonymous, Basic, Bearer tokens with a per-client cache —
(:mod:`.auth`), login and pull-access checks in plain words (:mod:`.access`), and docker
config documents and Engine auth headers (:mod:`.dockerconfig`). Nothing in this package may
import Django, so the region agent can use it too (a test enforces it).
"""

from moorage.registry.access import AccessResult, AccessStatus, check_access, check_login
from moorage.registry.auth import (
    MANIFEST_ACCEPT,
    Authorization,
    Challenge,
    LoginRejected,
    RegistryClient,
    RegistryError,
    RegistryLogin,
    RegistryProtocolError,
    RegistryRateLimited,
    RegistryUnreachable,
    Token,
    TokenCache,
    parse_www_authenticate,
    pull_scope,
)
from moorage.registry.dockerconfig import (
    DockerConfigEntry,
    InvalidDockerConfig,
    ParsedDockerConfig,
    SkippedEntry,
    build_docker_config,
    build_k8s_secret,
    dump_docker_config,
    parse_docker_config,
    registry_auth_header,
    registry_config_header,
)
from moorage.registry.hosts import (
    DOCKER_HUB,
    DOCKER_HUB_API_HOST,
    DOCKER_HUB_CONFIG_KEY,
    InvalidRegistryHost,
    api_base_url,
    api_host,
    docker_config_key,
    hosts_match,
    is_docker_hub,
    is_loopback,
    normalize_registry_host,
    server_address,
)
from moorage.registry.reference import ImageReference, InvalidReference, parse_reference

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API_HOST",
    "DOCKER_HUB_CONFIG_KEY",
    "MANIFEST_ACCEPT",
    "AccessResult",
    "AccessStatus",
    "Authorization",
    "Challenge",
    "DockerConfigEntry",
    "ImageReference",
    "InvalidDockerConfig",
    "InvalidReference",
    "InvalidRegistryHost",
    "LoginRejected",
    "ParsedDockerConfig",
    "RegistryClient",
    "RegistryError",
    "RegistryLogin",
    "RegistryProtocolError",
    "RegistryRateLimited",
    "RegistryUnreachable",
    "SkippedEntry",
    "Token",
    "TokenCache",
    "api_base_url",
    "api_host",
    "build_docker_config",
    "build_k8s_secret",
    "check_access",
    "check_login",
    "docker_config_key",
    "dump_docker_config",
    "hosts_match",
    "is_docker_hub",
    "is_loopback",
    "normalize_registry_host",
    "parse_docker_config",
    "parse_reference",
    "parse_www_authenticate",
    "pull_scope",
    "registry_auth_header",
    "registry_config_header",
    "server_address",
]
