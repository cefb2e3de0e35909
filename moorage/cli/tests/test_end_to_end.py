"""From nothing to a serving Moorage, as the README says: real processes, a fresh data dir."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from moorage.agent.replica import Replica
from moorage.sealing import parse_keys
from moorage.testing.cloud import MotoEcr
from moorage.testing.dockerd import Dockerd
from moorage.testing.fixtures import BusyboxImageFactory
from moorage.testing.ports import (
    free_port,
    kill_pid,
    pids_mentioning,
    stop_process,
    wait_for_http,
)
from moorage.testing.processes import wait_until
from moorage.testing.registry import RegistryServer
from moorage.testing.secrets_search import files_containing

PASSWORD = "an end to end password 5"


def _moorage() -> list[str]:
    found = shutil.which("moorage", path=os.path.dirname(sys.executable))
    return [found] if found else [sys.executable, "-m", "moorage"]


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MOORAGE_", "DJANGO_")) and k != "DATABASE_URL"}
    env["MOORAGE_DATA_DIR"] = str(tmp_path / "data")
    env["HOME"] = str(tmp_path / "home")
    return env


@pytest.fixture
def server(embedded_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    init = subprocess.run(
        [*_moorage(), "init", "--email", "owner@example.com", "--account", "Harbour",
         "--password-stdin"],
        input=PASSWORD + "\n", env=embedded_env, capture_output=True, text=True, timeout=120,
    )
    assert init.returncode == 0, init.stderr
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*_moorage(), "up", "--port", str(port)], env=embedded_env, stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/login/", process=process, log=log, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def test_init_up_login_page_and_api(server: str, embedded_env: dict[str, str],
                                    tmp_path: Path) -> None:
    page = httpx.get(server + "/login/")
    assert page.status_code == 200 and "Log in to Moorage" in page.text
    assert httpx.get(server + "/static/moorage/moorage.css").status_code == 200

    anonymous = httpx.get(server + "/api/v1/me")
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"

    created = subprocess.run(
        [*_moorage(), "tokens", "create", "--name", "e2e"], env=embedded_env,
        capture_output=True, text=True, timeout=60,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    me = httpx.get(server + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["account"]["name"] == "Harbour"

    with httpx.Client(base_url=server) as browser:
        form = browser.get("/login/")
        csrf = browser.cookies["csrftoken"]
        logged_in = browser.post(
            "/login/", data={"email": "owner@example.com", "password": PASSWORD,
                             "csrfmiddlewaretoken": csrf},
            headers={"Referer": server + "/login/"}, follow_redirects=True,
        )
        assert form.status_code == 200
        assert 'data-testid="account-name">Harbour<' in logged_in.text

    data_dir = Path(embedded_env["MOORAGE_DATA_DIR"])
    assert (data_dir / "moorage.sqlite3").exists()
    assert files_containing(data_dir, PASSWORD) == []
    assert files_containing(data_dir, token) == []
    assert PASSWORD not in (tmp_path / "up.log").read_text()
    assert token not in (tmp_path / "up.log").read_text()


def test_up_runs_the_local_agent_and_stops_it_on_sigint(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    init = subprocess.run(
        [*_moorage(), "init", "--password-stdin"], input=PASSWORD + "\n", env=embedded_env,
        capture_output=True, text=True, timeout=120,
    )
    assert init.returncode == 0, init.stderr
    token = subprocess.run(
        [*_moorage(), "tokens", "create", "--name", "e2e"], env=embedded_env,
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()
    data_dir = Path(embedded_env["MOORAGE_DATA_DIR"])
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*_moorage(), "up", "--port", str(port)], env=embedded_env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/login/", process=process, log=log, timeout=60)
        api = httpx.Client(base_url=url + "/api/v1",
                           headers={"Authorization": f"Bearer {token}"})

        def local_status() -> str:
            regions = {r["slug"]: r for r in api.get("/regions").json()}
            return str(regions["local"]["status"])

        wait_until(lambda: local_status() == "online", timeout=15,
                   what="the local region online")

        secret = "an end to end registry password 9"
        created = api.post("/credentials", json={"name": "hub", "server": "docker.io",
                                                 "username": "octo", "secret": secret})
        assert created.status_code == 201, created.text
        credential_id = created.json()["id"]
        key = parse_keys((data_dir / "agent" / "key").read_text())[0]
        replica_file = data_dir / "agent" / "data" / "replica.sqlite3"

        def held() -> dict[int, int]:
            if not replica_file.exists():
                return {}
            replica = Replica(replica_file, key)
            try:
                return replica.credentials_held()
            finally:
                replica.close()

        wait_until(lambda: held().get(credential_id) == 1, timeout=15,
                   what="the credential in the local agent's replica")
        agents = pids_mentioning(str(data_dir / "agent"))
        assert len(agents) == 1  # `moorage up` started exactly one agent

        # To `moorage up` only (not its process group, as a terminal's Ctrl-C would): the
        # agent must be stopped by `up` itself. The generous timeout: uvicorn's shutdown
        # currently waits for the agent's long poll (25 s) to end on the server side.
        process.send_signal(signal.SIGINT)
        process.wait(timeout=45)
        assert pids_mentioning(str(data_dir / "agent")) == []
        assert "stopped" in log.read_text()  # the agent's own last log line
        assert files_containing(data_dir, secret) == []
        assert secret not in log.read_text()
    finally:
        stop_process(process)
        for pid in pids_mentioning(str(data_dir / "agent")):  # if `up` died before its agent
            kill_pid(pid)


@pytest.mark.docker
def test_up_runs_the_local_region_on_the_engine_docker_host_names(
    embedded_env: dict[str, str], tmp_path: Path, dockerd: Dockerd,
    docker_client: docker.DockerClient, registry_basic: RegistryServer,
    busybox_image: BusyboxImageFactory,
) -> None:
    """``DOCKER_HOST`` chooses the local region's engine, as it does for docker: here a
    private dockerd on its own socket, while /var/run/docker.sock is not it."""
    assert dockerd.base_url.startswith("unix://")
    assert dockerd.base_url != "unix:///var/run/docker.sock"
    user, secret = "up-" + secrets.token_hex(4), "Up-Registry-Pw-" + secrets.token_hex(6)
    registry_basic.add_user(user, secret)
    image = busybox_image(registry_basic, "up/web", "1.0")
    env = {**embedded_env, "DOCKER_HOST": dockerd.base_url}
    subprocess.run([*_moorage(), "init", "--password-stdin"], input=PASSWORD + "\n", env=env,
                   capture_output=True, text=True, timeout=120, check=True)
    token = subprocess.run([*_moorage(), "tokens", "create", "--name", "e2e"], env=env,
                           capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    port, app_port = free_port(), free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*_moorage(), "up", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    data_dir = Path(env["MOORAGE_DATA_DIR"])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/login/", process=process, log=log, timeout=60)
        api = httpx.Client(base_url=url + "/api/v1",
                           headers={"Authorization": f"Bearer {token}"})
        created = api.post("/credentials", json={"name": "local-reg",
                                                 "server": registry_basic.host,
                                                 "username": user, "secret": secret})
        assert created.status_code == 201, created.text
        app = api.post("/apps", json={
            "name": "web", "image": image, "port": app_port,
            "command": ["/bin/sh", "-c", f"exec httpd -f -p {app_port}"]}).json()
        [deployment] = api.post(f"/apps/{app['id']}/deploy").json()

        def finished() -> dict[str, Any]:
            current: dict[str, Any] = api.get(f"/deployments/{deployment['id']}").json()
            return current if current["status"] in ("running", "failed") else {}

        done = wait_until(finished, timeout=90, what="the deployment to finish")
        assert done["status"] == "running", (done["error_code"], done["error_message"])
        assert done["credential_name"] == "local-reg"
        [container] = docker_client.containers.list(
            filters={"label": f"moorage.app={app['id']}"})
        assert container.labels["moorage.region"] == "local"
        assert httpx.get(f"http://127.0.0.1:{app_port}/").status_code in (200, 404)
        text = log.read_text()
        assert f"container engine at {dockerd.base_url} (from DOCKER_HOST)" in text
        assert f"container engine: {dockerd.base_url} (from DOCKER_HOST)" in text
    finally:
        stop_process(process)
        for pid in pids_mentioning(str(data_dir / "agent")):
            kill_pid(pid)
    assert secret not in log.read_text()


def _children(pid: int) -> list[int]:
    """Ids of the live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def test_up_runs_a_supervised_worker_that_refreshes_tokens(
    embedded_env: dict[str, str], tmp_path: Path, aws_ecr: MotoEcr,
) -> None:
    env = {k: v for k, v in embedded_env.items() if not k.startswith("AWS_")}
    env |= {"AWS_ENDPOINT_URL": aws_ecr.url, "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    init = subprocess.run([*_moorage(), "init", "--password-stdin"], input=PASSWORD + "\n",
                          env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    token = subprocess.run([*_moorage(), "tokens", "create", "--name", "e2e"], env=env,
                           capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    data_dir = Path(env["MOORAGE_DATA_DIR"])
    port = free_port()
    log = tmp_path / "up.log"
    canary = "Up/Canary/" + os.urandom(9).hex()
    with log.open("wb") as out:
        process = subprocess.Popen([*_moorage(), "up", "--no-agent", "--port", str(port)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/login/", process=process, log=log, timeout=60)
        api = httpx.Client(base_url=url + "/api/v1",
                           headers={"Authorization": f"Bearer {token}"})
        created = api.post("/credentials", json={
            "name": "ecr", "login_source": "aws_ecr", "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "aws_region": "eu-west-1", "server": "registry.example.com", "secret": canary})
        assert created.status_code == 201, created.text
        credential = created.json()
        exchanges = aws_ecr.token_requests
        assert api.post(f"/credentials/{credential['id']}/refresh").status_code == 202
        # The worker `up` started picks the refresh from the queue.
        wait_until(lambda: api.get(f"/credentials/{credential['id']}").json()["revision"] == 2,
                   timeout=30, what="the worker's refresh")
        assert aws_ecr.token_requests == exchanges + 1

        [worker] = _children(process.pid)
        assert b"worker" in Path(f"/proc/{worker}/cmdline").read_bytes()
        kill_pid(worker)
        [again] = wait_until(lambda: [p for p in _children(process.pid) if p != worker],
                             timeout=20, what="up starting its worker again")

        process.send_signal(signal.SIGINT)
        process.wait(timeout=45)
        assert not Path(f"/proc/{again}").exists()  # `up` stopped its worker
        assert files_containing(data_dir, canary) == []
        assert canary not in log.read_text()
        assert pids_mentioning(canary) == []
    finally:
        stop_process(process)
