"""``moorage apps``: create, change, deploy and watch the account's apps.

Every command talks to the REST API with the stored login. Apps are named on the command
line and resolved through ``GET /apps``; credentials are named too, and resolved through
``GET /credentials?type=…`` (container-registry ones for pulls, git ones for clones; the
server checks the id again: I7). An app runs an image (``--image``) or is built from a git
repository (``--git``) or from a local directory uploaded as a gzipped tar (``--source``).
Secret env values go one way, like credential secrets: from a hidden prompt or standard input
into a request body, never from a command-line argument and never back out of the API.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from rich.table import Table

from moorage.cli import clientconfig
from moorage.cli.output import console, err_console, fail
from moorage.cli.remote import ApiError, call, request, request_any, require_login
from moorage.cli.sourcetar import MAX_ARCHIVE_BYTES, source_tar

REGISTRY, GIT = "container_registry", "git"
#: The API's source values (moorage.apps.choices.SourceMode).
IMAGE_SOURCE, BUILD_SOURCE = "image", "build"
#: The API's runtime_pull values (moorage.apps.choices.RuntimePull).
ACCOUNT_DEFAULT, NONE, CREDENTIAL = "account_default", "none", "credential"
RUNNING, FAILED, PULLING, BUILDING = "running", "failed", "pulling", "building"
#: A newer deploy took its place before it started / while it ran (the API's statuses).
SUPERSEDED, REPLACED = "superseded", "replaced"
STOPPED = "stopped"  # the region was disabled for the account (set by the control plane)
FINISHED = frozenset({RUNNING, FAILED, SUPERSEDED, REPLACED, STOPPED})
POLL_SECONDS = 0.5
#: ``deploy --follow`` exit statuses besides 0 (running everywhere) and 1 (failed somewhere).
EXIT_STALLED, EXIT_SUPERSEDED, EXIT_FOLLOW_TIMEOUT = 3, 4, 5
#: Seconds ``deploy --follow`` waits at most, whatever the agents say (``--timeout``).
FOLLOW_TIMEOUT = 1800
#: Seconds ``deploy --follow`` waits for the agents' report of what runs, after the deploy.
REPLICAS_WAIT = 3.0
#: Exit status after Ctrl-C, as a shell reports a process ended by SIGINT.
INTERRUPTED = 130


@click.group()
def apps() -> None:
    """Create, change, deploy and watch the account's apps."""


def _say(message: str, *, err: bool = False) -> None:
    """A sentence for a person (rich markup), never hard-wrapped: scripts grep for it."""
    (err_console if err else console).print(message, highlight=False, soft_wrap=True)


def _warn(message: str) -> None:
    """A plain-text warning on standard error, hard to miss."""
    _say(f"[bold yellow]Warning:[/bold yellow] {escape(message)}", err=True)


def _when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M")


# ----- name resolution


def _apps(config: clientconfig.ClientConfig) -> list[dict[str, Any]]:
    return list(request_any("GET", "/apps", config=config) or [])


def _resolve_app(config: clientconfig.ClientConfig, name: str) -> dict[str, Any]:
    """The app named ``name``; the server stores names in lower case."""
    wanted = name.strip().lower()
    found = next((a for a in _apps(config) if a["name"] == wanted), None)
    if found is None:
        fail(f"No app named {name!r} in this account.", code="app_not_found")
    return found


def _credentials(config: clientconfig.ClientConfig, kind: str) -> list[dict[str, Any]]:
    return list(request_any("GET", "/credentials", config=config, params={"type": kind}) or [])


def _registry_credentials(config: clientconfig.ClientConfig) -> list[dict[str, Any]]:
    return _credentials(config, REGISTRY)


#: What each credential type is called, and what needs one of that type.
_KIND_WORDS = {REGISTRY: "container-registry", GIT: "git"}


def _resolve_credential(config: clientconfig.ClientConfig, name: str, *, kind: str = REGISTRY,
                        purpose: str = "a pull needs") -> dict[str, Any]:
    """The account's credential of type ``kind`` named ``name``; a clear error for a credential
    of the other type (the server checks both again: I7)."""
    found = next((c for c in _credentials(config, kind) if c["name"] == name), None)
    if found is not None:
        return found
    other = GIT if kind == REGISTRY else REGISTRY
    if any(c["name"] == name for c in _credentials(config, other)):
        fail(f"{name!r} is a {_KIND_WORDS[other]} credential; {purpose} a "
             f"{_KIND_WORDS[kind]} credential.", code="credential_type_mismatch")
    fail(f"No {_KIND_WORDS[kind]} credential named {name!r} in this account.",
         code="credential_not_found")


# ----- the options create and update share


@dataclass
class AppOptions:
    """What create and update were told, before it becomes a request body."""

    image: str | None = None
    pull_credential: str | None = None
    no_pull_credential: bool = False
    use_account_default: bool = False
    regions: tuple[str, ...] = ()
    port: int | None = None
    replicas: int | None = None
    ready_timeout: int | None = None
    command: str | None = None
    env: tuple[str, ...] = ()
    secret_env: tuple[str, ...] = ()
    secret_env_stdin: bool = False
    unset_env: tuple[str, ...] = field(default_factory=tuple)


def _shared_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--pull-credential", metavar="NAME",
                     help="Pull the image with this container-registry credential."),
        click.option("--no-pull-credential", is_flag=True,
                     help="Pull anonymously: None (public image)."),
        click.option("--region", "regions", multiple=True, metavar="SLUG",
                     help="A region to run in (repeat). create: default every region of the "
                          "account; update: replaces the app's regions."),
        click.option("--port", type=int, help="The port the app listens on."),
        click.option("--replicas", type=int, metavar="N",
                     help="How many replicas run in each region (a swarm region spreads them "
                          "over its nodes; with a port, at most one per node)."),
        click.option("--ready-timeout", type=int, metavar="SECONDS",
                     help="How long a new version may take to run and accept connections on "
                          "its port before the previous one serves again (default 30)."),
        click.option("--command", metavar="CMD",
                     help="The command to run, split like a shell does: \"sh -c 'echo hi'\". "
                          "An empty string keeps the image's own."),
        click.option("--env", multiple=True, metavar="KEY=VALUE",
                     help="A plain environment variable (repeat)."),
        click.option("--secret-env", multiple=True, metavar="KEY",
                     help="A secret variable; its value is asked in a hidden prompt (repeat)."),
        click.option("--secret-env-stdin", is_flag=True,
                     help="Read secret variables from standard input, one KEY=VALUE a line."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _pull_fields(config: clientconfig.ClientConfig, opts: AppOptions) -> dict[str, Any]:
    chosen = [flag for flag, given in (("--pull-credential", opts.pull_credential is not None),
                                       ("--no-pull-credential", opts.no_pull_credential),
                                       ("--use-account-default", opts.use_account_default))
              if given]
    if len(chosen) > 1:
        fail(f"Choose one of {' and '.join(chosen)}.", code="pull_options_conflict")
    if opts.pull_credential is not None:
        credential = _resolve_credential(config, opts.pull_credential)
        return {"runtime_pull": CREDENTIAL, "runtime_pull_credential_id": credential["id"]}
    if opts.no_pull_credential:
        return {"runtime_pull": NONE, "runtime_pull_credential_id": None}
    if opts.use_account_default:
        return {"runtime_pull": ACCOUNT_DEFAULT, "runtime_pull_credential_id": None}
    return {}


def _command(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        fail(f"The command cannot be split like a shell would: {exc}.", code="command_invalid")


def _plain_env(items: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--env takes KEY=VALUE, not {item!r}.", code="env_invalid")
        env[key] = value
    return env


def _read_secret_stdin() -> dict[str, str]:
    """``KEY=VALUE`` lines from standard input. An error never quotes a line: it may be secret."""
    env: dict[str, str] = {}
    for number, raw in enumerate(sys.stdin.read().splitlines(), start=1):
        if not raw.strip():
            continue
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            fail(f"Line {number} of standard input is not KEY=VALUE.", code="secret_env_invalid")
        env[key] = value
    if not env:
        fail("No KEY=VALUE line on standard input.", code="secret_env_missing")
    return env


def _secret_env(opts: AppOptions) -> dict[str, str]:
    for key in opts.secret_env:
        if "=" in key:
            # The value is in the process list already; at least it goes no further.
            fail("--secret-env takes the variable's name only; its value comes from a hidden "
                 "prompt or --secret-env-stdin, never from the command line.",
                 code="secret_env_invalid")
    if opts.secret_env_stdin:
        given = _read_secret_stdin()
        missing = [k for k in opts.secret_env if k not in given]
        if missing:
            fail(f"Standard input has no line for {', '.join(missing)}.",
                 code="secret_env_missing")
        return given
    env: dict[str, str] = {}
    for key in opts.secret_env:
        env[key] = click.prompt(f"Value of {key}", hide_input=True,
                                confirmation_prompt=f"Repeat the value of {key}", err=True)
    return env


def _env_list(opts: AppOptions, existing: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The whole env to send (the API replaces it): what exists, changed as told.

    A secret that exists and is not given again is sent without a value, which keeps it.
    """
    plain, secret = _plain_env(opts.env), _secret_env(opts)
    both = sorted(set(plain) & set(secret))
    if both:
        fail(f"{', '.join(both)} is given both as --env and as a secret.", code="env_conflict")
    unknown = sorted(set(opts.unset_env) - {v["name"] for v in existing or []})
    if unknown:
        fail(f"The app has no variable {', '.join(unknown)}.", code="env_not_found")
    merged: dict[str, dict[str, Any]] = {}
    for variable in existing or []:
        if variable["name"] in opts.unset_env:
            continue
        merged[variable["name"]] = (
            {"name": variable["name"], "secret": True} if variable["secret"]
            else {"name": variable["name"], "value": variable["value"], "secret": False})
    for key, value in plain.items():
        merged[key] = {"name": key, "value": value, "secret": False}
    for key, value in secret.items():
        merged[key] = {"name": key, "value": value, "secret": True}
    return list(merged.values())


def _env_given(opts: AppOptions) -> bool:
    return bool(opts.env or opts.secret_env or opts.secret_env_stdin or opts.unset_env)


# ----- building from source


@dataclass
class BuildOptions:
    """The build-from-source options of create and update, as given."""

    git: str | None = None
    ref: str | None = None
    git_credential: str | None = None
    no_git_credential: bool = False
    dockerfile: str | None = None
    context: str | None = None
    build_args: tuple[str, ...] = ()
    unset_build_args: tuple[str, ...] = ()
    build_pull_credential: str | None = None
    no_build_pull_credential: bool = False
    source_dir: Path | None = None

    def settings_given(self) -> list[str]:
        """The options given that change how a build runs (not where its source is)."""
        return [flag for flag, given in (
            ("--ref", self.ref is not None),
            ("--git-credential", self.git_credential is not None),
            ("--no-git-credential", self.no_git_credential),
            ("--dockerfile", self.dockerfile is not None),
            ("--context", self.context is not None),
            ("--build-arg", bool(self.build_args)),
            ("--unset-build-arg", bool(self.unset_build_args)),
            ("--build-pull-credential", self.build_pull_credential is not None),
            ("--no-build-pull-credential", self.no_build_pull_credential),
        ) if given]


def _build_options(*, update: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The build options; ``update`` adds the ones that clear or remove a setting."""
    options = [
        click.option("--git", metavar="URL",
                     help="Build from this git repository (https://...) instead of running an "
                          "image."),
        click.option("--source", "source_dir", metavar="DIR",
                     type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Build from this local directory, uploaded as a gzipped tar "
                          "(its .dockerignore honoured, .git left out) instead of a git "
                          "repository."),
        click.option("--ref", metavar="REF", help="The branch, tag or commit to build "
                                                  "(default main)."),
        click.option("--git-credential", metavar="NAME",
                     help="Clone with this git credential (a private repository)."),
        click.option("--dockerfile", metavar="PATH",
                     help="The Dockerfile, relative to the build context (default Dockerfile)."),
        click.option("--context", metavar="DIR",
                     help="The build context, a directory of the repository (default .)."),
        click.option("--build-arg", "build_args", multiple=True, metavar="NAME=VALUE",
                     help="A build argument (repeat). Not for secrets: build arguments end "
                          "up in the image's history."),
        click.option("--build-pull-credential", metavar="NAME",
                     help="Pull the Dockerfile's base images on this credential's registry "
                          "with it. Without it, base images are pulled without a credential: "
                          "builds never use the account default."),
    ]
    if update:
        options += [
            click.option("--no-git-credential", is_flag=True,
                         help="Clone without a credential (a public repository)."),
            click.option("--unset-build-arg", "unset_build_args", multiple=True,
                         metavar="NAME", help="Remove a build argument (repeat)."),
            click.option("--no-build-pull-credential", is_flag=True,
                         help="Pull base images without a credential."),
        ]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def _build_args(opts: BuildOptions, existing: dict[str, str] | None) -> dict[str, str]:
    """The whole build-argument map to send (the API replaces it): what exists, changed."""
    unknown = sorted(set(opts.unset_build_args) - set(existing or {}))
    if unknown:
        fail(f"The app has no build argument {', '.join(unknown)}.",
             code="build_arg_not_found")
    merged = {k: v for k, v in (existing or {}).items() if k not in opts.unset_build_args}
    for item in opts.build_args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--build-arg takes NAME=VALUE, not {item!r}.", code="build_arg_invalid")
        merged[key] = value
    return merged


def _build_fields(config: clientconfig.ClientConfig, opts: BuildOptions,
                  existing: dict[str, Any] | None) -> dict[str, Any]:
    """The API's build fields for what was given; credentials resolved by name."""
    for flag, other, both in (
            ("--git-credential", "--no-git-credential",
             opts.git_credential is not None and opts.no_git_credential),
            ("--build-pull-credential", "--no-build-pull-credential",
             opts.build_pull_credential is not None and opts.no_build_pull_credential)):
        if both:
            fail(f"Choose one of {flag} and {other}.", code="build_options_conflict")
    body: dict[str, Any] = {}
    for key, value in (("git_url", opts.git), ("git_ref", opts.ref),
                       ("dockerfile", opts.dockerfile), ("context", opts.context)):
        if value is not None:
            body[key] = value
    if opts.git_credential is not None:
        body["git_credential_id"] = _resolve_credential(
            config, opts.git_credential, kind=GIT, purpose="cloning a repository needs")["id"]
    elif opts.no_git_credential:
        body["git_credential_id"] = None
    if opts.build_args or opts.unset_build_args:
        body["build_args"] = _build_args(opts, existing["build_args"] if existing else None)
    if opts.build_pull_credential is not None:
        body["build_pull_credential_id"] = _resolve_credential(
            config, opts.build_pull_credential,
            purpose="pulling a build's base images needs")["id"]
    elif opts.no_build_pull_credential:
        body["build_pull_credential_id"] = None
    return body


def _source_label(app: dict[str, Any]) -> str:
    """What the app runs: its image, or ``repository@ref`` for a build (plain text)."""
    if app["source"] != BUILD_SOURCE:
        return str(app["image"])
    archive = app.get("source_archive")
    if archive:
        return f"uploaded source sha256:{archive['sha256'][:12]} ({_size(archive['size'])})"
    if not app["git_url"]:
        return "no source yet"
    return f"{app['git_url']}@{app['git_ref']}"


def _size(size: int) -> str:
    """A byte count the way people read it: 812 B, 3.4 KiB, 12.0 MiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _check_upload_options(build: BuildOptions) -> None:
    if build.source_dir is None:
        return
    if build.git is not None:
        fail("Choose one of --git and --source.", code="source_options_conflict")
    git_only = [flag for flag, given in (("--ref", build.ref is not None),
                                         ("--git-credential", build.git_credential is not None))
                if given]
    if git_only:
        fail(f"{git_only[0]} goes with --git; an uploaded source has no ref or git credential.",
             code="build_options_conflict")


def _upload_source(config: clientconfig.ClientConfig, app: dict[str, Any], directory: Path,
                   dockerfile: str) -> dict[str, Any]:
    """Tar and gzip ``directory`` and upload it as the app's source; say what went up."""
    packed = source_tar(directory, dockerfile=dockerfile)
    try:
        if packed.size > MAX_ARCHIVE_BYTES:
            raise ApiError(f"The source of {directory} is {_size(packed.size)} gzipped; at most "
                           f"{_size(MAX_ARCHIVE_BYTES)} is accepted. Leave build outputs and "
                           "dependencies out with a .dockerignore.", code="source_too_large",
                           status=413)
        with packed.path.open("rb") as body:
            archive: dict[str, Any] = call(
                "POST", f"/apps/{app['id']}/source", config=config, content=body,
                headers={"Content-Type": "application/gzip"})
    finally:
        packed.path.unlink(missing_ok=True)
    _say(f"Uploaded {escape(str(directory))}: {packed.files} files, "
         f"{escape(_size(archive['size']))}, sha256:{escape(archive['sha256'])}")
    return archive


def _base_images_label(app: dict[str, Any]) -> str:
    """How a build pulls its base images (plain text): never with the account default (I5),
    which ``apps list`` says under its table."""
    name = app.get("build_pull_credential_name")
    if name:
        return f"base images: with {name!r}"
    return "base images: without a credential"


def _show_build(config: clientconfig.ClientConfig, app: dict[str, Any], *,
                width: int = 0) -> None:
    """A build app's source, build settings and base-image pulls, one line each."""
    git = app.get("git_credential_name")
    source = _source_label(app) + (f" (git credential {git!r})" if git else "")
    build = f"{app['dockerfile']} in {app['context']}"
    if app["build_args"]:
        build += " with " + " ".join(f"{k}={v}" for k, v in sorted(app["build_args"].items()))
    pull = app.get("build_pull_credential_name")
    if pull:
        host = next((c["server"] for c in _registry_credentials(config)
                     if c["id"] == app["build_pull_credential_id"]), "?")
        pulls = (f"Base images on {host} are pulled with {pull!r}, others without a "
                 "credential; builds never use the account default.")
    else:
        pulls = ("Base images are pulled without a credential; builds never use the account "
                 "default.")
    for label, value in (("Source:", source), ("Build:", build), ("Pull:", pulls)):
        _say(f"{label:<{width}} {escape(value)}" if width else f"{label} {escape(value)}")


# ----- showing how an app pulls


def _pull_label(app: dict[str, Any], default_name: str | None) -> str:
    if app["runtime_pull"] == ACCOUNT_DEFAULT:
        return f"account default ({default_name or 'none set'})"
    if app["runtime_pull"] == NONE:
        return "none"
    return str(app.get("runtime_pull_credential_name") or "?")


def _show_pull(config: clientconfig.ClientConfig, app: dict[str, Any], *,
               label: str = "Pull:") -> None:
    """How deploys will pull, as the App page says it; a host mismatch as a warning."""
    plan = request("GET", f"/apps/{app['id']}/pull-credential", config=config)
    if plan["host_mismatch"]:
        _warn(str(plan["message"]))
    else:
        _say(f"{label} {escape(plan['message'])}")


def _env_summary(app: dict[str, Any]) -> str:
    return ", ".join(v["name"] + (" (secret)" if v["secret"] else "") for v in app["env"])


# ----- list, create, update, delete


def _latest_number(deployments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deployments of the newest deploy (one per region)."""
    if not deployments:
        return []
    newest = max(d["number"] for d in deployments)
    return sorted((d for d in deployments if d["number"] == newest), key=lambda d: d["region"])


def _status_colour(status: str) -> str:
    colour = {RUNNING: "green", FAILED: "red", SUPERSEDED: "dim",
              REPLACED: "dim"}.get(status, "yellow")
    return f"[{colour}]{escape(status)}[/{colour}]"


def _last_deploy_label(deployments: list[dict[str, Any]]) -> str:
    """'#3 running', or '#3 1 running, 1 failed' when its regions differ."""
    latest = _latest_number(deployments)
    if not latest:
        return "[dim]never deployed[/dim]"
    counts: dict[str, int] = {}
    for d in latest:
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    if len(counts) == 1:
        return f"#{latest[0]['number']} {_status_colour(latest[0]['status'])}"
    parts = ", ".join(f"{n} {_status_colour(status)}" for status, n in sorted(counts.items()))
    return f"#{latest[0]['number']} {parts}"


@apps.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
def apps_list(as_json: bool) -> None:
    """List the account's apps, how they pull, where they run and their last deploy."""
    config = require_login()
    items = _apps(config)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        _say("No apps yet. Create one with [bold]moorage apps create[/bold].")
        return
    default = next((c for c in _registry_credentials(config) if c["is_default"]), None)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("Name", no_wrap=True, style="bold")
    table.add_column("Image or source", overflow="fold")
    table.add_column("Pull", no_wrap=True)
    table.add_column("Regions", overflow="fold")
    table.add_column("Last deploy", no_wrap=True)
    for app in items:
        deployments = request_any("GET", f"/apps/{app['id']}/deployments", config=config)
        pull = _base_images_label(app) if app["source"] == BUILD_SOURCE \
            else _pull_label(app, default["name"] if default else None)
        table.add_row(
            escape(app["name"]), escape(_source_label(app)), escape(pull),
            escape(", ".join(app["regions"])) or "[dim]none[/dim]",
            _last_deploy_label(list(deployments or [])),
        )
    console.print(table, highlight=False)
    if any(app["source"] == BUILD_SOURCE for app in items):
        _say("Builds pull their base images with their own credential or without one — never "
             "the account default.")


def _runtime_pull_given(opts: AppOptions) -> list[str]:
    return [flag for flag, given in (("--pull-credential", opts.pull_credential is not None),
                                     ("--no-pull-credential", opts.no_pull_credential),
                                     ("--use-account-default", opts.use_account_default))
            if given]


def _check_source_options(source: str, opts: AppOptions, build: BuildOptions) -> None:
    """Runtime-pull options go with an image, build options with a build: say so, rather
    than store settings that would silently do nothing."""
    if source == BUILD_SOURCE and _runtime_pull_given(opts):
        fail(f"{_runtime_pull_given(opts)[0]} is for apps that run an image; a build pulls its "
             "base images with --build-pull-credential (never the account default).",
             code="pull_options_conflict")
    if source == IMAGE_SOURCE and build.settings_given():
        fail(f"{build.settings_given()[0]} is for apps built from source; give --git URL to "
             "build one.", code="build_options_without_source")


def _show_created(config: clientconfig.ClientConfig, app: dict[str, Any]) -> None:
    if app["env"]:
        _say(f"Env: {escape(_env_summary(app))}")
    if app["source"] == BUILD_SOURCE:
        _show_build(config, app)
    else:
        _show_pull(config, app)


@apps.command("create")
@click.argument("name")
@click.option("--image", metavar="REF",
              help="The image to run, e.g. ghcr.io/acme/api:1.4 (or --git to build one).")
@_build_options(update=False)
@_shared_options
def apps_create(name: str, image: str | None, pull_credential: str | None,
                no_pull_credential: bool, regions: tuple[str, ...], port: int | None,
                replicas: int | None, ready_timeout: int | None, command: str | None,
                env: tuple[str, ...], secret_env: tuple[str, ...], secret_env_stdin: bool,
                **build_options: Any) -> None:
    """Create an app that runs an image (--image) or is built from a git repository (--git).

    An image is pulled with the account default unless told; a build's base images are
    pulled with --build-pull-credential, or without a credential, never the account default.
    """
    config = require_login()
    opts = AppOptions(image=image, pull_credential=pull_credential,
                      no_pull_credential=no_pull_credential, regions=regions, port=port,
                      replicas=replicas, ready_timeout=ready_timeout, command=command, env=env,
                      secret_env=secret_env, secret_env_stdin=secret_env_stdin)
    build = BuildOptions(**build_options)
    given = [flag for flag, value in (("--image", image), ("--git", build.git),
                                      ("--source", build.source_dir)) if value is not None]
    if len(given) > 1:
        fail(f"Choose one of {' and '.join(given)}.", code="source_options_conflict")
    if not given:
        fail("Give --image REF to run an image, or --git URL or --source DIR to build from "
             "source.", code="source_required")
    _check_upload_options(build)
    source = IMAGE_SOURCE if image is not None else BUILD_SOURCE
    _check_source_options(source, opts, build)
    body: dict[str, Any] = {"name": name, "source": source}
    if source == IMAGE_SOURCE:
        body |= {"image": image, **_pull_fields(config, opts)}
    else:
        body |= _build_fields(config, build, None)
        if build.source_dir is not None:
            body["source_upload"] = True
    if regions:
        body["regions"] = list(regions)
    if port is not None:
        body["port"] = port
    if replicas is not None:
        body["replicas"] = replicas
    if ready_timeout is not None:
        body["ready_timeout"] = ready_timeout
    if command is not None:
        body["command"] = _command(command)
    if _env_given(opts):
        body["env"] = _env_list(opts, None)
    app = request("POST", "/apps", config=config, json=body)
    if build.source_dir is not None:
        dockerfile = posixpath.normpath(posixpath.join(app["context"], app["dockerfile"]))
        try:
            _upload_source(config, app, build.source_dir, dockerfile)
        except ApiError as exc:
            # No app without its source: it was made for this upload.
            request_any("DELETE", f"/apps/{app['id']}", config=config)
            fail(exc.message, code=exc.code)
        app = request("GET", f"/apps/{app['id']}", config=config)
    where = ", ".join(app["regions"]) or "no region yet"
    what = f"running {app['image']}" if source == IMAGE_SOURCE \
        else f"built from {_source_label(app)}"
    _say(f"[green]✓[/green] Created app [bold]{escape(app['name'])}[/bold] {escape(what)} "
         f"in {escape(where)}.")
    _show_created(config, app)


@apps.command("update")
@click.argument("name")
@click.option("--name", "new_name", help="A new name.")
@click.option("--image", metavar="REF",
              help="A new image to run (an app built from source then runs it instead).")
@click.option("--use-account-default", is_flag=True,
              help="Pull with the account default credential (Use account default).")
@_build_options(update=True)
@_shared_options
@click.option("--unset-env", multiple=True, metavar="KEY", help="Remove a variable (repeat).")
def apps_update(name: str, new_name: str | None, image: str | None, use_account_default: bool,
                pull_credential: str | None, no_pull_credential: bool,
                regions: tuple[str, ...], port: int | None, replicas: int | None,
                ready_timeout: int | None, command: str | None,
                env: tuple[str, ...], secret_env: tuple[str, ...], secret_env_stdin: bool,
                unset_env: tuple[str, ...], **build_options: Any) -> None:
    """Change what is given, and nothing else; it takes effect at the next deploy.

    --env, --secret-env and --unset-env change those variables and keep the others (a
    secret keeps its value unless given again); --build-arg and --unset-build-arg do the
    same with build arguments. --image makes the app run an image, --git build from source.
    """
    config = require_login()
    opts = AppOptions(image=image, pull_credential=pull_credential,
                      no_pull_credential=no_pull_credential,
                      use_account_default=use_account_default, regions=regions, port=port,
                      replicas=replicas, ready_timeout=ready_timeout, command=command, env=env,
                      secret_env=secret_env, secret_env_stdin=secret_env_stdin,
                      unset_env=unset_env)
    build = BuildOptions(**build_options)
    given = [flag for flag, value in (("--image", image), ("--git", build.git),
                                      ("--source", build.source_dir)) if value is not None]
    if len(given) > 1:
        fail(f"Choose one of {' and '.join(given)}.", code="source_options_conflict")
    _check_upload_options(build)
    app = _resolve_app(config, name)
    source = IMAGE_SOURCE if image is not None else app["source"] if not given \
        else BUILD_SOURCE
    _check_source_options(source, opts, build)
    body: dict[str, Any] = _pull_fields(config, opts)
    body |= _build_fields(config, build, app)
    if source != app["source"] and build.source_dir is None:
        body["source"] = source  # an upload makes the app a build app itself
    for key, value in (("name", new_name), ("image", image), ("port", port),
                       ("replicas", replicas), ("ready_timeout", ready_timeout)):
        if value is not None:
            body[key] = value
    if regions:
        body["regions"] = list(regions)
    if command is not None:
        body["command"] = _command(command)
    if _env_given(opts):
        body["env"] = _env_list(opts, app["env"])
    if not body and build.source_dir is None:
        fail("Nothing to change: give --image, --git, --source, --pull-credential, --env, ... "
             "(see --help).", code="nothing_to_change")
    if build.source_dir is not None:
        # First: when the upload is refused (too large, not readable), nothing has changed.
        dockerfile = posixpath.normpath(posixpath.join(
            build.context or app["context"], build.dockerfile or app["dockerfile"]))
        try:
            _upload_source(config, app, build.source_dir, dockerfile)
        except ApiError as exc:
            fail(exc.message, code=exc.code)
    updated = request("PATCH", f"/apps/{app['id']}", config=config, json=body) if body \
        else request("GET", f"/apps/{app['id']}", config=config)
    _say(f"[green]✓[/green] Updated app [bold]{escape(updated['name'])}[/bold]; "
         "the next deploy uses it.")
    _show_created(config, updated)


@apps.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def apps_delete(name: str, yes: bool) -> None:
    """Delete an app; every region stops and removes its containers."""
    config = require_login()
    app = _resolve_app(config, name)
    if not yes:
        click.confirm(f"Delete app {app['name']!r}? Its containers stop in every region.",
                      abort=True, err=True)
    request_any("DELETE", f"/apps/{app['id']}", config=config)
    _say(f"[green]✓[/green] Deleted app [bold]{escape(app['name'])}[/bold].")


# ----- deploy and follow


def _pull_words(deployment: dict[str, Any], *, used: bool) -> str:
    """'with 'ghcr-prod' revision 3', 'anonymously' or 'anonymously (the account default is
    for ghcr.io)' (plain text)."""
    if not deployment.get("credential_name"):
        if deployment.get("default_host"):
            return f"anonymously (the account default is for {deployment['default_host']})"
        return "anonymously"
    revision = deployment["used_revision"] if used and deployment["used_revision"] is not None \
        else deployment["credential_revision"]
    return f"with {deployment['credential_name']!r} revision {revision}"


def _build_words(deployment: dict[str, Any], *, used: bool) -> str:
    """'builds URL@ref, base images pulled with 'x' revision 3' (plain text)."""
    build = deployment.get("build") or {}
    git, archive = build.get("git") or {}, build.get("archive") or {}
    if git:
        what = f"{git.get('url')}@{git.get('ref')}"
    elif archive:
        what = (f"the uploaded source sha256:{str(archive.get('sha256'))[:12]} "
                f"({_size(int(archive.get('size') or 0))})")
    else:
        what = "the app's source"
    if not deployment.get("credential_name"):
        return (f"{what}, base images pulled without a credential (never the account "
                "default)")
    return f"{what}, base images pulled {_pull_words(deployment, used=used)}"


def _deploy_words(deployment: dict[str, Any]) -> str:
    """What a queued deploy will do (plain text)."""
    if deployment.get("build") is not None:
        return f"will build {_build_words(deployment, used=False)}."
    return f"{deployment['image']} will be pulled {_pull_words(deployment, used=False)}."


def _pause() -> None:
    time.sleep(POLL_SECONDS)


def _layers(progress: Any) -> dict[str, tuple[float, float | None]]:
    """``progress`` as the agent sent it ({layer: [current, total]}); anything else is skipped."""
    layers: dict[str, tuple[float, float | None]] = {}
    if not isinstance(progress, dict):
        return layers
    for layer, value in progress.items():
        if (isinstance(value, list | tuple) and len(value) == 2
                and all(isinstance(n, int | float) for n in value)):
            current, total = value
            layers[str(layer)] = (float(current), float(total) if total else None)
    return layers


def _short_layer(layer: str) -> str:
    return layer.removeprefix("sha256:")[:12]


@dataclass
class _Watched:
    """One deployment being followed: where its log and layer bars are."""

    deployment: dict[str, Any]
    after: int = 0
    bars: dict[str, TaskID] = field(default_factory=dict)
    totals: dict[str, float | None] = field(default_factory=dict)


def _done(deployment: dict[str, Any]) -> bool:
    """Nothing more to wait for: finished, or stalled (the API says why)."""
    return deployment["status"] in FINISHED or bool(deployment.get("stalled"))


def _follow(config: clientconfig.ClientConfig, deployments: list[dict[str, Any]], *,
            timeout: float = FOLLOW_TIMEOUT) -> int:
    """Print logs, status changes and layer bars until each deployment is finished or
    stalled, or ``timeout`` seconds went by.

    Returns the command's exit status: 0 when every region runs it (or ran it, and a newer
    deploy replaced it since), else the worst of 1 (failed), :data:`EXIT_STALLED`,
    :data:`EXIT_FOLLOW_TIMEOUT` and :data:`EXIT_SUPERSEDED`.
    """
    deadline = time.monotonic() + timeout
    timed_out = False
    watched = [_Watched(d) for d in deployments]
    several = len(watched) > 1
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    with Progress(*columns, console=console) as progress:
        def say(region: str, message: str) -> None:
            prefix = f"[dim]{escape(region)}[/dim] " if several else ""
            progress.console.print(prefix + message, highlight=False, soft_wrap=True)

        while True:
            for item in watched:
                if _done(item.deployment):
                    continue
                region = item.deployment["region"]
                # The status first, then the log: a deployment seen finished has its whole
                # log printed before it is no longer polled.
                current = request("GET", f"/deployments/{item.deployment['id']}", config=config)
                lines = request_any("GET", f"/deployments/{item.deployment['id']}/logs",
                                    config=config, params={"after": item.after}) or []
                for line in lines:
                    say(region, escape(line["line"]))
                    item.after = max(item.after, int(line["id"]))
                if current["status"] != item.deployment["status"]:
                    say(region, f"status: {_status_colour(current['status'])}")
                if current.get("stalled") and not item.deployment.get("stalled"):
                    say(region, f"[red]stalled:[/red] {escape(current['stalled']['message'])}")
                for layer, (done, total) in _layers(current["progress"]).items():
                    if layer not in item.bars:
                        label = f"{region} {_short_layer(layer)}" if several \
                            else _short_layer(layer)
                        item.bars[layer] = progress.add_task(escape(label), total=total)
                    progress.update(item.bars[layer], completed=done, total=total)
                    item.totals[layer] = total
                if current["status"] not in (PULLING, FAILED):
                    # Past the pull: every layer is in, whatever the last report said.
                    for layer, task in item.bars.items():
                        if item.totals.get(layer) is not None:
                            progress.update(task, completed=item.totals[layer])
                item.deployment = current
            if all(_done(item.deployment) for item in watched):
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            _pause()
    outcomes: set[int] = set()
    serving = {item.deployment["region"]: item.deployment["id"] for item in watched
               if item.deployment["status"] == RUNNING}
    replicas = _replicas_by_region(config, watched[0].deployment["app_id"], serving) \
        if serving else {}
    for item in watched:
        d = item.deployment
        where = escape(d["region"]) + escape(_replicas_words(replicas.get(d["region"]), d))
        if d["status"] == RUNNING and d.get("build") is not None:
            image = f" {d['image_digest']}" if d["image_digest"] else ""
            _say(f"[green]✓[/green] {where}: running the image{escape(image)} "
                 f"built from {escape(_build_words(d, used=True))}.")
        elif d["status"] == RUNNING:
            digest = f" ({d['image_digest']})" if d["image_digest"] else ""
            _say(f"[green]✓[/green] {where}: running {escape(d['image'])}"
                 f"{escape(digest)}, pulled {escape(_pull_words(d, used=True))}.")
        elif d["status"] == REPLACED:
            _say(f"[green]✓[/green] {where}: ran, and a newer deploy of the app has "
                 "replaced it since.")
        elif d["status"] == FAILED:
            outcomes.add(1)
            _say(f"[red]✗[/red] {escape(d['region'])}: failed "
                 f"[bold]{escape(d['error_code'] or 'deploy_failed')}[/bold]: "
                 f"{escape(d['error_message'] or '(no message)')}")
        elif d["status"] == STOPPED:
            outcomes.add(1)
            _say(f"[red]✗[/red] {escape(d['region'])}: "
                 f"{escape(d['error_message'] or 'stopped')}")
        elif d["status"] == SUPERSEDED:
            outcomes.add(EXIT_SUPERSEDED)
            _say(f"[yellow]-[/yellow] {escape(d['region'])}: superseded: a newer deploy of "
                 "the app took its place before it started; that one is what runs.")
        elif d.get("stalled"):
            outcomes.add(EXIT_STALLED)
            _say(f"[red]✗[/red] {escape(d['region'])}: stalled "
                 f"[bold]{escape(d['stalled']['code'])}[/bold]: "
                 f"{escape(d['stalled']['message'])}")
        else:
            outcomes.add(EXIT_FOLLOW_TIMEOUT if timed_out else 1)
            _say(f"[red]✗[/red] {escape(d['region'])}: still {escape(d['status'])} after "
                 f"{timeout:.0f} s of following; the deploy goes on. Watch it with "
                 f"[bold]moorage apps status {escape(d['app'])}[/bold].")
    for code in (1, EXIT_STALLED, EXIT_FOLLOW_TIMEOUT, EXIT_SUPERSEDED):
        if code in outcomes:
            return code
    return 0


def _replicas_by_region(config: clientconfig.ClientConfig, app_id: int,
                        running: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Region → the replicas its agent reported for the app (``replicas_running``).

    An agent reports what runs right after the deployment itself: for up to
    :data:`REPLICAS_WAIT` seconds, wait until each region in ``running`` (region →
    deployment id) reported that deployment.
    """
    # Only regions whose agent reports what runs at all (an older agent does not).
    reporting = {r["slug"] for r in request_any("GET", "/regions", config=config) or []
                 if r.get("runtime_reported_at")}
    running = {region: d for region, d in running.items() if region in reporting}
    deadline = time.monotonic() + REPLICAS_WAIT
    while True:
        app = request_any("GET", f"/apps/{app_id}", config=config) or {}
        found = {r["region"]: r for r in app.get("replicas_running") or []}
        if all(found.get(region, {}).get("deployment_id") == deployment_id
               for region, deployment_id in running.items()) or time.monotonic() > deadline:
            return found
        _pause()


def _replicas_words(replicas: dict[str, Any] | None, deployment: dict[str, Any]) -> str:
    """' (3/3 replicas)' when the region reported this deployment running, else ''."""
    if not replicas or replicas.get("deployment_id") != deployment["id"]:
        return ""
    return f" ({replicas['running']}/{replicas['desired']} replicas)"


@apps.command("deploy")
@click.argument("name")
@click.option("--follow", "-f", is_flag=True,
              help="Show logs, build output and pull progress until every region is running "
                   "or failed (or superseded by a newer deploy, or stalled).")
@click.option("--timeout", type=click.IntRange(1, 86400), default=FOLLOW_TIMEOUT,
              show_default=True, help="With --follow: stop following after this many "
                                      "seconds (exit 5); the deploy goes on.")
def apps_deploy(name: str, follow: bool, timeout: int) -> None:
    """Deploy the app in each of its regions.

    With --follow, exit 0 when every region runs it, 1 if any region failed, 3 if a region
    stalled (its agent is not in touch, or stopped reporting), 4 if a newer deploy
    superseded it before it started, 5 if --timeout ran out first.
    """
    config = require_login()
    app = _resolve_app(config, name)
    created = list(request_any("POST", f"/apps/{app['id']}/deploy", config=config) or [])
    for d in created:
        _say(f"Deploy #{d['number']} of [bold]{escape(d['app'])}[/bold] to "
             f"[bold]{escape(d['region'])}[/bold] (deployment {d['id']}): "
             f"{escape(_deploy_words(d))}")
    if not follow:
        _say(f"Watch it with [bold]moorage apps status {escape(app['name'])}[/bold].")
        return
    try:
        status = _follow(config, created, timeout=timeout)
    except KeyboardInterrupt:
        _say(f"Stopped following; the deploy was not cancelled and goes on. See "
             f"[bold]moorage apps status {escape(app['name'])}[/bold].", err=True)
        raise click.exceptions.Exit(INTERRUPTED) from None
    if status:
        raise click.exceptions.Exit(status)


# ----- status


@apps.command("status")
@click.argument("name")
def apps_status(name: str) -> None:
    """The app, how it pulls, and the latest deployment in each region."""
    config = require_login()
    app = _resolve_app(config, name)
    _say(f"[bold]{escape(app['name'])}[/bold]")
    if app["source"] != BUILD_SOURCE:
        _say(f"Image:    {escape(app['image'])}")
    rows = [("Regions", ", ".join(app["regions"]) or "none"),
            ("Replicas", str(app["replicas"])),
            ("Port", str(app["port"]) if app["port"] is not None else ""),
            ("Ready in", f"{app['ready_timeout']} s at most" if "ready_timeout" in app else ""),
            ("Command", shlex.join(app["command"]) if app["command"] else ""),
            ("Env", _env_summary(app))]
    for label, value in rows:
        if value:
            _say(f"{label + ':':<9} {escape(value)}")
    if app["source"] == BUILD_SOURCE:
        _show_build(config, app, width=9)
    else:
        _show_pull(config, app, label=f"{'Pull:':<9}")
    deployments = list(request_any("GET", f"/apps/{app['id']}/deployments", config=config)
                       or [])
    latest: dict[str, dict[str, Any]] = {}
    for d in deployments:  # newest first
        latest.setdefault(d["region"], d)
    if not latest:
        _say("Never deployed. Deploy with "
             f"[bold]moorage apps deploy {escape(app['name'])} --follow[/bold].")
        return
    replicas = {r["region"]: r for r in app.get("replicas_running") or []}
    table = Table(show_edge=False, pad_edge=False, title="Latest deployment per region",
                  title_justify="left")
    table.add_column("Region", no_wrap=True, style="bold")
    table.add_column("#", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    if replicas:  # only once a region reported what runs: the table stays narrow otherwise
        table.add_column("Replicas", no_wrap=True)
    table.add_column("Digest", no_wrap=True)
    table.add_column("Pulled", overflow="fold")
    table.add_column("When", no_wrap=True)
    for region in sorted(latest):
        d = latest[region]
        running = replicas.get(region)
        count = [f"{running['running']}/{running['desired']}" if running else ""] \
            if replicas else []
        table.add_row(
            escape(region), f"#{d['number']}", _status_colour(d["status"]), *count,
            escape(_short_digest(d["image_digest"])), escape(_credential_label(d)),
            _when(d["finished_at"] or d["started_at"] or d["created_at"]),
        )
    console.print(table, highlight=False)
    for region in sorted(latest):
        d = latest[region]
        if d["status"] == STOPPED:
            _say(f"[yellow]{escape(region)}[/yellow] {escape(d['error_message'] or 'stopped')}")
        if d["status"] == FAILED:
            _say(f"[red]{escape(region)}[/red] failed "
                 f"[bold]{escape(d['error_code'] or 'deploy_failed')}[/bold]: "
                 f"{escape(d['error_message'] or '(no message)')}")
        elif d.get("stalled"):
            _say(f"[red]{escape(region)}[/red] stalled: {escape(d['stalled']['message'])}")


def _short_digest(digest: str | None) -> str:
    """``sha256:`` and 12 hex digits, as ``docker images`` shows an id."""
    if not digest:
        return ""
    algorithm, _, hexa = digest.partition(":")
    return f"{algorithm}:{hexa[:12]}" if hexa else digest[:19]


def _credential_label(deployment: dict[str, Any]) -> str:
    """The credential and revision a deployment used: 'ghcr-prod rev 2'; until the agent
    says which it used, the one the deploy asked for, marked '(wanted)'."""
    if not deployment.get("credential_name"):
        if deployment.get("default_host"):
            return f"anonymous (the default is for {deployment['default_host']})"
        return "anonymous"
    used = deployment["used_revision"]
    if used is None:
        return f"{deployment['credential_name']} rev {deployment['credential_revision']} (wanted)"
    return f"{deployment['credential_name']} rev {used}"
