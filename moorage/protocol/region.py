"""A region's own settings, as its agent receives them (the snapshot's and a
``region.upsert``'s ``region`` object, ``docs/sync.md``).

``runtime`` picks what the agent drives (:class:`~moorage.protocol.enums.Runtime`); it is
kept as text so an agent meeting a runtime it does not know can say so instead of refusing
the whole snapshot. ``registry`` is the region's own registry, where images built in a swarm
region are pushed and every node pulls them from; its password is sealed with the region key
(:func:`~moorage.protocol.associated_data.region_registry_aad`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from moorage.protocol.enums import Runtime

_RUNTIME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class RegionRegistry:
    """The region registry: ``host`` (``HOST[:PORT]``), the login's user, the settings'
    ``revision`` (raised at every change) and the password sealed for the region."""

    host: str
    username: str
    revision: int
    secret: str

    def to_payload(self) -> dict[str, Any]:
        """The ``registry`` object."""
        return {"host": self.host, "username": self.username, "revision": self.revision,
                "secret": self.secret}


@dataclass(frozen=True)
class RegionSettings:
    """The ``region`` object: the runtime and, optionally, the region registry."""

    runtime: str = Runtime.DOCKER.value
    registry: RegionRegistry | None = None

    @property
    def known_runtime(self) -> Runtime | None:
        """The runtime, or ``None`` when this side does not know it."""
        try:
            return Runtime(self.runtime)
        except ValueError:
            return None

    def to_payload(self) -> dict[str, Any]:
        """The ``region`` object of a snapshot or a ``region.upsert``."""
        return {"runtime": self.runtime,
                "registry": None if self.registry is None else self.registry.to_payload()}

    @classmethod
    def from_payload(cls, value: Any) -> RegionSettings:
        """Check the shape; raise ``ValueError`` naming the field that is wrong.

        A payload without a ``region`` object (an older control plane) means a docker
        region without a registry.
        """
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ValueError("region is not an object")
        runtime = value.get("runtime", Runtime.DOCKER.value)
        if not isinstance(runtime, str) or not _RUNTIME.match(runtime):
            raise ValueError("region.runtime is not a runtime name")
        registry = value.get("registry")
        if registry is None:
            return cls(runtime=runtime)
        if not isinstance(registry, dict):
            raise ValueError("region.registry is not an object")
        fields: dict[str, str] = {}
        for name in ("host", "username", "secret"):
            value = registry.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError("region.registry needs a host, a username and a sealed secret")
            fields[name] = value
        revision = registry.get("revision")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
            raise ValueError("region.registry.revision is not a positive integer")
        return cls(runtime=runtime, registry=RegionRegistry(
            host=fields["host"], username=fields["username"], revision=revision,
            secret=fields["secret"]))
