"""ASGI entry point, served by uvicorn through ``moorage up``."""

from __future__ import annotations

import os
import warnings
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moorage.config.settings")
# WhiteNoise serves files with a synchronous iterator; under ASGI Django warns on every static
# file. The files are small and local, so the cost is nil and the warning only noise.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous")


class Moorage:
    """Django, except for the agents' long poll, which :mod:`moorage.config.longpoll` serves
    without Django's per-request machinery (see there why)."""

    def __init__(self) -> None:
        self.django = get_asgi_application()  # sets Django up: the imports below need it
        from django.urls import reverse

        from moorage.config.longpoll import LongPollEndpoint

        self.long_poll_path = reverse("api:agent_changes")
        self.long_poll = LongPollEndpoint()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.long_poll_path:
            await self.long_poll(scope, receive, send)
        else:
            await self.django(scope, receive, send)


application = Moorage()
