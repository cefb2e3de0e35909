"""``moorage credentials delete`` of the default that apps pull with through "Use account
default": the server's refusal names them, the CLI asks (or, with --yes alone, refuses), and
--confirm deletes."""

from __future__ import annotations

from moorage.apps.services import app_create
from moorage.audit.models import AuditEvent
from moorage.cli.tests.conftest import Cli
from moorage.credentials.models import Credential
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member

REFUSAL = ("'hub' is the account default, and 1 app on \"Use account default\" pulls with it "
           "from docker.io: web. After the deletion it would pull anonymously: the next "
           "default, 'ghcr', is for ghcr.io.")


def test_deleting_the_default_an_app_pulls_with_asks_first(run: Cli, logged_in: Member) -> None:
    make_credential(logged_in, name="hub", server="docker.io")
    make_credential(logged_in, name="ghcr", server="ghcr.io")
    app_create(actor=logged_in.user, membership=logged_in.membership, name="web",
               image="nginx:1.27")

    scripted = run("credentials", "delete", "hub", "--yes")
    assert scripted.exit_code == 1
    said = " ".join(scripted.stderr.split())  # the error is wrapped to the terminal
    assert REFUSAL in said
    assert "Add --confirm to delete it anyway. (credential_default_in_use)" in said
    declined = run("credentials", "delete", "hub", input="y\nn\n")
    assert declined.exit_code == 1
    assert REFUSAL in declined.stdout and "Delete it anyway?" in declined.stderr
    assert Credential.objects.get(name="hub").is_default
    assert not AuditEvent.objects.filter(action="credential.deleted").exists()

    accepted = run("credentials", "delete", "hub", input="y\ny\n")
    assert accepted.exit_code == 0, accepted.output
    assert "Deleted hub." in accepted.stdout
    assert "ghcr is now the account default." in accepted.stdout
    assert Credential.objects.get(name="ghcr").is_default
    assert AuditEvent.objects.filter(action="credential.default_promoted").count() == 1


def test_confirm_deletes_the_last_default_and_says_none_is_left(
    run: Cli, logged_in: Member
) -> None:
    make_credential(logged_in, name="hub", server="docker.io")
    app_create(actor=logged_in.user, membership=logged_in.membership, name="web",
               image="nginx:1.27")
    deleted = run("credentials", "delete", "hub", "--yes", "--confirm")
    assert deleted.exit_code == 0, deleted.output
    assert "No default left: apps on \"Use account default\" pull without a credential." in \
        deleted.stdout
    assert not Credential.objects.exists()
