"""I3: one distinctive secret, every credential page and API call, then a search everywhere.

Responses, rendered pages, captured logs, audit rows and the database must not hold it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import Client

from moorage.audit.models import AuditEvent
from moorage.credentials.models import Credential
from moorage.testing.factories import PASSWORD, Member
from moorage.testing.registry import RegistryServer
from moorage.testing.secrets_search import database_text

SECRET = "Leak-Canary-5f3c9e21-Zz"
ROTATED = "Leak-Canary-rotated-77b1"


@pytest.mark.django_db
def test_the_secret_appears_nowhere(
    client: Client, owner: Member, registry_basic: RegistryServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    registry_basic.add_user("canary", SECRET)
    seen: list[str] = []

    def keep(response: Any) -> Any:
        seen.append(response.content.decode(errors="replace"))
        seen.append(json.dumps(dict(response.headers)))
        return response

    api = owner.auth
    body = {"type": "container_registry", "name": "canary", "server": registry_basic.host,
            "username": "canary", "secret": SECRET}
    created = keep(client.post("/api/v1/credentials", json.dumps(body),
                               content_type="application/json", headers=api)).json()
    cid = created["id"]
    keep(client.get("/api/v1/credentials", headers=api))
    keep(client.get(f"/api/v1/credentials/{cid}", headers=api))
    keep(client.post(f"/api/v1/credentials/{cid}/test", "{}", content_type="application/json",
                     headers=api))
    keep(client.post(f"/api/v1/credentials/{cid}/test",
                     json.dumps({"image": f"{registry_basic.host}/nothing/here:1"}),
                     content_type="application/json", headers=api))
    keep(client.post("/api/v1/credentials", json.dumps(body | {"server": "bad/x/y"}),
                     content_type="application/json", headers=api))  # an error answer
    keep(client.post("/api/v1/credentials", json.dumps(body),
                     content_type="application/json", headers=api))  # a conflict answer
    keep(client.post(f"/api/v1/credentials/{cid}/set-default", headers=api))
    keep(client.get("/api/v1/audit/events", headers=api))

    client.post("/login/", {"email": owner.user.email, "password": PASSWORD})
    for path in ("/credentials/", "/credentials/new/", "/credentials/new/?type=git",
                 f"/credentials/{cid}/edit/", f"/credentials/{cid}/delete/", "/activity/", "/"):
        keep(client.get(path))
    keep(client.post(f"/credentials/{cid}/test/", headers={"HX-Request": "true"}))
    keep(client.post(f"/credentials/{cid}/edit/", {
        "name": "canary", "server": "bad server", "username": "canary", "email": "",
        "secret": SECRET}))  # a form error page after typing the secret again
    keep(client.post(f"/credentials/{cid}/secret/", {"secret": ROTATED}, follow=True))
    keep(client.patch(f"/api/v1/credentials/{cid}", json.dumps({"secret": SECRET}),
                      content_type="application/json", headers=api))
    keep(client.post(f"/credentials/{cid}/delete/", follow=True))

    assert len(seen) > 40
    for text in seen:
        assert SECRET not in text and ROTATED not in text
    assert SECRET not in caplog.text and ROTATED not in caplog.text
    trail = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert SECRET not in trail and ROTATED not in trail
    assert not Credential.objects.filter(id=cid).exists()
    assert SECRET not in database_text() and ROTATED not in database_text()
