"""What a region's agent receives about deployments (``docs/sync.md``, Deployments)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from moorage.apps.choices import RuntimePull
from moorage.apps.models import App
from moorage.apps.services import open_env
from moorage.credentials.logins import current_login
from moorage.credentials.models import Credential
from moorage.deployments.choices import DeploymentStatus, PullMode
from moorage.deployments.models import Deployment
from moorage.protocol.associated_data import region_env_aad
from moorage.regions.models import Region
from moorage.sealing import Key, seal


def check_secrets(app: App, credentials: Iterable[Credential | None]) -> None:
    """Open every secret a deployment of ``app`` needs, and forget them again.

    Raises :class:`~moorage.keys.errors.SecretUnavailable` naming the first one that
    cannot be opened (its key is no longer in the keyring...): the deploy then fails at once,
    saying what to do, instead of waiting for an agent that can never receive it.
    """
    for credential in credentials:
        if credential is not None:
            current_login(credential)  # what the region receives: the password or token
    for variable in app.env.all():
        if variable.secret:
            open_env(variable)


def deployment_credentials(deployment: Deployment) -> list[Credential | None]:
    """The credentials a deployment uses: its pull credential (runtime or build pull) and,
    for a build from git, its git credential."""
    git = ((deployment.build or {}).get("git") or {}).get("credential_id")
    git_credential = Credential.objects.filter(id=git).first() if git else None
    return [deployment.credential, git_credential]


def deployment_payload(
    region: Region, key: Key, deployment: Deployment, *, secrets: bool = True
) -> dict[str, Any]:
    """A deployment as the agent needs it; secret env values re-sealed for the region.

    The env is the app's as it is when the agent receives the deployment. Raises
    :class:`~moorage.keys.errors.SecretUnavailable` when a secret the deployment needs
    cannot be opened (for one still to run, its credentials are checked too). With
    ``secrets=False`` secret env values are left out: for a deployment the agent will not run
    (it failed, or finished), whose secrets no longer open.
    """
    app = deployment.app
    if secrets and not deployment.finished:
        check_secrets(app, deployment_credentials(deployment))
    env: list[dict[str, str]] = []
    for variable in app.env.all():
        if variable.secret:
            if not secrets:
                continue
            aad = region_env_aad(region=region.slug, account_id=app.account_id, app_id=app.pk,
                                 deployment_id=deployment.pk, name=variable.name)
            env.append({"name": variable.name,
                        "secret": seal(key, open_env(variable).encode(), aad)})
        else:
            env.append({"name": variable.name, "value": variable.value})
    with_credential = deployment.pull_mode == PullMode.CREDENTIAL and deployment.build is None
    return {
        "id": deployment.pk,
        "account_id": app.account_id,
        "account_slug": app.account.slug,
        "app_id": app.pk,
        "app": app.name,
        "number": deployment.number,
        "status": deployment.status,
        "image": deployment.image or None,
        "build": deployment.build,
        "pull": {
            "mode": PullMode.CREDENTIAL if with_credential else PullMode.ANONYMOUS,
            "credential_id": deployment.credential_id if with_credential else None,
            "credential_name": deployment.credential_name if with_credential else None,
            "credential_revision": deployment.credential_revision if with_credential else None,
            # An anonymous pull because the account default is for this other registry: the
            # agent names it if the registry refuses the pull.
            "default_host": deployment.default_host or None,
            # The app follows the account default: a default that moves (or a default for
            # the image's registry that appears) moves its running services too (I12).
            "account_default": deployment.build is None
            and app.runtime_pull == RuntimePull.ACCOUNT_DEFAULT,
        },
        "port": app.port,
        "command": app.command,
        "replicas": app.replicas,
        "ready_timeout": app.ready_timeout,
        "env": env,
    }


def latest_deployments(region: Region, account_ids: Iterable[int]) -> list[Deployment]:
    """The newest deployment of every app of these accounts in ``region``; none while the
    region drains, and none for an app whose newest one there was stopped (the region was
    disabled for its account since): the agent must not run those again."""
    if region.draining_since is not None:
        return []
    seen: set[int] = set()
    latest = []
    for deployment in (Deployment.objects.filter(region=region, app__account_id__in=account_ids)
                       .select_related("app__account", "credential")
                       .prefetch_related("app__env")
                       .order_by("app_id", "-number")):
        if deployment.app_id not in seen:
            seen.add(deployment.app_id)
            if deployment.status != DeploymentStatus.STOPPED:
                latest.append(deployment)
    return latest
