"""The wire contract between the control plane and its region agents, without Django.

Both sides import this package and nothing of each other (a test enforces it): the control
plane builds and signs what the agents verify and apply, so the two cannot drift apart.
``docs/sync.md`` describes the protocol in words.

- :mod:`.constants` — the region token's prefix, the region-key header, the long poll's waits;
- :mod:`.envelopes` — signed envelopes (HMAC-SHA256 with a key derived from the region key),
  and the proof that an agent holds a region key;
- :mod:`.associated_data` — what a value sealed for a region is bound to;
- :mod:`.enums` — the names that travel: runtimes, pull modes, report statuses, change ops;
- :mod:`.build` — a deployment's ``build`` object, parsed and checked;
- :mod:`.logs` — app log requests, their bounds and the follow cursor;
- :mod:`.credential` — a CREDENTIAL's ``expires_at`` (short-lived tokens);
- :mod:`.region` — the region's own settings (runtime, region registry);
- :mod:`.readiness` — an app's readiness timeout, its bounds and its default;
- :mod:`.runtime_report` — what an agent reports about its runtime (nodes, services, I12).
"""

from moorage.protocol.associated_data import (
    region_env_aad,
    region_registry_aad,
    region_secret_aad,
)
from moorage.protocol.constants import DEFAULT_WAIT, KEY_HEADER, MAX_WAIT, REGION_TOKEN_PREFIX
from moorage.protocol.envelopes import (
    TamperedPayload,
    key_proof,
    key_proof_valid,
    mac_key,
    sign,
    verify,
)

__all__ = [
    "DEFAULT_WAIT",
    "KEY_HEADER",
    "MAX_WAIT",
    "REGION_TOKEN_PREFIX",
    "TamperedPayload",
    "key_proof",
    "key_proof_valid",
    "mac_key",
    "region_env_aad",
    "region_registry_aad",
    "region_secret_aad",
    "sign",
    "verify",
]
