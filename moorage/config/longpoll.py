"""``GET /api/v1/agent/changes`` served straight from ASGI: the agents' long poll at fleet scale.

The contract is the API operation's (``moorage/regions/api.py``, in the OpenAPI document, and
what the test client and WSGI serve): the region's bearer token, ``since``/``wait``/``nonce``
validated by the same schema, the signed envelope, every error as
``{"code", "message", "detail"}``. Under ``moorage up`` this endpoint answers that path instead,
because a thousand agents re-poll after every change: Django's request handling runs each
middleware hook and signal receiver of a request through ``sync_to_async`` (some twenty
hand-offs between the event loop and threads per poll, several milliseconds of CPU), which
made the answers to one rotation trickle out over seconds. What that machinery does for an
agent's bearer request is done here: the ``ALLOWED_HOSTS`` check and the security headers.

Waiting holds no thread and no connection (:func:`moorage.regions.sync.changes`); the token
look-up and the looks at the log run on :data:`DB_THREADS` threads the polls share. A poll
whose agent disconnects stops waiting at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http.request import split_domain_port, validate_host
from pydantic import ValidationError

from moorage.config.api import (
    AGENT_NOT_AUTHENTICATED,
    AGENT_WWW_AUTHENTICATE,
    INTERNAL_ERROR,
    RETRY_AFTER_SECONDS,
    invalid_request,
    overloaded,
)
from moorage.errors import ApplicationError
from moorage.protocol.constants import KEY_HEADER
from moorage.regions import sync
from moorage.regions.api import ChangesQuery, key_id_from

logger = logging.getLogger(__name__)

#: Threads the long polls of a process share for their database work.
DB_THREADS = 2

Scope = dict[str, Any]


class Answer(Exception):
    """An answer decided before the poll (an error in the API's shape)."""

    def __init__(self, status: int, body: dict[str, Any],
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(body["code"])
        self.status = status
        self.body = body
        self.headers = headers or []


class LongPollEndpoint:
    """An ASGI app for the one path of the agents' long poll."""

    def __init__(self) -> None:
        self._db_threads = ThreadPoolExecutor(max_workers=DB_THREADS,
                                              thread_name_prefix="moorage-long-poll-db")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):  # a GET has no body worth reading
            pass
        token = sync.db_executor.set(self._db_threads)
        try:
            poll = asyncio.ensure_future(self._answer(scope))
            gone = asyncio.ensure_future(_disconnected(receive))
            await asyncio.wait({poll, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not poll.done():  # the agent went away: stop waiting for it
                poll.cancel()
                return
            gone.cancel()
            status, body, headers = poll.result()
        finally:
            sync.db_executor.reset(token)
        await _send(send, status, body, headers)

    async def _answer(self, scope: Scope) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        try:
            if scope["method"] != "GET":
                raise Answer(405, {"code": "method_not_allowed",
                                   "message": "Method not allowed", "detail": {}})
            headers = _headers(scope)
            _check_host(headers)
            bearer = _bearer(headers)
            try:
                query = ChangesQuery.model_validate(
                    dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))))
            except ValidationError as exc:
                raise Answer(422, invalid_request(exc.errors())) from None
            key_id = key_id_from(headers.get(KEY_HEADER.lower()))
            region = await sync.agent_authenticate_batched(bearer)
            return 200, await sync.changes(region=region, since=query.since, wait=query.wait,
                                           nonce=query.nonce, key_id=key_id), []
        except Answer as answer:
            return answer.status, answer.body, answer.headers
        except ApplicationError as exc:
            return exc.status, exc.as_dict(), []
        except (OperationalError, InterfaceError) as exc:
            logger.warning("database unavailable for a long poll: %s",
                           type(exc.__cause__ or exc).__name__)
            return 503, overloaded(), [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
        except Exception:
            logger.exception("unhandled error in a long poll")
            return 500, {"code": "internal_error", "message": INTERNAL_ERROR, "detail": {}}, []


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])}


def _check_host(headers: dict[str, str]) -> None:
    if not _host_allowed(headers.get("host", "")):
        raise Answer(400, {"code": "bad_request",
                           "message": "The request could not be understood.", "detail": {}})


@functools.lru_cache(maxsize=64)
def _host_allowed(host: str) -> bool:
    """Django's ``ALLOWED_HOSTS`` rule (settings do not change while serving: cached)."""
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def _bearer(headers: dict[str, str]) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Answer(401, {"code": "not_authenticated", "message": AGENT_NOT_AUTHENTICATED,
                           "detail": {}}, [(b"www-authenticate", AGENT_WWW_AUTHENTICATE.encode())])
    return token.strip()


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send(send: Any, status: int, body: dict[str, Any],
                headers: list[tuple[bytes, bytes]]) -> None:
    content = json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(content)).encode()),
        *_security_headers(), *headers]})
    await send({"type": "http.response.body", "body": content})


def _security_headers() -> list[tuple[bytes, bytes]]:
    """What Django's security and clickjacking middleware add to every answer."""
    headers = [(b"x-frame-options", settings.X_FRAME_OPTIONS.encode())]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        headers.append((b"referrer-policy", settings.SECURE_REFERRER_POLICY.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append((b"cross-origin-opener-policy",
                        settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()))
    return headers
