"""Invariant I1 under random and concurrent sequences: while an account has a container-
registry credential, exactly one is its default; git credentials never are."""

from __future__ import annotations

import random
import threading

import pytest
from django.db import close_old_connections, connection
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from moorage.credentials import services
from moorage.credentials.models import Credential
from moorage.errors import ApplicationError
from moorage.testing import factories
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member


def assert_one_default(member: Member) -> None:
    registry = Credential.objects.filter(account=member.account, type="container_registry")
    defaults = list(registry.filter(is_default=True).values_list("id", flat=True))
    assert len(defaults) == (1 if registry.exists() else 0), defaults
    assert not Credential.objects.filter(account=member.account, type="git",
                                         is_default=True).exists()


class DefaultMachine(RuleBasedStateMachine):
    """Random create / delete / set-default sequences against the real services."""

    credentials = Bundle("credentials")

    def __init__(self) -> None:
        super().__init__()
        self.owner = factories.make_account()
        self.oldest: list[int] = []  # registry credential ids in creation order

    @rule(target=credentials, kind=st.sampled_from(["container_registry", "git"]))
    def create(self, kind: str) -> int:
        server = "github.com" if kind == "git" else "registry.example.com"
        credential = make_credential(self.owner, type=kind, server=server)
        if kind == "container_registry":
            if not self.oldest:
                assert credential.is_default
            self.oldest.append(credential.id)
        return credential.id

    @rule(credential_id=credentials)
    def set_default(self, credential_id: int) -> None:
        kind = Credential.objects.get(id=credential_id).type
        try:
            services.credential_set_default(actor=self.owner.user,
                                            membership=self.owner.membership,
                                            credential_id=credential_id)
        except ApplicationError as exc:
            assert kind == "git" and exc.code == "credential_type_mismatch"
        else:
            assert Credential.objects.get(id=credential_id).is_default

    @rule(credential_id=consumes(credentials))
    def delete(self, credential_id: int) -> None:
        was_default = Credential.objects.get(id=credential_id).is_default
        result = services.credential_delete(actor=self.owner.user,
                                            membership=self.owner.membership,
                                            credential_id=credential_id)
        if credential_id in self.oldest:
            self.oldest.remove(credential_id)
        if was_default and self.oldest:
            assert result.promoted is not None and result.promoted.id == self.oldest[0]

    @invariant()
    def exactly_one_default(self) -> None:
        assert_one_default(self.owner)


@pytest.mark.django_db
def test_default_invariant_under_random_sequences() -> None:
    run_state_machine_as_test(
        DefaultMachine,
        settings=settings(max_examples=40, stateful_step_count=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )


@pytest.mark.django_db(transaction=True)
def test_default_invariant_under_concurrent_changes() -> None:
    owner = factories.make_account()
    seed = [make_credential(owner, name=f"seed-{n}").id for n in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(number: int) -> None:
        rng = random.Random(number)
        try:
            barrier.wait()
            for step in range(12):
                ids = list(Credential.objects.filter(account=owner.account)
                           .values_list("id", flat=True))
                choice = rng.choice(["create", "delete", "default"])
                try:
                    if choice == "create" or not ids:
                        make_credential(owner, name=f"w{number}-{step}")
                    elif choice == "delete":
                        services.credential_delete(actor=owner.user, membership=owner.membership,
                                                   credential_id=rng.choice(ids))
                    else:
                        services.credential_set_default(
                            actor=owner.user, membership=owner.membership,
                            credential_id=rng.choice(ids),
                        )
                except ApplicationError as exc:
                    assert exc.code == "credential_not_found"  # raced with a delete
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert seed  # the run started from four credentials
    assert_one_default(owner)
