"""Regions in tests: created through the real services, with an agent-side view of the API."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.test import Client

from moorage import protocol
from moorage.deployments.models import Deployment
from moorage.deployments.services import deployment_create
from moorage.regions import services
from moorage.sealing import Key
from moorage.testing import factories
from moorage.testing.factories import Member


@dataclass
class AgentView:
    """What a region's agent holds (token and key) and sees through the real API."""

    slug: str
    token: str
    key: Key

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def snapshot(self, client: Client) -> dict[str, Any]:
        nonce = secrets.token_urlsafe(12)
        response = client.get(f"/api/v1/agent/snapshot?nonce={nonce}", headers=self.auth)
        assert response.status_code == 200, response.content[:300]
        payload = protocol.verify(response.json(), self.key)
        assert payload.pop("nonce") == nonce
        return payload

    def changes(self, client: Client, since: int, wait: int = 0) -> dict[str, Any]:
        nonce = secrets.token_urlsafe(12)
        response = client.get(f"/api/v1/agent/changes?since={since}&wait={wait}&nonce={nonce}",
                              headers=self.auth)
        assert response.status_code == 200, response.content[:300]
        payload = protocol.verify(response.json(), self.key)
        assert payload.pop("nonce") == nonce
        return payload


def make_region(slug: str, **kwargs: Any) -> AgentView:
    created = services.region_create(actor=None, slug=slug, **kwargs)
    return AgentView(slug=slug, token=created.token, key=created.key)


def member_in(region: AgentView, name: str) -> Member:
    """The owner of a new account that deploys to ``region``."""
    member = factories.make_account(name)
    services.account_regions_set(actor=member.user, membership=member.membership,
                                 slugs=[region.slug])
    return member


def deploy_one(member: Member, app_id: int) -> Deployment:
    """Deploy an app that runs in one region; return that region's deployment."""
    [deployment] = deployment_create(actor=member.user, membership=member.membership,
                                     app_id=app_id)
    return deployment
