"""The environment module: defaults, and a clear stop naming the variable when a value is bad."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from moorage.config.env import read_environment


def test_embedded_default_uses_sqlite_in_the_data_dir_and_generates_a_key_once(
    tmp_path: Path,
) -> None:
    env = read_environment({"MOORAGE_DATA_DIR": str(tmp_path / "data")})

    assert env.database["ENGINE"] == "django.db.backends.sqlite3"
    assert env.database["NAME"] == str(tmp_path / "data" / "moorage.sqlite3")
    key_file = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == env.secret_key
    assert len(env.secret_key) >= 50
    again = read_environment({"MOORAGE_DATA_DIR": str(tmp_path / "data")})
    assert again.secret_key == env.secret_key
    assert env.allowed_hosts == ["127.0.0.1", "localhost", "[::1]"]
    assert env.debug is False


def test_postgres_url_is_parsed(tmp_path: Path) -> None:
    env = read_environment(
        {
            "MOORAGE_DATA_DIR": str(tmp_path),
            "DATABASE_URL": "postgres://moorage@db.internal:6543/moorage_prod",
            "MOORAGE_SECRET_KEY": "k" * 40,
        }
    )
    assert env.database["ENGINE"] == "django.db.backends.postgresql"
    assert env.database["HOST"] == "db.internal"
    assert env.database["PORT"] == 6543
    assert env.database["NAME"] == "moorage_prod"
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"MOORAGE_DEBUG": "maybe"}, "MOORAGE_DEBUG"),
        ({"MOORAGE_SECRET_KEY": "short"}, "MOORAGE_SECRET_KEY"),
        ({"MOORAGE_ALLOWED_HOSTS": " , "}, "MOORAGE_ALLOWED_HOSTS"),
        ({"MOORAGE_ALLOWED_HOSTS": "example.com/path"}, "MOORAGE_ALLOWED_HOSTS"),
        ({"DATABASE_URL": "mysql://root@localhost/x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://localhost"}, "DATABASE_URL"),
        ({"MOORAGE_DATA_DIR": "relative/dir"}, "MOORAGE_DATA_DIR"),
        ({"MOORAGE_PROBE_BLOCKED_NETWORKS": "metadata.internal"},
         "MOORAGE_PROBE_BLOCKED_NETWORKS"),
        ({"MOORAGE_TRUSTED_PROXIES": "10.0.0.0/33"}, "MOORAGE_TRUSTED_PROXIES"),
        ({"MOORAGE_TRUSTED_PROXIES": "proxy.example.com"}, "MOORAGE_TRUSTED_PROXIES"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(
    tmp_path: Path, environ: dict[str, str], variable: str
) -> None:
    base = {"MOORAGE_DATA_DIR": str(tmp_path), "MOORAGE_SECRET_KEY": "k" * 40}
    with pytest.raises(ImproperlyConfigured, match=variable):
        read_environment(base | environ)


def test_debug_and_hosts_are_read(tmp_path: Path) -> None:
    env = read_environment(
        {
            "MOORAGE_DATA_DIR": str(tmp_path),
            "MOORAGE_DEBUG": "yes",
            "MOORAGE_ALLOWED_HOSTS": "paas.example.com, 10.0.0.5",
        }
    )
    assert env.debug is True
    assert env.allowed_hosts == ["paas.example.com", "10.0.0.5"]


def test_keys_are_read_primary_first_and_bad_ones_name_the_variable(tmp_path: Path) -> None:
    from moorage.sealing import generate_key

    a, b = generate_key("a"), generate_key("b")
    env = read_environment({"MOORAGE_DATA_DIR": str(tmp_path),
                            "MOORAGE_KEYS": f"{a.encoded()},{b.encoded()}"})
    assert env.keys is not None and [k.id for k in env.keys] == ["a", "b"]
    assert read_environment({"MOORAGE_DATA_DIR": str(tmp_path)}).keys is None
    for bad in ("", "a:notbase64!", "a"):
        with pytest.raises(ImproperlyConfigured, match="MOORAGE_KEYS"):
            read_environment({"MOORAGE_DATA_DIR": str(tmp_path), "MOORAGE_KEYS": bad})


def test_probe_networks_and_trusted_proxies_are_read(tmp_path: Path) -> None:
    base = {"MOORAGE_DATA_DIR": str(tmp_path), "MOORAGE_SECRET_KEY": "k" * 40}
    defaults = read_environment(base)
    assert [str(n) for n in defaults.probe_blocked_networks] == ["169.254.0.0/16", "fe80::/10"]
    assert defaults.trusted_proxies == ()
    env = read_environment(base | {
        "MOORAGE_PROBE_BLOCKED_NETWORKS": "169.254.0.0/16, fe80::/10, 10.0.0.0/8",
        "MOORAGE_TRUSTED_PROXIES": "10.1.2.3, 192.168.0.0/24",
    })
    assert [str(n) for n in env.probe_blocked_networks][-1] == "10.0.0.0/8"
    assert [str(n) for n in env.trusted_proxies] == ["10.1.2.3/32", "192.168.0.0/24"]
    # An operator may unblock everything, on purpose, with an empty value.
    assert read_environment(base | {"MOORAGE_PROBE_BLOCKED_NETWORKS": ""}
                            ).probe_blocked_networks == ()
