"""Which Docker Engine an agent drives: ``--docker-host``, else the environment, the Docker way.

Docker, docker-py and Compose all read ``DOCKER_HOST``, ``DOCKER_TLS_VERIFY`` and
``DOCKER_CERT_PATH``; so does ``moorage agent`` (and through it the local agent of
``moorage up``), with docker-py's own rules (:func:`docker.utils.kwargs_from_env`). The CLI
reads the environment here and passes the result into the agent: nothing in
:mod:`moorage.agent` reads ``os.environ``. The machine's docker *logins*
(``~/.docker/config.json``) are a different matter and are never used: see
:mod:`moorage.agent.runtime`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import docker.errors
from docker.tls import TLSConfig
from docker.utils import kwargs_from_env

from moorage.agent.errors import ConfigurationError
from moorage.agent.runtime import DEFAULT_DOCKER_HOST

#: The environment variables of the Docker client conventions that choose the engine.
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")


@dataclass(frozen=True)
class EngineSettings:
    """Where the engine is, how to talk TLS to it (``False``: no TLS), and who said so."""

    docker_host: str
    tls: TLSConfig | bool
    source: str

    def describe(self) -> str:
        """``unix:///run/user/1000/docker.sock (from DOCKER_HOST)``, for the start-up log."""
        tls = ""
        if isinstance(self.tls, TLSConfig):
            tls = ", TLS verified" if self.tls.verify else ", TLS"
        return f"{self.docker_host} (from {self.source}{tls})"


def engine_settings(environ: Mapping[str, str], docker_host: str | None = None
                    ) -> EngineSettings:
    """The engine to drive: ``docker_host`` (the ``--docker-host`` option) if given, else
    ``DOCKER_HOST``, else :data:`DEFAULT_DOCKER_HOST`; TLS from ``DOCKER_TLS_VERIFY`` and
    ``DOCKER_CERT_PATH`` (certificates ``ca.pem``, ``cert.pem``, ``key.pem``; the directory
    defaults to ``~/.docker`` when only ``DOCKER_TLS_VERIFY`` is set).

    Raises :class:`ConfigurationError` naming the variable when the certificates are missing.
    """
    given = {name: environ[name] for name in ENGINE_VARIABLES if name in environ}
    params: dict[str, object] = {}
    if given:  # kwargs_from_env reads os.environ itself when handed an empty mapping
        try:
            params = kwargs_from_env(environment=given)
        except docker.errors.TLSParameterError as exc:
            where = given.get("DOCKER_CERT_PATH") or "~/.docker"
            raise ConfigurationError(
                f"DOCKER_TLS_VERIFY/DOCKER_CERT_PATH ask for TLS, but the certificates in "
                f"{where} cannot be used: {exc}. It needs ca.pem, cert.pem and key.pem."
            ) from None
    found = params.get("tls")
    tls: TLSConfig | bool = found if isinstance(found, TLSConfig) else False
    if docker_host:
        return EngineSettings(docker_host=docker_host, tls=tls, source="--docker-host")
    if given.get("DOCKER_HOST"):
        return EngineSettings(docker_host=given["DOCKER_HOST"], tls=tls, source="DOCKER_HOST")
    return EngineSettings(docker_host=DEFAULT_DOCKER_HOST, tls=tls, source="the default")
