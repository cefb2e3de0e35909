"""``moorage agent``: run a region agent against a control plane.

The token and the region key are read from files (never command-line values, which any user
of the machine can see in the process list). Files readable by group or others are used but
warned about: refusing them would break common setups (a Kubernetes secret volume is 0644 by
default) while a warning still points at the problem. The engine is ``--docker-host``, else
what ``DOCKER_HOST``, ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH`` say (:mod:`.engine`); the
agent itself reads no environment.

Exit codes: 0 stopped cleanly (SIGTERM/SIGINT, or ``--once`` synced), 1 ``--once`` could not
sync, 2 bad configuration (the message names the file or option), 3 the control plane refused
the token. This module does not import Django.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import click

from moorage.agent.applogs import LogServer
from moorage.agent.client import ControlPlaneClient
from moorage.agent.config import AgentConfig, is_region_token
from moorage.agent.deployer import Deployer
from moorage.agent.errors import AgentAuthError, ConfigurationError, ReplicaError
from moorage.agent.logs import configure_logging
from moorage.agent.replica import Replica
from moorage.agent.runtime import DEFAULT_DOCKER_HOST, Runtime, make_runtime
from moorage.agent.sync import Outcome, SyncLoop
from moorage.cli.engine import engine_settings
from moorage.cli.output import fail
from moorage.protocol.constants import DEFAULT_WAIT
from moorage.protocol.enums import Runtime as RuntimeKind
from moorage.sealing import Key, KeyringError, parse_keys

EXIT_UNSYNCED = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _read_private(path: Path, what: str, logger: logging.Logger) -> str:
    """The text of a token or key file, or exit 2 naming the file (never its content)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"The {what} {path} does not exist.", code="agent_config_invalid",
             exit_code=EXIT_CONFIG)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"Cannot read the {what} {path}: {type(exc).__name__}.",
             code="agent_config_invalid", exit_code=EXIT_CONFIG)
    if not stat.S_ISREG(mode):
        fail(f"The {what} {path} is not a file.", code="agent_config_invalid",
             exit_code=EXIT_CONFIG)
    if mode & 0o077:
        logger.warning("the %s %s is readable by group or others (mode %o); "
                       "chmod 600 it", what, path, stat.S_IMODE(mode),
                       extra={"region": "-"})
    return text


def _token(path: Path, logger: logging.Logger) -> str:
    lines = [line.strip() for line in _read_private(path, "token file", logger).splitlines()
             if line.strip()]
    if len(lines) != 1 or not is_region_token(lines[0]):
        fail(f"The token file {path} must hold one line: the region token (mrr_…) printed by "
             "'moorage regions add' or 'rotate-token'.", code="agent_config_invalid",
             exit_code=EXIT_CONFIG)
    return lines[0]


def _key(path: Path, logger: logging.Logger) -> Key:
    try:
        keys = parse_keys(_read_private(path, "key file", logger))
    except KeyringError as exc:  # the message never echoes key material
        fail(f"The key file {path} is not valid: {exc}", code="agent_config_invalid",
             exit_code=EXIT_CONFIG)
    if len(keys) != 1:
        fail(f"The key file {path} must hold exactly one key (id:base64) as printed by "
             f"'moorage regions add'; it holds {len(keys)}.", code="agent_config_invalid",
             exit_code=EXIT_CONFIG)
    return keys[0]


def stop_on_signal(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A signal handler that sets ``stop`` without ever waiting for its lock.

    Python runs a handler in the main thread between any two bytecodes, so also inside
    ``stop.set()`` or ``stop.wait()`` while they hold the event's (non-reentrant) lock. When
    ``moorage up`` stops, its agent gets SIGTERM and then the parent-death SIGTERM; a handler
    calling ``stop.set()`` itself deadlocked on the second and the agent ran on for good. The
    first signal hands the ``set`` to a short-lived thread, which waits for the lock if it
    must; later signals only see that a stop is under way.
    """
    asked = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal asked
        if asked:
            return
        asked = True
        threading.Thread(target=stop.set, name="stop-request", daemon=True).start()

    return handler

@click.command("agent")
@click.option("--url", required=True, metavar="URL",
              help="The control plane, e.g. https://moorage.example.com.")
@click.option("--token-file", required=True, type=click.Path(path_type=Path),
              help="File holding the region token (one line, mrr_…).")
@click.option("--key-file", required=True, type=click.Path(path_type=Path),
              help="File holding the region key (one line, id:base64).")
@click.option("--data-dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Where the agent keeps its replica (created, mode 0700).")
@click.option("--docker-host", metavar="URL",
              help="Docker Engine API the region's apps run on: the engine of a docker region, "
                   "a manager of a swarm region (default: $DOCKER_HOST, else "
                   f"{DEFAULT_DOCKER_HOST}; TLS from $DOCKER_TLS_VERIFY and "
                   "$DOCKER_CERT_PATH, as for docker).")
@click.option("--region", metavar="SLUG",
              help="Refuse answers for any other region (default: learn it on first sync).")
@click.option("--wait", type=click.IntRange(0, 60), default=None,
              help="Long-poll seconds per request (default 25; 0 with --once).")
@click.option("--once", is_flag=True, help="Sync once and exit (exit 1 if that failed).")
@click.option("-v", "--verbose", is_flag=True, help="Log acks and empty polls too.")
def agent(
    url: str, token_file: Path, key_file: Path, data_dir: Path, docker_host: str | None,
    region: str | None, wait: int | None, once: bool, verbose: bool,
) -> None:
    """Run this region's agent: keep its sealed replica in step with the control plane and
    run the region's deployments on its Docker Engine or Docker Swarm (the region's runtime,
    learned from the control plane)."""
    logger = configure_logging(level=logging.DEBUG if verbose else logging.INFO,
                               region=region)
    token = _token(token_file, logger)
    key = _key(key_file, logger)
    try:
        engine = engine_settings(os.environ, docker_host)
        config = AgentConfig(url=url, token=token, region_key=key, data_dir=data_dir,
                             docker_host=engine.docker_host, region=region,
                             wait=wait if wait is not None else (0 if once else DEFAULT_WAIT))
    except ConfigurationError as exc:
        fail(str(exc), code="agent_config_invalid", exit_code=EXIT_CONFIG)
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        logger.warning("the control plane URL is plain http: the region token travels in "
                       "clear; use https", extra={"region": region or "-"})
    try:
        replica = Replica.in_dir(data_dir, key)
    except (ReplicaError, OSError) as exc:
        fail(f"Cannot use the data dir {data_dir}: {exc}", code="agent_config_invalid",
             exit_code=EXIT_CONFIG)
    client = ControlPlaneClient(config)
    stop = threading.Event()
    request_stop = stop_on_signal(stop)
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM,
                                                                   signal.SIGINT)}
    try:
        # The engine is only contacted when there is something to deploy or remove, so an
        # agent whose engine is down still syncs credentials (deploys then fail, saying so).
        logger.info("container engine: %s", engine.describe(),
                    extra={"region": replica.region() or region or "-"})

        def runtime_for(kind: RuntimeKind) -> Runtime:
            return make_runtime(kind, engine.docker_host, tls=engine.tls,
                                region=replica.region() or region or "")

        runtime = runtime_for(replica.settings().known_runtime or RuntimeKind.DOCKER)
        deployer = Deployer(replica, client, runtime, logger, stop_event=stop,
                            runtime_factory=runtime_for)
        log_server = LogServer(replica, client, lambda: deployer.runtime, logger,
                               stop_event=stop)
        loop = SyncLoop(config, client, replica, logger, stop, deployer=deployer,
                        log_server=log_server)
        if once:
            outcome = loop.run_once(backoff=False)
            raise click.exceptions.Exit(0 if outcome is not Outcome.RETRY else EXIT_UNSYNCED)
        loop.run_forever()
    except ConfigurationError as exc:
        fail(str(exc), code="agent_config_invalid", exit_code=EXIT_CONFIG)
    except AgentAuthError:
        raise click.exceptions.Exit(EXIT_AUTH) from None  # logged by the loop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not stop.is_set():
            client.close()  # a long poll abandoned on stop may still hold it: let it die
        replica.close()
