"""What a region's agent reports about its runtime (``POST /agent/runtime``, ``docs/sync.md``).

The whole picture each time, read back from the engine: the nodes (a swarm's; none for a
single engine) and one entry per app that runs, with its replicas running and desired and the
credential revision its registry auth carries (I12: "applied to N services"). A report
replaces the previous one of the region, so an entry that is gone is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Bounds that keep one report small whatever an engine says.
MAX_NODES = 1000
MAX_SERVICES = 10000
_TEXT_MAX = 255
#: What a bigint id column holds.
_INT_MAX = 2**63 - 1


@dataclass(frozen=True)
class NodeReport:
    """One Swarm node: its id, hostname, address, role, state and availability."""

    id: str
    hostname: str
    address: str
    role: str
    state: str
    availability: str
    leader: bool = False

    def to_payload(self) -> dict[str, Any]:
        """The node's object in a report."""
        return {"id": self.id, "hostname": self.hostname, "address": self.address,
                "role": self.role, "state": self.state, "availability": self.availability,
                "leader": self.leader}


@dataclass(frozen=True)
class ServiceReport:
    """One app as it runs: the deployment it runs, replicas, and the credential revision its
    registry auth carries (``None`` for an anonymous pull or a login the engine keeps not)."""

    account_id: int
    app_id: int
    deployment_id: int
    name: str
    running: int
    desired: int
    credential_id: int | None = None
    credential_revision: int | None = None

    def to_payload(self) -> dict[str, Any]:
        """The service's object in a report."""
        return {"account_id": self.account_id, "app_id": self.app_id,
                "deployment_id": self.deployment_id, "name": self.name,
                "running": self.running, "desired": self.desired,
                "credential_id": self.credential_id,
                "credential_revision": self.credential_revision}


@dataclass(frozen=True)
class RuntimeReport:
    """The body of ``POST /agent/runtime``."""

    runtime: str
    nodes: list[NodeReport] = field(default_factory=list)
    services: list[ServiceReport] = field(default_factory=list)

    def to_payload(self) -> dict[str, Any]:
        """The request body."""
        return {"runtime": self.runtime,
                "nodes": [n.to_payload() for n in self.nodes],
                "services": [s.to_payload() for s in self.services]}

    @classmethod
    def from_payload(cls, value: Any) -> RuntimeReport:
        """Check the shape; raise ``ValueError`` naming what is wrong."""
        if not isinstance(value, dict):
            raise ValueError("the report is not an object")
        runtime = _text(value, "runtime", "report")
        nodes = value.get("nodes") or []
        services = value.get("services") or []
        if not isinstance(nodes, list) or len(nodes) > MAX_NODES:
            raise ValueError(f"nodes is not a list of at most {MAX_NODES}")
        if not isinstance(services, list) or len(services) > MAX_SERVICES:
            raise ValueError(f"services is not a list of at most {MAX_SERVICES}")
        return cls(runtime=runtime,
                   nodes=[_node(n, f"nodes[{i}]") for i, n in enumerate(nodes)],
                   services=[_service(s, f"services[{i}]") for i, s in enumerate(services)])


def _node(value: Any, where: str) -> NodeReport:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not an object")
    leader = value.get("leader", False)
    if not isinstance(leader, bool):
        raise ValueError(f"{where}.leader is not true or false")
    return NodeReport(id=_text(value, "id", where),
                      hostname=_text(value, "hostname", where, empty=True),
                      address=_text(value, "address", where, empty=True),
                      role=_text(value, "role", where), state=_text(value, "state", where),
                      availability=_text(value, "availability", where), leader=leader)


def _service(value: Any, where: str) -> ServiceReport:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not an object")
    credential_id = _optional_int(value, "credential_id", where)
    revision = _optional_int(value, "credential_revision", where)
    if (credential_id is None) != (revision is None):
        raise ValueError(f"{where} has a credential without a revision, or the reverse")
    return ServiceReport(
        account_id=_int(value, "account_id", where), app_id=_int(value, "app_id", where),
        deployment_id=_int(value, "deployment_id", where), name=_text(value, "name", where),
        running=_int(value, "running", where), desired=_int(value, "desired", where),
        credential_id=credential_id, credential_revision=revision)


def _text(obj: dict[str, Any], name: str, where: str, *, empty: bool = False) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or (not value and not empty) or len(value) > _TEXT_MAX \
            or "\x00" in value:
        raise ValueError(f"{where}.{name} is not text of at most {_TEXT_MAX} characters")
    return value


def _int(obj: dict[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT_MAX:
        raise ValueError(f"{where}.{name} is not a non-negative 64-bit integer")
    return value


def _optional_int(obj: dict[str, Any], name: str, where: str) -> int | None:
    if obj.get(name) is None:
        return None
    return _int(obj, name, where)
