"""The one place where Moorage reads its environment.

Every setting that comes from outside is read, validated and defaulted here, so a missing or
malformed value stops start-up with an ``ImproperlyConfigured`` naming the variable, instead
of failing later somewhere deep inside.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from moorage.registry.policy import DEFAULT_BLOCKED_NETWORKS, IPNetwork, parse_networks
from moorage.sealing.keyring import Key, KeyringError, parse_keys

DEFAULT_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "[::1]")
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name
SQLITE_FILE = "moorage.sqlite3"
KEY_FILE = "keys"
# WAL lets the web server and the CLI read while one of them writes. IMMEDIATE transactions
# take the write lock at BEGIN, so two writers queue instead of one failing half-way when it
# upgrades a read lock (the services read-then-write, e.g. "is there a default yet?").
_SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL;",
    "timeout": 20,
    "transaction_mode": "IMMEDIATE",
}
# PostgreSQL connections come from one pool per process (psycopg_pool through Django). A
# request that cannot get one within POOL_TIMEOUT seconds, or finds POOL_MAX_WAITING requests
# already queued for one, fails with an OperationalError that the API answers 503 (overloaded).
DEFAULT_DB_POOL_SIZE = 8
POOL_TIMEOUT = 5.0
POOL_MAX_WAITING = 200
MIN_METRICS_TOKEN = 16
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Environment:
    """The validated outside configuration of one Moorage process."""

    data_dir: Path
    database: dict[str, Any]
    database_url: str | None
    secret_key: str
    allowed_hosts: list[str]
    debug: bool
    keys: list[Key] | None  # from MOORAGE_KEYS; None means the key file in the data dir
    probe_blocked_networks: tuple[IPNetwork, ...]
    trusted_proxies: tuple[IPNetwork, ...]
    db_pool_size: int = DEFAULT_DB_POOL_SIZE
    metrics_token: str | None = None  # None: /metrics answers loopback clients only
    #: Seconds without news from a deployment's agent after which it is shown stalled.
    deploy_stalled_after: int = 300


def default_data_dir() -> Path:
    """``~/.local/share/moorage``, honouring ``XDG_DATA_HOME`` like other Linux programs."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "moorage"


def read_environment(environ: Mapping[str, str] | None = None) -> Environment:
    """Read and validate every ``MOORAGE_*`` variable and ``DATABASE_URL``.

    Side effect, only for the embedded default: when ``MOORAGE_SECRET_KEY`` is not set, a key
    is generated once into the data directory (mode 0600) and reused on later starts.
    """
    env = os.environ if environ is None else environ
    data_dir = _data_dir(env)
    database_url = env.get("DATABASE_URL") or None
    pool_size = _positive_int(env, "MOORAGE_DB_POOL_SIZE", default=DEFAULT_DB_POOL_SIZE,
                              maximum=1000)
    return Environment(
        data_dir=data_dir,
        database=_database(database_url, data_dir, pool_size),
        database_url=database_url,
        secret_key=_secret_key(env, data_dir),
        allowed_hosts=_allowed_hosts(env),
        debug=_boolean(env, "MOORAGE_DEBUG", default=False),
        keys=_keys(env),
        probe_blocked_networks=_networks(
            env, "MOORAGE_PROBE_BLOCKED_NETWORKS", default=",".join(DEFAULT_BLOCKED_NETWORKS)
        ),
        trusted_proxies=_networks(env, "MOORAGE_TRUSTED_PROXIES", default=""),
        db_pool_size=pool_size,
        metrics_token=_metrics_token(env),
        deploy_stalled_after=_positive_int(env, "MOORAGE_DEPLOY_STALLED_AFTER", default=300,
                                           maximum=86400),
    )


def _data_dir(env: Mapping[str, str]) -> Path:
    raw = env.get("MOORAGE_DATA_DIR")
    if raw is None or raw == "":
        return default_data_dir()
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise ImproperlyConfigured(
            f"MOORAGE_DATA_DIR must be an absolute path, got {raw!r}."
        )
    if path.exists() and not path.is_dir():
        raise ImproperlyConfigured(f"MOORAGE_DATA_DIR {raw!r} exists and is not a directory.")
    return path


def _database(url: str | None, data_dir: Path, pool_size: int) -> dict[str, Any]:
    if url is None:
        # The embedded default keeps its database in the data dir; make sure the dir exists.
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(data_dir / SQLITE_FILE),
            "OPTIONS": _SQLITE_OPTIONS,
        }
    scheme = url.split(":", 1)[0].lower()
    if scheme not in {"postgres", "postgresql", "sqlite"}:
        raise ImproperlyConfigured(
            "DATABASE_URL must start with postgres://, postgresql:// or sqlite:///, "
            f"got a URL with scheme {scheme!r}."
        )
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=60))
    except Exception as exc:  # the library raises several types for a malformed URL
        raise ImproperlyConfigured(f"DATABASE_URL is malformed: {type(exc).__name__}.") from None
    if config.get("ENGINE") == "django.db.backends.sqlite3":
        config["OPTIONS"] = _SQLITE_OPTIONS
    if config.get("ENGINE") == "django.db.backends.postgresql":
        if not config.get("NAME"):
            raise ImproperlyConfigured("DATABASE_URL names no database (postgres://HOST/NAME).")
        # A pool bounds the connections of a process, whatever the number of requests in
        # flight; Django refuses persistent connections beside it (they are the pool's job).
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {**config.get("OPTIONS", {}), "pool": {
            "min_size": min(2, pool_size), "max_size": pool_size, "timeout": POOL_TIMEOUT,
            "max_waiting": POOL_MAX_WAITING,
        }}
    return config


def _secret_key(env: Mapping[str, str], data_dir: Path) -> str:
    raw = env.get("MOORAGE_SECRET_KEY")
    if raw is not None:
        if len(raw) < 32:
            raise ImproperlyConfigured(
                "MOORAGE_SECRET_KEY must be at least 32 characters long."
            )
        return raw
    path = data_dir / SECRET_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if len(key) < 32:
            raise ImproperlyConfigured(
                f"The generated secret key in {path} is damaged; remove it or set "
                "MOORAGE_SECRET_KEY."
            )
        return key
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_urlsafe(50)
    # O_EXCL: two processes starting at once must not both write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _keys(env: Mapping[str, str]) -> list[Key] | None:
    raw = env.get("MOORAGE_KEYS")
    if raw is None:
        return None
    try:
        keys = parse_keys(raw)
    except KeyringError as exc:
        raise ImproperlyConfigured(f"MOORAGE_KEYS is malformed: {exc}") from None
    if not keys:
        raise ImproperlyConfigured(
            "MOORAGE_KEYS is set but holds no key; give id:base64key entries, primary first "
            "(make one with 'moorage keys generate')."
        )
    return keys


def _positive_int(env: Mapping[str, str], name: str, *, default: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}.") from None
    if not 1 <= value <= maximum:
        raise ImproperlyConfigured(f"{name} must be between 1 and {maximum}, got {value}.")
    return value


def _metrics_token(env: Mapping[str, str]) -> str | None:
    raw = env.get("MOORAGE_METRICS_TOKEN")
    if raw is None or raw == "":
        return None
    if len(raw) < MIN_METRICS_TOKEN or any(ch.isspace() for ch in raw):
        raise ImproperlyConfigured(
            f"MOORAGE_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN} characters without "
            "spaces (make one with: python -c 'import secrets; print(secrets.token_urlsafe())')."
        )
    return raw


def _allowed_hosts(env: Mapping[str, str]) -> list[str]:
    raw = env.get("MOORAGE_ALLOWED_HOSTS")
    if raw is None:
        return list(DEFAULT_ALLOWED_HOSTS)
    hosts = [part.strip() for part in raw.split(",") if part.strip()]
    if not hosts:
        raise ImproperlyConfigured(
            "MOORAGE_ALLOWED_HOSTS is set but empty; give a comma-separated list of host names."
        )
    for host in hosts:
        if any(ch.isspace() for ch in host) or "/" in host:
            raise ImproperlyConfigured(
                f"MOORAGE_ALLOWED_HOSTS holds {host!r}, which is not a host name."
            )
    return hosts


def _networks(env: Mapping[str, str], name: str, *, default: str) -> tuple[IPNetwork, ...]:
    """Comma-separated IP addresses and CIDR networks; an empty value is an empty list."""
    raw = env.get(name)
    try:
        return parse_networks(default if raw is None else raw)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{name} must be comma-separated IP addresses or networks: {exc}."
        ) from None


def _boolean(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (1/0, yes/no), got {raw!r}.")
