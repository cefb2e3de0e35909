"""Keeps what the engine runs in step with the replica, and tells the control plane.

The deployer runs deployments; this looks at what actually runs, read back from the engine's
``moorage.*`` labels (:meth:`~moorage.agent.runtime.base.Runtime.running`), after every step
in which something may have changed (the replica's credentials, defaults, apps or region
settings; a deploy), and at least every :data:`REPORT_INTERVAL` seconds:

* **Adopt, never duplicate, leave no orphans.** An agent restarted with an empty data
  directory takes a snapshot; the deployments it holds as finished are not run again, and
  a new deployment updates the app's existing service (or replaces its container). What
  runs for an app the replica does not hold at all (deleted while the agent was away) is
  removed.
* **I12, rotation reaches running services.** For an engine that keeps a login with what runs
  (Swarm services), every app whose service carries another credential revision than the
  one it resolves to now — a rotated credential, or a default that moved for an app on "Use
  account default" — gets the new login through
  :meth:`~moorage.agent.runtime.base.Runtime.refresh_auth`, without restarting its tasks. A
  refresh that fails (the registry refuses the new login: I9) is logged and tried again later;
  the service keeps its previous login meanwhile.
* **Drain.** A region being removed (``region.drain``) holds no deployment any more, so
  everything of it that runs is removed like an orphan; once nothing runs, the agent says
  so (``POST /agent/drained``) and the control plane lets the region go.
* **Report.** ``POST /agent/runtime`` with the nodes and, per app, replicas running and desired
  and the credential revision its registry auth carries (``docs/sync.md``), when it changed
  or every :data:`REPORT_INTERVAL` seconds.

Nothing here holds a secret longer than one refresh call; log lines name credentials and
revisions, never a password.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from moorage.agent.client import ControlPlaneClient
from moorage.agent.errors import (
    CredentialNotFound,
    DeployError,
    ProtocolError,
    TransientError,
)
from moorage.agent.replica import REGISTRY_TYPE, Replica, ReplicaDeployment
from moorage.agent.runtime.base import ImageSource, RunningApp, Runtime
from moorage.protocol.enums import PullMode
from moorage.protocol.runtime_report import RuntimeReport, ServiceReport
from moorage.registry import RegistryLogin
from moorage.registry.hosts import InvalidRegistryHost, normalize_registry_host
from moorage.registry.reference import InvalidReference, parse_reference
from moorage.sealing import SealedDataError

#: Seconds between looks at the engine when nothing changed on the replica's side (node
#: states and replica counts change on the engine's side only).
REPORT_INTERVAL = 30.0
#: An unchanged report is still sent this often: the control plane shows when it was made.
REPORT_RESEND = 300.0
#: The label a service pulling from the region registry carries.
REGION_REGISTRY_LABEL = "region-registry"


class Reconciler:
    """One agent's view of what runs; :meth:`step` is called by the deployer's step."""

    def __init__(
        self, replica: Replica, client: ControlPlaneClient, logger: logging.Logger, *,
        clock: Callable[[], float] = time.monotonic, report_interval: float = REPORT_INTERVAL,
    ) -> None:
        self.replica = replica
        self.client = client
        self.logger = logger
        self.report_interval = report_interval
        self._clock = clock
        self._seen: str | None = None
        self._looked_at = -float("inf")
        self._sent: str | None = None
        self._sent_at = -float("inf")
        self._retry_refresh = False
        self._adopted = False

    def step(self, runtime: Runtime, *, changed: bool = False) -> None:
        """Look at the engine if something changed (or it is time); adopt, refresh, report.

        ``changed``: the caller ran or removed something. Engine errors are logged, not
        raised (the loop goes on syncing); :class:`~moorage.agent.errors.AgentAuthError`
        from the report is raised.
        """
        if self.replica.revision() is None:
            return  # nothing to compare with before the first snapshot
        fingerprint = self._fingerprint()
        now = self._clock()
        moved = fingerprint != self._seen
        draining = self.replica.drain_pending()
        if not (changed or moved or self._retry_refresh or not self._adopted or draining
                or now - self._looked_at >= self.report_interval):
            return
        self._looked_at = now
        try:
            running = runtime.running()
            if not self._adopted or moved or changed:
                if self._remove_orphans(runtime, running):
                    running = runtime.running()
                self._adopted = True
            if runtime.keeps_logins() and (moved or self._retry_refresh):
                if self._refresh(runtime, running):
                    running = runtime.running()
            nodes = runtime.nodes()
        except DeployError as exc:
            self._log(logging.WARNING, "could not read what runs on the engine: %s",
                      exc.message)
            return
        if draining and not running and not self.replica.app_removals():
            try:
                left = runtime.leftovers()
            except DeployError as exc:
                self._log(logging.WARNING, "could not read what is left on the engine: %s",
                          exc.message)
                left = -1
            if left == 0:
                self._report_drained()
            else:
                self._log(logging.INFO, "draining: waiting for what is left on the engine "
                          "to go")
        self._seen = fingerprint
        self._report(RuntimeReport(runtime=runtime.kind.value, nodes=nodes,
                                   services=[_service(r) for r in running]))

    # -- what changed ------------------------------------------------------------------------

    def _fingerprint(self) -> str:
        """Everything on the replica's side a running app's login or existence depends on."""
        return json.dumps([
            self.replica.drain_pending(),
            self.replica.settings().to_payload(),
            sorted(self.replica.credentials_held().items()),
            sorted(self.replica.registry_defaults().items()),
            sorted((d.id, d.state) for d in self.replica.deployments()),
        ], sort_keys=True)

    # -- adoption ----------------------------------------------------------------------------

    def _remove_orphans(self, runtime: Runtime, running: list[RunningApp]) -> bool:
        """Remove what runs for apps the replica does not hold; whether anything went."""
        held = {(d.account_id, d.app_id) for d in self.replica.deployments()}
        queued = set(self.replica.app_removals())  # the deployer removes those itself
        removed = False
        for app in running:
            key = (app.account_id, app.app_id)
            if key in held or key in queued:
                continue
            count = runtime.remove_app(app.account_id, app.app_id)
            self._log(logging.INFO, "removed %s (app %d of account %d): this region no longer "
                      "runs it (%d removed)", app.name or "an app", app.app_id,
                      app.account_id, count)
            removed = True
        return removed

    # -- I12 ---------------------------------------------------------------------------------

    def _refresh(self, runtime: Runtime, running: list[RunningApp]) -> bool:
        """Hand every service whose login is out of date its current one; whether any was."""
        self._retry_refresh = False
        updated = False
        for app in running:
            deployment = self._deployment_of(app)
            if deployment is None:
                continue
            try:
                wanted = self._login_for(deployment, app)
            except _CannotRefresh as reason:
                self._log(logging.WARNING, "%s keeps its registry login: %s", app.name, reason)
                continue
            if wanted is None or wanted.label == app.auth_label:
                continue
            words = wanted.credential_label or "no credential (anonymously)"
            try:
                changed = runtime.refresh_auth(app.account_id, app.app_id, wanted)
            except DeployError as exc:
                self._retry_refresh = True
                self._log(logging.WARNING, "%s keeps its previous registry login: %s: %s",
                          app.name, exc.code, exc.message)
                continue
            finally:
                del wanted
            if changed:
                updated = True
                self._log(logging.INFO, "%s now pulls with %s; its tasks keep running",
                          app.name, words)
        return updated

    def _deployment_of(self, app: RunningApp) -> ReplicaDeployment | None:
        """The deployment the service runs, or else the app's newest one the replica holds."""
        found = self.replica.get_deployment(app.deployment_id)
        if found is not None:
            return found
        mine = [d for d in self.replica.deployments()
                if (d.account_id, d.app_id) == (app.account_id, app.app_id)]
        return max(mine, key=lambda d: d.number) if mine else None

    def _login_for(self, d: ReplicaDeployment, app: RunningApp) -> ImageSource | None:
        """The login the app's service should carry now (``None``: leave it alone)."""
        if d.build is not None:
            registry = self.replica.settings().registry
            if registry is None:
                return None
            label = f"{REGION_REGISTRY_LABEL}:{registry.revision}"
            if label == app.auth_label:
                return None
            return ImageSource(app.image, login=self._open_registry(),
                               credential_label=f"the region registry {registry.host}",
                               auth_label=label)
        pull = d.pull
        try:
            host = parse_reference(d.image).registry_host
        except InvalidReference:
            return None
        credential_id: int | None = None
        if pull.get("account_default"):
            default = self.replica.registry_defaults().get(d.account_id)
            if default is not None and self._host_of(default) == host:
                credential_id = default
        elif pull["mode"] == PullMode.CREDENTIAL:
            credential_id = int(pull["credential_id"])
        if credential_id is None:
            return ImageSource(app.image)  # anonymous: "e30=", label ""
        try:
            credential = self.replica.get_credential(credential_id)
        except CredentialNotFound:
            raise _CannotRefresh(f"its credential #{credential_id} is no longer in the "
                                 "region") from None
        if credential.account_id != d.account_id or credential.type != REGISTRY_TYPE:
            raise _CannotRefresh(f"the credential '{credential.name}' is not a "
                                 "container-registry credential of its account")
        if self._host_of(credential.id) != host:
            raise _CannotRefresh(f"the credential '{credential.name}' is for another registry")
        label = f"'{credential.name}' (revision {credential.revision})"
        wanted = ImageSource(app.image, credential_label=label, credential_id=credential.id,
                             credential_revision=credential.revision)
        if wanted.label == app.auth_label:
            return None  # nothing to do: do not open the secret
        try:
            login = self.replica.open_secret(credential.id)
        except (SealedDataError, CredentialNotFound):
            raise _CannotRefresh(f"the credential {label} cannot be opened here") from None
        return ImageSource(app.image, login=login, credential_label=label,
                           credential_id=credential.id, credential_revision=credential.revision)

    def _open_registry(self) -> RegistryLogin | None:
        try:
            return self.replica.open_registry_secret()
        except SealedDataError:
            raise _CannotRefresh("the region registry's password cannot be opened here") \
                from None

    def _host_of(self, credential_id: int) -> str | None:
        try:
            return normalize_registry_host(self.replica.get_credential(credential_id).server)
        except (CredentialNotFound, InvalidRegistryHost):
            return None

    # -- drain -------------------------------------------------------------------------------

    def _report_drained(self) -> None:
        """The region is being removed and nothing of it runs any more: say so, once taken
        (``POST /agent/drained``); a failure is tried again at the next step."""
        try:
            self.client.drained()
        except (TransientError, ProtocolError) as exc:
            self._log(logging.WARNING, "could not report that the region is drained "
                      "(retrying): %s", exc)
            return
        self.replica.drain_reported()
        self._log(logging.INFO, "region drained: every app is stopped and removed; the "
                  "control plane may remove the region now")

    # -- report ------------------------------------------------------------------------------

    def _report(self, report: RuntimeReport) -> None:
        body = report.to_payload()
        text = json.dumps(body, sort_keys=True)
        now = self._clock()
        if text == self._sent and now - self._sent_at < REPORT_RESEND:
            return
        try:
            self.client.runtime_report(body)
        except TransientError as exc:
            self._log(logging.WARNING, "could not report the runtime (retrying later): %s", exc)
            self._looked_at = -float("inf")
            return
        except ProtocolError as exc:
            self._log(logging.ERROR, "the control plane refused the runtime report: %s", exc)
        self._sent, self._sent_at = text, now

    def _log(self, level: int, message: str, *args: object) -> None:
        self.logger.log(level, message, *args, extra={"region": self.replica.region() or "-"})


class _CannotRefresh(Exception):
    """Why an app's service cannot be given a current login (said in the log)."""


def _service(app: RunningApp) -> ServiceReport:
    credential: tuple[int | None, int | None] = app.credential or (None, None)
    return ServiceReport(account_id=app.account_id, app_id=app.app_id,
                         deployment_id=app.deployment_id, name=app.name[:255] or "-",
                         running=app.running, desired=app.desired,
                         credential_id=credential[0], credential_revision=credential[1])

