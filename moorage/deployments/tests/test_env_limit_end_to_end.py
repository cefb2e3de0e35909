"""The largest environment an app may hold starts on the real dockerd, and the limit it is
checked against is below what the kernel refuses (issue 13, item 8)."""

from __future__ import annotations

from collections.abc import Callable

import docker
import docker.errors
import pytest

from moorage.apps.services import (
    COMMAND_ARG_MAX,
    COMMAND_MAX,
    ENV_TOTAL_MAX,
    EnvInput,
    app_create,
    app_update,
)
from moorage.apps.tests.test_env_limits import env_of_size
from moorage.deployments.tests.conftest import RunAgent
from moorage.errors import ValidationFailed
from moorage.testing.credentials import make_credential
from moorage.testing.images import build_busybox_rootfs_tar
from moorage.testing.ports import free_port
from moorage.testing.regions import AgentView, deploy_one, member_in
from moorage.testing.registry import RegistryServer

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_the_largest_env_and_command_start_and_a_byte_more_is_refused_at_save(
    region: AgentView, run_agent: RunAgent, registry_basic: RegistryServer,
    busybox_image: Callable[..., str], docker_client: docker.DockerClient,
) -> None:
    owner = member_in(region, "Big Env Co")
    image = busybox_image(registry_basic, "acme/big-env", "1.0")
    make_credential(owner, name="reg", server=registry_basic.host,
                    username=registry_basic.admin_username, secret=registry_basic.admin_password)
    variables = env_of_size(ENV_TOTAL_MAX)
    env = [EnvInput(v["name"], v["value"], secret=i == 0) for i, v in enumerate(variables)]
    port = free_port()
    # The longest command too: it shares the kernel's limit with the environment.
    script = f"exec httpd -f -p {port}"
    command = ["sh", "-c", script, *(["a" * COMMAND_ARG_MAX] * (COMMAND_MAX - 3))]
    app = app_create(actor=owner.user, membership=owner.membership, name="big", image=image,
                     port=port, command=command, env=env)

    deployment = deploy_one(owner, app.pk)
    run_agent()
    deployment.refresh_from_db()
    assert deployment.status == "running", (deployment.error_code, deployment.error_message)
    [container] = docker_client.containers.list(filters={"label": f"moorage.app={app.pk}"})
    assert container.status == "running"
    # The server's process holds every variable (and a NUL after each).
    code, output = container.exec_run(["sh", "-c", "wc -c < /proc/1/environ"])
    assert code == 0, output
    assert int(output) >= ENV_TOTAL_MAX + len(variables)

    over = [EnvInput(v["name"], v["value"]) for v in env_of_size(ENV_TOTAL_MAX + 1)]
    with pytest.raises(ValidationFailed) as refused:
        app_update(actor=owner.user, membership=owner.membership, app_id=app.pk, env=over)
    assert refused.value.code == "env_too_large"
    assert app.env.count() == len(variables)


def test_the_engine_refuses_about_twice_the_limit(docker_client: docker.DockerClient) -> None:
    """Why the limit is 1 MiB: on this engine (8 MiB stack, so 2 MiB for a process's
    arguments and environment) 2 MiB of environment does not start; the accepted 1 MiB
    leaves the command and the image's own variables their room."""
    repository = "moorage-test/env-limit"
    docker_client.api.import_image_from_data(build_busybox_rootfs_tar(), repository=repository,
                                             tag="1", changes=['CMD ["/bin/sh"]'])

    def start(total: int) -> bytes:
        env = [f"{v['name']}={v['value']}" for v in env_of_size(total)]
        return docker_client.containers.run(f"{repository}:1", ["sh", "-c", "echo started"],
                                            environment=env, network_mode="host", remove=True)

    assert start(ENV_TOTAL_MAX) == b"started\n"
    with pytest.raises(docker.errors.ContainerError) as failed:
        start(2 * ENV_TOTAL_MAX)
    assert b"argument list too long" in failed.value.stderr
