"""REST endpoints: the agents' sync channel, and the regions as members see them."""

from __future__ import annotations

import re
from datetime import datetime

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from pydantic import StrictBool, StrictStr

from moorage.accounts.models import Membership
from moorage.accounts.permissions import Action, require, require_platform_staff
from moorage.credentials.selectors import credential_get
from moorage.errors import ValidationFailed
from moorage.protocol.constants import DEFAULT_WAIT, KEY_HEADER, MAX_WAIT
from moorage.protocol.runtime_report import MAX_NODES, MAX_SERVICES, RuntimeReport
from moorage.regions import runtime, selectors, services, sync
from moorage.regions.auth import AsyncRegionTokenAuth, RegionTokenAuth
from moorage.regions.models import Region
from moorage.schemas import MAX_ID, CredentialRevision, LogRevision, ObjectId, StrictIn
from moorage.sealing.keyring import KEY_ID_PATTERN

#: More replicas than any report can honestly hold (the App model's bound is far lower).
MAX_REPLICAS_REPORTED = 100_000

agent_router = Router(tags=["agent"], auth=RegionTokenAuth())
router = Router(tags=["regions"])


class Envelope(Schema):
    payload: str
    mac: str


NONCE = Field(..., min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
              description="Echoed inside the signed answer, so an old answer cannot be replayed.")


class SnapshotQuery(Schema):
    nonce: str = NONCE


class ChangesQuery(Schema):
    since: int = Field(..., ge=0, le=MAX_ID)
    wait: int = Field(DEFAULT_WAIT, ge=0, le=MAX_WAIT)
    nonce: str = NONCE


class AckIn(Schema):
    revision: LogRevision
    snapshot: bool = False
    credentials: dict[ObjectId, CredentialRevision] = Field(
        default_factory=dict, description="Credential id → the revision the agent holds.")
    removed: list[ObjectId] = Field(default_factory=list)
    key_id: str | None = Field(None, pattern=KEY_ID_PATTERN,
                               description="The region key the agent holds (snapshot acks).")
    key_proof: str | None = Field(None, min_length=1, max_length=128,
                                  description="Proof that it holds that key (docs/sync.md).")


def _region(request: HttpRequest) -> Region:
    region: Region = request.auth  # type: ignore[attr-defined]
    return region


def _key_id(request: HttpRequest) -> str | None:
    """The region key the agent says it holds (``X-Moorage-Region-Key``), if it says."""
    return key_id_from(request.headers.get(KEY_HEADER))


def key_id_from(key_id: str | None) -> str | None:
    """The value of the ``X-Moorage-Region-Key`` header, checked to be a key id."""
    if key_id is not None and not re.match(KEY_ID_PATTERN, key_id):
        raise ValidationFailed(f"The {KEY_HEADER} header is not a key id.",
                               code="region_key_id_invalid")
    return key_id


@agent_router.get("/agent/snapshot", response=Envelope, summary="The region's whole state")
def agent_snapshot(request: HttpRequest, query: Query[SnapshotQuery]) -> dict[str, str]:
    return sync.snapshot(region=_region(request), nonce=query.nonce, key_id=_key_id(request))


@agent_router.get("/agent/changes", response=Envelope, auth=AsyncRegionTokenAuth(),
                  summary="Changes after a revision (long poll)")
async def agent_changes(request: HttpRequest, query: Query[ChangesQuery]) -> dict[str, str]:
    # Async: a waiting poll holds no thread and no database connection (docs/sync.md).
    return await sync.changes(region=_region(request), since=query.since, wait=query.wait,
                              nonce=query.nonce, key_id=_key_id(request))


@agent_router.post("/agent/ack", response={204: None}, summary="What the agent holds now")
def agent_ack(request: HttpRequest, payload: AckIn) -> Status[None]:
    sync.ack(region=_region(request), revision=payload.revision,
             credentials=payload.credentials, removed=payload.removed,
             snapshot=payload.snapshot, key_id=payload.key_id, key_proof=payload.key_proof)
    return Status(204, None)


@agent_router.post("/agent/drained", response={204: None},
                   summary="The agent removed every app of its draining region")
def agent_drained(request: HttpRequest) -> Status[None]:
    # Scoped by the token: an agent can only say this of its own region.
    services.region_drained(region=_region(request))
    return Status(204, None)


_TEXT = r"^[^\x00]*$"  # PostgreSQL text holds no NUL


class NodeIn(StrictIn):
    id: str = Field(..., min_length=1, max_length=255, pattern=_TEXT)
    hostname: str = Field("", max_length=255, pattern=_TEXT)
    address: str = Field("", max_length=255, pattern=_TEXT)
    role: str = Field(..., min_length=1, max_length=255, pattern=_TEXT)
    state: str = Field(..., min_length=1, max_length=255, pattern=_TEXT)
    availability: str = Field(..., min_length=1, max_length=255, pattern=_TEXT)
    leader: bool = False


class ServiceIn(StrictIn):
    account_id: ObjectId
    app_id: ObjectId
    deployment_id: LogRevision
    name: str = Field(..., min_length=1, max_length=255, pattern=_TEXT)
    running: int = Field(..., ge=0, le=MAX_REPLICAS_REPORTED)
    desired: int = Field(..., ge=0, le=MAX_REPLICAS_REPORTED)
    credential_id: ObjectId | None = None
    credential_revision: CredentialRevision | None = None


class RuntimeReportIn(StrictIn):
    runtime: str = Field(..., min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")
    nodes: list[NodeIn] = Field(default_factory=list, max_length=MAX_NODES)
    services: list[ServiceIn] = Field(default_factory=list, max_length=MAX_SERVICES)


@agent_router.post("/agent/runtime", response={204: None},
                   summary="What the region's runtime runs (nodes, services, credentials)")
def agent_runtime(request: HttpRequest, payload: RuntimeReportIn) -> Status[None]:
    try:
        report = RuntimeReport.from_payload(payload.dict())
    except ValueError as exc:
        raise ValidationFailed(f"The runtime report is malformed: {exc}.",
                               code="runtime_report_invalid") from None
    runtime.runtime_report_record(region=_region(request), report=report)
    return Status(204, None)


class NodeOut(Schema):
    id: str
    hostname: str
    address: str
    role: str
    state: str
    availability: str
    leader: bool


class RegionOut(Schema):
    slug: str
    name: str
    runtime: str
    registry: str | None = Field(..., description="The region registry (swarm regions).")
    nodes: list[NodeOut] = Field(..., description="The swarm's nodes as the agent reported "
                                                  "them last (none for a docker region).")
    runtime_reported_at: datetime | None = Field(
        ..., description="When the agent last reported what runs (null: never).")
    status: str
    last_seen_at: datetime | None
    applied_revision: int
    lag_revisions: int
    lag_seconds: float
    enabled: bool = Field(..., description="Whether the token's account deploys here.")
    draining: bool = Field(..., description="Being removed: its agent removes every app.")
    drained_at: datetime | None = Field(..., description="When its agent reported that "
                                                          "nothing of it runs any more.")


class ReplicaOut(Schema):
    region: str
    status: str
    revision: int | None
    applied_at: datetime | None
    in_sync: bool
    services: int = Field(..., description="Services in the region whose registry auth "
                                           "is this credential.")
    services_applied: int = Field(..., description="Of those, the ones carrying its current "
                                                   "revision (I12).")


class CredentialSyncOut(Schema):
    credential_id: int
    revision: int
    synced_regions: int
    enabled_regions: int
    regions: list[ReplicaOut]


@router.get("/regions", response=list[RegionOut], summary="Regions and their sync state")
def regions_list(request: HttpRequest) -> list[RegionOut]:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    require(membership, Action.VIEW)
    return [
        RegionOut(slug=s.region.slug, name=s.region.name, runtime=s.region.runtime,
                  registry=s.region.registry or None,
                  nodes=[NodeOut(**n) for n in s.nodes],
                  runtime_reported_at=s.region.runtime_reported_at,
                  status=s.status.value, last_seen_at=s.region.last_seen_at,
                  applied_revision=s.region.applied_revision, lag_revisions=s.lag_revisions,
                  lag_seconds=round(s.lag_seconds, 3), enabled=s.enabled,
                  draining=s.region.draining_since is not None,
                  drained_at=s.region.drained_at)
        for s in selectors.region_states(account=membership.account)
    ]


@router.get("/credentials/{credential_id}/sync", response=CredentialSyncOut,
            summary="Which revision of a credential each region holds")
def credential_sync(request: HttpRequest, credential_id: int) -> CredentialSyncOut:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    require(membership, Action.VIEW)
    credential = credential_get(account=membership.account, credential_id=credential_id)
    states = selectors.credential_sync_states(credential=credential)
    return CredentialSyncOut(
        credential_id=credential.pk, revision=credential.revision,
        synced_regions=sum(1 for s in states if s.in_sync), enabled_regions=len(states),
        regions=[ReplicaOut(region=s.region.slug, status=s.region.status.value,
                            revision=s.revision, applied_at=s.applied_at, in_sync=s.in_sync,
                            services=s.services, services_applied=s.services_applied)
                 for s in states],
    )


class RemovalQuery(Schema):
    drain: bool = Field(False, description="Have the region's agent stop and remove every "
                                           "app first; the region goes once it reported.")
    force: bool = Field(False, description="Remove now, leaving its containers behind.")


class RemovalOut(Schema):
    region: str
    status: str = Field(..., description="`draining`: the agent was asked to remove `apps` "
                                         "and has not reported yet; once `GET /regions` "
                                         "shows `drained_at`, ask again to finish.")
    apps: list[str]
    draining_since: datetime | None


@router.delete("/regions/{slug}", response={202: RemovalOut, 204: None},
               summary="Remove a region (platform staff)")
def region_remove(request: HttpRequest, slug: str,
                  query: Query[RemovalQuery]) -> Status[RemovalOut | None]:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    require_platform_staff(membership.user)
    result = services.region_remove(actor=membership.user, slug=slug, drain=query.drain,
                                    force=query.force)
    if result.removed:
        return Status(204, None)
    return Status(202, RemovalOut(region=slug, status="draining", apps=result.apps,
                                  draining_since=result.draining_since))


class AccountRegionOut(Schema):
    slug: str
    name: str
    enabled: bool
    draining: bool


class AppInRegionOut(Schema):
    app_id: int
    app: str
    region: str
    deployment_id: int
    number: int


class AccountRegionsOut(Schema):
    regions: list[AccountRegionOut]
    stopped: list[AppInRegionOut] = Field(
        ..., description="Apps this change stopped (their deployments ended as `stopped`).")
    redeployable: list[AppInRegionOut] = Field(
        ..., description="Apps stopped when a region was disabled, in a region enabled now: "
                         "PUT again with `redeploy: true` to deploy them.")
    redeployed: list[int] = Field(..., description="Deployments this change started.")


class AccountRegionsIn(StrictIn):
    regions: list[StrictStr] = Field(..., max_length=1000,
                                     description="Every region the account deploys to.")
    confirm: StrictBool = Field(False, description="Go on although apps stop (else 409 "
                                                   "`region_disable_stops_apps`).")
    redeploy: StrictBool = Field(False, description="Deploy again the apps stopped when a "
                                                    "region now enabled was disabled.")


def _account_regions(membership: Membership,
                     change: services.AccountRegionsChange | None = None) -> AccountRegionsOut:
    account = membership.account
    enabled = set(account.region_links.values_list("region_id", flat=True))
    regions = [AccountRegionOut(slug=r.slug, name=r.name, enabled=r.pk in enabled,
                                draining=r.draining_since is not None)
               for r in Region.objects.order_by("slug")]
    redeployable = change.redeployable if change is not None \
        else services.account_regions_redeployable(account=account)
    return AccountRegionsOut(
        regions=regions,
        stopped=[AppInRegionOut(**vars(a)) for a in (change.stopped if change else [])],
        redeployable=[AppInRegionOut(**vars(a)) for a in redeployable],
        redeployed=[d.pk for d in (change.redeployed if change else [])])


@router.get("/account/regions", response=AccountRegionsOut,
            summary="The regions the account deploys to")
def account_regions_get(request: HttpRequest) -> AccountRegionsOut:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    require(membership, Action.VIEW)
    return _account_regions(membership)


@router.put("/account/regions", response=AccountRegionsOut,
            summary="Choose the regions the account deploys to (admins and owners)")
def account_regions_put(request: HttpRequest, payload: AccountRegionsIn) -> AccountRegionsOut:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    change = services.account_regions_change(
        actor=membership.user, membership=membership, slugs=payload.regions,
        confirm=payload.confirm, redeploy=payload.redeploy)
    return _account_regions(membership, change)
