"""Apps that run for real in tests: a busybox shell script, deployed through the services."""

from __future__ import annotations

import docker
from docker.models.containers import Container

from moorage.apps.models import App
from moorage.apps.services import EnvInput, app_create
from moorage.deployments.choices import DeploymentStatus
from moorage.deployments.models import Deployment
from moorage.testing.credentials import make_credential
from moorage.testing.factories import Member
from moorage.testing.processes import wait_until
from moorage.testing.regions import deploy_one
from moorage.testing.registry import RegistryServer


def script_app(owner: Member, *, registry: RegistryServer, image: str, script: str,
               name: str = "api", secrets: dict[str, str] | None = None) -> tuple[App, Deployment]:
    """An app running ``sh -c script`` from ``image`` (pulled from ``registry`` with a
    credential of the owner's account), with ``secrets`` as secret env values; deployed once
    to the account's one region. The returned deployment runs once that region's agent has
    run it."""
    credential = make_credential(owner, name=f"{name}-registry", server=registry.host,
                                 username=registry.admin_username,
                                 secret=registry.admin_password)
    app = app_create(actor=owner.user, membership=owner.membership, name=name, image=image,
                     runtime_pull="credential", runtime_pull_credential_id=credential.pk,
                     command=["/bin/sh", "-c", script],
                     env=[EnvInput(name=k, value=v, secret=True)
                          for k, v in (secrets or {}).items()])
    return app, deploy_one(owner, app.pk)


def running_container(deployment: Deployment, docker_client: docker.DockerClient, *,
                      printed: str | None = None) -> Container:
    """Wait until the region's agent has run ``deployment`` (failing with its error if it
    failed); return the app's container once its log holds ``printed``."""
    def finished() -> bool:
        deployment.refresh_from_db()
        return deployment.status in (DeploymentStatus.RUNNING, DeploymentStatus.FAILED)
    wait_until(finished, timeout=90, what=f"deployment {deployment.pk} to finish")
    assert deployment.status == DeploymentStatus.RUNNING, (deployment.error_code,
                                                           deployment.error_message)
    [container] = docker_client.containers.list(
        filters={"label": f"moorage.app={deployment.app_id}"})
    if printed is not None:
        wait_until(lambda: printed.encode() in container.logs(), timeout=10,
                   what=f"the app to print {printed!r}")
    return container
