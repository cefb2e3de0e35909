"""Bearer-token authentication of region agents."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from moorage.regions.models import Region
from moorage.regions.sync import agent_authenticate


class RegionTokenAuth(HttpBearer):
    """``Authorization: Bearer mrr_…``: the request comes from that region's agent."""

    def authenticate(self, request: HttpRequest, token: str) -> Region:
        return agent_authenticate(token=token)
