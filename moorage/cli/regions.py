"""``moorage regions``: platform staff manage regions on the server machine; ``enable`` and
``disable`` choose the logged-in account's regions through the API.

A swarm region's registry password is read from standard input
(``--registry-password-stdin``), never from an argument: any user of the machine can read
argument lists.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from moorage.cli.django_setup import setup_django
from moorage.cli.output import console, err_console, fail

if TYPE_CHECKING:
    from moorage.regions.services import RegistryInput


#: Seconds between looks at a draining region.
DRAIN_POLL = 0.5


@click.group()
def regions() -> None:
    """Manage regions (server machine, platform staff); enable and disable them for the
    logged-in account (API)."""


def _write_or_print(token: str, key_encoded: str, agent_dir: str | None) -> None:
    from moorage.regions.services import write_agent_files
    from moorage.sealing import parse_keys

    if agent_dir:
        directory = Path(agent_dir)
        write_agent_files(directory, token=token, key=parse_keys(key_encoded)[0])
        console.print(f"Agent token and key written to {directory}/token and {directory}/key "
                      "(mode 0600).")
        return
    err_console.print("Give these to the region's agent; they are shown only now.")
    click.echo(f"token: {token}")
    click.echo(f"key: {key_encoded}")


def _registry_options(func: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option("--registry", metavar="HOST[:PORT]",
                     help="The swarm region's own registry: images built there are pushed "
                          "to it and every node pulls them from it."),
        click.option("--registry-username", metavar="USER",
                     help="The user Moorage pushes and pulls the region's builds as."),
        click.option("--registry-password-stdin", is_flag=True,
                     help="Read the registry password from standard input (one line)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _registry_input(host: str | None, username: str | None,
                    password_stdin: bool) -> RegistryInput | None:
    """The registry options as the service takes them; the password from standard input."""
    from moorage.regions.services import RegistryInput

    if host is None and username is None and not password_stdin:
        return None
    if not (host and username and password_stdin):
        fail("A region registry needs --registry, --registry-username and "
             "--registry-password-stdin together.", code="region_registry_incomplete")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("No password on standard input.", code="region_registry_incomplete")
    return RegistryInput(host=host, username=username, password=password)


@regions.command("add")
@click.argument("slug")
@click.option("--name", default="", help="A display name (default: the slug).")
@click.option("--runtime", type=click.Choice(["docker", "swarm"]), default="docker",
              show_default=True,
              help="docker: one Docker Engine; swarm: a Docker Swarm, driven through a "
                   "manager (its agent's --docker-host).")
@_registry_options
@click.option("--for-new-accounts", is_flag=True,
              help="Enable the region for every account created from now on.")
@click.option("--for-all-accounts", is_flag=True,
              help="Enable the region for every existing account now.")
@click.option("--agent-dir", type=click.Path(file_okay=False),
              help="Write the agent's token and key files here instead of printing them.")
def regions_add(slug: str, name: str, runtime: str, registry: str | None,
                registry_username: str | None, registry_password_stdin: bool,
                for_new_accounts: bool, for_all_accounts: bool, agent_dir: str | None) -> None:
    """Add a region and print, once, its agent's token and key.

    A swarm region may have its own registry (--registry, --registry-username,
    --registry-password-stdin); without one, apps built from source are refused there.
    """
    setup_django()
    from moorage.errors import ApplicationError
    from moorage.regions.services import region_create

    login = _registry_input(registry, registry_username, registry_password_stdin)
    try:
        created = region_create(actor=None, slug=slug, name=name, runtime=runtime,
                                enabled_for_new_accounts=for_new_accounts,
                                enable_for_existing_accounts=for_all_accounts, registry=login)
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    where = f", registry {created.region.registry}" if created.region.registry else ""
    err_console.print(f"[green]✓[/green] Region [bold]{created.region.slug}[/bold] "
                      f"({created.region.runtime}{where}) added.")
    if created.region.runtime == "swarm" and not created.region.registry:
        err_console.print("It has no region registry: apps built from source are refused "
                          "there until 'moorage regions update' gives it one.")
    _write_or_print(created.token, created.key.encoded(), agent_dir)
    err_console.print("Run its agent with: moorage agent --url URL --token-file F --key-file K "
                      "--data-dir D")


@regions.command("update")
@click.argument("slug")
@click.option("--runtime", type=click.Choice(["docker", "swarm"]),
              help="Change the runtime (only while nothing was deployed there).")
@_registry_options
@click.option("--no-registry", is_flag=True, help="Remove the region registry.")
def regions_update(slug: str, runtime: str | None, registry: str | None,
                   registry_username: str | None, registry_password_stdin: bool,
                   no_registry: bool) -> None:
    """Change a region's runtime or registry; its agent follows at its next sync."""
    setup_django()
    from moorage.errors import ApplicationError
    from moorage.regions.services import region_update

    login = _registry_input(registry, registry_username, registry_password_stdin)
    if login is None and runtime is None and not no_registry:
        fail("Nothing to change: give --runtime, --registry ... or --no-registry.",
             code="nothing_to_change")
    try:
        region = region_update(actor=None, slug=slug, runtime=runtime, registry=login,
                               clear_registry=no_registry)
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    where = f", registry {region.registry}" if region.registry else ", no registry"
    console.print(f"[green]✓[/green] Region [bold]{region.slug}[/bold]: {region.runtime}"
                  f"{where}.")


@regions.command("list")
def regions_list() -> None:
    """Regions with their runtime, nodes, agent status and sync lag."""
    setup_django()
    from moorage.regions.selectors import region_states

    states = region_states()
    # Swarm columns only when a region has them: the table stays narrow otherwise.
    registries = any(s.region.registry for s in states)
    nodes = any(s.nodes for s in states)
    table = Table("Region", "Runtime", *(["Registry"] if registries else []),
                  *(["Nodes"] if nodes else []), "Status", "Last seen", "Applied revision",
                  "Lag")
    pending = []
    for state in states:
        region = state.region
        seen = region.last_seen_at.strftime("%Y-%m-%d %H:%M:%S") if region.last_seen_at else "-"
        lag = f"{state.lag_revisions} rev, {state.lag_seconds:.0f} s" if state.lag_revisions \
            else "in sync"
        swarm_cells = ([region.registry or "-"] if registries else []) + (
            [f"{state.nodes_ready}/{len(state.nodes)} ready" if state.nodes else "-"]
            if nodes else [])
        status = state.status.label
        if region.draining_since is not None:
            status += ", drained" if region.drained_at is not None else ", draining"
        table.add_row(region.slug, region.runtime, *swarm_cells, status, seen,
                      str(region.applied_revision), lag)
        if region.next_key_id:
            pending.append(f"Key rotation pending in {region.slug}: {region.key_id} → "
                           f"{region.next_key_id}; restart its agent with the new key file.")
    console.print(table)
    for line in pending:
        console.print(line, highlight=False, soft_wrap=True)


@regions.command("remove")
@click.argument("slug")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--drain", is_flag=True,
              help="Have the region's agent stop and remove every app it runs first; wait "
                   "for its report, then remove the region.")
@click.option("--force", is_flag=True,
              help="Remove it now even while apps run there: their containers are LEFT "
                   "BEHIND, running, with nothing to stop them.")
@click.option("--timeout", type=click.IntRange(1, 3600), default=120, show_default=True,
              help="With --drain: seconds to wait for the agent's report.")
def regions_remove(slug: str, yes: bool, drain: bool, force: bool, timeout: int) -> None:
    """Remove a region: its agent stops, no account deploys there any more.

    Refused while apps run there (naming them) unless --drain or --force. If the agent does
    not report in time the region stays draining (no new deploy goes there): run the command
    again once its agent runs, or use --force.
    """
    setup_django()
    from moorage.errors import ApplicationError
    from moorage.regions.services import region_remove

    if drain and force:
        fail("Give --drain or --force, not both.", code="region_remove_options")
    if not yes:
        what = (" Its agent first stops and removes every app it runs." if drain else
                " Containers still running there are left behind." if force else "")
        click.confirm(f"Remove region {slug}?{what} Its agent's token stops working.",
                      abort=True, err=True)
    try:
        result = region_remove(actor=None, slug=slug, drain=drain, force=force)
        if result.draining:
            _wait_for_drain(slug, result.apps, timeout)
            result = region_remove(actor=None, slug=slug)
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    if result.apps:
        err_console.print(f"[yellow]![/yellow] Left behind, still running: "
                          f"{', '.join(result.apps)}.", highlight=False, soft_wrap=True)
    console.print(f"[green]✓[/green] Region [bold]{slug}[/bold] removed.")


def _wait_for_drain(slug: str, apps: list[str], timeout: int) -> None:
    """Wait (bounded) until the region's agent reports that every app is gone, showing
    what it still reports running; on time-out, fail saying what the operator can do."""
    from moorage.regions.models import RunningService
    from moorage.regions.services import region_drain_state, region_draining_error

    names = ", ".join(apps) if apps else "whatever still runs there"
    err_console.print(f"Region [bold]{slug}[/bold] is draining: its agent stops and removes "
                      f"{names}.", highlight=False, soft_wrap=True)
    started = time.monotonic()
    said: tuple[int, ...] | None = None
    while True:
        region = region_drain_state(slug=slug)
        if region.drained_at is not None:
            err_console.print(f"The agent of {slug} removed every app "
                              f"({time.monotonic() - started:.0f} s).")
            return
        waited = time.monotonic() - started
        if waited >= timeout:
            error = region_draining_error(region)
            fail(f"Waited {timeout} s. {error.message}", code=error.code)
        running = RunningService.objects.filter(region=region).count()
        if said != (running,):
            said = (running,)
            err_console.print(f"  waiting for the agent of {slug}: {running} app"
                              f"{'s' if running != 1 else ''} still reported running "
                              f"({waited:.0f}/{timeout} s)", highlight=False)
        time.sleep(DRAIN_POLL)


def _account_regions(config: Any) -> list[str]:
    from moorage.cli.remote import request

    answer = request("GET", "/account/regions", config=config)
    return [r["slug"] for r in answer["regions"] if r["enabled"]]


@regions.command("enable")
@click.argument("slug")
@click.option("--redeploy", is_flag=True,
              help="Deploy again the apps stopped when a region was disabled.")
def regions_enable(slug: str, redeploy: bool) -> None:
    """Let the logged-in account deploy to SLUG (account admins and owners; API)."""
    from moorage.cli.remote import request, require_login

    config = require_login()
    enabled = _account_regions(config)
    answer = request("PUT", "/account/regions", config=config,
                     json={"regions": sorted({*enabled, slug}), "redeploy": redeploy})
    console.print(f"[green]✓[/green] The account deploys to [bold]{slug}[/bold]"
                  f"{' (it already did)' if slug in enabled else ''}.")
    if answer["redeployed"]:
        console.print(f"Deploying again: {len(answer['redeployed'])} deployment"
                      f"{'s' if len(answer['redeployed']) != 1 else ''} queued.")
    elif answer["redeployable"]:
        names = ", ".join(f"{a['app']} in {a['region']}" for a in answer["redeployable"])
        console.print(f"Stopped when a region was disabled: {names}. Deploy them again with "
                      f"'moorage regions enable {slug} --redeploy'.", highlight=False,
                      soft_wrap=True)


@regions.command("disable")
@click.argument("slug")
@click.option("--yes", "-y", is_flag=True, help="Stop the apps there without asking.")
def regions_disable(slug: str, yes: bool) -> None:
    """Stop the logged-in account deploying to SLUG; its apps there stop (asks first)."""
    from moorage.cli.remote import ApiError, call, require_login

    config = require_login()
    enabled = _account_regions(config)
    if slug not in enabled:
        fail(f"The account does not deploy to {slug}.", code="region_not_enabled")
    body: dict[str, Any] = {"regions": [s for s in enabled if s != slug], "confirm": yes}
    try:
        answer = call("PUT", "/account/regions", config=config, json=body)
    except ApiError as exc:
        if exc.code != "region_disable_stops_apps":
            fail(exc.message, code=exc.code)
        err_console.print(exc.message, highlight=False, soft_wrap=True)
        click.confirm(f"Disable {slug} and stop them?", abort=True, err=True)
        try:
            answer = call("PUT", "/account/regions", config=config,
                          json={**body, "confirm": True})
        except ApiError as again:
            fail(again.message, code=again.code)
    stopped = ", ".join(a["app"] for a in answer["stopped"])
    console.print(f"[green]✓[/green] The account no longer deploys to [bold]{slug}[/bold]"
                  f"{'; stopped: ' + stopped if stopped else ''}.", highlight=False)


@regions.command("rotate-token")
@click.argument("slug")
@click.option("--agent-dir", type=click.Path(file_okay=False),
              help="Write the new token file here instead of printing it.")
def regions_rotate_token(slug: str, agent_dir: str | None) -> None:
    """Revoke the region's agent token and print a new one, once."""
    setup_django()
    from moorage.errors import ApplicationError
    from moorage.regions.services import region_rotate_token, write_token_file

    try:
        token = region_rotate_token(actor=None, slug=slug)
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    err_console.print(f"[green]✓[/green] The old token of [bold]{slug}[/bold] is revoked; its "
                      "agent stops until it gets the new one.")
    if agent_dir:
        path = write_token_file(Path(agent_dir), token)
        console.print(f"New token written to {path} (mode 0600).")
    else:
        click.echo(f"token: {token}")


@regions.command("rotate-key")
@click.argument("slug")
@click.option("--agent-dir", type=click.Path(file_okay=False),
              help="Write the new key file here instead of printing it.")
def regions_rotate_key(slug: str, agent_dir: str | None) -> None:
    """Make a new region key and print it, once; the agent switches when restarted with it.

    The control plane keeps the current key until the agent proves it holds the new one, so
    the running agent carries on meanwhile. See docs/sync.md, "Rotating a region key".
    """
    setup_django()
    from moorage.errors import ApplicationError
    from moorage.regions.services import region_rotate_key, write_key_file

    try:
        rotation = region_rotate_key(actor=None, slug=slug)
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    region = rotation.region
    err_console.print(f"[green]✓[/green] New key [bold]{rotation.key.id}[/bold] for region "
                      f"[bold]{region.slug}[/bold]. The control plane keeps the current key "
                      f"{region.key_id} until the agent proves it holds the new one.",
                      highlight=False, soft_wrap=True)
    if rotation.replaced:
        err_console.print(f"It replaces {rotation.replaced}, which was waiting and which the "
                          "agent never took.", highlight=False, soft_wrap=True)
    if agent_dir:
        path = write_key_file(Path(agent_dir), rotation.key)
        console.print(f"New key written to {path} (mode 0600).", highlight=False,
                      soft_wrap=True)
    else:
        err_console.print("Give it to the region's agent as its key file; it is shown only now.")
        click.echo(f"key: {rotation.key.encoded()}")
    err_console.print("Restart the agent with the new key file: it takes a fresh snapshot "
                      "sealed with the new key, and the old key is then forgotten. Until then "
                      "it keeps working with the old key.", highlight=False, soft_wrap=True)
