"""Talking to the control plane: the agent endpoints, verified answers, sorted errors.

Every answer to ``snapshot`` and ``changes`` is a signed envelope (``docs/sync.md``); the
client verifies its MAC with the region key before looking inside, then checks it is the kind
of answer asked for, for this region (and, for changes, for the ``since`` asked), so the sync
loop only ever sees authentic payloads of the right shape at the top level. The replica checks
each change as it applies it.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx

from moorage import __version__, protocol
from moorage.agent.config import AgentConfig
from moorage.agent.errors import (
    AgentAuthError,
    MalformedPayload,
    ProtocolError,
    TransientError,
)

AUTH_CODES = frozenset({"not_authenticated", "region_token_invalid", "region_token_revoked"})
# The agent's region key is not (or no longer) the region's: retrying cannot help.
KEY_CODES = frozenset({"region_key_unknown"})
# Rate limiting and request timeouts pass; they are not the agent's fault.
TRANSIENT_STATUSES = frozenset({408, 429})
WRITE_TIMEOUT = 10.0
#: A server's Retry-After is honoured up to this many seconds.
MAX_RETRY_AFTER = 60.0


class ControlPlaneClient:
    """A synchronous client for one region's agent endpoints.

    ``region`` is the slug answers must carry: ``config.region`` if pinned, else ``None``
    until the sync loop learns it from the replica or the first snapshot and sets it.
    ``transport`` is for tests (``httpx.MockTransport``); proxies from the environment are
    ignored (``trust_env=False``) since the configuration is passed in, not discovered.
    """

    def __init__(
        self, config: AgentConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.config = config
        self.region: str | None = config.region
        self._key = config.region_key
        self._http = httpx.Client(
            base_url=config.api_url,
            headers={
                "Authorization": f"Bearer {config.token}",
                # Answers are signed and sealed with the key the agent holds (a region key
                # can be rotated while the agent runs: docs/sync.md).
                protocol.KEY_HEADER: config.region_key.id,
                "Accept": "application/json",
                "User-Agent": f"moorage-agent/{__version__}",
            },
            timeout=httpx.Timeout(connect=config.connect_timeout, read=config.read_timeout,
                                  write=WRITE_TIMEOUT, pool=config.connect_timeout),
            trust_env=False,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endpoints ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The region's whole state, verified; the caller replaces its replica with it."""
        nonce = _nonce()
        response = self._request("GET", "snapshot", params={"nonce": nonce})
        payload = self._verified(response, kind="snapshot")
        _require_list(payload, "accounts")
        _require_list(payload, "credentials")
        _require_nonce(payload, nonce)
        return payload

    def changes(self, since: int, wait: int) -> dict[str, Any]:
        """Changes after ``since``, waiting up to ``wait`` s for one; verified.

        An answer for another ``since`` is refused: applying it could skip or replay changes.
        """
        nonce = _nonce()
        response = self._request("GET", "changes",
                                 params={"since": since, "wait": wait, "nonce": nonce})
        payload = self._verified(response, kind="changes")
        if _require_int(payload, "since") != since:
            raise MalformedPayload(
                f"the answer is for changes since {payload['since']}, not since {since}")
        if not isinstance(payload.get("snapshot_required"), bool):
            raise MalformedPayload("the answer has no snapshot_required flag")
        _require_list(payload, "changes")
        if not payload["snapshot_required"] and payload["revision"] < since:
            raise MalformedPayload(
                f"the answer's revision {payload['revision']} is before {since} and does not "
                "ask for a snapshot")
        _require_nonce(payload, nonce)
        return payload

    def ack(
        self, revision: int, credentials: dict[int, int], removed: list[int], snapshot: bool
    ) -> None:
        """Report what the replica holds; safe to repeat (the server's ack is idempotent).

        A snapshot ack also proves which region key the agent holds, which completes a
        rotation of the region key on the control plane's side.
        """
        body: dict[str, Any] = {
            "revision": revision,
            "snapshot": snapshot,
            "credentials": {str(k): v for k, v in sorted(credentials.items())},
            "removed": sorted(removed),
        }
        if snapshot and self.region is not None:
            body["key_id"] = self._key.id
            body["key_proof"] = protocol.key_proof(self._key, region=self.region)
        self._request("POST", "ack", json=body)

    def report(self, deployment_id: int, body: dict[str, Any]) -> None:
        """Report a deployment's progress (``POST /agent/deployments/{id}/events``).

        One attempt: the deployer decides what to retry (it keeps final reports in the
        replica and retries them with backoff). Raises like every call:
        :class:`TransientError` (retry later), :class:`ProtocolError` (the control plane
        refuses this report, e.g. an unknown deployment: retrying will not help),
        :class:`AgentAuthError` (fatal).
        """
        if "status" not in body:
            raise ValueError("a deployment report needs a status")
        self._request("POST", f"deployments/{int(deployment_id)}/events", json=body)

    def log_chunk(self, request_id: int, body: dict[str, Any]) -> None:
        """Upload one chunk of the answer to a logs request (``POST /agent/logs/{id}``).

        ``body`` is ``{"seq", "lines", "final", …}`` (``docs/sync.md``, "App logs"). One
        attempt; raises like every call: a 404 (:class:`ProtocolError`) means the request is
        gone (read, expired, or not this region's), so the answer stops there.
        """
        if "seq" not in body:
            raise ValueError("a log chunk needs its sequence number")
        self._request("POST", f"logs/{int(request_id)}", json=body)

    def runtime_report(self, body: dict[str, Any]) -> None:
        """Report what the runtime runs (``POST /agent/runtime``): nodes, services, and the
        credential revision each service's registry auth carries. One attempt; raises like
        every call."""
        self._request("POST", "runtime", json=body)

    def drained(self) -> None:
        """Say that the draining region runs no app any more (``POST /agent/drained``); safe
        to repeat. One attempt; raises like every call."""
        self._request("POST", "drained")

    def source_archive(self, archive_id: int, dest: Path, *, max_bytes: int) -> None:
        """Download an uploaded source (``GET /agent/sources/{id}``) into the file ``dest``.

        Streams to disk; an answer longer than ``max_bytes`` is cut off with a
        :class:`ProtocolError` (the caller checks the size and SHA-256 it expects anyway).
        Raises like every call.
        """
        path = f"sources/{int(archive_id)}"
        try:
            with self._http.stream("GET", path, headers={"Accept": "application/gzip"}) \
                    as response:
                if response.is_error:
                    response.read()
                    _raise_for_status(response)
                written = 0
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes():
                        written += len(chunk)
                        if written > max_bytes:
                            raise ProtocolError(
                                f"The source archive is larger than {max_bytes} bytes.",
                                status=response.status_code, code="source_too_large")
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from None

    # -- plumbing ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            # The exception names the URL, never the headers: no token in here.
            raise TransientError(f"{type(exc).__name__}: {exc}") from None
        _raise_for_status(response)
        return response

    def _verified(self, response: httpx.Response, *, kind: str) -> dict[str, Any]:
        try:
            envelope = response.json()
        except ValueError:
            raise MalformedPayload("the answer is not JSON") from None
        payload = protocol.verify(envelope, self._key)
        if payload.get("kind") != kind:
            raise MalformedPayload(f"expected a {kind} payload, got {payload.get('kind')!r}")
        region = payload.get("region")
        if not isinstance(region, str) or not region:
            raise MalformedPayload("the payload names no region")
        if self.region is not None and region != self.region:
            raise MalformedPayload(
                f"the payload is for region {region!r}, this agent serves {self.region!r}")
        if _require_int(payload, "revision") < 0:
            raise MalformedPayload("the payload's revision is negative")
        return payload


def _nonce() -> str:
    """A fresh value the control plane must echo inside the signed payload."""
    return secrets.token_urlsafe(16)


def _require_nonce(payload: dict[str, Any], nonce: str) -> None:
    # A signed answer recorded earlier (an old snapshot, say) carries another nonce: replaying
    # it could roll the replica back to credentials that were since rotated.
    if payload.get("nonce") != nonce:
        raise MalformedPayload("the answer does not echo this request's nonce (a replay?)")


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    code, message = _error_of(response)
    if status == 401 and code in AUTH_CODES:
        if code == "region_token_revoked":
            hint = "the region token was rotated or the region removed"
        else:
            hint = "the region token is wrong"
        raise AgentAuthError(f"The control plane refused the agent: {hint} ({message})",
                             code=code)
    if code in KEY_CODES:
        raise AgentAuthError(
            "The control plane refused the agent: its region key is not the region's; give it "
            f"the key file of 'moorage regions add' or 'rotate-key' ({message})", code=code)
    if status >= 500 or status in TRANSIENT_STATUSES:
        raise TransientError(f"HTTP {status}" + (f" {code}: {message}" if code else ""),
                             retry_after=_retry_after(response))
    raise ProtocolError(
        f"The control plane answered HTTP {status}" + (f" {code}: {message}" if code else ""),
        status=status, code=code,
    )


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the delta form; an HTTP date is ignored), at most a minute."""
    raw = response.headers.get("Retry-After", "").strip()
    if not raw.isdigit():
        return None
    return min(float(raw), MAX_RETRY_AFTER)


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` of an API error body, or empty strings for anything else."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    code = body.get("code")
    message = body.get("message")
    return (code if isinstance(code, str) else "",
            message[:300] if isinstance(message, str) else "")


def _require_int(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedPayload(f"the payload's {name} is not an integer")
    return value


def _require_list(payload: dict[str, Any], name: str) -> list[Any]:
    value = payload.get(name)
    if not isinstance(value, list):
        raise MalformedPayload(f"the payload's {name} is not a list")
    return value
