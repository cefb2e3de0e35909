"""What an app's env and numbers may hold (issue 13, item 8): an environment a container can
start with, said at save time in the API, the App page and the CLI; integers only for the
port and the replicas."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from moorage.apps.models import App
from moorage.apps.services import (
    ENV_TOTAL_MAX,
    ENV_VALUE_MAX,
    EnvInput,
    app_create,
    open_env,
)
from moorage.testing.api_checks import API, assert_api_error
from moorage.testing.factories import Member

pytestmark = pytest.mark.django_db

BASE: dict[str, Any] = {"name": "api", "image": "ghcr.io/acme/api:1.4"}


def env_of_size(total: int, *, prefix: str = "V") -> list[dict[str, str]]:
    """Variables whose ``NAME=value`` add up to exactly ``total`` UTF-8 bytes, each value at
    most :data:`ENV_VALUE_MAX`."""
    env: list[dict[str, str]] = []
    left = total
    while left:
        name = f"{prefix}{len(env):03d}"
        size = min(ENV_VALUE_MAX, left - len(name) - 1)
        if size < 0:  # too little left for another name: lengthen the previous value
            env[-1]["value"] += "x" * left
            break
        env.append({"name": name, "value": "x" * size})
        left -= len(name) + 1 + size
    assert sum(len(f"{e['name']}={e['value']}".encode()) for e in env) == total
    assert all(len(e["value"].encode()) <= ENV_VALUE_MAX for e in env)
    return env


def _call(client: Client, method: str, path: str, member: Member, body: Any) -> Any:
    return client.generic(method, API + path, json.dumps(body), content_type="application/json",
                          headers=member.auth)


def test_the_most_the_env_may_hold_is_saved_and_a_byte_more_is_refused(
    client: Client, owner: Member
) -> None:
    largest = env_of_size(ENV_TOTAL_MAX)
    created = _call(client, "POST", "/apps", owner, BASE | {"env": largest})
    assert created.status_code == 201, created.content[:300]
    app_id = created.json()["id"]

    over = env_of_size(ENV_TOTAL_MAX + 1, prefix="W")
    body = assert_api_error(_call(client, "PATCH", f"/apps/{app_id}", owner, {"env": over}),
                            422, "env_too_large")
    assert body["message"] == (
        "The environment holds 1,048,577 bytes (every NAME=value, in UTF-8); an app's holds at "
        "most 1,048,576 (1 MiB), or its container could not start (\"argument list too "
        "long\"). Put large values in a file of the image instead.")
    assert body["detail"] == {"fields": {"env": body["message"]}, "bytes": ENV_TOTAL_MAX + 1,
                              "max_bytes": ENV_TOTAL_MAX}
    # Nothing half-written: the previous env is whole.
    assert sorted(App.objects.get(pk=app_id).env.values_list("name", flat=True)) == \
        [e["name"] for e in largest]

    # The report of the issue: 75 variables of 32 KiB, accepted before, fail at start.
    report = [{"name": f"V{i}", "value": "x" * 32 * 1024} for i in range(75)]
    assert_api_error(_call(client, "POST", "/apps", owner, BASE | {"name": "big",
                                                                    "env": report}),
                     422, "env_too_large")
    assert not App.objects.filter(name="big").exists()


def test_a_secret_kept_as_it_is_counts_with_its_value(owner: Member, client: Client) -> None:
    app = app_create(actor=owner.user, membership=owner.membership, name="api",
                     image="ghcr.io/acme/api:1.4",
                     env=[EnvInput("SECRET_BLOB", "s" * ENV_VALUE_MAX, secret=True)])
    kept = {"name": "SECRET_BLOB", "secret": True}  # no value: keeps it
    fits = env_of_size(ENV_TOTAL_MAX - len("SECRET_BLOB=") - ENV_VALUE_MAX)
    assert _call(client, "PATCH", f"/apps/{app.pk}", owner,
                 {"env": [kept, *fits]}).status_code == 200
    one_more = [*fits, {"name": "ONE", "value": ""}]  # "ONE=": 4 bytes more
    assert_api_error(_call(client, "PATCH", f"/apps/{app.pk}", owner,
                           {"env": [kept, *one_more]}), 422, "env_too_large")
    assert open_env(app.env.get(name="SECRET_BLOB")) == "s" * ENV_VALUE_MAX


def test_a_value_is_measured_in_bytes(client: Client, owner: Member) -> None:
    # 32 Ki characters of a 4-byte character: 128 KiB, past what the kernel takes for one
    # variable (MAX_ARG_STRLEN), though within the characters the API counted before.
    wide = "\N{GRINNING FACE}" * ENV_VALUE_MAX
    body = assert_api_error(_call(client, "POST", "/apps", owner,
                                  BASE | {"env": [{"name": "WIDE", "value": wide}]}),
                            422, "env_value_invalid")
    assert body["message"] == ("The value of WIDE is longer than 32,768 bytes or holds a NUL "
                               "character.")
    narrow = "\N{GRINNING FACE}" * (ENV_VALUE_MAX // 4)
    assert _call(client, "POST", "/apps", owner,
                 BASE | {"env": [{"name": "NARROW", "value": narrow}]}).status_code == 201


@pytest.mark.parametrize(("field", "value"), [
    ("port", True), ("port", "80"), ("port", 80.0), ("port", False),
    ("replicas", True), ("replicas", "2"), ("replicas", 2.0),
])
def test_the_port_and_the_replicas_are_integers_only(
    client: Client, owner: Member, field: str, value: object
) -> None:
    body = assert_api_error(_call(client, "POST", "/apps", owner, BASE | {field: value}), 422,
                            "validation_error")
    assert body["detail"]["fields"] == {field: "Input should be a valid integer"}
    assert not App.objects.exists()
    app = app_create(actor=owner.user, membership=owner.membership, **BASE, port=8080)
    body = assert_api_error(_call(client, "PATCH", f"/apps/{app.pk}", owner, {field: value}),
                            422, "validation_error")
    assert body["detail"]["fields"] == {field: "Input should be a valid integer"}
    app.refresh_from_db()
    assert (app.port, app.replicas) == (8080, 1)
    changed = _call(client, "PATCH", f"/apps/{app.pk}", owner, {field: 2})
    assert changed.status_code == 200 and changed.json()[field] == 2


def test_the_app_page_says_the_env_is_too_large_on_the_field(
    client: Client, owner: Member
) -> None:
    app = app_create(actor=owner.user, membership=owner.membership, **BASE)
    client.force_login(owner.user)
    text = "\n".join(f"{e['name']}={e['value']}" for e in env_of_size(ENV_TOTAL_MAX + 1))
    response = client.post(f"/apps/{app.pk}/", {
        "name": "api", "source": "image", "image": BASE["image"], "pull": "account_default",
        "replicas": "1", "env": text,
    })
    assert response.status_code == 422
    page = response.content.decode()
    assert ('<p class="field-error">The environment holds 1,048,577 bytes (every NAME=value, '
            'in UTF-8)') in page
    assert not app.env.exists()
