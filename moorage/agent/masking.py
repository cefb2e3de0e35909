"""Masking an app's secret values in what it prints, before the text leaves the region.

An app may print its environment (a debug dump, a crash report), so the secret env values of
its deployments are masked wherever the agent forwards the app's own output: the last lines
quoted when a container exits during a deploy, and the lines of a logs request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"


def secret_env_values(payload: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The values of ``env`` whose variables the DEPLOYMENT ``payload`` marks secret, longest
    first (so a secret that contains another is masked whole)."""
    names = {item["name"] for item in payload.get("env") or [] if "secret" in item}
    return sorted({v for k, v in env.items() if k in names and v}, key=len, reverse=True)


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` (longest first, as given) replaced by ``***``."""
    for value in secrets:
        text = text.replace(value, MASK)
    return text
