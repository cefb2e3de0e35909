"""``moorage apps``: an environment too large for a container to start is refused when saved,
in the server's words (issue 13, item 8)."""

from __future__ import annotations

from moorage.apps.models import App
from moorage.apps.services import ENV_TOTAL_MAX
from moorage.apps.tests.test_env_limits import env_of_size
from moorage.cli.tests.conftest import Cli
from moorage.testing.factories import Member


def test_an_env_over_the_limit_is_refused_at_save(run: Cli, logged_in: Member) -> None:
    created = run("apps", "create", "api", "--image", "ghcr.io/acme/api:1.4",
                  "--env", "KEEP=me")
    assert created.exit_code == 0, created.output
    kept = len("KEEP=me")  # the update adds to the variables the app has
    over = [f"--env={e['name']}={e['value']}" for e in env_of_size(ENV_TOTAL_MAX + 1 - kept)]
    refused = run("apps", "update", "api", *over)
    assert refused.exit_code == 1
    said = " ".join(refused.stderr.split())  # wrapped to the terminal
    assert ("The environment holds 1,048,577 bytes (every NAME=value, in UTF-8); an app's "
            "holds at most 1,048,576 (1 MiB)") in said
    assert said.endswith("(env_too_large)")
    assert list(App.objects.get(name="api").env.values_list("name", "value")) == \
        [("KEEP", "me")]
    fits = [f"--env={e['name']}={e['value']}" for e in env_of_size(ENV_TOTAL_MAX - kept)]
    saved = run("apps", "update", "api", *fits)
    assert saved.exit_code == 0, saved.output
    assert App.objects.get(name="api").env.count() == len(fits) + 1
