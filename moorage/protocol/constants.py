"""Numbers and prefixes both sides of the sync protocol must agree on."""

from __future__ import annotations

REGION_TOKEN_PREFIX = "mrr_"  # noqa: S105 - a public prefix, not a secret
#: The id of the region key the agent holds, on every request: answers are signed and sealed
#: with that key, which lets a region key be rotated while the agent runs (docs/sync.md).
KEY_HEADER = "X-Moorage-Region-Key"
#: Seconds a long poll waits for a change by default, and at most.
DEFAULT_WAIT = 25
MAX_WAIT = 60
