"""The runtime interface: what the deployer asks of a region's engine, whatever it is.

One implementation per engine (:mod:`.docker` for one Docker Engine, and the Swarm runtime
for a Docker Swarm), chosen from the region's ``runtime`` in the snapshot. The deployer
resolves the credential and opens the secrets; a runtime only ever receives the resolved
login of one deployment (:class:`ImageSource`) and never reads the machine's docker login.

What every runtime provides:

* :meth:`Runtime.deploy` — make ``spec`` the app's running version, pulling ``image`` with its
  login (always asking the registry, I8) and reporting through :class:`DeployEvents`;
* :meth:`Runtime.remove_app` — stop and remove everything of one app in the region;
* :meth:`Runtime.running` — what runs, read back from the engine's ``moorage.*`` labels, so an
  agent that lost its data directory adopts instead of duplicating;
* :meth:`Runtime.logs` — the app's own output, bounded: a tail, lines after a cursor, and
  new lines for a few seconds (a follow window), each with the engine's timestamp;
* :meth:`Runtime.refresh_auth` — hand a rotated login to what already runs, where the engine
  keeps one (Swarm services do; a plain container does not);
* :meth:`Runtime.nodes` — the machines of the region as the engine reports them (a swarm's
  nodes; none for a single engine);
* :attr:`Runtime.engine` — the Docker Engine builds run on (the region's engine, or a Swarm
  manager's).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, ClassVar, Protocol

from moorage.protocol.enums import Runtime as RuntimeKind
from moorage.protocol.logs import DEFAULT_TAIL, LogLine
from moorage.protocol.runtime_report import NodeReport
from moorage.registry import RegistryLogin
from moorage.registry.reference import ImageReference

LABEL_ACCOUNT = "moorage.account"
LABEL_APP = "moorage.app"
LABEL_DEPLOYMENT = "moorage.deployment"
LABEL_REGION = "moorage.region"
LABEL_PORT = "moorage.port"
#: The credential (``id:revision``) whose login a running app was given.
LABEL_CREDENTIAL = "moorage.credential"


def credential_label(credential_id: int | None, revision: int | None) -> str:
    """The value of :data:`LABEL_CREDENTIAL`: ``id:revision``, empty for an anonymous pull."""
    if credential_id is None or revision is None:
        return ""
    return f"{credential_id}:{revision}"


def parse_credential_label(value: str | None) -> tuple[int, int] | None:
    """``(id, revision)`` of a :data:`LABEL_CREDENTIAL` value, ``None`` when empty or not ours."""
    head, sep, tail = (value or "").partition(":")
    if not sep or not head.isdigit() or not tail.isdigit():
        return None
    return int(head), int(tail)

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class AppSpec:
    """What to run for one deployment. ``env`` holds opened secrets: hidden from ``repr``."""

    region: str
    account_id: int
    account: str
    app_id: int
    app: str
    deployment_id: int
    port: int | None = None
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)
    replicas: int = 1
    #: Seconds the new version may take to run (and accept connections on ``port``) before
    #: it is given up and the previous one restored; ``None``: the runtime's own default.
    ready_timeout: float | None = None

    @property
    def app_name(self) -> str:
        """``moorage-<account>-<app>``: the app's name on the engine, readable in ``docker ps``."""
        return _NAME_UNSAFE.sub("-", f"moorage-{self.account}-{self.app}")

    @property
    def name(self) -> str:
        """``moorage-<account>-<app>-<deployment id>``: unique per deployment."""
        return f"{self.app_name}-{self.deployment_id}"

    @property
    def labels(self) -> dict[str, str]:
        """Labels that find the app's containers (or service) again."""
        labels = {LABEL_ACCOUNT: str(self.account_id), LABEL_APP: str(self.app_id),
                  LABEL_DEPLOYMENT: str(self.deployment_id), LABEL_REGION: self.region}
        if self.port is not None:
            labels[LABEL_PORT] = str(self.port)
        return labels


@dataclass(frozen=True)
class ImageSource:
    """The image a deployment runs, and how to get it.

    A registry image (``local`` false) is pulled with ``login`` (``None``: anonymously);
    ``credential_label`` names the credential in messages (``'ghcr-prod' (revision 3)``).
    A ``local`` image was built on this engine and is run as it is (``reference`` is its id).
    ``credential_id`` and ``credential_revision`` say which credential ``login`` is (what a
    Swarm service's labels record, I12).
    """

    reference: str | ImageReference
    login: RegistryLogin | None = field(default=None, repr=False)
    credential_label: str | None = None
    local: bool = False
    credential_id: int | None = None
    credential_revision: int | None = None
    #: What a service's credential label records instead, for a login that is not a
    #: tenant's credential (the region registry's: ``region-registry:<revision>``).
    auth_label: str | None = None

    @property
    def label(self) -> str:
        """The value of :data:`LABEL_CREDENTIAL` for this login (empty when anonymous)."""
        if self.auth_label is not None:
            return self.auth_label
        return credential_label(self.credential_id, self.credential_revision)


@dataclass(frozen=True)
class PullProgress:
    """One progress event of a pull: a layer's status and, while downloading, bytes."""

    status: str
    layer: str | None = None
    current: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class PullResult:
    """What was pulled: the repository, the digest the registry served, the local image id."""

    reference: ImageReference
    digest: str
    image_id: str

    @property
    def by_digest(self) -> str:
        """``REPOSITORY@sha256:…``: run exactly what was pulled, whatever the tag does next."""
        return f"{self.reference.name}@{self.digest}"


@dataclass(frozen=True)
class BuildResult:
    """The image a build made: its id (``sha256:…``) and the tag it got."""

    image_id: str
    tag: str


@dataclass(frozen=True)
class DeployResult:
    """What a deploy left running: the digest pulled (``None`` for a local image), the
    containers (or service) now serving, and what of the previous version was removed (or
    is removed by ``after``).

    ``after`` is clean-up that changes nothing of what serves (the docker runtime's restart
    policy and removal of the previous containers): the deployer runs it once the final
    report has left, so the report does not wait for it. It raises
    :class:`~moorage.agent.errors.DeployError`, which the deployer logs.
    """

    digest: str | None
    ids: list[str]
    removed: list[str]
    replicas: int = 1
    after: Callable[[], None] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RunningApp:
    """One app as the engine reports it through its labels.

    ``credential`` is the ``(id, revision)`` whose login the engine keeps for the app (a
    Swarm service's registry auth), ``None`` when it keeps none or pulls anonymously;
    ``image`` what it runs.
    """

    account_id: int
    app_id: int
    deployment_id: int
    ids: list[str]
    running: int
    desired: int
    name: str = ""
    image: str = ""
    credential: tuple[int, int] | None = None
    #: The raw :data:`LABEL_CREDENTIAL` value (what :attr:`ImageSource.label` is compared to).
    auth_label: str = ""


class DeployEvents(Protocol):
    """Where a runtime tells the deployer how a deploy goes (the deployment's reports)."""

    def line(self, text: str) -> None:
        """Add a line to the deployment's log."""

    def phase(self, status: str) -> None:
        """The deploy moved on (``pulling``, ``starting``): send a progress report."""

    def progress(self, event: PullProgress) -> None:
        """A pull's progress event."""

    def pulled(self, digest: str) -> None:
        """The image was pulled: ``digest`` is what the registry served (reported from now)."""


class ImageEngine(Protocol):
    """A Docker Engine as builds use it: pull base images, build, keep the newest builds, and
    (in a swarm region) push them to the region registry.

    Builds always run on one engine (a docker region's, or a Swarm manager's), whatever the
    region's runtime; :class:`~moorage.agent.runtime.docker.DockerRuntime` is one.
    """

    def pull(
        self, reference: str | ImageReference, login: RegistryLogin | None,
        on_progress: Callable[[PullProgress], None] | None = None, *,
        credential_label: str | None = None,
    ) -> PullResult:
        """Pull with ``login`` (``None``: anonymously), always asking the registry."""

    def build(
        self, context: IO[bytes], *, dockerfile: str, tag: str,
        buildargs: dict[str, str] | None = None, labels: dict[str, str] | None = None,
        registry: tuple[str, RegistryLogin] | None = None,
        on_line: Callable[[str], None] | None = None, timeout: float = ...,
    ) -> BuildResult:
        """Build ``context`` and tag it ``tag``, sending only ``registry``'s login."""

    def prune_builds(self, repository: str, *, keep: int = ...) -> list[str]:
        """Untag all but the newest ``keep`` builds of ``repository``."""

    def push(
        self, image_id: str, target: ImageReference, login: RegistryLogin, *,
        on_line: Callable[[str], None] | None = None, label: str = "",
    ) -> str:
        """Push a build to ``target`` (a swarm region's own registry) with ``login`` only;
        return the digest the registry stored."""


class Runtime(abc.ABC):
    """A region's engine. ``region`` scopes the labels, so two regions' agents on one engine
    never touch each other's apps."""

    kind: ClassVar[RuntimeKind]
    region: str

    @property
    @abc.abstractmethod
    def engine(self) -> ImageEngine:
        """The Docker Engine that builds (and pulls base images) for this region."""

    @abc.abstractmethod
    def deploy(self, spec: AppSpec, image: ImageSource, events: DeployEvents) -> DeployResult:
        """Make ``spec`` the app's running version; on failure the previous one keeps serving.

        Raises :class:`~moorage.agent.errors.DeployError`.
        """

    @abc.abstractmethod
    def remove_app(self, account_id: int, app_id: int) -> int:
        """Stop and remove everything of one app in this region; return how many things."""

    @abc.abstractmethod
    def running(self) -> list[RunningApp]:
        """Every app of this region the engine runs, from its ``moorage.*`` labels."""

    @abc.abstractmethod
    def logs(
        self, account_id: int, app_id: int, *, tail: int | None = DEFAULT_TAIL,
        since: str | None = None, follow: float = 0.0,
    ) -> Iterator[LogLine]:
        """The app's output lines (stdout and stderr), oldest first, as the engine stamped them.

        ``tail``: only the newest ``tail`` lines (``None``: all of them, for a ``since``);
        ``since``: only lines stamped after this cursor (exclusive,
        :func:`moorage.protocol.logs.timestamp_ns`); ``follow``: then keep yielding new lines
        for that many seconds. The iterator ends by itself: a read that does not end within
        its deadline ends it. :func:`~moorage.agent.runtime.enginelogs.engine_log_lines`
        parses what the Engine answers (``timestamps=1``) for containers and services alike.

        Raises :class:`~moorage.agent.errors.LogsError` ``app_not_running`` when nothing of
        the app is on the engine, ``engine_unreachable`` or ``logs_failed``.
        """

    @abc.abstractmethod
    def refresh_auth(self, account_id: int, app_id: int, image: ImageSource) -> bool:
        """Give what runs of the app ``image``'s (rotated) login, without restarting it.

        Returns whether anything was updated (``False`` where the engine keeps no login, or
        it already carries this credential revision). Raises
        :class:`~moorage.agent.errors.DeployError` when the login cannot pull what runs (I9).
        """

    def leftovers(self) -> int:
        """How many things of this region are still on the engine, running or on their way
        out: what a drained region waits for before it says it runs nothing. By default
        what :meth:`running` lists (an engine whose removal is synchronous)."""
        return len(self.running())

    def keeps_logins(self) -> bool:
        """Whether the engine keeps a login with what runs (then :meth:`refresh_auth` and the
        credential of :class:`RunningApp` mean something)."""
        return False

    def nodes(self) -> list[NodeReport]:
        """The region's machines as the engine reports them; none for a single engine."""
        return []
