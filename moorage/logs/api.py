"""REST endpoints of app logs: members ask and read; region agents answer."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from ninja.params import P, PathEx

from moorage.accounts.models import Membership
from moorage.logs import services
from moorage.logs.choices import LogStatus
from moorage.protocol.logs import (
    CUT_MARK,
    DEFAULT_TAIL,
    MAX_CHUNK_LINES,
    MAX_FOLLOW_SECONDS,
    MAX_LINE_CHARS,
    MAX_TAIL,
)
from moorage.regions.auth import RegionTokenAuth
from moorage.regions.models import Region
from moorage.schemas import StrictIn

#: Ids are 64-bit: a larger one is a 422, not a database error.
ObjectId = PathEx[int, P(ge=0, le=2**63 - 1)]

router = Router(tags=["logs"])
agent_router = Router(tags=["agent"], auth=RegionTokenAuth())

TIMESTAMP = Field(None, max_length=40, description="RFC 3339, UTC, up to nanoseconds: the "
                  "cursor of a previous answer.")


class LogsIn(StrictIn):
    region: str | None = Field(None, max_length=32,
                               description="One region's agent; default every region of the app.")
    tail: int | None = Field(DEFAULT_TAIL, ge=0, le=MAX_TAIL,
                             description="The newest lines; null: every line after since.")
    since: str | None = TIMESTAMP
    follow: int = Field(0, ge=0, le=MAX_FOLLOW_SECONDS,
                        description="Seconds the agent keeps sending new lines.")


class LogLineOut(Schema):
    at: str = Field(..., description="The engine's timestamp of the line.")
    text: str


class LogErrorOut(Schema):
    code: str
    message: str


class LogAnswerOut(Schema):
    id: int
    region: str
    status: LogStatus
    finished: bool
    follow: int
    lines: list[LogLineOut]
    next: int = Field(..., description="Ask with ?after= this for the lines that come next.")
    cursor: str | None = Field(..., description="Once finished: since= this continues.")
    truncated: bool = Field(..., description="The answer reached its size limit.")
    error: LogErrorOut | None


class ErrorIn(StrictIn):
    code: str = Field(..., max_length=64)
    message: str = Field("", max_length=2000)


class ReadQuery(Schema):
    after: int = Field(0, ge=0)


class ChunkLineIn(StrictIn):
    at: str = Field("", max_length=40)
    text: str = Field(..., max_length=MAX_LINE_CHARS + len(CUT_MARK))


class ChunkIn(StrictIn):
    seq: int = Field(..., ge=0)
    lines: list[ChunkLineIn] = Field(default_factory=list, max_length=MAX_CHUNK_LINES)
    final: bool = False
    cursor: str | None = TIMESTAMP
    truncated: bool = False
    error: ErrorIn | None = None


def answer_out(answer: services.LogAnswer) -> dict[str, Any]:
    return {
        "id": answer.id, "region": answer.region, "status": answer.status,
        "finished": answer.finished, "follow": answer.follow,
        "lines": [{"at": line.at, "text": line.text} for line in answer.lines],
        "next": answer.next, "cursor": answer.cursor, "truncated": answer.truncated,
        "error": {"code": answer.error_code, "message": answer.error_message}
        if answer.error_code else None,
    }


def _membership(request: HttpRequest) -> Membership:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    return membership


@router.post("/apps/{app_id}/logs", response={201: list[LogAnswerOut]},
             summary="Ask the app's regions for its logs",
             description="One request per region; read each with GET "
                         "/apps/{app_id}/logs/{id}?after=N until it is finished.")
def logs_request(request: HttpRequest, app_id: ObjectId, payload: LogsIn
                 ) -> Status[list[dict[str, Any]]]:
    membership = _membership(request)
    created = services.log_request_create(
        actor=membership.user, membership=membership, app_id=app_id, region=payload.region,
        tail=payload.tail, since=payload.since, follow=payload.follow)
    return Status(201, [answer_out(services.LogAnswer(
        id=r.pk, region=r.region.slug, status=r.status, follow=r.follow)) for r in created])


@router.get("/apps/{app_id}/logs/{request_id}", response=LogAnswerOut,
            summary="The lines of a logs request after an index (the row goes once finished)")
def logs_read(request: HttpRequest, app_id: ObjectId, request_id: ObjectId,
              query: Query[ReadQuery]) -> dict[str, Any]:
    membership = _membership(request)
    return answer_out(services.log_request_collect(
        membership=membership, app_id=app_id, request_id=request_id, after=query.after))


@agent_router.post("/agent/logs/{request_id}", response={204: None},
                   summary="An agent uploads a chunk of its answer to a logs request")
def agent_log_chunk(request: HttpRequest, request_id: ObjectId, payload: ChunkIn
                    ) -> Status[None]:
    region: Region = request.auth  # type: ignore[attr-defined]
    services.log_chunk_receive(region=region, request_id=request_id, chunk=services.Chunk(
        seq=payload.seq, lines=[(line.at, line.text) for line in payload.lines],
        final=payload.final, cursor=payload.cursor, truncated=payload.truncated,
        error_code=payload.error.code if payload.error else "",
        error_message=payload.error.message if payload.error else ""))
    return Status(204, None)
