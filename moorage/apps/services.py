"""Every change to apps: create, update, delete, and their environment."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction
from django.utils import timezone

from moorage.accounts.models import Account, Membership, User
from moorage.accounts.permissions import Action, require
from moorage.apps import sources
from moorage.apps.choices import RuntimePull, SourceMode
from moorage.apps.models import App, EnvVar, SourceArchive
from moorage.audit.choices import AuditAction
from moorage.audit.services import audit_record
from moorage.credentials.choices import CredentialType
from moorage.credentials.models import Credential
from moorage.errors import Conflict, NotFound, ValidationFailed
from moorage.keys.errors import SecretUnavailable, unavailable
from moorage.keys.registry import APP_ENV_SECRET
from moorage.protocol.readiness import (
    READY_TIMEOUT_DEFAULT,
    READY_TIMEOUT_MAX,
    READY_TIMEOUT_MIN,
)
from moorage.regions.changelog import record_change
from moorage.regions.choices import ChangeKind
from moorage.regions.models import Region
from moorage.registry.reference import InvalidReference, parse_reference
from moorage.sealing import SealedDataError

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ENV_VALUE_MAX = 32 * 1024  # UTF-8 bytes of one value
ENV_MAX = 200
#: The most an app's environment may hold: the UTF-8 bytes of every ``NAME=value``, secret
#: ones included. A container's process receives its command and environment through
#: execve(2), whose total the kernel bounds by a quarter of the stack limit: 2 MiB under the
#: usual 8 MiB (measured on dockerd: past 2,096,443 bytes of environment a start fails with
#: "argument list too long"). Half of it leaves room for the longest command (64 arguments
#: of 4096 bytes), the image's own environment and engines run with a smaller stack.
ENV_TOTAL_MAX = 1024 * 1024
REPLICAS_MAX = 20
COMMAND_MAX = 64
COMMAND_ARG_MAX = 4096  # UTF-8 bytes of one argument


@dataclass(frozen=True)
class EnvInput:
    """One variable as people give it. A secret with ``value=None`` keeps its old value."""

    name: str
    value: str | None
    secret: bool = False


def _fail(field: str, code: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, detail={"fields": {field: message}})


def open_env(variable: EnvVar) -> str:
    """A variable's value in clear (a secret one is opened at the moment of use).

    Raises :class:`~moorage.keys.errors.SecretUnavailable` naming the variable when a
    secret value cannot be opened.
    """
    if not variable.secret:
        return variable.value
    try:
        return APP_ENV_SECRET.open_text(variable)
    except SealedDataError as exc:
        raise unavailable(APP_ENV_SECRET.describe(variable), exc,
                                app_id=variable.app_id, variable=variable.name) from None


def _holds(variable: EnvVar, value: str) -> bool:
    """Whether the secret ``variable`` holds is ``value``. One that no longer opens (its key
    is gone) is simply replaced: setting the value again is how a user repairs it."""
    try:
        return APP_ENV_SECRET.open_text(variable) == value
    except SealedDataError:
        return False


def _clean_name(name: str) -> str:
    name = name.strip().lower()
    if not _NAME.match(name):
        raise _fail("name", "app_name_invalid",
                    "An app name is 1-63 lower-case letters, digits and hyphens, like api or "
                    "web-2, not starting or ending with a hyphen.")
    return name


def _clean_image(source: SourceMode, image: str) -> str:
    image = image.strip()
    if source is SourceMode.IMAGE and not image:
        raise _fail("image", "image_required", "Give the image to run, like ghcr.io/acme/api:1.4.")
    if image:
        try:
            parse_reference(image)
        except InvalidReference as exc:
            raise _fail("image", "image_invalid", f"The image is not valid: {exc.message}") \
                from None
    return image


def pull_credential_for(*, account: Account, runtime_pull: str,
                        credential_id: int | None) -> tuple[RuntimePull, Credential | None]:
    """Check the runtime-pull choice: only the account's own registry credentials (I7)."""
    try:
        mode = RuntimePull(runtime_pull)
    except ValueError:
        raise _fail("runtime_pull", "runtime_pull_invalid",
                    "Choose account_default, none or credential.") from None
    if mode is not RuntimePull.CREDENTIAL:
        if credential_id is not None:
            raise _fail("runtime_pull_credential", "runtime_pull_conflict",
                        "A credential is only chosen with runtime_pull=credential.")
        return mode, None
    if credential_id is None:
        raise _fail("runtime_pull_credential", "pull_credential_required",
                    "Choose the credential to pull with.")
    credential = Credential.objects.filter(account=account, id=credential_id).first()
    if credential is None:
        raise _fail("runtime_pull_credential", "pull_credential_not_found",
                    "No such credential in this account.")
    if credential.type != CredentialType.CONTAINER_REGISTRY:
        raise _fail("runtime_pull_credential", "credential_type_mismatch",
                    f"{credential.name!r} is a git credential; a pull needs a "
                    "container-registry credential.")
    return mode, credential


@dataclass(frozen=True)
class BuildInput:
    """What a build-from-source app builds, and with which credentials."""

    git_url: str
    git_ref: str = "main"
    git_credential_id: int | None = None
    dockerfile: str = "Dockerfile"
    context: str = "."
    build_args: dict[str, str] | None = None
    build_pull_credential_id: int | None = None


_BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_GIT_REF = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")


def _credential_of(account: Account, credential_id: int | None, kind: CredentialType,
                   field: str) -> Credential | None:
    if credential_id is None:
        return None
    credential = Credential.objects.filter(account=account, id=credential_id).first()
    if credential is None:
        raise _fail(field, "credential_not_found", "No such credential in this account.")
    if credential.type != kind:
        wanted = "a git" if kind is CredentialType.GIT else "a container-registry"
        raise _fail(field, "credential_type_mismatch",
                    f"{credential.name!r} is not {wanted} credential.")
    return credential


def _relative_path(field: str, value: str, default: str) -> str:
    value = (value or default).strip()
    parts = value.split("/")
    if value.startswith("/") or ".." in parts or len(value) > 255 or "\x00" in value:
        raise _fail(field, f"{field}_invalid",
                    f"The {field} is a path inside the repository, like {default}.")
    return value


def clean_build(account: Account, build: BuildInput) -> dict[str, Any]:
    """Check a build's settings; return the model fields they set."""
    url = build.git_url.strip()
    parts = urlsplit(url)
    if url and (parts.scheme not in ("https", "http") or not parts.hostname or parts.username
                or parts.password or parts.query or parts.fragment or len(url) > 2048):
        raise _fail("git_url", "git_url_invalid",
                    "Give the repository's https:// URL, like https://github.com/acme/api.git "
                    "(a token goes into a git credential, never into the URL).")
    ref = build.git_ref.strip() or "main"
    if not _GIT_REF.match(ref) or ".." in ref:
        raise _fail("git_ref", "git_ref_invalid", "Give a branch, tag or commit, like main.")
    args = build.build_args or {}
    for name, value in args.items():
        if not _BUILD_ARG.match(name) or not isinstance(value, str) or len(value) > 4096:
            raise _fail("build_args", "build_args_invalid",
                        f"Build argument {name!r} is not NAME=value.")
    return {
        "git_url": url, "git_ref": ref,
        "git_credential": _credential_of(account, build.git_credential_id, CredentialType.GIT,
                                         "git_credential"),
        "dockerfile": _relative_path("dockerfile", build.dockerfile, "Dockerfile"),
        "context": _relative_path("context", build.context, "."),
        "build_args": args,
        # Explicit or none: a build never falls back to the account default (I5).
        "build_pull_credential": _credential_of(
            account, build.build_pull_credential_id, CredentialType.CONTAINER_REGISTRY,
            "build_pull_credential"),
    }


def _clean_regions(account: Account, slugs: list[str] | None,
                   kept: Iterable[Region] = ()) -> list[Region]:
    """The regions ``slugs`` name: enabled for the account, or already the app's (``kept``).

    A region disabled for the account stays among its apps' regions, so enabling it again
    can offer to deploy them there; saving an app unchanged must not fail on it.
    """
    enabled = {r.slug: r for r in Region.objects.filter(account_links__account=account)}
    if slugs is None:
        return sorted(enabled.values(), key=lambda r: r.slug)
    enabled |= {r.slug: r for r in kept if r.slug in slugs}
    unknown = sorted(set(slugs) - set(enabled))
    if unknown:
        raise _fail("regions", "region_not_enabled",
                    f"The account does not deploy to {', '.join(unknown)}; enable it on the "
                    "Regions page first.")
    return [enabled[s] for s in sorted(set(slugs))]


def _clean_port(port: int | None) -> int | None:
    if port is not None and not 1 <= port <= 65535:
        raise _fail("port", "port_invalid", "A port is between 1 and 65535.")
    return port


def _clean_command(command: list[str] | None) -> list[str] | None:
    if command is None or command == []:
        return None
    if len(command) > COMMAND_MAX or any(not isinstance(a, str) or _size(a) > COMMAND_ARG_MAX
                                         for a in command):
        raise _fail("command", "command_invalid",
                    f"A command is at most {COMMAND_MAX} arguments of at most "
                    f"{COMMAND_ARG_MAX} bytes.")
    return command


def _clean_ready_timeout(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int) \
            or not READY_TIMEOUT_MIN <= seconds <= READY_TIMEOUT_MAX:
        raise _fail("ready_timeout", "ready_timeout_invalid",
                    f"The readiness timeout is a whole number of seconds between "
                    f"{READY_TIMEOUT_MIN} and {READY_TIMEOUT_MAX}.")
    return seconds


def _clean_replicas(replicas: int) -> int:
    if not 1 <= replicas <= REPLICAS_MAX:
        raise _fail("replicas", "replicas_invalid", f"Replicas are between 1 and {REPLICAS_MAX}.")
    return replicas


def _size(text: str) -> int:
    """What ``text`` weighs in a process's arguments or environment: its UTF-8 bytes."""
    return len(text.encode("utf-8", "surrogatepass"))


def _check_env_size(env: list[EnvInput], existing: dict[str, EnvVar]) -> None:
    """Refuse an environment the engine could not start a container with (see
    :data:`ENV_TOTAL_MAX`). A secret given without a value counts with the value it keeps."""
    total = 0
    for variable in env:
        value = variable.value
        old = existing.get(variable.name)
        if value is None and old is not None:
            try:
                value = open_env(old)
            except SecretUnavailable:
                value = ""  # cannot be opened: its deploy fails on that, with its own error
        total += _size(f"{variable.name}={value or ''}")
    if total > ENV_TOTAL_MAX:
        message = (f"The environment holds {total:,} bytes (every NAME=value, in UTF-8); an "
                   f"app's holds at most {ENV_TOTAL_MAX:,} (1 MiB), or its container could "
                   "not start (\"argument list too long\"). Put large values in a file of the "
                   "image instead.")
        raise ValidationFailed(message, code="env_too_large", detail={
            "fields": {"env": message}, "bytes": total, "max_bytes": ENV_TOTAL_MAX})


def _write_env(app: App, env: list[EnvInput]) -> list[str]:
    """Replace the app's env; return the names whose value or secrecy changed."""
    if len(env) > ENV_MAX:
        raise _fail("env", "env_too_many", f"An app has at most {ENV_MAX} variables.")
    names = [e.name for e in env]
    for variable in env:
        if not _ENV_NAME.match(variable.name):
            raise _fail("env", "env_name_invalid",
                        f"{variable.name!r} is not a variable name (letters, digits, _).")
        if variable.value is not None and (_size(variable.value) > ENV_VALUE_MAX
                                           or "\x00" in variable.value):
            raise _fail("env", "env_value_invalid",
                        f"The value of {variable.name} is longer than {ENV_VALUE_MAX:,} bytes "
                        "or holds a NUL character.")
    if len(set(names)) != len(names):
        raise _fail("env", "env_name_duplicate", "Each variable is given once.")
    existing = {v.name: v for v in app.env.all()}
    _check_env_size(env, existing)
    changed = sorted(set(existing) - set(names))
    EnvVar.objects.filter(app=app).exclude(name__in=names).delete()
    for variable in env:
        old = existing.get(variable.name)
        if variable.value is None:
            if old is None or old.secret != variable.secret:
                raise _fail("env", "env_value_required",
                            f"Give a value for {variable.name}.")
            continue  # a secret left as it is
        row = old or EnvVar(app=app, name=variable.name)
        before = (row.secret, row.value, row.sealed)
        row.secret = variable.secret
        if variable.secret:
            if old is None or not old.secret or not _holds(old, variable.value):
                row.sealed = APP_ENV_SECRET.seal(row, variable.value.encode("utf-8"))
            row.value = ""
        else:
            row.value, row.sealed = variable.value, ""
        if old is None or before != (row.secret, row.value, row.sealed):
            row.save()
            changed.append(variable.name)
    return sorted(set(changed))


@transaction.atomic
def app_create(
    *, actor: User, membership: Membership, name: str, image: str = "",
    source: str = SourceMode.IMAGE, runtime_pull: str = RuntimePull.ACCOUNT_DEFAULT,
    runtime_pull_credential_id: int | None = None, port: int | None = None,
    command: list[str] | None = None, replicas: int = 1,
    ready_timeout: int = READY_TIMEOUT_DEFAULT,
    env: list[EnvInput] | None = None, regions: list[str] | None = None,
    build: BuildInput | None = None, source_upload: bool = False,
) -> App:
    """Create an app in the actor's account (members and up).

    A build app names its git repository, or says with ``source_upload`` that its source is
    uploaded next (:func:`source_archive_upload`); until then a deploy is refused.
    """
    require(membership, Action.DEPLOY)
    account = membership.account
    try:
        mode = SourceMode(source)
    except ValueError:
        raise _fail("source", "source_invalid", "Choose image or build.") from None
    name = _clean_name(name)
    pull, credential = pull_credential_for(account=account, runtime_pull=runtime_pull,
                                           credential_id=runtime_pull_credential_id)
    app = App(account=account, name=name, source=mode, image=_clean_image(mode, image),
              runtime_pull=pull, runtime_pull_credential=credential, port=_clean_port(port),
              command=_clean_command(command), replicas=_clean_replicas(replicas),
              ready_timeout=_clean_ready_timeout(ready_timeout), created_by=actor)
    if build is not None:
        for field, value in clean_build(account, build).items():
            setattr(app, field, value)
    if mode is SourceMode.BUILD and not app.git_url and not source_upload:
        raise _fail("git_url", "git_url_required", "Give the repository to build.")
    chosen_regions = _clean_regions(account, regions)
    if App.objects.filter(account=account, name=name).exists():
        raise Conflict(f"An app named {name!r} already exists.", code="app_name_taken",
                       detail={"fields": {"name": "taken"}})
    try:
        with transaction.atomic():
            app.save()
    except IntegrityError:
        raise Conflict(f"An app named {name!r} already exists.", code="app_name_taken") \
            from None
    app.regions.set(chosen_regions)
    _write_env(app, env or [])
    audit_record(account=account, actor=actor, action=AuditAction.APP_CREATED, target=app,
                 details=_audit_details(app))
    return app


def _audit_details(app: App) -> dict[str, Any]:
    return {
        "name": app.name, "image": app.image, "runtime_pull": app.runtime_pull,
        "credential_name": app.runtime_pull_credential.name
        if app.runtime_pull_credential else None,
        "regions": sorted(app.regions.values_list("slug", flat=True)),
        "source": app.source,
        "git_url": app.git_url or None,
        "build_pull_credential_name": app.build_pull_credential.name
        if app.build_pull_credential else None,
    }


_UNSET: Any = object()


@transaction.atomic
def app_update(
    *, actor: User, membership: Membership, app_id: int, name: str | None = None,
    image: str | None = None, source: str | None = None, runtime_pull: str | None = None,
    runtime_pull_credential_id: int | None = _UNSET, port: int | None = _UNSET,
    command: list[str] | None = _UNSET, replicas: int | None = None,
    ready_timeout: int | None = None,
    env: list[EnvInput] | None = None, regions: list[str] | None = None,
    build: BuildInput | None = None,
) -> App:
    """Change an app; what is not given stays. Takes effect at the next deploy."""
    require(membership, Action.DEPLOY)
    app = App.objects.select_for_update().filter(account=membership.account, id=app_id).first()
    if app is None:
        raise NotFound("No such app in this account.", code="app_not_found")
    changed: list[str] = []
    if name is not None and _clean_name(name) != app.name:
        new_name = _clean_name(name)
        if App.objects.filter(account=app.account, name=new_name).exists():
            raise Conflict(f"An app named {new_name!r} already exists.", code="app_name_taken")
        app.name = new_name
        changed.append("name")
    if source is not None:
        try:
            mode = SourceMode(source)
        except ValueError:
            raise _fail("source", "source_invalid", "Choose image or build.") from None
        if mode != app.source:
            app.source = mode
            changed.append("source")
    if image is not None or source is not None:
        cleaned = _clean_image(SourceMode(app.source), app.image if image is None else image)
        if cleaned != app.image:
            app.image = cleaned
            changed.append("image")
    if runtime_pull is not None or runtime_pull_credential_id is not _UNSET:
        wanted = runtime_pull or app.runtime_pull
        credential_id = (app.runtime_pull_credential_id
                         if runtime_pull_credential_id is _UNSET else runtime_pull_credential_id)
        if wanted != RuntimePull.CREDENTIAL and runtime_pull_credential_id is _UNSET:
            credential_id = None
        pull, credential = pull_credential_for(account=app.account, runtime_pull=wanted,
                                               credential_id=credential_id)
        if (pull, credential) != (app.runtime_pull, app.runtime_pull_credential):
            app.runtime_pull, app.runtime_pull_credential = pull, credential
            changed.append("runtime_pull")
    if port is not _UNSET and _clean_port(port) != app.port:
        app.port = port
        changed.append("port")
    if command is not _UNSET and _clean_command(command) != app.command:
        app.command = _clean_command(command)
        changed.append("command")
    if replicas is not None and _clean_replicas(replicas) != app.replicas:
        app.replicas = replicas
        changed.append("replicas")
    if ready_timeout is not None and _clean_ready_timeout(ready_timeout) != app.ready_timeout:
        app.ready_timeout = ready_timeout
        changed.append("ready_timeout")
    if build is not None:
        for field, value in clean_build(app.account, build).items():
            if getattr(app, field) != value:
                setattr(app, field, value)
                changed.append(field)
    if app.git_url and app.source_archive_id is not None:
        # A repository and an uploaded archive are alternatives: the newer choice wins.
        app.source_archive = None
        changed.append("source_archive")
    # An app made to wait for an upload may change other settings until it comes.
    if (app.source == SourceMode.BUILD and not app.git_url and app.source_archive_id is None
            and (source is not None or "git_url" in changed)):
        raise _fail("git_url", "git_url_required", "Give the repository to build.")
    if changed:  # a save of the App page unchanged leaves the row (and updated_at) as it is
        app.save()
    if regions is not None:
        chosen = _clean_regions(app.account, regions, kept=app.regions.all())
        if {r.pk for r in chosen} != set(app.regions.values_list("id", flat=True)):
            app.regions.set(chosen)
            changed.append("regions")
    if env is not None:
        changed += [f"env:{n}" for n in _write_env(app, env)]
    if changed:
        audit_record(account=app.account, actor=actor, action=AuditAction.APP_UPDATED,
                     target=app, details={"name": app.name, "changed": changed})
    return app


@transaction.atomic
def app_delete(*, actor: User, membership: Membership, app_id: int) -> None:
    """Delete an app; every region's agent stops and removes its containers."""
    require(membership, Action.DEPLOY)
    app = App.objects.select_for_update().filter(account=membership.account, id=app_id).first()
    if app is None:
        raise NotFound("No such app in this account.", code="app_not_found")
    # Every region that ever ran it hears about the removal, not only the current ones.
    region_ids = set(app.regions.values_list("id", flat=True)) | set(
        app.deployments.values_list("region_id", flat=True))
    for region_id in sorted(region_ids):
        record_change(account_id=app.account_id, kind=ChangeKind.APP, object_id=app.pk,
                      region_id=region_id)
    audit_record(account=app.account, actor=actor, action=AuditAction.APP_DELETED, target=app,
                 details={"name": app.name})
    app_id = app.pk
    app.delete()
    transaction.on_commit(lambda: sources.remove_all(app_id))


def source_archive_upload(*, actor: User, membership: Membership, app_id: int,
                          chunks: Iterable[bytes]) -> SourceArchive:
    """Store an uploaded gzipped tar (or zip) as the app's build source (members and up).

    The archive replaces the app's git repository (and its git credential) and makes the
    app a build app; the newest :data:`~moorage.apps.sources.KEEP_ARCHIVES` archives are
    kept. The body is checked before anything is recorded; a refused upload leaves no file.
    """
    require(membership, Action.DEPLOY)
    if not App.objects.filter(account=membership.account, id=app_id).exists():
        raise NotFound("No such app in this account.", code="app_not_found")
    received = sources.receive(app_id, chunks)
    try:
        return _source_archive_record(actor=actor, membership=membership, app_id=app_id,
                                      received=received)
    except BaseException:
        if received.created:
            received.path.unlink(missing_ok=True)
        raise


@transaction.atomic
def _source_archive_record(*, actor: User, membership: Membership, app_id: int,
                           received: sources.Received) -> SourceArchive:
    app = App.objects.select_for_update().filter(account=membership.account, id=app_id).first()
    if app is None:
        raise NotFound("No such app in this account.", code="app_not_found")
    archive = SourceArchive.objects.filter(app=app, sha256=received.sha256).first()
    if archive is None:
        archive = SourceArchive.objects.create(app=app, sha256=received.sha256,
                                               size=received.size, created_by=actor)
    else:  # the same source again: it becomes the newest
        SourceArchive.objects.filter(pk=archive.pk).update(created_at=timezone.now())
        archive.refresh_from_db()
    app.source, app.source_archive = SourceMode.BUILD, archive
    app.git_url, app.git_credential = "", None
    app.save()
    old = list(SourceArchive.objects.filter(app=app).order_by("-created_at", "-id")
               [sources.KEEP_ARCHIVES:])
    if old:
        SourceArchive.objects.filter(pk__in=[a.pk for a in old]).delete()
        app_pk, shas = app.pk, [a.sha256 for a in old]
        transaction.on_commit(lambda: sources.remove(app_pk, shas))
    audit_record(account=app.account, actor=actor, action=AuditAction.APP_UPDATED, target=app,
                 details={"name": app.name, "changed": ["source_archive"],
                          "sha256": archive.sha256, "size": archive.size})
    return archive
