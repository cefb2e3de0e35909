"""``moorage credentials``: the account's registry and git credentials.

Every command but ``export`` talks to the REST API with the stored login. Secrets go one way:
from a hidden prompt or standard input into a request body, never from a command-line argument
(which other users of the machine can read in the process list) and never back out of the API.
``export`` is the one command that writes secrets out; it runs on the server machine, against
its database, because the API never returns a secret by design.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from moorage.cli import clientconfig
from moorage.cli.output import console, err_console, fail
from moorage.cli.remote import ApiError, call, request_any, require_login
from moorage.private_files import write_private
from moorage.registry.dockerconfig import (
    InvalidDockerConfig,
    build_k8s_secret,
    dump_docker_config,
    parse_docker_config,
)

if TYPE_CHECKING:
    pass

REGISTRY = "container_registry"
GIT = "git"
TYPES = click.Choice([REGISTRY, GIT])
_TYPE_LABELS = {REGISTRY: "registry", GIT: "git"}
#: The API's classified test results in the user's words (moorage.credentials.choices).
_RESULT_LABELS = {
    "ok": "accepted",
    "unauthorized": "credential rejected",
    "forbidden": "no access to the repository",
    "not_found": "image or tag not found",
    "rate_limited": "rate limited",
    "unreachable": "registry unreachable",
    "protocol_error": "unexpected registry answer",
    "host_mismatch": "image is on another registry",
    "realm_refused": "token service refused (plain HTTP to another host)",
    "network_blocked": "address in a blocked network",
    "timeout": "registry too slow",
    "response_too_large": "answer too large",
}
#: How a registry credential logs in (``moorage.registry.logins``).
SOURCES = click.Choice(["static", "aws_ecr", "gcp_service_account"])
_SECRET_LABELS = {"aws_ecr": "Secret access key", "gcp_service_account": "Key JSON"}
DOCKER_CONFIG = "docker-config"
K8S_SECRET = "k8s-secret"  # noqa: S105 - a format name


@click.group()
def credentials() -> None:
    """Manage the account's container-registry and git credentials."""


def _say(message: str, *, err: bool = False) -> None:
    """A sentence for a person (rich markup), never hard-wrapped: scripts grep for it."""
    (err_console if err else console).print(message, highlight=False, soft_wrap=True)


# ----- helpers shared by the remote commands


def _list(config: clientconfig.ClientConfig, kind: str | None = None) -> list[dict[str, Any]]:
    params = {"type": kind} if kind else None
    result = request_any("GET", "/credentials", config=config, params=params)
    return list(result or [])


def _resolve(
    config: clientconfig.ClientConfig, name: str, kind: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The credential named ``name`` (of ``kind``), and the account's whole list.

    A registry and a git credential may share a name; then the caller must say which.
    """
    everything = _list(config)
    matches = [c for c in everything if c["name"] == name and kind in (None, c["type"])]
    if not matches:
        what = f"{_TYPE_LABELS[kind]} credential" if kind else "credential"
        fail(f"No {what} named {name!r} in this account.",
             code="credential_not_found")
    if len(matches) > 1:
        fail(
            f"Both a registry and a git credential are named {name!r}; say which with "
            "--type container_registry or --type git.",
            code="credential_name_ambiguous",
        )
    return matches[0], everything


def _default_of(everything: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((c for c in everything if c["is_default"]), None)


def _successor(everything: list[dict[str, Any]], excluding: int) -> dict[str, Any] | None:
    """Who becomes default when the default goes: the oldest remaining registry credential
    (the server's rule, :func:`moorage.credentials.services.successor_of_default`)."""
    remaining = [c for c in everything if c["type"] == REGISTRY and c["id"] != excluding]
    if not remaining:
        return None
    return min(remaining, key=lambda c: (datetime.fromisoformat(c["created_at"]), c["id"]))


def _read_secret(*, kind: str, from_stdin: bool, username: str | None = None,
                 source: str = "static") -> str:
    """The password or token: all of standard input, or a hidden prompt asked twice.

    Standard input is read whole so a multi-line secret (a Google service-account JSON key)
    keeps its newlines; only the one newline that ends the input is dropped.
    """
    label = "Token" if kind == GIT else _SECRET_LABELS.get(source, "Password")
    if from_stdin:
        text = sys.stdin.read()
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if not text.strip():
            fail(f"No {label.lower()} on standard input.", code="secret_missing")
        return text
    if username == "_json_key" or source == "gcp_service_account":
        _say("A JSON key has several lines: pipe the key file in with --password-stdin.",
             err=True)
    value: str = click.prompt(
        label, hide_input=True, confirmation_prompt=f"Repeat the {label.lower()}", err=True
    )
    return value


def _when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M")


def _login_label(credential: dict[str, Any]) -> str:
    """How it logs in: the username, and for an exchanged token whether refreshing works."""
    token = credential.get("token")
    if not token:
        return escape(credential["username"])
    status = {"ok": "[green]token[/green]", "failing": "[red]refresh failing[/red]",
              "expired": "[red]token expired[/red]"}.get(token["status"], token["status"])
    return f"{escape(credential['username'])} ({status})"


def _test_label(credential: dict[str, Any]) -> str:
    result = credential.get("last_test_result")
    if not result:
        return "[dim]never[/dim]"
    colour = "green" if result == "ok" else "red"
    return f"[{colour}]{result}[/{colour}] {_when(credential.get('last_tested_at'))}"


# ----- remote commands


@credentials.command("list")
@click.option("--type", "kind", type=TYPES, help="Only credentials of this type.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
def credentials_list(kind: str | None, as_json: bool) -> None:
    """List the account's credentials (secrets are never shown)."""
    config = require_login()
    items = _list(config, kind)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        _say("No credentials yet. Add one with [bold]moorage credentials add[/bold].")
        return
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("Name", no_wrap=True, style="bold")
    table.add_column("Type", no_wrap=True)
    table.add_column("Server", no_wrap=True)
    table.add_column("Login", overflow="fold")
    table.add_column("Default", no_wrap=True)
    table.add_column("Last test")
    table.add_column("Rev", justify="right")
    for c in items:
        table.add_row(
            escape(c["name"]), _TYPE_LABELS.get(c["type"], c["type"]), escape(c["server"]),
            _login_label(c),
            "[green]Default[/green]" if c["is_default"] else "", _test_label(c),
            str(c["revision"]),
        )
    console.print(table, highlight=False)
    for c in items:
        # The token lines are long: below the table, one per exchanged credential.
        if c.get("token"):
            _say(f"{escape(c['name'])}: {escape(c['token']['summary'])}")
            if c["token"].get("refresh_error"):
                _say(f"  [red]{escape(c['token']['refresh_error'])}[/red]")


@credentials.command("add")
@click.argument("name")
@click.option("--server", default="",
              help="Registry host (ghcr.io, docker.io...) or git host. aws_ecr: optional, AWS "
              "names it.")
@click.option("--username", default="",
              help="Not for aws_ecr (AWS) and gcp_service_account (oauth2accesstoken).")
@click.option("--email", default="", help="Optional e-mail (some registries want it).")
@click.option("--type", "kind", type=TYPES, default=REGISTRY, show_default=True)
@click.option("--login-source", "source", type=SOURCES, default="static", show_default=True,
              help="static: username and password. aws_ecr / gcp_service_account: a cloud key "
              "the server exchanges for short-lived tokens and refreshes.")
@click.option("--aws-access-key-id", default="", help="aws_ecr: the access key id (AKIA…).")
@click.option("--aws-region", default="", help="aws_ecr: the registry's region (eu-west-1).")
@click.option(
    "--password-stdin", is_flag=True,
    help="Read the password, token or key from standard input (all of it) instead of a "
    "prompt.",
)
def credentials_add(
    name: str, server: str, username: str, email: str, kind: str, source: str,
    aws_access_key_id: str, aws_region: str, password_stdin: bool,
) -> None:
    """Add a credential; its secret comes from a hidden prompt or standard input.

    aws_ecr: the secret is the secret access key; gcp_service_account: the key JSON (pipe
    the file in with --password-stdin). Either is exchanged once now, so a key the cloud
    refuses is not stored.
    """
    config = require_login()
    if source == "static" and (not server or not username):
        fail("Give --server and --username (or a --login-source that needs none).",
             code="server_required" if not server else "username_required")
    secret = _read_secret(kind=kind, from_stdin=password_stdin, username=username,
                          source=source)
    created = request_any(
        "POST", "/credentials", config=config,
        json={"type": kind, "name": name, "server": server, "username": username,
              "secret": secret, "email": email, "login_source": source,
              "aws_access_key_id": aws_access_key_id, "aws_region": aws_region},
    )
    _say(
        f"[green]✓[/green] Added {_TYPE_LABELS[kind]} credential "
        f"[bold]{escape(created['name'])}[/bold] for {escape(created['server'])} as "
        f"{escape(created['username'])} (revision {created['revision']}).",
    )
    if created.get("token"):
        _say(f"{escape(created['token']['summary'])}; the server refreshes it.")
    if created["is_default"]:
        _say("It is the account default.")
    elif kind == REGISTRY:
        default = _default_of(_list(config, REGISTRY))
        current = f" (the default is {escape(default['name'])})" if default else ""
        _say(
            f"It is not the account default{current}; "
            f"'moorage credentials set-default {escape(created['name'])}' makes it one.",
        )


@credentials.command("update")
@click.argument("name")
@click.option("--name", "new_name", help="A new name.")
@click.option("--server")
@click.option("--username")
@click.option("--email")
@click.option("--login-source", "source", type=SOURCES,
              help="Switch how it logs in (give the new secret too).")
@click.option("--aws-access-key-id", help="aws_ecr: a new access key id (exchanged first).")
@click.option("--aws-region", help="aws_ecr: a new region (exchanged first).")
@click.option("--replace-password", is_flag=True,
              help="Rotate: ask for a new password, token or key.")
@click.option("--password-stdin", is_flag=True,
              help="Rotate: read the new password, token or key from standard input.")
@click.option("--type", "kind", type=TYPES,
              help="Which one, when a registry and a git credential share the name.")
def credentials_update(
    name: str, new_name: str | None, server: str | None, username: str | None,
    email: str | None, source: str | None, aws_access_key_id: str | None,
    aws_region: str | None, replace_password: bool, password_stdin: bool, kind: str | None,
) -> None:
    """Change what is given, and nothing else; a new secret rotates the credential."""
    config = require_login()
    changes: dict[str, str] = {
        field: value
        for field, value in (("name", new_name), ("server", server), ("username", username),
                             ("email", email), ("login_source", source),
                             ("aws_access_key_id", aws_access_key_id),
                             ("aws_region", aws_region))
        if value is not None
    }
    if not changes and not (replace_password or password_stdin):
        fail("Nothing to change: give --name, --server, --username, --email, --login-source, "
             "--aws-access-key-id, --aws-region or --replace-password.",
             code="nothing_to_change")
    credential, _ = _resolve(config, name, kind)
    if replace_password or password_stdin:
        changes["secret"] = _read_secret(
            kind=credential["type"], from_stdin=password_stdin,
            username=changes.get("username", credential["username"]),
            source=changes.get("login_source", credential.get("login_source", "static")),
        )
    updated = request_any("PATCH", f"/credentials/{credential['id']}", config=config,
                          json=changes)
    before, after = credential["revision"], updated["revision"]
    if after == before and updated["name"] == credential["name"]:
        _say(f"Nothing changed in [bold]{escape(updated['name'])}[/bold] "
             f"(revision {after}).")
        return
    verb = "Rotated" if "secret" in changes else "Updated"
    revision = f"revision {before} → {after}" if after != before else f"revision {after}"
    _say(f"[green]✓[/green] {verb} [bold]{escape(updated['name'])}[/bold] ({revision}).")


@credentials.command("set-default")
@click.argument("name")
def credentials_set_default(name: str) -> None:
    """Make a container-registry credential the account default."""
    config = require_login()
    credential, everything = _resolve(config, name, REGISTRY)
    previous = _default_of(everything)
    request_any("POST", f"/credentials/{credential['id']}/set-default", config=config)
    if previous is not None and previous["id"] == credential["id"]:
        _say(f"[bold]{escape(name)}[/bold] already is the account default.")
        return
    was = f" (was {escape(previous['name'])})" if previous else ""
    _say(f"[green]✓[/green] [bold]{escape(name)}[/bold] is now the account default{was}.")


@credentials.command("delete")
@click.argument("name")
@click.option("--type", "kind", type=TYPES,
              help="Which one, when a registry and a git credential share the name.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--confirm", is_flag=True,
              help="Delete the account default even though apps on \"Use account default\" "
                   "pull with it (without it, you are asked; with --yes alone, refused).")
def credentials_delete(name: str, kind: str | None, yes: bool, confirm: bool) -> None:
    """Delete a credential; deleting the default promotes the oldest remaining one."""
    config = require_login()
    credential, everything = _resolve(config, name, kind)
    if credential["is_default"]:
        successor = _successor(everything, excluding=credential["id"])
        if successor is not None:
            note = f"{name} is the default; {successor['name']} will become the default."
        else:
            note = (f"{name} is the default and the last container-registry credential; "
                    "the account will have no default.")
    elif credential["type"] == REGISTRY:
        default = _default_of(everything)
        note = f"{name} is not the default" + (
            f"; {default['name']} stays the default." if default else ".")
    else:
        note = f"{name} is a git credential."
    if credential.get("used_by_apps"):
        note += f" {credential['used_by_apps']} app(s) use it."
    _say(escape(note))
    if not yes:
        click.confirm(f"Delete credential {name!r}?", abort=True, err=True)
    path = f"/credentials/{credential['id']}"
    try:
        call("DELETE", path + ("?confirm=true" if confirm else ""), config=config)
    except ApiError as exc:
        if exc.code != "credential_default_in_use":
            fail(exc.message, code=exc.code)
        # The apps it strands are only known to the server: say them, then ask (or refuse
        # when told not to ask: a script opts in with --confirm).
        if yes:
            fail(f"{exc.message} Add --confirm to delete it anyway.", code=exc.code)
        _say(f"[yellow]![/yellow] {escape(exc.message)}")
        click.confirm("Delete it anyway?", abort=True, err=True)
        request_any("DELETE", path + "?confirm=true", config=config)
    _say(f"[green]✓[/green] Deleted [bold]{escape(name)}[/bold].")
    if credential["is_default"]:
        now = _default_of(_list(config, REGISTRY))
        if now is not None:
            _say(f"[bold]{escape(now['name'])}[/bold] is now the account default.")
        else:
            _say("No default left: apps on \"Use account default\" pull without a credential.")


@credentials.command("refresh")
@click.argument("name")
@click.option("--wait", "wait_seconds", default=30, show_default=True,
              type=click.IntRange(0, 600), help="Seconds to wait for the refresh (0: do not).")
def credentials_refresh(name: str, wait_seconds: int) -> None:
    """Refresh an exchanged credential's token now (the server's background worker does it).

    Exit 0 once refreshed, 1 when the refresh failed or did not happen in time.
    """
    config = require_login()
    credential, _ = _resolve(config, name, REGISTRY)
    before = (credential.get("token") or {}).get("refreshed_at")
    asked = request_any("POST", f"/credentials/{credential['id']}/refresh", config=config)
    if not wait_seconds:
        _say(f"Asked the server to refresh [bold]{escape(name)}[/bold].")
        return
    deadline = time.monotonic() + wait_seconds
    token = asked.get("token") or {}
    asked_due = datetime.fromisoformat(token["refresh_due_at"])
    while time.monotonic() < deadline:
        time.sleep(1)
        token = request_any("GET", f"/credentials/{credential['id']}", config=config)["token"]
        if token["refreshed_at"] != before:
            _say(f"[green]✓[/green] {escape(token['summary'])}.")
            return
        if token.get("refresh_error") \
                and datetime.fromisoformat(token["refresh_due_at"]) > asked_due:
            break  # tried since we asked, and failed: it is due again later
    failing = token.get("refresh_error") or "the server's worker did not refresh it in time " \
        "(is 'moorage worker' running?)"
    _say(f"[red]✗[/red] {escape(name)}: {escape(failing)}", err=True)
    raise click.exceptions.Exit(1)


@credentials.command("test")
@click.argument("name")
@click.option("--image", help="Also check pull access to this image (on the same registry).")
def credentials_test(name: str, image: str | None) -> None:
    """Log in to the registry with the credential; exit 0 when it accepted it, else 1."""
    config = require_login()
    credential, _ = _resolve(config, name, REGISTRY)
    body = {"image": image} if image else None
    outcome = request_any("POST", f"/credentials/{credential['id']}/test", config=config,
                          json=body)
    result = str(outcome["result"])
    label = _RESULT_LABELS.get(result, result)
    mark = "[green]✓[/green]" if outcome["ok"] else "[red]✗[/red]"
    _say(f"{mark} [bold]{escape(result)}[/bold] ({label}): {escape(outcome['message'])}")
    if not outcome["ok"]:
        raise click.exceptions.Exit(1)


def _default_docker_config() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


@credentials.command("import-docker-config")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
def credentials_import_docker_config(path: Path | None) -> None:
    """Add a registry credential for each usable login of a docker config.json.

    PATH defaults to $DOCKER_CONFIG/config.json, else ~/.docker/config.json. Each credential
    is named after its registry host (docker.io, ghcr.io, 127.0.0.1:5000...); a name that
    exists already is left alone.
    """
    config = require_login()
    path = path or _default_docker_config()
    try:
        text = path.read_bytes()
    except OSError as exc:
        fail(f"Cannot read {path}: {exc.strerror}.", code="docker_config_unreadable")
    try:
        parsed = parse_docker_config(text)
    except InvalidDockerConfig as exc:
        fail(f"{path}: {exc}", code="docker_config_invalid")
    existing = {c["name"] for c in _list(config, REGISTRY)}
    created, skipped, failed = 0, 0, 0
    for entry in parsed.entries:
        if entry.host in existing:
            _say(f"[yellow]-[/yellow] {escape(entry.host)}: a credential with this name "
                 "already exists; left as it is.")
            skipped += 1
            continue
        try:
            result = call("POST", "/credentials", config=config, json={
                "type": REGISTRY, "name": entry.host, "server": entry.host,
                "username": entry.username, "secret": entry.password, "email": entry.email or "",
            })
        except ApiError as exc:
            _say(f"[red]✗[/red] {escape(entry.host)}: {escape(exc.message)} "
                 f"[dim]({escape(exc.code)})[/dim]", err=True)
            failed += 1
            continue
        default = " (the account default)" if result["is_default"] else ""
        _say(f"[green]✓[/green] {escape(entry.host)}: created as {escape(entry.username)}"
             f"{default}.")
        created += 1
    for skip in parsed.skipped:
        _say(f"[yellow]-[/yellow] {escape(skip.key)}: skipped, {escape(skip.reason)}.")
        skipped += 1
    summary = f"{created} created, {skipped} skipped"
    _say(summary + (f", {failed} failed." if failed else "."))
    if failed:
        raise click.exceptions.Exit(1)


# ----- export: on the server machine


def _write_private(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to a file only its owner can read (0600), whatever the umask."""
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fail(f"{path} exists; give --force to replace it.",
                 code="output_exists")
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
        return
    # Replacing: the old file never holds half a secret, and a file that was readable by
    # others is not reused.
    write_private(path, text)


@credentials.command("export")
@click.argument("names", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice([DOCKER_CONFIG, K8S_SECRET]),
              default=DOCKER_CONFIG, show_default=True)
@click.option("--output", "-o", required=True,
              help="File to write (created with mode 0600), or '-' for standard output.")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@click.option("--account", "account_slug", help="Which account (default: the user's first).")
@click.option("--user", "email", help="Who exports (default: the first platform staff user).")
@click.option("--k8s-name", default="moorage-registry", show_default=True,
              help="metadata.name of the Secret.")
@click.option("--namespace", default="default", show_default=True,
              help="metadata.namespace of the Secret.")
def credentials_export(
    names: tuple[str, ...], fmt: str, output: str, force: bool, account_slug: str | None,
    email: str | None, k8s_name: str, namespace: str,
) -> None:
    """Write registry credentials as a docker config.json or a Kubernetes pull Secret.

    Runs on the server machine, against its database (the API never returns secrets).
    Each export is recorded in the account's audit trail.
    """
    if fmt == K8S_SECRET:
        try:
            build_k8s_secret(k8s_name, namespace, [])
        except ValueError as exc:
            fail(str(exc), code="k8s_name_invalid")
    target = None if output == "-" else Path(output)
    if target is not None and target.exists() and not force:
        fail(f"{target} exists; give --force to replace it.",
             code="output_exists")

    from moorage.cli.django_setup import setup_django

    setup_django()
    from django.db import transaction

    from moorage.accounts.selectors import operator_membership
    from moorage.credentials.services import credentials_export as export_service
    from moorage.errors import ApplicationError

    try:
        # The audit rows commit only once the file is written: no export is recorded that
        # did not happen, and none happens unrecorded.
        with transaction.atomic():
            membership = operator_membership(email=email, account_slug=account_slug)
            entries = export_service(actor=membership.user, membership=membership,
                                     names=list(names))
            logins = [(e.server, e.login, e.email or None) for e in entries]
            try:
                if fmt == DOCKER_CONFIG:
                    text = dump_docker_config(logins)
                else:
                    manifest = build_k8s_secret(k8s_name, namespace, logins)
                    text = json.dumps(manifest, indent=2) + "\n"
            except ValueError as exc:
                fail(f"Cannot export these together: {exc}; a file holds one "
                     "login per registry.", code="export_duplicate_registry")
            if target is None:
                click.echo(text, nl=False)
            else:
                _write_private(target, text, force=force)
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    what = "docker config" if fmt == DOCKER_CONFIG else "Kubernetes Secret"
    listed = escape(", ".join(f"{e.name} ({e.server})" for e in entries))
    where = "standard output" if target is None else f"{escape(str(target))} (mode 0600)"
    _say(f"[green]✓[/green] Wrote a {what} with {listed} to {where}. "
         f"Recorded in the audit trail of {membership.account.slug}.", err=True)
    for entry in entries:
        if entry.expires_at is not None:
            # The file holds the current short-lived token, not the key: say until when.
            _say(f"{escape(entry.name)}: the {entry.label} in the file expires at "
                 f"{entry.expires_at:%Y-%m-%d %H:%M} UTC (its issuer's word); export again "
                 "after that.", err=True)
