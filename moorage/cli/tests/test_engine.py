"""Which engine ``moorage agent`` (and ``moorage up``'s local agent) drives: the Docker
client conventions, read by the CLI and passed in."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker.tls import TLSConfig

from moorage.agent.errors import ConfigurationError
from moorage.cli.engine import engine_settings
from moorage.testing.tls import docker_tls_files

ROOTLESS = "unix:///run/user/1000/docker.sock"


def test_the_option_wins_then_docker_host_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///from/the/real/environment.sock")
    default = engine_settings({})  # only what it is given: not os.environ
    assert (default.docker_host, default.tls, default.source) == (
        "unix:///var/run/docker.sock", False, "the default")
    from_env = engine_settings({"DOCKER_HOST": ROOTLESS})
    assert (from_env.docker_host, from_env.source) == (ROOTLESS, "DOCKER_HOST")
    assert from_env.describe() == f"{ROOTLESS} (from DOCKER_HOST)"
    option = engine_settings({"DOCKER_HOST": ROOTLESS}, "unix:///run/podman/podman.sock")
    assert (option.docker_host, option.source) == ("unix:///run/podman/podman.sock",
                                                   "--docker-host")
    assert engine_settings({"DOCKER_HOST": ""}).docker_host == "unix:///var/run/docker.sock"


def test_tls_comes_from_docker_tls_verify_and_docker_cert_path(tmp_path: Path) -> None:
    files = docker_tls_files(tmp_path / "tls")
    client = files.client_dir
    engine = engine_settings({"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1",
                              "DOCKER_CERT_PATH": str(client)})
    assert isinstance(engine.tls, TLSConfig)
    assert engine.tls.cert == (str(client / "cert.pem"), str(client / "key.pem"))
    assert (engine.tls.ca_cert, engine.tls.verify) == (str(client / "ca.pem"), True)
    assert engine.describe() == "tcp://127.0.0.1:2376 (from DOCKER_HOST, TLS verified)"
    # As for docker: an empty DOCKER_TLS_VERIFY means no verification, a cert path still TLS.
    unverified = engine_settings({"DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": str(client)})
    assert isinstance(unverified.tls, TLSConfig) and not unverified.tls.verify
    assert engine_settings({"DOCKER_TLS_VERIFY": ""}).tls is False


def test_missing_certificates_are_a_configuration_error_naming_the_variables(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError, match="DOCKER_CERT_PATH") as caught:
        engine_settings({"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1",
                         "DOCKER_CERT_PATH": str(tmp_path / "nothing-here")})
    assert str(tmp_path / "nothing-here") in str(caught.value)
    assert "ca.pem, cert.pem and key.pem" in str(caught.value)
