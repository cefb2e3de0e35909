"""Services of the accounts domain: members and roles, tokens, passwords, login throttling."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from moorage.accounts import services
from moorage.accounts.choices import Role
from moorage.accounts.models import ApiToken, LoginAttempt, Membership, User
from moorage.audit.choices import AuditAction
from moorage.audit.models import AuditEvent
from moorage.errors import ApplicationError
from moorage.testing import factories
from moorage.testing.factories import PASSWORD, Member
from moorage.testing.secrets_search import database_text

pytestmark = pytest.mark.django_db


def _code(exc: pytest.ExceptionInfo[ApplicationError]) -> str:
    return exc.value.code


def test_account_create_makes_the_actor_owner_and_audits(owner: Member) -> None:
    assert owner.membership.role == Role.OWNER
    event = AuditEvent.objects.get(account=owner.account, action=AuditAction.ACCOUNT_CREATED)
    assert event.actor == owner.user
    assert event.details == {"name": "Acme", "slug": "acme"}


def test_slugs_stay_unique() -> None:
    first = factories.make_account("Acme Corp")
    second = factories.make_account("Acme Corp")
    assert (first.account.slug, second.account.slug) == ("acme-corp", "acme-corp-2")


def test_admins_cannot_make_or_touch_owners(owner: Member) -> None:
    admin = factories.add_member(owner, Role.ADMIN)
    with pytest.raises(ApplicationError) as exc:
        services.invitation_create(
            actor=admin.user, membership=admin.membership, email="o@example.com", role="owner"
        )
    assert exc.value.status == 403
    with pytest.raises(ApplicationError) as exc:
        services.member_change_role(
            actor=admin.user, membership=admin.membership, member_id=owner.membership.id,
            role="viewer",
        )
    assert exc.value.status == 403
    assert Membership.objects.get(id=owner.membership.id).role == Role.OWNER


def test_the_last_owner_can_neither_be_demoted_nor_removed(owner: Member) -> None:
    for call in (
        lambda: services.member_change_role(
            actor=owner.user, membership=owner.membership, member_id=owner.membership.id,
            role="admin",
        ),
        lambda: services.member_remove(
            actor=owner.user, membership=owner.membership, member_id=owner.membership.id
        ),
    ):
        with pytest.raises(ApplicationError) as exc:
            call()
        assert (exc.value.status, _code(exc)) == (409, "last_owner")
    second = factories.add_member(owner, Role.ADMIN)
    services.member_change_role(
        actor=owner.user, membership=owner.membership, member_id=second.membership.id,
        role="owner",
    )
    services.member_change_role(
        actor=owner.user, membership=owner.membership, member_id=owner.membership.id,
        role="admin",
    )
    assert Membership.objects.get(id=owner.membership.id).role == Role.ADMIN


def test_removing_a_member_revokes_their_tokens_in_that_account(owner: Member) -> None:
    member = factories.add_member(owner, Role.MEMBER)
    services.member_remove(actor=owner.user, membership=owner.membership,
                           member_id=member.membership.id)
    assert not ApiToken.objects.filter(user=member.user, revoked_at__isnull=True).exists()
    with pytest.raises(ApplicationError) as exc:
        services.api_token_authenticate(token=member.token)
    assert _code(exc) == "token_revoked"


def test_tokens_are_stored_as_digests_and_authenticate(owner: Member) -> None:
    token, plaintext = services.api_token_create(
        actor=owner.user, membership=owner.membership, name="ci"
    )
    assert plaintext.startswith("mrg_") and len(plaintext) == 47
    assert token.prefix == plaintext[:12]
    assert plaintext not in database_text()
    assert services.api_token_authenticate(token=plaintext).account == owner.account
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_token_names_are_unique_among_active_tokens(owner: Member) -> None:
    token, _ = services.api_token_create(actor=owner.user, membership=owner.membership, name="ci")
    with pytest.raises(ApplicationError) as exc:
        services.api_token_create(actor=owner.user, membership=owner.membership, name="ci")
    assert _code(exc) == "token_name_taken"
    services.api_token_revoke(actor=owner.user, membership=owner.membership, token_id=token.id)
    services.api_token_create(actor=owner.user, membership=owner.membership, name="ci")


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", "token_invalid"),
        ("not-a-token", "token_invalid"),
        ("mrg_" + "A" * 43, "token_invalid"),
        ("mrg_short", "token_invalid"),
    ],
)
def test_bad_tokens_are_refused_with_a_code(token: str, code: str) -> None:
    with pytest.raises(ApplicationError) as exc:
        services.api_token_authenticate(token=token)
    assert (exc.value.status, _code(exc)) == (401, code)


def test_a_disabled_users_token_stops_working(owner: Member) -> None:
    User.objects.filter(pk=owner.user.pk).update(is_active=False)
    with pytest.raises(ApplicationError) as exc:
        services.api_token_authenticate(token=owner.token)
    assert _code(exc) == "user_disabled"


def test_login_checks_the_password_and_never_logs_it(
    owner: Member, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = services.login_authenticate(email=owner.user.email.upper(), password=PASSWORD,
                                       address="10.1.1.1")
    assert user == owner.user
    with pytest.raises(ApplicationError) as exc:
        services.login_authenticate(email=owner.user.email, password="wrong-password-1",
                                    address="10.1.1.1")
    assert (exc.value.status, _code(exc)) == (401, "invalid_credentials")
    with pytest.raises(ApplicationError) as exc:
        services.login_authenticate(email="nobody@example.com", password=PASSWORD,
                                    address="10.1.1.1")
    assert _code(exc) == "invalid_credentials"
    assert PASSWORD not in caplog.text and "wrong-password-1" not in caplog.text
    assert PASSWORD not in database_text()
    assert LoginAttempt.objects.filter(succeeded=False).count() == 2


def test_disabled_users_are_told_only_with_the_right_password(owner: Member) -> None:
    User.objects.filter(pk=owner.user.pk).update(is_active=False)
    with pytest.raises(ApplicationError) as exc:
        services.login_authenticate(email=owner.user.email, password="nope-nope-nope",
                                    address="a")
    assert _code(exc) == "invalid_credentials"
    with pytest.raises(ApplicationError) as exc:
        services.login_authenticate(email=owner.user.email, password=PASSWORD, address="a")
    assert _code(exc) == "user_disabled"


def _fail_login(email: str, address: str, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ApplicationError) as exc:
            services.login_authenticate(email=email, password="bad-guess-000", address=address)
        assert _code(exc) == "invalid_credentials"


def _refused(email: str, password: str, address: str) -> ApplicationError:
    with pytest.raises(ApplicationError) as exc:
        services.login_authenticate(email=email, password=password, address=address)
    assert (exc.value.status, _code(exc)) == (429, "login_rate_limited")
    return exc.value


@override_settings(LOGIN_FAILURES_PER_USER_ADDRESS=3, LOGIN_FAILURES_PER_ADDRESS=50,
                   LOGIN_FAILURES_PER_USER=50)
def test_a_guesser_elsewhere_does_not_lock_the_owner_out(owner: Member) -> None:
    email = owner.user.email
    _fail_login(email, "203.0.113.66", times=3)
    # The guesser's address is stopped, even with the right password...
    refused = _refused(email, PASSWORD, "203.0.113.66")
    assert refused.detail["scope"] == "user_address"
    assert 0 < refused.detail["retry_after"] <= 15 * 60
    # ...and refused tries are not counted: waiting is what unlocks.
    LoginAttempt.objects.update(at=timezone.now() - timedelta(minutes=16))
    services.login_authenticate(email=email, password=PASSWORD, address="203.0.113.66")
    # The owner at their own address logs in all along.
    _fail_login(email, "203.0.113.66", times=3)
    assert services.login_authenticate(email=email, password=PASSWORD, address="192.0.2.10")


@override_settings(LOGIN_FAILURES_PER_USER_ADDRESS=3)
def test_a_success_starts_the_user_address_count_again(owner: Member) -> None:
    email = owner.user.email
    _fail_login(email, "192.0.2.10", times=2)
    services.login_authenticate(email=email, password=PASSWORD, address="192.0.2.10")
    _fail_login(email, "192.0.2.10", times=2)
    assert services.login_authenticate(email=email, password=PASSWORD, address="192.0.2.10")
    _fail_login(email, "192.0.2.10", times=3)  # only failures since the last success count
    _refused(email, PASSWORD, "192.0.2.10")


@override_settings(LOGIN_FAILURES_PER_USER_ADDRESS=3, LOGIN_FAILURES_PER_USER=6)
def test_the_per_user_ceiling_stops_many_addresses_but_spares_a_known_one(
    owner: Member,
) -> None:
    email = owner.user.email
    services.login_authenticate(email=email, password=PASSWORD, address="192.0.2.10")
    for n in range(6):  # a distributed guesser: two tries from each of three addresses
        _fail_login(email, f"198.51.100.{n // 2}")
    # A new address is now refused, even with the right password (the slower ceiling)...
    refused = _refused(email, PASSWORD, "198.51.100.200")
    assert refused.detail["scope"] == "user"
    assert 45 * 60 < refused.detail["retry_after"] <= 60 * 60
    # ...while the owner at the address they logged in from before still gets in.
    assert services.login_authenticate(email=email, password=PASSWORD, address="192.0.2.10")
    # The ceiling's window is an hour, not the short one.
    LoginAttempt.objects.filter(succeeded=False).update(
        at=timezone.now() - timedelta(minutes=30))
    _refused(email, PASSWORD, "198.51.100.201")
    LoginAttempt.objects.filter(succeeded=False).update(
        at=timezone.now() - timedelta(minutes=61))
    assert services.login_authenticate(email=email, password=PASSWORD, address="198.51.100.201")


@override_settings(LOGIN_FAILURES_PER_ADDRESS=5)
def test_one_address_guessing_many_users_is_stopped(owner: Member) -> None:
    for n in range(5):
        _fail_login(f"u{n}@example.com", "10.0.0.1")
    refused = _refused("u9@example.com", "x" * 12, "10.0.0.1")
    assert refused.detail["scope"] == "address"
    assert services.login_authenticate(email=owner.user.email, password=PASSWORD,
                                       address="10.0.0.2")


def test_old_failures_go_and_known_addresses_stay_a_while(owner: Member) -> None:
    email = owner.user.email
    services.login_authenticate(email=email, password=PASSWORD, address="192.0.2.10")
    _fail_login(email, "192.0.2.11")
    LoginAttempt.objects.update(at=timezone.now() - timedelta(days=2))
    services.login_authenticate(email=email, password=PASSWORD, address="192.0.2.12")
    kept = sorted(LoginAttempt.objects.values_list("address", "succeeded"))
    assert kept == [("192.0.2.10", True), ("192.0.2.12", True)]


def test_password_change_requires_the_current_one_and_a_strong_new_one(owner: Member) -> None:
    for current, new, code in [
        ("wrong-current-1", "a much better password 9", "password_incorrect"),
        (PASSWORD, "short", "password_too_weak"),
        (PASSWORD, PASSWORD, "password_unchanged"),
    ]:
        with pytest.raises(ApplicationError) as exc:
            services.password_change(user=owner.user, current_password=current,
                                     new_password=new)
        assert _code(exc) == code
    services.password_change(user=owner.user, current_password=PASSWORD,
                             new_password="a much better password 9")
    owner.user.refresh_from_db()
    assert owner.user.check_password("a much better password 9")
    assert "a much better password 9" not in database_text()


def test_installation_init_is_idempotent() -> None:
    first = services.installation_init(email="boss@example.com", account_name="Main",
                                       password=None)
    assert first.created and first.generated_password
    assert first.user.is_platform_staff and first.user.must_change_password
    second = services.installation_init(email="other@example.com", account_name="Else",
                                        password=None)
    assert not second.created
    assert (second.user, second.account) == (first.user, first.account)
    assert User.objects.count() == 1


def test_oversize_names_are_refused_and_nothing_is_written(owner: Member) -> None:
    count = ApiToken.objects.count()
    with pytest.raises(ApplicationError) as exc:
        services.api_token_create(actor=owner.user, membership=owner.membership, name="n" * 101)
    assert _code(exc) == "name_too_long"
    assert ApiToken.objects.count() == count
