"""Commands that run on the server machine, against its database: init, up, tokens."""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import click
import uvicorn
from uvicorn.supervisors import Multiprocess

from moorage.agent.errors import ConfigurationError
from moorage.cli.django_setup import migrate, setup_django
from moorage.cli.engine import engine_settings
from moorage.cli.output import console, err_console, fail
from moorage.cli.worker import Supervised

DEFAULT_EMAIL = "admin@localhost"
_PR_SET_PDEATHSIG = 1
DEFAULT_ACCOUNT = "Default"


def _read_stdin_secret(what: str) -> str:
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        fail(f"No {what} on standard input.", code=f"{what.replace(' ', '_')}_missing")
    return value


@click.command()
@click.option("--email", default=DEFAULT_EMAIL, show_default=True, help="The first owner.")
@click.option("--account", "account_name", default=DEFAULT_ACCOUNT, show_default=True)
@click.option(
    "--password-stdin", is_flag=True, help="Read the owner's password from standard input."
)
def init(email: str, account_name: str, password_stdin: bool) -> None:
    """Create the data directory and database, the first owner and their account.

    Running it again changes nothing.
    """
    password = _read_stdin_secret("password") if password_stdin else None
    setup_django()
    from django.conf import settings

    from moorage.accounts.services import installation_init
    from moorage.errors import ApplicationError
    from moorage.regions.services import local_region_ensure

    with console.status("Preparing the database…"):
        migrate()
    try:
        result = installation_init(email=email, account_name=account_name, password=password)
        local = local_region_ensure(agent_dir=agent_dir(settings.DATA_DIR))
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    if local is not None:
        console.print(f"[green]✓[/green] Region [bold]{local.slug}[/bold] on this machine's "
                      f"Docker Engine; its agent's files are in {agent_dir(settings.DATA_DIR)}")
    if not result.created and local is None:
        console.print(
            f"Moorage is already initialised in {settings.DATA_DIR}: owner "
            f"[bold]{result.user.email}[/bold], account [bold]{result.account.name}[/bold]. "
            "Nothing changed."
        )
        return
    console.print(f"[green]✓[/green] Data directory: {settings.DATA_DIR}")
    console.print(
        f"[green]✓[/green] Owner [bold]{result.user.email}[/bold] (platform staff) of account "
        f"[bold]{result.account.name}[/bold] ({result.account.slug})"
    )
    if result.generated_password:
        console.print(
            "One-time password (shown only now; you choose your own at first login):\n"
            f"  [bold]{result.generated_password}[/bold]",
            highlight=False,
        )
    console.print("Next: [bold]moorage up[/bold], then open http://127.0.0.1:8000")


def agent_dir(data_dir: Path) -> Path:
    """Where the embedded local region's agent keeps its token, key and replica."""
    return data_dir / "agent"


def _start_local_agent(data_dir: Path, url: str) -> subprocess.Popen[bytes] | None:
    """Start the local region's agent beside the server, if ``moorage init`` prepared it.

    The agent inherits the environment, so it drives the engine ``DOCKER_HOST`` (with
    ``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``) names, as docker would.
    """
    directory = agent_dir(data_dir)
    token, key = directory / "token", directory / "key"
    if not (token.exists() and key.exists()):
        err_console.print(f"[yellow]No local region agent[/yellow] ({directory} has no token "
                          "and key); run [bold]moorage init[/bold] to prepare it.")
        return None
    try:
        engine = engine_settings(os.environ)
    except ConfigurationError as exc:
        err_console.print(f"[yellow]No local region agent[/yellow]: {exc}")
        return None
    console.print(f"Local region agent on the container engine at {engine.describe()}",
                  highlight=False, soft_wrap=True)
    command = [sys.executable, "-m", "moorage", "agent", "--url", url,
               "--token-file", str(token), "--key-file", str(key),
               "--data-dir", str(directory / "data")]
    return subprocess.Popen(command, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the agent child: get SIGTERM when ``moorage up`` dies, even by SIGKILL, so an
    agent never outlives its server."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Server(uvicorn.Server):
    """uvicorn, telling waiting long polls to answer as soon as a stop is asked, instead of
    being cut off after the graceful-shutdown timeout."""

    def handle_exit(self, sig: int, frame: object) -> None:
        from moorage.regions.changelog import stop_waiting

        stop_waiting()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


#: Seconds an idle keep-alive connection stays open: agents between polls, load balancers.
KEEP_ALIVE = 30


def _raise_open_files_limit() -> None:
    """Every waiting agent holds a socket: lift this process's soft limit on open files (and
    its children's) to the hard limit the system allows, as servers usually do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _metrics_dir() -> Path | None:
    """One directory for the metrics of every process ``moorage up`` starts (web workers and
    any worker process beside them), so ``/metrics`` adds them up; ``None`` when the operator
    set ``PROMETHEUS_MULTIPROC_DIR`` already. Must run before Django (and so
    ``prometheus_client``) is imported."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    directory = Path(tempfile.mkdtemp(prefix="moorage-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def uvicorn_config(
    *, host: str, port: int, trusted_proxies: Sequence[IPv4Network | IPv6Network],
    workers: int = 1,
) -> uvicorn.Config:
    """How ``moorage up`` runs uvicorn.

    Forwarded headers (``X-Forwarded-For``, ``X-Forwarded-Proto``) are believed only from
    ``trusted_proxies`` (MOORAGE_TRUSTED_PROXIES). uvicorn's own default trusts them from
    loopback, which let any local client pick its address, and so its login rate limit.
    """
    proxies = [str(network) for network in trusted_proxies]
    return uvicorn.Config(
        "moorage.config.asgi:application", host=host, port=port, log_level="info",
        access_log=True, lifespan="off", timeout_graceful_shutdown=3,
        proxy_headers=bool(proxies), forwarded_allow_ips=proxies, workers=workers,
        timeout_keep_alive=KEEP_ALIVE,
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Web server processes on the port; the local agent still runs once.")
@click.option("--no-agent", is_flag=True, help="Serve only; do not start the local agent.")
@click.option("--no-worker", is_flag=True,
              help="Do not start the background worker (run 'moorage worker' elsewhere).")
def up(host: str, port: int, workers: int, no_agent: bool, no_worker: bool) -> None:
    """Migrate, then serve the web app and the API, run the background worker (token
    refreshes) and the local region's agent.

    Several processes (``--workers``, or several ``moorage up`` on one PostgreSQL behind a
    load balancer) serve the same agents: a change made through one wakes the long polls
    waiting in every other. The agent and the background worker run once, not per worker.
    """
    metrics_dir = _metrics_dir()
    _raise_open_files_limit()
    setup_django()
    from django.conf import settings

    from moorage.accounts.models import User

    with console.status("Preparing the database…"):
        migrate()
    if not User.objects.exists():
        err_console.print(
            "[yellow]No user yet.[/yellow] Run [bold]moorage init[/bold] to create the first owner."
        )
    if workers > 1 and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        err_console.print("[yellow]Several workers on SQLite[/yellow] queue for its one writer "
                          "lock; use PostgreSQL (DATABASE_URL) to serve a fleet.")
    from django.db import connections

    connections.close_all()  # the server opens its own as it needs them
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    agent = None if no_agent else _start_local_agent(
        settings.DATA_DIR, f"http://{local_host}:{port}"
    )
    worker = None if no_worker else Supervised(
        [sys.executable, "-m", "moorage", "worker"], name="worker", preexec_fn=_die_with_parent,
    ).start()
    console.print(f"Moorage is serving on [bold]http://{host}:{port}[/bold]"
                  + (f" with {workers} workers" if workers > 1 else "") + " (Ctrl-C stops it)")
    config = uvicorn_config(host=host, port=port, trusted_proxies=settings.TRUSTED_PROXIES,
                            workers=workers)
    try:
        if workers == 1:
            _Server(config).run()
        else:
            # uvicorn's supervisor, which restarts a worker that dies. Its workers are plain
            # uvicorn servers: at a stop a waiting poll is cut after the graceful timeout,
            # and its agent reconnects with jitter.
            Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        if worker is not None:
            worker.stop()
        if agent is not None:
            _stop(agent)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@click.group()
def tokens() -> None:
    """Manage API tokens on the server machine."""


@tokens.command("create")
@click.option("--name", required=True, help="A name to recognise the token by.")
@click.option("--user", "email", help="Whose token (default: the first platform staff user).")
@click.option("--account", "account_slug", help="Which account (default: the user's first).")
def tokens_create(name: str, email: str | None, account_slug: str | None) -> None:
    """Print a new API token. Only the token goes to standard output, for scripts."""
    setup_django()
    from moorage.accounts.selectors import operator_membership
    from moorage.accounts.services import api_token_create
    from moorage.errors import ApplicationError

    try:
        membership = operator_membership(email=email, account_slug=account_slug)
        token, plaintext = api_token_create(actor=membership.user, membership=membership,
                                            name=name)
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    user = membership.user
    err_console.print(
        f"Token [bold]{token.name}[/bold] for {user.email} in {membership.account.slug} "
        "(shown only now):"
    )
    click.echo(plaintext)
