"""Many regions at once against a real control plane: for the fleet tests and ``bench/fleet.py``.

:func:`seed_fleet` makes, in the control plane's database (through the real services), one
account with an API token and a container-registry credential, and ``n`` regions the account
deploys to. :class:`SimAgent` is the agent half of ``docs/sync.md`` reduced to what load needs:
a snapshot, long polls (async httpx), answers verified with the region key when asked.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from moorage import protocol
from moorage.sealing import Key, parse_keys
from moorage.testing.processes import ControlPlane

_SEED = """
from moorage.regions import services
from moorage.testing import factories
from moorage.testing.credentials import make_credential

owner = factories.make_account(data["account"])
made = [services.region_create(actor=None, slug=f"{data['prefix']}-{i}")
        for i in range(data["regions"])]
services.account_regions_set(actor=owner.user, membership=owner.membership,
                             slugs=[m.region.slug for m in made])
credential = make_credential(owner, name=data["prefix"] + "-registry", secret=data["secret"])
result = {"token": owner.token, "credential_id": credential.pk,
          "regions": [{"slug": m.region.slug, "token": m.token, "key": m.key.encoded()}
                      for m in made]}
"""


@dataclass
class SimAgent:
    """One region's agent, as far as load goes: its token, its key, the revision it holds."""

    slug: str
    token: str
    key: Key
    revision: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def snapshot(self, http: httpx.AsyncClient, *, verify: bool = True) -> dict[str, Any]:
        """Take a snapshot; hold its revision."""
        nonce = secrets.token_urlsafe(12)
        response = await http.get("/api/v1/agent/snapshot", params={"nonce": nonce},
                                   headers=self.headers)
        payload = self._payload(response, nonce, verify)
        self.revision = payload["revision"]
        return payload

    async def changes(self, http: httpx.AsyncClient, *, wait: int,
                      verify: bool = True) -> dict[str, Any]:
        """One long poll after the held revision; hold the answer's revision.

        An answer that is not 200 raises :class:`PollFailed` with its status and code.
        """
        nonce = secrets.token_urlsafe(12)
        response = await http.get("/api/v1/agent/changes", headers=self.headers,
                                  params={"since": self.revision, "wait": wait, "nonce": nonce})
        payload = self._payload(response, nonce, verify)
        if verify:
            assert payload["since"] == self.revision, payload
        self.revision = payload["revision"]
        return payload

    def _payload(self, response: httpx.Response, nonce: str, verify: bool) -> dict[str, Any]:
        if response.status_code != 200:
            raise PollFailed(response)
        envelope = response.json()
        if not verify:
            import base64
            import json

            body = envelope["payload"]
            decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(
                body + "=" * (-len(body) % 4)))
            return decoded
        payload = protocol.verify(envelope, self.key)
        assert payload["region"] == self.slug and payload.pop("nonce") == nonce, payload
        return payload


class PollFailed(Exception):
    """The control plane answered a poll with an error."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.retry_after = response.headers.get("Retry-After")
        try:
            self.code = str(response.json().get("code"))
        except ValueError:
            self.code = ""
        super().__init__(f"HTTP {self.status} {self.code}")


@dataclass
class Fleet:
    """What :func:`seed_fleet` made: the owner's API token, the credential, the agents."""

    token: str
    credential_id: int
    agents: list[SimAgent] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def seed_fleet(control_plane: ControlPlane, regions: int, *, prefix: str = "fleet",
               account: str = "Fleet") -> Fleet:
    """One account with a credential, enabled in ``regions`` new regions (real services)."""
    made = control_plane.django(_SEED, {"regions": regions, "prefix": prefix,
                                        "account": account,
                                        "secret": "Fleet-Secret-" + secrets.token_hex(8)})
    return Fleet(token=made["token"], credential_id=made["credential_id"], agents=[
        SimAgent(slug=r["slug"], token=r["token"], key=parse_keys(r["key"])[0])
        for r in made["regions"]])


def rotate(http: httpx.Client, fleet: Fleet) -> float:
    """Rotate the fleet's credential through the API; return ``time.monotonic()`` just before."""
    began = time.monotonic()
    response = http.patch(f"/api/v1/credentials/{fleet.credential_id}", headers=fleet.auth,
                          json={"secret": "Fleet-Rotated-" + secrets.token_hex(8)})
    assert response.status_code == 200, response.text[:300]
    return began


def database_connections(database_url: str) -> int:
    """Connections to the database of ``database_url`` as ``pg_stat_activity`` shows them
    (this query's own connection not counted)."""
    from urllib.parse import urlsplit

    import psycopg

    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                           "AND pid <> pg_backend_pid()", [name]).fetchone()
    return int(row[0]) if row else 0
