"""A database holding a value in every sealed field (``sealed_world``), and what each value
is in clear: for the tests of key rotation (I11)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from moorage.apps import services as app_services
from moorage.apps.models import App
from moorage.keys.registry import SEALED_FIELDS
from moorage.regions import secrets as region_secrets
from moorage.regions import services as region_services
from moorage.regions.models import Region
from moorage.sealing import key_id_of
from moorage.testing.cloud import GoogleTokenEndpoint
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.regions import AgentView, deploy_one, make_region


@dataclass
class SealedWorld:
    """What was sealed: ``plain[(field label, row pk)]`` is the value in clear."""

    owner: Member
    app: App
    region: AgentView
    plain: dict[tuple[str, object], bytes] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """The text secrets (for searching outputs); region keys are random bytes."""
        return [v.decode() for (label, _), v in self.plain.items() if "Region" not in label]


def key_ids_in_use() -> set[str]:
    """The ids of the keys that sealed the values in every sealed field."""
    return {key_id_of(getattr(row, s.field)) for s in SEALED_FIELDS for row in s.rows()}


def open_everything() -> dict[tuple[str, object], bytes]:
    """Every sealed value in the database, opened through the registry, as it is now."""
    return {(sealed.label, row.pk): sealed.open(row)
            for sealed in SEALED_FIELDS for row in sealed.rows()}


@pytest.fixture
def sealed_world(owner: Member, key_file: Path,
                 google_tokens: GoogleTokenEndpoint) -> SealedWorld:
    """Credential secrets (registry, git, and a Google key exchanged for a token), the short-
    lived token, app secret env values, a region key, the new key of a pending region-key
    rotation and a swarm region's registry password: one value at least in every sealed
    field, sealed under a key file (``key_file``) in charge of the keyring."""
    region = make_region("eu-1")
    region_services.account_regions_set(actor=owner.user, membership=owner.membership,
                                        slugs=["eu-1"])
    make_credential(owner, name="hub", server="ghcr.io", secret="Sealed-World-Registry-Pw")
    make_credential(owner, name="git", type="git", server="git.example.com",
                    secret="Sealed-World-Git-Token")
    make_credential(owner, name="gar", server="europe-docker.pkg.dev", username="",
                    login_source="gcp_service_account", secret=google_tokens.new_key())
    app = app_services.app_create(
        actor=owner.user, membership=owner.membership, name="web",
        image="ghcr.io/acme/web:1", regions=["eu-1"],
        env=[app_services.EnvInput("DB_PASSWORD", "Sealed-World-Db-Pw", secret=True),
             app_services.EnvInput("API_KEY", "Sealed-World-Api-Key", secret=True),
             app_services.EnvInput("LOG_LEVEL", "info")],
    )
    deploy_one(owner, app.pk)
    region_services.region_rotate_key(actor=None, slug="eu-1")
    # A swarm region's registry password. region_create checks a registry login with the
    # registry itself; there is none here, so the sealed value is set as that service seals it.
    swarm = make_region("sw-1", runtime="swarm")
    swarm_region = Region.objects.get(slug=swarm.slug)
    swarm_region.registry, swarm_region.registry_username = "registry.example.com", "pusher"
    swarm_region.registry_password_sealed = region_secrets.seal_registry_password(
        swarm_region, "Sealed-World-Region-Registry-Pw")
    swarm_region.registry_revision = 1
    swarm_region.save()
    world = SealedWorld(owner=owner, app=app, region=region, plain=open_everything())
    assert {label for label, _ in world.plain} == {s.label for s in SEALED_FIELDS}, \
        "the world must exercise every sealed field"
    return world
