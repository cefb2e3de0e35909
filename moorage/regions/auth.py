"""Bearer-token authentication of region agents."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from moorage.regions.models import Region
from moorage.regions.sync import agent_authenticate, agent_authenticate_batched


class RegionTokenAuth(HttpBearer):
    """``Authorization: Bearer mrr_…``: the request comes from that region's agent."""

    def authenticate(self, request: HttpRequest, token: str) -> Region:
        return agent_authenticate(token=token)


class AsyncRegionTokenAuth(HttpBearer):
    """The same, for the async long poll: the look-up runs in a worker thread and gives its
    database connection back at once, since the poll may then wait for a minute."""

    async def authenticate(self, request: HttpRequest, token: str) -> Region:
        return await agent_authenticate_batched(token)
