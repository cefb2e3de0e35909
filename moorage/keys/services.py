"""Rotating the control plane's keyring: re-seal every sealed value, retire old keys, count.

Everything here walks :data:`moorage.keys.registry.SEALED_FIELDS`, so a value is re-sealed,
counted and protected from a retirement whatever model holds it (invariant I11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import reduce
from operator import or_

from django.db import transaction
from django.db.models import Q

from moorage.errors import Conflict, NotFound
from moorage.keys import keyring
from moorage.keys.registry import SEALED_FIELDS, SealedField
from moorage.sealing import SealedDataError, generate_key, seal

RESEAL_BATCH = 200


@dataclass(frozen=True)
class KeyCount:
    """One key of the keyring and how many sealed values need it."""

    id: str
    primary: bool
    sealed: int


@dataclass(frozen=True)
class KeyUsage:
    """What each key of the keyring seals, over every sealed field.

    ``unknown`` counts the values no key of the keyring can open (sealed with a key that is
    not in it, or not sealed values at all): they are lost until the key is put back.
    """

    keys: list[KeyCount]
    unknown: int
    unknown_by_field: dict[str, int]

    def sealed_with(self, key_id: str) -> int:
        return next((k.sealed for k in self.keys if k.id == key_id), 0)


def keyring_usage() -> KeyUsage:
    """Count, without opening anything, how many values each key seals."""
    ring = keyring.keyring(reload=True)
    counts = dict.fromkeys((k.id for k in ring.keys), 0)
    unknown: dict[str, int] = {}
    for sealed in SEALED_FIELDS:
        rows = sealed.model._default_manager.exclude(**{sealed.field: ""})
        for key_id in counts:
            counts[key_id] += rows.filter(sealed.sealed_with(key_id)).count()
        lost = rows.exclude(_any_of(sealed, list(counts))).count()
        if lost:
            unknown[sealed.label] = lost
    return KeyUsage(
        keys=[KeyCount(id=k, primary=k == ring.primary.id, sealed=n) for k, n in counts.items()],
        unknown=sum(unknown.values()), unknown_by_field=unknown,
    )


def _any_of(sealed: SealedField, key_ids: list[str]) -> Q:
    return reduce(or_, (sealed.sealed_with(k) for k in key_ids))


@dataclass(frozen=True)
class Reseal:
    """What a re-seal did. ``unopenable`` names the values it had to leave as they were."""

    resealed: int
    unopenable: list[str] = field(default_factory=list)


def sealed_values_reseal(
    *, batch_size: int = RESEAL_BATCH, progress: Callable[[int, int], None] | None = None
) -> Reseal:
    """Re-seal every value not sealed with the primary key, field by field.

    Works in small transactions so the control plane keeps serving: each batch locks only its
    rows, and a row changed meanwhile is re-sealed from its current value. A value that does
    not open is left as it is and named in the result (the retirement of its key is then
    refused, so it is not lost for good).
    """
    primary = keyring.keyring(reload=True).primary
    todo = [(sealed, sealed.rows().exclude(sealed.sealed_with(primary.id)))
            for sealed in SEALED_FIELDS]
    total = sum(rows.count() for _, rows in todo)
    done = 0
    unopenable: list[str] = []
    for sealed, rows in todo:
        skipped: set[object] = set()
        while True:
            with transaction.atomic():
                batch = list(rows.select_for_update(of=("self",)).exclude(pk__in=skipped)
                             .order_by("pk")[:batch_size])
                for row in batch:
                    try:
                        plaintext = sealed.open(row)
                    except SealedDataError as exc:
                        skipped.add(row.pk)
                        unopenable.append(f"{sealed.describe(row)}: {exc}")
                        continue
                    # With this primary, not whatever is primary now: a concurrent rotation
                    # would otherwise keep these rows out of step with the query forever.
                    setattr(row, sealed.field, seal(primary, plaintext, sealed.aad(row)))
                    row.save(update_fields=[sealed.field])
            if not batch:
                break
            done += len(batch)
            if progress is not None:
                progress(done, max(total, done))
    return Reseal(resealed=done - len(unopenable), unopenable=unopenable)


@dataclass(frozen=True)
class Rotation:
    """What ``moorage keys rotate`` did."""

    primary: str
    added: bool  # False when MOORAGE_KEYS is in charge and the operator added the key
    resealed: int
    unopenable: list[str]


def keyring_rotate(*, progress: Callable[[int, int], None] | None = None) -> Rotation:
    """Make a new primary key (key file) and re-seal every sealed value with the primary.

    With ``MOORAGE_KEYS`` the operator adds the new key first in the variable and restarts;
    this then only re-seals. Run again after an interruption, it resumes re-sealing instead
    of adding another key.
    """
    ring = keyring.keyring(reload=True)
    file = keyring.key_file()
    added = False
    usage = keyring_usage()
    older = sum(k.sealed for k in usage.keys if not k.primary)
    if file is not None and not older:
        # A rotation that was interrupted (something still sealed with an older key of the
        # keyring) is resumed, not started again with yet another key.
        file.add_primary(generate_key())
        added = True
        ring = keyring.keyring(reload=True)
    result = sealed_values_reseal(progress=progress)
    return Rotation(primary=ring.primary.id, added=added, resealed=result.resealed,
                    unopenable=result.unopenable)


def keyring_retire(*, key_id: str) -> None:
    """Remove a key from the key file; refused while any sealed value still needs it."""
    ring = keyring.keyring(reload=True)
    if ring.get(key_id) is None:
        raise NotFound(f"No key {key_id!r} in the keyring.", code="key_not_found")
    if ring.primary.id == key_id:
        raise Conflict(
            f"Key {key_id!r} is the primary key; run 'moorage keys rotate' first.",
            code="key_is_primary",
        )
    still = keyring_usage().sealed_with(key_id)
    if still:
        raise Conflict(
            f"{still} secret(s) are still sealed with key {key_id!r}; run 'moorage keys rotate' "
            "to re-seal them first.",
            code="key_in_use", detail={"sealed": still},
        )
    file = keyring.key_file()
    if file is None:
        raise Conflict(
            f"Nothing is sealed with {key_id!r} any more: remove it from MOORAGE_KEYS and "
            "restart.",
            code="key_in_environment",
        )
    file.remove(key_id)
    keyring.keyring(reload=True)
