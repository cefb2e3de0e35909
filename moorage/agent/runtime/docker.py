"""The ``docker`` runtime: pulls and containers on one Docker Engine, through docker-py.

Why it looks the way it does:

* **A fresh low-level client per operation, never the machine's docker login (I5).**
  docker-py's ``APIClient`` reads ``~/.docker/config.json`` (or ``$DOCKER_CONFIG``) when it is
  made, and ``pull(auth_config=None)`` sends whatever login that file holds for the registry
  (it even reloads the file when its in-memory set is empty). So every client made here has
  its loaded configuration wiped (auths, proxies — which ``create_container`` would copy into
  every container's environment —, extra HTTP headers), and every pull passes an explicit
  ``auth_config``: the tenant's credential, or ``{}`` for an anonymous pull. ``{}`` reaches the
  engine as ``X-Registry-Auth: e30=`` ("no credentials"); the tests prove an anonymous pull
  is refused even when the host has a login for that registry.
* **A build sends only its build-pull credential.** docker-py's ``build()`` sends every
  credential its client holds as ``X-Registry-Config`` and, holding none, reloads the
  machine's docker config to send that; :class:`_BuildClient` replaces that with exactly the
  header it is given (an empty map without a credential). Builds use ``pull=1`` and are
  never pushed.
* **Every deploy pulls (I8).** A pull always asks the registry (a ``HEAD`` of the manifest),
  so a cached image does not start for a tenant without access. Always with an explicit tag
  or digest: an empty tag would pull every tag of the repository.
* **Failures in the user's words.** The engine answers a failed pull with a free-text message
  (``unauthorized: …``, ``denied: …``, ``manifest unknown``, ``dial tcp …``);
  :func:`classify_pull_error` turns it into a stable :attr:`DeployError.code` and a message
  naming the credential, the registry host and what the registry said.
* **Bounded.** The agent runs deploys inline in its sync loop, so a pull has an overall
  deadline (the engine call itself has none: docker-py streams a pull without a timeout) and
  readiness has one too.
* **Host networking, same port.** Containers use ``network_mode="host"`` (the regions'
  engines have no bridge). Two containers cannot listen on one port, so a new deployment on
  the port an old container holds stops that container first, starts the new one, and on
  failure removes the new one and starts the old one again — at once when the new one cannot
  start or exits, after the app's readiness timeout (:attr:`AppSpec.ready_timeout`) when it
  runs but never listens. A deployment on another port (or without one) starts next to the
  old containers, which are removed once it is ready.
* **A start the engine refuses is the user's to fix.** ``POST /containers/{id}/start`` answers
  an error for a command that does not exist (and the like); it becomes
  ``container_start_failed`` quoting the OCI runtime's reason, not an agent error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import docker
import docker.errors
import requests
from docker.auth import AuthConfig
from docker.tls import TLSConfig
from docker.utils.proxy import ProxyConfig

from moorage.agent.errors import DeployError, LogsError
from moorage.agent.runtime.base import (
    LABEL_ACCOUNT,
    LABEL_APP,
    LABEL_DEPLOYMENT,
    LABEL_PORT,
    LABEL_REGION,
    AppSpec,
    BuildResult,
    DeployEvents,
    DeployResult,
    ImageSource,
    PullProgress,
    PullResult,
    RunningApp,
    Runtime,
)
from moorage.agent.runtime.enginelogs import engine_log_lines, engine_since
from moorage.agent.streaming import DeadlineExceeded, read_with_deadline
from moorage.protocol.enums import Runtime as RuntimeKind
from moorage.protocol.logs import DEFAULT_TAIL, LogLine
from moorage.protocol.readiness import READY_TIMEOUT_DEFAULT
from moorage.registry import RegistryLogin
from moorage.registry.auth import scrub
from moorage.registry.dockerconfig import engine_auth_config, registry_config_header
from moorage.registry.reference import ImageReference, InvalidReference, parse_reference

logger = logging.getLogger("moorage.agent.runtime.docker")

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
PULL_TIMEOUT = 600.0
BUILD_TIMEOUT = 1800.0
KEEP_BUILDS = 3
#: Seconds a new container may take to be ready when its app does not say.
READY_TIMEOUT = float(READY_TIMEOUT_DEFAULT)
#: Readiness is looked at after this many seconds, then each wait half as long again, up to
#: :data:`READY_POLL_MAX`: a started container often serves within milliseconds, and a fixed
#: 0.2 s poll added up to 0.2 s to such a deploy.
READY_POLL_FIRST = 0.01
READY_POLL_MAX = 0.2
STOP_TIMEOUT = 10
API_TIMEOUT = 60
LOG_TAIL = 20
#: The longest a one-off read of an app's logs may take (a follow window may be longer).
LOGS_TIMEOUT = 10.0

#: The classic builder colours a step's stderr; the log shows plain text.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _EngineClient(docker.APIClient):
    """An ``APIClient`` that ignores requests' environment, from its first request on.

    ``REQUESTS_CA_BUNDLE`` would replace the engine's TLS CA (requests lets it win over the
    session's ``verify``), and ``~/.netrc`` could send a login to a ``tcp://`` engine. The
    first request is the version negotiation inside ``APIClient.__init__``, hence this hook.
    """

    def _retrieve_server_version(self) -> str:
        self.trust_env = False
        return str(super()._retrieve_server_version())


class _BuildClient(_EngineClient):
    """An ``APIClient`` whose builds send exactly the ``X-Registry-Config`` it is given.

    docker-py's own ``_set_auth_headers`` sends every credential the client holds and, when
    it holds none, *reloads the machine's docker config* and sends that (docker-py 7.1,
    ``api/build.py``). A tenant's build must carry only its build-pull credential (I5).
    """

    registry_config: str = ""

    def _set_auth_headers(self, headers: dict[str, Any]) -> None:
        headers["X-Registry-Config"] = self.registry_config


@dataclass(frozen=True)
class RunResult:
    """The started container, and the app's old containers: removed, or (``settled``
    false) still to be removed by :meth:`DockerRuntime.settle`."""

    container_id: str
    name: str
    removed: list[str]
    settled: bool = True


class DockerRuntime(Runtime):
    """One Docker Engine (or Podman's compatible API) at ``docker_host``.

    ``tls`` is docker-py's TLS configuration for a ``tcp://`` engine (``False``: none); the
    caller builds it (``moorage agent`` from ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``).
    Thread-compatible: nothing is shared between operations but the settings.
    ``region`` scopes the labels, so two regions' agents on one engine never touch each
    other's containers. An app runs one container: ``replicas`` above 1 is not honoured on
    one engine with host networking (two containers cannot bind one port).
    """

    kind = RuntimeKind.DOCKER

    @property
    def engine(self) -> DockerRuntime:
        """Builds run on this same engine."""
        return self

    def __init__(
        self,
        docker_host: str = DEFAULT_DOCKER_HOST,
        *,
        region: str = "",
        tls: TLSConfig | bool = False,
        pull_timeout: float = PULL_TIMEOUT,
        ready_timeout: float = READY_TIMEOUT,
        stop_timeout: int = STOP_TIMEOUT,
        api_timeout: int = API_TIMEOUT,
    ) -> None:
        self.docker_host = docker_host
        self.region = region
        self.tls = tls
        self.pull_timeout = pull_timeout
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.api_timeout = api_timeout
        #: The API version negotiated with the engine once, so later clients skip the
        #: ``GET /version`` round trip (a swarm refresh makes one client per service).
        self._api_version: str | None = None

    # -- clients -----------------------------------------------------------------------------

    def client(self, cls: type[docker.APIClient] = _EngineClient) -> docker.APIClient:
        """A fresh low-level client with nothing of the machine's docker config loaded.

        Raises :class:`DeployError` ``engine_unreachable`` when the engine does not answer.
        The caller closes it.
        """
        try:
            api = cls(base_url=self.docker_host, version=self._api_version or "auto",
                      timeout=self.api_timeout, tls=self.tls)
            self._api_version = self._api_version or str(api.api_version)
        except docker.errors.DockerException as exc:
            raise DeployError("engine_unreachable",
                              f"The container engine at {self.docker_host} did not answer: "
                              f"{_short(exc)}") from None
        # What APIClient loaded from ~/.docker/config.json (or $DOCKER_CONFIG) must not apply
        # to a tenant: auths (I5), proxies (copied into container envs), HttpHeaders.
        api.trust_env = False  # see _EngineClient
        api._general_configs = {}
        api._proxy_configs = ProxyConfig()
        api._auth_configs = AuthConfig({})
        return api

    @contextmanager
    def _client(self) -> Iterator[docker.APIClient]:
        api = self.client()
        try:
            yield api
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise DeployError("engine_unreachable",
                              f"The container engine at {self.docker_host} stopped answering: "
                              f"{type(exc).__name__}") from None
        finally:
            api.close()

    # -- pull --------------------------------------------------------------------------------

    def pull(
        self,
        reference: str | ImageReference,
        login: RegistryLogin | None,
        on_progress: Callable[[PullProgress], None] | None = None,
        *,
        credential_label: str | None = None,
    ) -> PullResult:
        """Pull ``reference`` with ``login`` (``None``: anonymously), report progress, and
        return the digest the registry served.

        ``X-Registry-Auth`` holds the login with ``serveraddress`` set to the image's registry
        host (the containerd image store drops a credential whose host does not match); the
        caller has checked that the credential is for that host (I4). ``on_progress`` is
        called in the caller's thread. ``credential_label`` (e.g. ``'ghcr-prod' (revision 3)``)
        names the credential in error messages. Raises :class:`DeployError`.
        """
        try:
            ref = reference if isinstance(reference, ImageReference) \
                else parse_reference(reference)
        except InvalidReference as exc:
            raise DeployError("invalid_image", exc.message) from None
        host = ref.registry_host
        auth = engine_auth_config(login, host) if login is not None else {}
        who = _who(login, credential_label)
        api = self.client()
        stream_digest: str | None = None
        try:
            for value in read_with_deadline(
                    lambda: api.pull(ref.name, tag=ref.pull_ref, stream=True, decode=True,
                                     auth_config=auth),
                    timeout=self.pull_timeout, name="moorage-agent-pull"):
                if "error" in value or "errorDetail" in value:
                    detail = value.get("errorDetail") or {}
                    text = str(value.get("error") or detail.get("message") or value)
                    raise classify_pull_error(scrub(text, login), None, ref=ref, host=host,
                                              who=who)
                status = str(value.get("status", ""))
                if status.startswith("Digest: "):
                    stream_digest = status.removeprefix("Digest: ").strip()
                if on_progress is not None:
                    detail = value.get("progressDetail") or {}
                    on_progress(PullProgress(status=status, layer=value.get("id"),
                                             current=detail.get("current"),
                                             total=detail.get("total")))
            digest, image_id = self._digest_of(api, ref, stream_digest)
        except DeadlineExceeded:
            raise DeployError(
                "pull_timeout",
                f"Pulling {ref} from {host} {who} took longer than "
                f"{self.pull_timeout:.0f} s.") from None
        except requests.exceptions.ConnectionError as exc:
            raise DeployError("engine_unreachable",
                              f"The container engine at {self.docker_host} stopped answering "
                              f"during the pull: {type(exc).__name__}") from None
        except Exception as exc:
            raise _pull_failure(exc, ref, host, who, login) from None
        finally:
            api.close()  # on a timeout this also cuts the abandoned worker's stream
        return PullResult(reference=ref, digest=digest, image_id=image_id)

    def _digest_of(
        self, api: docker.APIClient, ref: ImageReference, stream_digest: str | None
    ) -> tuple[str, str]:
        """The digest in the image's ``RepoDigests`` for this repository, and its id."""
        local = f"{ref.name}@{ref.digest}" if ref.digest else f"{ref.name}:{ref.pull_ref}"
        image = api.inspect_image(local)
        for entry in image.get("RepoDigests") or []:
            try:
                parsed = parse_reference(entry)
            except InvalidReference:
                continue
            if parsed.name == ref.name and parsed.digest:
                return parsed.digest, str(image["Id"])
        if ref.digest:
            return ref.digest, str(image["Id"])
        if stream_digest:
            return stream_digest, str(image["Id"])
        raise DeployError("pull_failed", f"The engine pulled {ref} but reported no digest.")

    # -- build -------------------------------------------------------------------------------

    def build(
        self,
        context: IO[bytes],
        *,
        dockerfile: str,
        tag: str,
        buildargs: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        registry: tuple[str, RegistryLogin] | None = None,
        on_line: Callable[[str], None] | None = None,
        timeout: float = BUILD_TIMEOUT,
    ) -> BuildResult:
        """Build the tar ``context`` with the classic builder and tag it ``tag``; never push.

        ``X-Registry-Config`` holds ``registry`` (the build-pull credential, keyed with
        :func:`docker_config_key` of its host) and nothing else: no host login, nothing
        cached on a client — an empty map without one. ``pull=1`` makes the engine ask the
        registry for every base image even when cached (I8). ``on_line`` gets each output
        line, in the caller's thread. Raises :class:`DeployError` ``build_failed`` (naming
        the failing step, with the last output lines in ``logs``), ``build_timeout`` or
        ``engine_unreachable``.
        """
        header = registry_config_header([registry] if registry is not None else [])
        login = registry[1] if registry is not None else None
        api = self.client(_BuildClient)
        api.registry_config = header
        tail: list[str] = []
        step = ""
        image_id: str | None = None
        try:
            for value in read_with_deadline(
                    lambda: api.build(fileobj=context, custom_context=True,
                                      dockerfile=dockerfile, tag=tag, buildargs=buildargs or {},
                                      labels=labels or {}, pull=True, rm=True, forcerm=True,
                                      decode=True),
                    timeout=timeout, name="moorage-agent-build"):
                if "error" in value or "errorDetail" in value:
                    detail = value.get("errorDetail") or {}
                    text = scrub(str(value.get("error") or detail.get("message") or value),
                                 login).strip()
                    where = f"{step} failed: " if step else "The build failed: "
                    output = _step_output(tail)
                    last = f" Last output: {' | '.join(output[-5:])[-400:]}" if output else ""
                    raise DeployError("build_failed", f"{where[:300]}{text[:300]}{last}",
                                      logs=tail)
                aux = value.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = str(aux["ID"])
                for line in str(value.get("stream") or "").splitlines():
                    line = scrub(_ANSI.sub("", line).rstrip(), login)
                    if not line.strip():
                        continue
                    if line.startswith("Step "):
                        step = line[:200]
                    tail = [*tail[-(LOG_TAIL - 1):], line[:300]]
                    if on_line is not None:
                        on_line(line)
            if image_id is None:
                image_id = str(api.inspect_image(tag)["Id"])
        except DeadlineExceeded:
            raise DeployError("build_timeout", f"The build took longer than {timeout:.0f} s.",
                              logs=tail) from None
        except requests.exceptions.ConnectionError as exc:
            raise DeployError("engine_unreachable",
                              f"The container engine at {self.docker_host} stopped answering "
                              f"during the build: {type(exc).__name__}") from None
        except DeployError:
            raise
        except Exception as exc:
            raise DeployError("build_failed",
                              f"The engine refused the build: {scrub(_short(exc), login)}",
                              logs=tail) from None
        finally:
            api.close()
        return BuildResult(image_id=image_id, tag=tag)

    def push(
        self, image_id: str, target: ImageReference, login: RegistryLogin, *,
        on_line: Callable[[str], None] | None = None, label: str = "",
    ) -> str:
        """Tag the local image ``image_id`` as ``target`` and push it with ``login``; return
        the digest the registry stored.

        For images built in a swarm region: they go to the region's own registry, which every
        node pulls from, never to a user's registry. ``X-Registry-Auth`` holds ``login`` for
        ``target``'s host and nothing else. ``label`` names the registry in messages. Raises
        :class:`DeployError` ``registry_push_failed`` (or ``registry_unauthorized``,
        ``registry_unreachable``), ``pull_timeout`` or ``engine_unreachable``.
        """
        if target.tag is None or target.digest is not None:
            raise ValueError("a push target has a tag and no digest")
        host = target.registry_host
        auth = engine_auth_config(login, host)
        where = label or f"the registry {host}"
        api = self.client()
        digest: str | None = None
        try:
            api.tag(image_id, target.name, target.tag)
            for value in read_with_deadline(
                    lambda: api.push(target.name, tag=target.tag, stream=True, decode=True,
                                     auth_config=auth),
                    timeout=self.pull_timeout, name="moorage-agent-push"):
                if "error" in value or "errorDetail" in value:
                    detail = value.get("errorDetail") or {}
                    text = scrub(str(value.get("error") or detail.get("message") or value),
                                 login).strip()[:300]
                    raise _push_failure(text, target, where)
                aux = value.get("aux")
                if isinstance(aux, dict) and str(aux.get("Digest", "")).startswith("sha256:"):
                    digest = str(aux["Digest"])
                status = str(value.get("status", ""))
                if on_line is not None and status and value.get("id") is None:
                    on_line(scrub(status, login)[:300])
        except DeadlineExceeded:
            raise DeployError("pull_timeout", f"Pushing {target} to {where} took longer than "
                              f"{self.pull_timeout:.0f} s.") from None
        except requests.exceptions.ConnectionError as exc:
            raise DeployError("engine_unreachable",
                              f"The container engine at {self.docker_host} stopped answering "
                              f"during the push: {type(exc).__name__}") from None
        except docker.errors.APIError as exc:
            raise _push_failure(scrub(_short(exc), login), target, where) from None
        finally:
            api.close()
        if digest is None:
            raise DeployError("registry_push_failed",
                              f"{where} took {target} but named no digest for it.")
        return digest

    def prune_builds(self, repository: str, *, keep: int = KEEP_BUILDS) -> list[str]:
        """Untag all but the ``keep`` newest ``repository:<deployment id>`` build images.

        Ordered by the deployment id in the tag. An image still used by a container, or
        tagged otherwise, loses only this tag; the engine removes it once nothing holds it.
        Returns the tags removed.
        """
        with self._client() as api:
            tags: list[tuple[int, str]] = []
            for image in api.images(name=repository):
                for repo_tag in image.get("RepoTags") or []:
                    name, _, number = repo_tag.rpartition(":")
                    if name == repository and number.isdigit():
                        tags.append((int(number), repo_tag))
            removed = []
            for _, repo_tag in sorted(tags, reverse=True)[keep:]:
                try:
                    api.remove_image(repo_tag)
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError as exc:
                    logger.warning("could not remove the old build image %s: %s", repo_tag,
                                   _short(exc))
                    continue
                removed.append(repo_tag)
        return removed

    # -- the runtime interface ---------------------------------------------------------------

    def deploy(self, spec: AppSpec, image: ImageSource, events: DeployEvents) -> DeployResult:
        """Pull ``image`` (always asking the registry, I8), then :meth:`run` it by digest.

        A ``local`` image (a build of this engine) is run as it is. One container per app:
        ``spec.replicas`` above 1 is reported, not honoured.
        """
        digest: str | None = None
        to_run = str(image.reference)
        if not image.local:
            pulled = self.pull(image.reference, image.login, events.progress,
                               credential_label=image.credential_label)
            events.line(f"Pulled {pulled.reference} ({pulled.digest})")
            events.pulled(pulled.digest)
            digest, to_run = pulled.digest, pulled.by_digest
        if spec.replicas != 1:
            events.line(f"{spec.replicas} replicas asked; the docker runtime runs 1.")
        events.line(f"Starting container {spec.name} from {to_run}")
        events.phase("starting")
        started = self.run(spec, to_run, settle=False)
        events.line(f"Container {started.name} is running" + (
            f" and accepts connections on port {spec.port}" if spec.port else ""))
        if started.removed:
            events.line(f"Removing {len(started.removed)} previous container(s)")
        return DeployResult(digest=digest, ids=[started.container_id], removed=started.removed,
                            after=lambda: self.settle(started))

    def running(self) -> list[RunningApp]:
        """The region's apps, one per ``(account, app)`` label pair, newest deployment first."""
        with self._client() as api:
            found = api.containers(all=True, filters={"label": [f"{LABEL_REGION}={self.region}"]})
        apps: dict[tuple[int, int], RunningApp] = {}
        for container in found:
            labels = container.get("Labels") or {}
            try:
                key = (int(labels[LABEL_ACCOUNT]), int(labels[LABEL_APP]))
                deployment_id = int(labels.get(LABEL_DEPLOYMENT, "0"))
            except (KeyError, ValueError):
                continue  # not one of ours, whatever its labels say
            up = 1 if container.get("State") == "running" else 0
            seen = apps.get(key)
            if seen is None or deployment_id > seen.deployment_id:
                apps[key] = RunningApp(account_id=key[0], app_id=key[1],
                                       deployment_id=deployment_id,
                                       ids=[str(container["Id"])], running=up, desired=1,
                                       name=str((container.get("Names") or [""])[0]).lstrip("/"),
                                       image=str(container.get("Image") or ""))
        return list(apps.values())

    def logs(
        self, account_id: int, app_id: int, *, tail: int | None = DEFAULT_TAIL,
        since: str | None = None, follow: float = 0.0,
    ) -> Iterator[LogLine]:
        """The lines of the app's newest container (running or not: a crash's last words are
        what its owner wants to read).

        A follow window ends after ``follow`` seconds; a one-off read that outlasts
        :data:`LOGS_TIMEOUT` raises :class:`LogsError` ``logs_timeout``. Iterate the answer to
        its end or ``close()`` it: that closes the Engine's stream.
        """
        try:
            api = self.client()
        except DeployError as exc:
            raise LogsError(exc.code, exc.message) from None
        try:
            containers = self._app_containers(api, account_id, app_id)
            if not containers:
                raise LogsError("app_not_running",
                                f"Nothing of this app runs in region {self.region} (no "
                                "container): deploy it first.")
            newest = max(containers, key=lambda c: int(c.get("Created") or 0))
            stream = api.logs(newest["Id"], stdout=True, stderr=True, stream=True,
                              timestamps=True, follow=follow > 0,
                              tail="all" if tail is None else tail, since=engine_since(since))
        except requests.exceptions.ConnectionError as exc:
            api.close()
            raise LogsError("engine_unreachable", f"The container engine at "
                            f"{self.docker_host} did not answer: {_short(exc)}") from None
        except docker.errors.APIError as exc:
            api.close()
            raise LogsError("logs_failed", "The container engine did not give the logs: "
                            f"{_short(exc)}") from None
        except BaseException:
            api.close()
            raise
        return self.read_logs(api, stream, since=since, follow=follow)

    def read_logs(
        self, api: docker.APIClient, stream: Any, *, since: str | None, follow: float
    ) -> Iterator[LogLine]:
        """The lines of an Engine log ``stream`` (a container's or a service's), within the
        follow window or :data:`LOGS_TIMEOUT`; closes the stream and ``api`` at the end."""
        try:
            yield from read_with_deadline(lambda: engine_log_lines(stream, since=since),
                                          timeout=follow if follow > 0 else LOGS_TIMEOUT,
                                          name="moorage-logs-read")
        except DeadlineExceeded:
            if not follow:
                raise LogsError("logs_timeout", "The container engine did not finish sending "
                                f"the logs within {LOGS_TIMEOUT:.0f} s.") from None
        finally:
            stream.close()  # from this thread: cuts the reader's connection at once
            api.close()

    def refresh_auth(self, account_id: int, app_id: int, image: ImageSource) -> bool:
        """A container keeps no registry login: the next deploy pulls with the new one."""
        return False

    # -- run ---------------------------------------------------------------------------------

    def run(self, spec: AppSpec, image: str, *, settle: bool = True) -> RunResult:
        """Start ``image`` (pulled, by digest) for ``spec`` and make it the app's only container.

        Waits until the container runs and, with a port, accepts TCP connections on
        127.0.0.1:port (``spec.ready_timeout``, else the runtime's ``ready_timeout``); else
        raises :class:`DeployError` ``container_start_failed``, ``container_exited`` (with its
        last log lines) or ``container_not_ready``, having removed the new container and
        restarted any old one it stopped. On success :meth:`settle` gives the new container
        its restart policy and removes the app's old containers (same region, account and app
        labels) — right away, or with ``settle`` false when the caller calls it (the deploy
        does, once its final report has left: it changes nothing of what serves).
        """
        with self._client() as api:
            self._remove_named(api, spec.name)  # a leftover of an attempt that died midway
            old = [c for c in self._app_containers(api, spec.account_id, spec.app_id)]
            holding_port = [c["Id"] for c in old if spec.port is not None
                            and c.get("Labels", {}).get(LABEL_PORT) == str(spec.port)
                            and c.get("State") in ("running", "restarting")]
            try:
                created = api.create_container(
                    image,
                    command=spec.command or None,
                    name=spec.name,
                    labels=spec.labels,
                    environment=[f"{k}={v}" for k, v in spec.env.items()],
                    # No restart policy until it is ready: a restart would hide the exit
                    # code and repeat its log lines.
                    host_config=api.create_host_config(network_mode="host"),
                    detach=True,
                )
            except docker.errors.APIError as exc:
                raise DeployError("container_failed",
                                  f"The engine refused to create the container: "
                                  f"{_short(exc)}") from None
            container_id = str(created["Id"])
            for old_id in holding_port:
                api.stop(old_id, timeout=self.stop_timeout)
            try:
                if spec.port is not None and _accepts(spec.port):
                    raise DeployError(
                        "port_in_use",
                        f"Port {spec.port} on the host is already served by something that is "
                        "not this app; the container was not started.")
                self._start(api, container_id, spec)
                self._wait_ready(api, container_id, spec.port,
                                 timeout=spec.ready_timeout or self.ready_timeout)
            except BaseException:
                _force_remove(api, container_id)
                for old_id in holding_port:
                    try:
                        api.start(old_id)
                    except docker.errors.APIError as exc:
                        logger.warning("could not restart the previous container %s: %s",
                                       old_id[:12], _short(exc))
                raise
        started = RunResult(container_id=container_id, name=spec.name,
                            removed=[str(c["Id"]) for c in old], settled=False)
        if settle:
            self.settle(started)
            return dataclasses.replace(started, settled=True)
        return started

    def settle(self, started: RunResult) -> None:
        """After a successful :meth:`run`: from now on the engine brings the new container back
        after a crash or a reboot (no restart policy until it was ready: a restart would hide
        its exit code and repeat its log lines), and the app's old containers go.

        Nothing here changes what serves, so a deploy reports ``running`` first. Raises
        :class:`DeployError` ``engine_unreachable`` or ``container_failed``.
        """
        with self._client() as api:
            try:
                api.update_container(started.container_id,
                                     restart_policy={"Name": "unless-stopped"})
            except docker.errors.APIError as exc:
                raise DeployError("container_failed",
                                  "The engine did not set the container's restart policy: "
                                  f"{_short(exc)}") from None
            for old_id in started.removed:
                _force_remove(api, old_id)

    def _start(self, api: docker.APIClient, container_id: str, spec: AppSpec) -> None:
        """Start the created container; an engine that cannot (no such executable, a bad
        working directory...) is ``container_start_failed`` in the engine's own words."""
        try:
            api.start(container_id)
        except docker.errors.APIError as exc:
            said = _explanation(exc)
            what = (f"the command {shlex.join(spec.command)}" if spec.command
                    else "the image's own command")
            raise DeployError(
                "container_start_failed",
                f"The container could not start: {start_failure_reason(said)}. Check "
                f"{what} and the image. The engine said: {said[:300]}") from None

    def _wait_ready(self, api: docker.APIClient, container_id: str, port: int | None, *,
                    timeout: float) -> None:
        """Until the container runs (and accepts connections on ``port``), at most
        ``timeout`` seconds; an exit ends the wait at once."""
        deadline = time.monotonic() + timeout
        pauses = ready_pauses()
        settle_until = time.monotonic() + 1.0  # without a port: still running after 1 s
        while True:
            info = api.inspect_container(container_id)
            state = info["State"]
            if state.get("Status") in ("exited", "dead"):
                lines = self._tail(api, container_id)
                code = state.get("ExitCode")
                raise DeployError(
                    "container_exited",
                    f"The container exited (code {code}) before it was ready."
                    + (" Last log lines: " + " | ".join(lines[-5:]) if lines else ""),
                    logs=lines)
            if state.get("Status") == "running":
                if port is None and time.monotonic() >= settle_until:
                    return
                if port is not None and _accepts(port):
                    return
            if time.monotonic() >= deadline:
                what = f"accept connections on port {port}" if port is not None else "run"
                raise DeployError(
                    "container_not_ready",
                    f"The container did not {what} within {timeout:g} s (the app's "
                    "readiness timeout).",
                    logs=self._tail(api, container_id))
            time.sleep(next(pauses))

    def _tail(self, api: docker.APIClient, container_id: str) -> list[str]:
        try:
            raw = api.logs(container_id, stdout=True, stderr=True, tail=LOG_TAIL)
        except docker.errors.APIError:
            return []
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return [line[:300] for line in text.splitlines() if line.strip()][-LOG_TAIL:]

    # -- removal -----------------------------------------------------------------------------

    def containers(self, account_id: int, app_id: int) -> list[dict[str, Any]]:
        """The app's containers in this region, running or not (``docker ps -a`` entries)."""
        with self._client() as api:
            return self._app_containers(api, account_id, app_id)

    def remove_app(self, account_id: int, app_id: int) -> int:
        """Stop and remove every container of the app in this region; return how many."""
        with self._client() as api:
            found = self._app_containers(api, account_id, app_id)
            for container in found:
                _force_remove(api, container["Id"])
        return len(found)

    def _app_containers(
        self, api: docker.APIClient, account_id: int, app_id: int
    ) -> list[dict[str, Any]]:
        labels = [f"{LABEL_ACCOUNT}={account_id}", f"{LABEL_APP}={app_id}",
                  f"{LABEL_REGION}={self.region}"]
        return list(api.containers(all=True, filters={"label": labels}))

    def _remove_named(self, api: docker.APIClient, name: str) -> None:
        for container in api.containers(all=True, filters={"name": f"^/{name}$"}):
            _force_remove(api, container["Id"])


def ready_pauses() -> Iterator[float]:
    """The waits between two looks at a starting container: :data:`READY_POLL_FIRST`, then
    each half as long again, up to :data:`READY_POLL_MAX`."""
    pause = READY_POLL_FIRST
    while True:
        yield pause
        pause = min(pause * 1.5, READY_POLL_MAX)


def _step_output(tail: list[str]) -> list[str]:
    """The output lines of the last build step in ``tail``, without the builder's own."""
    lines: list[str] = []
    for line in tail:
        if line.startswith("Step "):
            lines = []
        elif not line.startswith((" ---> ", "Removing intermediate container")):
            lines.append(line.strip())
    return lines


def _force_remove(api: docker.APIClient, container_id: str) -> None:
    try:
        api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        pass


def _accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port (host networking)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _who(login: RegistryLogin | None, label: str | None) -> str:
    if login is None:
        return "anonymously"
    return f"with {label}" if label else f"as user {login.username!r}"


def _short(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)[:300]
    return str(exc)[:300]


def _explanation(exc: docker.errors.APIError) -> str:
    """What the engine said in a refused call, as text (some engines answer a JSON body
    the client did not unwrap)."""
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    text = str(explanation or exc)
    try:
        text = str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        pass
    return text.strip()


#: Where an OCI runtime's error chain names the cause of a failed start (runc before and
#: after 1.1, as dockerd and swarm tasks pass it on).
_START_CAUSE = re.compile(r".*(?:process caused|unable to start container process):\s*",
                          re.DOTALL)


def start_failure_reason(text: str) -> str:
    """The cause in an engine's message for a container that could not start, e.g.
    ``exec: "nosuchcmd": executable file not found in $PATH`` out of runc's chain
    ``OCI runtime create failed: …: starting container process caused: exec: …: unknown``;
    the whole text when it has no such chain (Podman's crun says it plainly)."""
    reason = _START_CAUSE.sub("", text.strip(), count=1)
    return reason.removesuffix(": unknown").strip()[:300] or text.strip()[:300]


def is_start_failure(text: str) -> bool:
    """Whether an engine's (or a swarm task's) error says the container could not start."""
    low = text.lower()
    return any(marker in low for marker in (
        "oci runtime", "starting container failed", "executable file not found",
        "unable to start container process", "exec format error"))


def _pull_failure(
    exc: BaseException, ref: ImageReference, host: str, who: str, login: RegistryLogin | None
) -> BaseException:
    if isinstance(exc, docker.errors.APIError):
        return classify_pull_error(scrub(_explanation(exc), login), exc.status_code, ref=ref,
                                   host=host, who=who)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return exc  # the engine itself: handled by the caller
    if isinstance(exc, DeployError):
        return exc
    return DeployError("pull_failed", f"Pulling {ref} from {host} {who} failed: "
                       f"{type(exc).__name__}")


def _push_failure(text: str, target: ImageReference, where: str) -> DeployError:
    """A failed push to the region registry, in the operator's words (the text is scrubbed)."""
    low = text.lower()
    if "unauthorized" in low or "authentication required" in low or "denied" in low:
        return DeployError("registry_unauthorized",
                           f"{where} refused the region registry's credential when pushing "
                           f"{target}; the platform's operator must fix it with 'moorage "
                           f"regions update'. The registry said: {text}")
    network = ("dial tcp", "connection refused", "no such host", "i/o timeout", "eof",
               "connection reset", "server gave http response")
    if any(marker in low for marker in network):
        return DeployError("registry_unreachable",
                           f"{where} could not be reached to push {target}. The engine said: "
                           f"{text}")
    return DeployError("registry_push_failed",
                       f"Pushing {target} to {where} failed. The engine said: {text}")


def classify_pull_error(
    text: str, status: int | None, *, ref: ImageReference, host: str, who: str
) -> DeployError:
    """Turn the engine's message for a failed pull into a :class:`DeployError`.

    ``who`` is ``with 'name' (revision N)`` or ``anonymously``. The engine's text is quoted
    at the end (it is what the registry said); it must already be scrubbed of the password.
    Matching is on the registry's error codes and Go's network errors, which dockerd and
    Podman pass through verbatim.
    """
    said = text.strip()[:300]
    low = said.lower()
    image = str(ref)
    anonymous = who == "anonymously"
    if "toomanyrequests" in low or "rate limit" in low or status == 429:
        return DeployError("registry_rate_limited",
                           f"The registry {host} is rate limiting pulls {who}; try again later. "
                           f"The registry said: {said}")
    if "denied" in low or "forbidden" in low:
        return DeployError("registry_forbidden",
                           f"The registry {host} refused access to {ref.path} when pulling "
                           f"{who}: the {'anonymous user' if anonymous else 'credential'} "
                           f"has no pull access to this repository (or it does not exist). "
                           f"The registry said: {said}")
    if "unauthorized" in low or "no basic auth credentials" in low \
            or "authentication required" in low or "invalid username or password" in low:
        if anonymous:
            message = (f"The registry {host} requires a login to pull {image}, and this app "
                       f"pulls anonymously: choose a registry credential for it.")
        else:
            message = f"The registry {host} rejected the credential {who.removeprefix('with ')}."
        return DeployError("registry_unauthorized", f"{message} The registry said: {said}")
    if "manifest unknown" in low or "not found" in low or "name unknown" in low \
            or status == 404:
        return DeployError("image_not_found",
                           f"The registry {host} has no image {image} (the repository or the "
                           f"tag does not exist). The registry said: {said}")
    network = ("dial tcp", "connection refused", "no such host", "i/o timeout",
               "timeout", "tls:", "x509", "connection reset", "eof",
               "server gave http response", "network is unreachable", "no route to host")
    if any(marker in low for marker in network):
        return DeployError("registry_unreachable",
                           f"The registry {host} could not be reached to pull {image}. "
                           f"The engine said: {said}")
    return DeployError("pull_failed", f"Pulling {image} from {host} {who} failed. "
                       f"The engine said: {said}")
