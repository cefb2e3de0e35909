"""Making and recognising personal API tokens.

A token reads ``mrg_<43 url-safe characters>`` (256 random bits). The fixed prefix lets
secret scanners spot a leaked token; only its SHA-256 digest is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_PREFIX = "mrg_"  # noqa: S105 - a marker, not a secret
_TOKEN_RE = re.compile(r"^mrg_[A-Za-z0-9_-]{43}$")
DISPLAY_PREFIX_LENGTH = 12


def new_token() -> str:
    """A fresh random token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_well_formed(token: str) -> bool:
    """Whether ``token`` has the shape of a Moorage token (before any database look-up)."""
    return bool(_TOKEN_RE.match(token))


def display_prefix(token: str) -> str:
    """The start of a token, safe to show so people can tell their tokens apart."""
    return token[:DISPLAY_PREFIX_LENGTH]
