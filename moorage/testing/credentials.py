"""Making credentials in tests through the real services."""

from __future__ import annotations

import itertools
from typing import Any

from moorage.credentials import services
from moorage.credentials.models import Credential
from moorage.testing.factories import Member

_counter = itertools.count(1)


def make_credential(owner: Member, **overrides: Any) -> Credential:
    """A container-registry credential (or ``type="git"``) in ``owner``'s account."""
    fields: dict[str, Any] = {
        "type": "container_registry",
        "name": f"registry-{next(_counter)}",
        "server": "registry.example.com",
        "username": "robot",
        "secret": "s3cret-password-value",
    }
    fields.update(overrides)
    return services.credential_create(actor=owner.user, membership=owner.membership, **fields)
