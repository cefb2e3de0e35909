"""Shared helpers for the registry library's tests: unique names and pushed images.

The registry fixtures are session-wide, so every test makes its own users and repositories.
Pushing an image costs an engine round trip; :func:`pushed_image` pushes one image per
registry flavour for the whole session (tests only read it) and hands it out.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from moorage.registry import ImageReference, RegistryLogin, parse_reference
from moorage.testing.fixtures import BusyboxImageFactory
from moorage.testing.registry import RegistryServer


def unique(prefix: str) -> str:
    """A repository or user name no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def new_user(registry: RegistryServer, *repositories: str) -> RegistryLogin:
    """Add a user with a fresh random password, granted pull on ``repositories``."""
    login = RegistryLogin(unique("user"), secrets.token_urlsafe(18))
    registry.add_user(login.username, login.password)
    for repository in repositories:
        registry.grant(login.username, repository, ["pull"])
    return login


def admin(registry: RegistryServer) -> RegistryLogin:
    """The registry's admin login (may pull anything)."""
    return RegistryLogin(registry.admin_username, registry.admin_password)


@pytest.fixture(params=["basic", "token"])
def registry(request: pytest.FixtureRequest) -> RegistryServer:
    """Each test runs against both real registries: htpasswd (Basic) and token (Bearer)."""
    server: RegistryServer = request.getfixturevalue(f"registry_{request.param}")
    return server


_PUSHED: dict[str, ImageReference] = {}


@pytest.fixture
def pushed_image(
    busybox_image: BusyboxImageFactory,
) -> Callable[[RegistryServer], ImageReference]:
    """``pushed_image(registry)`` → a busybox image pushed once per registry, read-only."""

    def get(registry: RegistryServer) -> ImageReference:
        key = f"{registry.auth}:{registry.host}"
        if key not in _PUSHED:
            repository = unique("shared/busybox")
            _PUSHED[key] = parse_reference(busybox_image(registry, repository, "v1"))
        return _PUSHED[key]

    return get
