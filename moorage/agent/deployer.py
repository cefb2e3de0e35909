"""Runs the deployments the replica holds on the region's runtime and reports them back.

The sync loop calls :meth:`Deployer.step` before each long poll and after each applied batch.
A step sends the final reports still owed, removes the containers of deleted apps, then runs
every pending deployment, newest per app, inline and bounded (the runtime's pull deadline and
readiness timeout), so the loop goes back to polling in bounded time.

One deployment (``docs/sync.md``, "Deployments"):

1. resolve the pull credential from the replica. If the replica holds an older revision than
   the deployment names (or none), sync once (a changes poll with ``wait=0``); still missing →
   ``failed`` / ``credential_not_synced``. A newer revision is fine: it is a rotation, and the
   revision actually used is reported (I6);
2. check I4 again, locally: the credential's server must be the image's registry host
   (:func:`moorage.registry.hosts_match`), else ``failed`` / ``credential_host_mismatch``
   with no network call at all;
3. report ``pulling`` ("Pulling IMAGE with 'CRED' (revision N) from HOST" or "…anonymously
   from HOST"), open the secret, pull — always, even when the image is cached (I8). An
   anonymous pull of an app on "Use account default" whose default is for another registry
   (``pull.default_host``) says so, and if the registry refuses it the error names that
   registry and asks for a credential for this one;
4. report ``starting``, open the env secrets, start the container by digest, wait until ready,
   remove the app's old containers;
5. report ``running`` with the digest, credential id and revision, and container id — or
   ``failed`` with ``{code, message}`` at whichever step failed.

A build-from-source deployment (a ``build`` object, ``image`` null) replaces steps 1-3 with
:func:`moorage.agent.builder.run_build` — ``building`` while it fetches the source with the git
credential, pre-pulls every base image (the build-pull credential only for its own registry
host, never the account default) and builds with the Engine — and then runs the built image
(by id) through steps 4-5; the three newest build images of the app are kept.

Runtimes: the region's ``runtime`` (its snapshot's settings) picks what runs the deployments;
with a ``runtime_factory`` the deployer switches to it when it changes, without one a region
of another runtime fails its deployments with ``runtime_unsupported`` (so does a runtime this
agent does not know). In a ``swarm`` region a build is pushed to the region's own registry
(``registry_push``, with the region registry's login only) and the service pulls it from
there; without a region registry a build deployment fails with ``region_registry_missing``
before anything is fetched. After every step :class:`~moorage.agent.reconcile.Reconciler`
looks at what runs: adopts it, refreshes rotated logins (I12) and reports it.

Decisions:

* Older pending deployments of an app are **superseded**: they are not run, and are reported
  ``failed`` with code ``superseded``, which the control plane records as the status
  ``superseded`` (it also ends those this agent never received, at the newer one's first
  report). A pending deployment older than one already finished for the app is superseded
  too.
* Right before a container starts, the replica is synced once: a deployment whose app was
  deleted during its pull or build is not started at all.
* The final ``running`` report does not wait for clean-up that changes nothing of what
  serves (the docker runtime's restart policy and removal of the previous containers,
  :attr:`~moorage.agent.runtime.base.DeployResult.after`): that runs right after the report.
  An agent stopped in those milliseconds leaves the new container without its restart policy
  and the previous (stopped or idle) containers until the app's next deploy.
* Progress reports never hold a deploy up: they go to a background queue
  (:mod:`moorage.agent.reports`) that sends them in order and retries them. The **final**
  report is written to the replica with the deployment's final state first, and sent once the
  deployment's progress reports have left (so it always arrives last); it is retried (with
  backoff) until the control plane takes it. A 4xx refusal is logged and dropped, since
  repeating it cannot help.
  At start-up every final report is owed again (the control plane's answer is idempotent), so
  a control plane restored from a backup learns the outcome back; the deployment itself is not
  run again.
* A deployment that cannot start because the control plane is unreachable during the credential
  sync stays pending and is tried at the next step. Every other failure (the engine being
  unreachable included) is final: the user sees why, and redeploys.
* Log lines name images, hosts, credential names and revisions, never a secret; the container's
  own last log lines, quoted on ``container_exited``, have the deployment's secret env values
  masked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moorage.agent.backoff import Backoff
from moorage.agent.builder import (
    Built,
    Credentials,
    check_git_host,
    git_host,
    image_repository,
    plain_http_allowed,
    run_build,
)
from moorage.agent.client import ControlPlaneClient
from moorage.agent.errors import (
    AgentAuthError,
    CredentialNotFound,
    DeployError,
    ProtocolError,
    ReplicaError,
    TamperedPayload,
    TransientError,
)
from moorage.agent.masking import mask_secrets, secret_env_values
from moorage.agent.reconcile import REGION_REGISTRY_LABEL, Reconciler
from moorage.agent.replica import (
    DEPLOYMENT_DONE,
    DEPLOYMENT_FAILED,
    DEPLOYMENT_PENDING,
    REGISTRY_TYPE,
    Replica,
    ReplicaCredential,
    ReplicaDeployment,
)
from moorage.agent.reports import ReportQueue, refusal_level
from moorage.agent.runtime.base import AppSpec, ImageSource, PullProgress, Runtime
from moorage.protocol.build import MAX_SOURCE_BYTES, BuildSpec
from moorage.protocol.enums import PullMode
from moorage.protocol.enums import Runtime as RuntimeKind
from moorage.protocol.readiness import ready_timeout_from
from moorage.registry import RegistryLogin
from moorage.registry.hosts import InvalidRegistryHost, hosts_match, normalize_registry_host
from moorage.registry.reference import InvalidReference, parse_reference
from moorage.sealing import SealedDataError

#: At most this many per-layer lines of a pull go into the deployment's log.
MAX_LAYER_LINES = 20
MAX_LINE = 300
GIT_TYPE = "git"


class _Deferred(Exception):
    """The deployment cannot be tried now (control plane unreachable): leave it pending."""


class _Dropped(Exception):
    """The deployment's app was deleted while it was prepared: it is not started."""


class _Reporter:
    """The reports of one deployment run, and the runtime's :class:`DeployEvents`.

    Lines not delivered go out with the next report; ``fields`` (the credential and digest
    used) go with every progress report once known.
    """

    def __init__(self, deployer: Deployer, deployment: ReplicaDeployment) -> None:
        self.deployer = deployer
        self.deployment = deployment
        self.lines: list[str] = []
        self.fields: dict[str, Any] = {}
        #: The runtime's clean-up once the deployment serves, run after the final report.
        self.after: Callable[[], None] | None = None
        self._layers: set[str] = set()

    def line(self, text: str) -> None:
        self.lines.append(text[:MAX_LINE])

    def phase(self, status: str) -> None:
        if status == "starting":
            self.deployer.check_still_wanted(self.deployment)
        self.send(status, **self.fields)

    def progress(self, event: PullProgress) -> None:
        if event.layer and event.status in ("Pull complete", "Already exists") \
                and event.layer not in self._layers and len(self._layers) < MAX_LAYER_LINES:
            self._layers.add(event.layer)
            self.line(f"Layer {event.layer}: {event.status.lower()}")

    def pulled(self, digest: str) -> None:
        self.fields["image_digest"] = digest

    def send(self, status: str, **fields: Any) -> None:
        """Queue a progress report; the deploy goes on at once (the queue sends it)."""
        self.deployer.reports.put(self.deployment.id,
                                  {"status": status, "log": list(self.lines), **fields})
        self.lines.clear()

    def final(self, status: str, **fields: Any) -> dict[str, Any]:
        return {"status": status, "log": list(self.lines), **fields}


class Deployer:
    """Runs the replica's pending deployments on ``runtime`` and reports through ``client``.

    ``refresh`` syncs the replica once without waiting (the loop sets it to its own changes
    poll); ``stop_event`` ends a step between deployments.
    """

    def __init__(
        self,
        replica: Replica,
        client: ControlPlaneClient,
        runtime: Runtime,
        logger: logging.Logger,
        *,
        refresh: Callable[[], None] | None = None,
        stop_event: threading.Event | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        build_dir: Path | None = None,
        inspect_clone: Callable[[Path], None] | None = None,
        runtime_factory: Callable[[RuntimeKind], Runtime] | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.replica = replica
        #: Makes the runtime a region's settings ask for (``None``: ``runtime`` is fixed).
        self.runtime_factory = runtime_factory
        self.reconciler = reconciler or Reconciler(replica, client, logger, clock=clock)
        #: Where builds clone their source (a fresh temp dir each, removed afterwards).
        self.build_dir = build_dir
        #: Test hook: called with a build's clone directory before it is removed.
        self.inspect_clone = inspect_clone
        self.client = client
        self.runtime = runtime
        self.logger = logger
        self.refresh = refresh
        self.stop_event = stop_event or threading.Event()
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._quiet_until = 0.0
        #: Progress reports, sent in the background (their own backoff, same jitter policy).
        self.reports = ReportQueue(
            client.report, logger, backoff=Backoff(rand=self.backoff.rand),
            wait=lambda seconds: self.stop_event.wait(seconds),
            # (not the replica: its SQLite connection belongs to the deployer's thread)
            log_extra=lambda: {"region": self.runtime.region or "-"})
        # A restarted agent owes every final report again (see the module docstring).
        replica.unreport_finished()

    # -- the step ----------------------------------------------------------------------------

    def step(self) -> None:
        """Send owed reports, remove deleted apps' containers, run pending deployments, then
        look at what runs (adopt, refresh logins, report)."""
        self._select_runtime()
        # The region is learned from the first snapshot; the runtime's labels carry it.
        self.runtime.region = self.replica.region() or self.runtime.region
        self.flush_reports()
        removed = self.remove_deleted_apps()
        done = self.run_pending()
        if self.replica.revision() is not None and self._runtime_problem() is None:
            self.reconciler.step(self.runtime, changed=bool(done or removed))

    def _select_runtime(self) -> None:
        """Follow the region's runtime when it changes (with a factory to make one)."""
        kind = self.replica.settings().known_runtime
        if self.runtime_factory is None or kind is None or kind is self.runtime.kind:
            return
        self.runtime = self.runtime_factory(kind)
        self._log(logging.INFO, "region %s runs on %s: the agent drives it",
                  self.replica.region() or "-", kind.value)

    def _runtime_problem(self) -> str | None:
        """Why deployments cannot run on this agent's runtime, or ``None``."""
        if self.replica.revision() is None:
            return None
        settings = self.replica.settings()
        if settings.known_runtime is None:
            return (f"Region {self.replica.region()} runs on {settings.runtime!r}, which this "
                    "agent cannot drive (it knows docker and swarm): upgrade the agent.")
        if settings.known_runtime is not self.runtime.kind:
            return (f"Region {self.replica.region()} runs on {settings.runtime}, but this agent "
                    f"was started for {self.runtime.kind.value}.")
        return None

    def flush_reports(self) -> None:
        """Send the final reports the control plane has not taken, unless backing off.

        A final report waits until the deployment's progress reports have left, so it is the
        last the control plane gets; if they cannot leave now, it stays owed.
        """
        self.reports.raise_if_failed()
        for deployment in self.replica.unreported():
            if deployment.final_report is None:
                continue
            if not self.reports.drain(deployment.id):
                return
            if not self.send_report(deployment.id, deployment.final_report, final=True):
                return

    def remove_deleted_apps(self) -> int:
        """Remove the containers of apps deleted (or gone from the region) since last time;
        return how many apps were removed."""
        removed = 0
        for account_id, app_id in self.replica.app_removals():
            try:
                count = self.runtime.remove_app(account_id, app_id)
            except DeployError as exc:
                self._log(logging.WARNING, "could not remove the containers of app %d: %s",
                          app_id, exc.message)
                return removed
            self.replica.app_removed(account_id, app_id)
            removed += 1
            self._log(logging.INFO, "app %d deleted: removed %d containers", app_id, count)
        return removed

    def run_pending(self) -> list[int]:
        """Run the newest pending deployment of each app; return the ids run (or superseded)."""
        pending = self.replica.deployments(state=DEPLOYMENT_PENDING)
        if not pending:
            return []
        newest_finished: dict[tuple[int, int], int] = {}
        for d in self.replica.deployments():
            if d.state != DEPLOYMENT_PENDING:
                key = (d.account_id, d.app_id)
                newest_finished[key] = max(newest_finished.get(key, 0), d.number)
        newest: dict[tuple[int, int], ReplicaDeployment] = {}
        for d in pending:
            key = (d.account_id, d.app_id)
            if key not in newest or d.number > newest[key].number:
                newest[key] = d
        done: list[int] = []
        for d in pending:
            key = (d.account_id, d.app_id)
            winner = newest[key]
            if d is not winner or d.number < newest_finished.get(key, 0):
                later = max(winner.number, newest_finished.get(key, 0))
                self._finish(d, _Reporter(self, d), DEPLOYMENT_FAILED, "failed", error={
                    "code": "superseded",
                    "message": f"Deployment #{d.number} of {d.app} was superseded by "
                               f"#{later} before it started."})
                done.append(d.id)
        for d in newest.values():
            if self.stop_event.is_set():
                break
            if d.id in done:
                continue
            try:
                self.deploy(d)
            except _Deferred:
                continue
            done.append(d.id)
        return done

    def check_still_wanted(self, d: ReplicaDeployment) -> None:
        """Right before a container starts: sync once (the pull may have taken long), and
        raise :class:`_Dropped` if the deployment's app was deleted meanwhile, so a deleted
        app never starts, even for a moment. Unreachable control plane: go on."""
        if self.refresh is not None:
            try:
                self.refresh()
            except (TransientError, ProtocolError, TamperedPayload, ReplicaError) as exc:
                self._log(logging.DEBUG, "deployment %d: could not sync before starting: %s",
                          d.id, exc)
        if self.replica.get_deployment(d.id) is None:
            raise _Dropped

    # -- one deployment ----------------------------------------------------------------------

    def deploy(self, d: ReplicaDeployment) -> None:
        """Run one deployment to ``running`` or ``failed`` and record the outcome."""
        reporter = _Reporter(self, d)
        name = f"{d.app} #{d.number}"
        env: dict[str, str] = {}
        try:
            final = self._deploy(d, reporter, env)
        except _Deferred:
            raise
        except _Dropped:
            self._log(logging.INFO, "deployment %d (%s): its app was deleted meanwhile; not "
                      "started", d.id, name)
            return
        except DeployError as exc:
            secrets = secret_env_values(d.payload, env)
            masked = [mask_secrets(line, secrets) for line in exc.logs]
            if masked:
                reporter.line("Last lines of the build output:" if exc.code.startswith("build")
                              else "Last log lines of the container:")
                for line in masked[-10:]:
                    reporter.line(f"  {line}")
            message = mask_secrets(exc.message, secrets)
            self._log(logging.WARNING, "deployment %d (%s) failed: %s: %s", d.id, name,
                      exc.code, message)
            self._finish(d, reporter, DEPLOYMENT_FAILED, "failed",
                         error={"code": exc.code, "message": message})
            return
        except AgentAuthError:
            raise
        except Exception as exc:  # a bug must not crash-loop the agent on this deployment
            self._log(logging.ERROR, "deployment %d (%s): unexpected %s", d.id, name,
                      type(exc).__name__)
            self._finish(d, reporter, DEPLOYMENT_FAILED, "failed", error={
                "code": "agent_error",
                "message": f"The region agent failed unexpectedly ({type(exc).__name__})."})
            return
        finally:
            env.clear()
        self._finish(d, reporter, DEPLOYMENT_DONE, "running", **final)
        self._after(d, reporter)
        # Then what runs now (replicas, the credential it carries), right away.
        self.reconciler.step(self.runtime, changed=True)

    def _deploy(
        self, d: ReplicaDeployment, reporter: _Reporter, env: dict[str, str]
    ) -> dict[str, Any]:
        region = self.replica.region() or ""
        problem = self._runtime_problem()
        if problem is not None:
            raise DeployError("runtime_unsupported", problem)
        accounts = self.replica.accounts()
        try:
            env.update(self.replica.open_env(d))
        except SealedDataError:
            raise DeployError("env_secret_unreadable",
                              f"A secret environment value of {d.app} cannot be opened in "
                              f"region {region}.") from None
        if d.build is not None:
            image = self._build(d, reporter, region)
        else:
            image = self._image(d, reporter, region)
        spec = AppSpec(region=region, account_id=d.account_id,
                       account=accounts.get(d.account_id, str(d.account_id)),
                       app_id=d.app_id, app=d.app, deployment_id=d.id,
                       port=d.payload.get("port"), command=d.payload.get("command"),
                       env=dict(env), replicas=d.payload.get("replicas") or 1,
                       ready_timeout=ready_timeout_from(d.payload))
        try:
            result = self.runtime.deploy(spec, image, reporter)
        except DeployError as exc:
            if d.build is None and image.login is None:
                raise _default_elsewhere(exc, d) from None
            raise
        finally:
            del image
        reporter.after = result.after
        if d.build is not None:
            self._prune_builds(d)
        return reporter.fields | {"container_id": result.ids[0] if result.ids else ""}

    def _image(self, d: ReplicaDeployment, reporter: _Reporter, region: str) -> ImageSource:
        """An image deployment's image and the login to pull it with; reports ``pulling``."""
        try:
            ref = parse_reference(d.image)
        except InvalidReference as exc:
            raise DeployError("invalid_image", exc.message) from None
        host = ref.registry_host
        credential = self._credential(d)
        default_host = d.pull.get("default_host")
        if credential is None:
            reporter.line(f"Pulling {d.image} anonymously from {host}" + (
                f" (the account default is for {default_host})" if default_host else ""))
        else:
            _check_credential(credential, d, host)
            label = f"'{credential.name}' (revision {credential.revision})"
            reporter.line(f"Pulling {d.image} with {label}{_token_note(credential)} from {host}")
            reporter.fields |= {"credential_id": credential.id,
                                "credential_revision": credential.revision}
        self._log(logging.INFO, "deployment %d (%s #%d): %s", d.id, d.app, d.number,
                  reporter.lines[-1])
        reporter.phase("pulling")
        if credential is None:
            return ImageSource(ref)
        return ImageSource(ref, login=self._open(credential, label, region),
                           credential_label=label, credential_id=credential.id,
                           credential_revision=credential.revision)

    def _build(self, d: ReplicaDeployment, reporter: _Reporter, region: str) -> ImageSource:
        """Build a build-from-source deployment (``builder``); return the image to run."""
        try:
            spec = BuildSpec.from_payload(d.build)
        except ValueError as exc:  # the replica checked it; be explicit anyway
            raise DeployError("agent_error", f"The build of {d.app} is malformed: {exc}") \
                from None
        if self.runtime.kind is RuntimeKind.SWARM and self.replica.settings().registry is None:
            raise DeployError(
                "region_registry_missing",
                f"Region {region} runs on Docker Swarm and has no region registry, so an image "
                f"built from source cannot reach its nodes. The platform's operator adds one "
                f"with 'moorage regions update {region} --registry HOST[:PORT] ...'; apps that "
                "run an image work there meanwhile.")
        git_credential = pull_credential = None
        if spec.git is not None and spec.git.credential_id is not None:
            url_host = git_host(spec.git.url)
            git_credential = self._resolve(d, spec.git.credential_id,
                                           int(spec.git.credential_revision or 0), None)
            if git_credential.account_id != d.account_id or git_credential.type != GIT_TYPE:
                raise DeployError("credential_not_usable",
                                  f"The credential '{git_credential.name}' is not a git "
                                  "credential of this app's account.")
            if not check_git_host(git_credential.server, url_host):
                raise DeployError(
                    "credential_host_mismatch",
                    f"The git credential '{git_credential.name}' is for {git_credential.server}"
                    f", but the repository is on {url_host}: a credential is only ever sent to "
                    "its own host.")
            if not plain_http_allowed(spec.git.url):
                raise DeployError("git_url_invalid",
                                  f"The repository URL {spec.git.url} is plain http: a git "
                                  "credential is only sent over https.")
        if spec.pull_credential_id is not None:
            pull_credential = self._resolve(d, spec.pull_credential_id,
                                            int(spec.pull_credential_revision or 0),
                                            spec.pull_credential_name)
            if pull_credential.account_id != d.account_id \
                    or pull_credential.type != REGISTRY_TYPE:
                raise DeployError("credential_not_usable",
                                  f"The credential '{pull_credential.name}' is not a "
                                  "container-registry credential of this app's account.")
        pull_host = pull_label = None
        if pull_credential is not None:
            try:
                pull_host = normalize_registry_host(pull_credential.server)
            except InvalidRegistryHost:
                raise DeployError("credential_not_usable",
                                  f"The credential '{pull_credential.name}' names no valid "
                                  "registry host.") from None
            pull_label = f"'{pull_credential.name}' (revision {pull_credential.revision})"
        if spec.git is not None:
            git_host(spec.git.url)  # refuses other transports before anything runs
            self._log(logging.INFO, "deployment %d (%s #%d): building from %s at %s", d.id,
                      d.app, d.number, spec.git.url, spec.git.ref)
        else:
            self._log(logging.INFO, "deployment %d (%s #%d): building the uploaded source %s",
                      d.id, d.app, d.number, spec.archive.sha256[:12] if spec.archive else "")
        credentials = Credentials(
            git=None if git_credential is None else self._open(
                git_credential, f"'{git_credential.name}'", region),
            pull=None if pull_credential is None else self._open(
                pull_credential, pull_label or "", region),
            pull_host=pull_host, pull_label=pull_label)
        slug = d.payload.get("account_slug") or str(d.account_id)
        try:
            built = run_build(spec=spec, credentials=credentials, runtime=self.runtime.engine,
                              reporter=reporter, repository=image_repository(slug, d.app),
                              deployment_id=d.id,
                              workdir=self.build_dir, inspect_clone=self.inspect_clone,
                              download=self._download_source)
        finally:
            del credentials
        reporter.fields["image_digest"] = built.image_id
        if pull_credential is not None:
            reporter.fields |= {"credential_id": pull_credential.id,
                                "credential_revision": pull_credential.revision}
        if self.runtime.kind is RuntimeKind.SWARM:
            return self._push_to_region_registry(d, built, reporter, region)
        return ImageSource(built.image_id, local=True)

    def _push_to_region_registry(self, d: ReplicaDeployment, built: Built,
                                 reporter: _Reporter, region: str) -> ImageSource:
        """Push a swarm region's build to the region registry, which every node pulls from.

        Only the region registry's login goes with it, and only to the region registry's
        host: a tenant's credential never goes there, and it never goes to a tenant's registry.
        """
        registry = self.replica.settings().registry
        assert registry is not None  # checked before the build
        try:
            login = self.replica.open_registry_secret()
        except SealedDataError:
            login = None
        if login is None:
            raise DeployError("region_registry_unreadable",
                              f"The password of region {region}'s registry cannot be opened "
                              "here; the region key may have been replaced.")
        slug = d.payload.get("account_slug") or str(d.account_id)
        try:
            target = parse_reference(f"{registry.host}/{image_repository(slug, d.app)}:{d.id}")
        except InvalidReference as exc:
            raise DeployError("region_registry_invalid",
                              f"The region registry {registry.host} does not make a valid "
                              f"image name: {exc.message}") from None
        where = f"the region registry {registry.host}"
        reporter.line(f"Pushing the built image to {where}, which every node pulls from")
        digest = self.runtime.engine.push(built.image_id, target, login, label=where)
        reporter.line(f"Pushed {target.familiar} ({digest})")
        return ImageSource(target, login=login, credential_label=where,
                           auth_label=f"{REGION_REGISTRY_LABEL}:{registry.revision}")

    def _download_source(self, archive_id: int, dest: Path) -> None:
        """An uploaded source from the control plane, as a build failure if it cannot be had."""
        try:
            self.client.source_archive(archive_id, dest, max_bytes=MAX_SOURCE_BYTES)
        except ProtocolError as exc:
            raise DeployError("source_not_found",
                              "The control plane no longer has the uploaded source of this "
                              f"deployment ({exc.code or exc.status}); upload it again and "
                              "redeploy.") from None
        except TransientError as exc:
            raise DeployError("source_unreachable",
                              f"The uploaded source could not be downloaded: {exc}") from None

    def _prune_builds(self, d: ReplicaDeployment) -> None:
        slug = d.payload.get("account_slug") or str(d.account_id)
        repositories = [image_repository(slug, d.app)]
        registry = self.replica.settings().registry
        if self.runtime.kind is RuntimeKind.SWARM and registry is not None:
            repositories.append(f"{registry.host}/{repositories[0]}")
        try:
            removed = [tag for repository in repositories
                       for tag in self.runtime.engine.prune_builds(repository)]
        except DeployError as exc:
            self._log(logging.WARNING, "could not prune the build images of %s: %s", d.app,
                      exc.message)
            return
        if removed:
            self._log(logging.INFO, "removed old build images: %s", ", ".join(removed))

    def _open(self, credential: ReplicaCredential, label: str, region: str) -> RegistryLogin:
        try:
            return self.replica.open_secret(credential.id)
        except (SealedDataError, CredentialNotFound):
            raise DeployError(
                "credential_unreadable",
                f"The credential {label} cannot be opened in region {region}; the region "
                "key may have been replaced.") from None

    def _credential(self, d: ReplicaDeployment) -> ReplicaCredential | None:
        pull = d.pull
        if pull["mode"] != PullMode.CREDENTIAL:
            return None
        return self._resolve(d, int(pull["credential_id"]), int(pull["credential_revision"]),
                             pull.get("credential_name"))

    def _resolve(self, d: ReplicaDeployment, credential_id: int, wanted: int,
                 name: str | None) -> ReplicaCredential:
        """The credential at ``wanted`` revision or newer, syncing once if the replica lags."""
        credential = self._held(credential_id)
        if (credential is None or credential.revision < wanted) and self.refresh is not None:
            try:
                self.refresh()
            except (TransientError, ProtocolError, TamperedPayload, ReplicaError) as exc:
                self._log(logging.WARNING, "deployment %d waits: could not sync the "
                          "credential it needs: %s", d.id, exc)
                raise _Deferred from None
            credential = self._held(credential_id)
        if credential is None or credential.revision < wanted:
            name = name or (credential.name if credential else f"#{credential_id}")
            held = "none" if credential is None else f"revision {credential.revision}"
            raise DeployError(
                "credential_not_synced",
                f"The credential '{name}' (revision {wanted}) has not reached region "
                f"{self.replica.region()} yet (it holds {held}). Try again in a moment.")
        return credential

    def _held(self, credential_id: int) -> ReplicaCredential | None:
        try:
            return self.replica.get_credential(credential_id)
        except CredentialNotFound:
            return None

    def _after(self, d: ReplicaDeployment, reporter: _Reporter) -> None:
        """The runtime's clean-up of a deployment that serves (restart policy, the previous
        containers), once its final report has left: it is not the report's to wait for. A
        failure is logged; the deployment stays ``running``, which it is."""
        if reporter.after is None:
            return
        try:
            reporter.after()
        except DeployError as exc:
            self._log(logging.WARNING, "deployment %d (%s #%d) runs, but its clean-up failed: "
                      "%s: %s", d.id, d.app, d.number, exc.code, exc.message)

    # -- reports -----------------------------------------------------------------------------

    def _finish(self, d: ReplicaDeployment, reporter: _Reporter, state: str, status: str,
                **fields: Any) -> None:
        if self.replica.get_deployment(d.id) is None:
            return  # the app was deleted meanwhile; the control plane forgot it too
        self.replica.finish_deployment(d.id, state=state,
                                       report=reporter.final(status, **fields))
        self._log(logging.INFO, "deployment %d (%s #%d): %s", d.id, d.app, d.number, status)
        self.flush_reports()

    def send_report(self, deployment_id: int, body: dict[str, Any], *,
                    final: bool = False) -> bool:
        """Send one report; ``True`` when the control plane took it (or refused it for good).

        A transient failure starts a backoff during which no report is attempted (progress
        reports are skipped, final ones stay owed). Raises :class:`AgentAuthError`.
        """
        if self._clock() < self._quiet_until:
            return False
        try:
            self.client.report(deployment_id, body)
        except TransientError as exc:
            delay = self.backoff.next_delay()
            self._quiet_until = self._clock() + delay
            self._log(logging.WARNING, "could not report deployment %d (%s), retrying in "
                      "%.1f s: %s", deployment_id, body["status"], delay, exc)
            return False
        except ProtocolError as exc:
            self._log(refusal_level(exc), "the control plane refused the report of deployment "
                      "%d (%s): %s", deployment_id, body["status"], exc)
        self.backoff.reset()
        if final:
            self.replica.mark_reported(deployment_id)
        return True

    def _log(self, level: int, message: str, *args: object) -> None:
        self.logger.log(level, message, *args, extra={"region": self.replica.region() or "-"})


def _check_credential(credential: ReplicaCredential, d: ReplicaDeployment, host: str) -> None:
    """I4 and I7, again on the agent: the credential is the app's account's, a registry
    credential, and made for the image's registry host. Checked before any network call."""
    if credential.account_id != d.account_id or credential.type != REGISTRY_TYPE:
        raise DeployError("credential_not_usable",
                          f"The credential '{credential.name}' is not a container-registry "
                          "credential of this app's account.")
    if not hosts_match(credential.server, host):
        raise DeployError(
            "credential_host_mismatch",
            f"The credential '{credential.name}' is for the registry {credential.server}, but "
            f"the image {d.image} is on {host}: a credential is only ever sent to its own "
            "registry. Choose a credential for that registry.")


def _default_elsewhere(error: DeployError, d: ReplicaDeployment) -> DeployError:
    """A refused anonymous pull of an app on "Use account default" whose default is for
    another registry: say so, and what to do (the default was rightly not sent here, I4)."""
    default_host = d.pull.get("default_host")
    if not isinstance(default_host, str) or not default_host or d.image is None \
            or error.code not in ("registry_unauthorized", "registry_forbidden"):
        return error
    host = parse_reference(d.image).registry_host
    return DeployError(error.code, f"The app uses the account default, which is for "
                       f"{default_host}, so the pull from {host} was anonymous: choose a "
                       f"credential for {host} for this app. {error.message}", logs=error.logs)


def _token_note(credential: ReplicaCredential) -> str:
    """For a short-lived token: until when its issuer said it works. A token past that is
    still tried (issuers misreport; the registry decides), and the line says so."""
    if credential.expires_at is None:
        return ""
    when = credential.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    if credential.expires_at <= datetime.now(UTC):
        return f", a token its issuer said expired at {when}: trying it anyway"
    return f", a token valid until {when}"
