"""Commands that talk to a Moorage server over its REST API: login, whoami."""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime
from typing import Any

import click
import httpx

from moorage.cli import clientconfig
from moorage.cli.output import console, fail

TIMEOUT = httpx.Timeout(15.0)


def _api_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/api/v1" + path


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
        return str(body["message"]), str(body["code"])
    except (ValueError, KeyError, TypeError):
        return f"The server answered HTTP {response.status_code}.", "http_error"


class ApiError(Exception):
    """An error answer of the API: its user-safe message and stable code."""

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def call(method: str, path: str, *, config: clientconfig.ClientConfig, **kwargs: Any) -> Any:
    """One authenticated API call: the decoded JSON answer (``None`` for an empty one).

    An error answer raises :class:`ApiError`, for callers that carry on after one (an import
    of many entries); an unreachable server is a clean message and exit 1.
    """
    headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {config.token}"}
    try:
        response = httpx.request(
            method, _api_url(config.url, path), headers=headers, timeout=TIMEOUT, **kwargs
        )
    except httpx.HTTPError as exc:
        fail(f"Cannot reach Moorage at {config.url}: {type(exc).__name__}.", code="unreachable")
    if response.is_error:
        message, code = _error_of(response)
        raise ApiError(message, code=code, status=response.status_code)
    if not response.content:
        return None
    return response.json()


def request_any(
    method: str, path: str, *, config: clientconfig.ClientConfig, **kwargs: Any
) -> Any:
    """Like :func:`call`, but an error answer becomes a clean message and exit 1."""
    try:
        return call(method, path, config=config, **kwargs)
    except ApiError as exc:
        fail(exc.message, code=exc.code)


def request(
    method: str, path: str, *, config: clientconfig.ClientConfig, **kwargs: Any
) -> dict[str, Any]:
    """One authenticated API call answering an object; errors become a message and exit 1."""
    result: dict[str, Any] = request_any(method, path, config=config, **kwargs)
    return result


def require_login() -> clientconfig.ClientConfig:
    config = clientconfig.load()
    if config is None:
        fail("Not logged in. Run 'moorage login --url URL' first.", code="not_logged_in")
    return config


@click.command()
@click.option("--url", required=True, help="The Moorage server, e.g. http://127.0.0.1:8000")
@click.option("--token-stdin", is_flag=True, help="Read an existing API token from stdin.")
@click.option("--account", "account_slug", help="Account slug (default: your first account).")
def login(url: str, token_stdin: bool, account_slug: str | None) -> None:
    """Log in to a Moorage server and keep a token in ~/.config/moorage/config.toml."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        fail("The URL must start with http:// or https://.", code="url_invalid")
    if token_stdin:
        token = sys.stdin.readline().strip()
        if not token:
            fail("No token on standard input.", code="token_missing")
    else:
        email = click.prompt("E-mail")
        password = click.prompt("Password", hide_input=True)
        name = f"cli {socket.gethostname()} {datetime.now(UTC):%Y-%m-%d %H:%M:%S}"
        try:
            response = httpx.post(
                _api_url(url, "/auth/token"),
                json={"email": email, "password": password, "account": account_slug, "name": name},
                timeout=TIMEOUT,
            )
        except httpx.HTTPError as exc:
            fail(f"Cannot reach Moorage at {url}: {type(exc).__name__}.", code="unreachable")
        if response.is_error:
            message, code = _error_of(response)
            fail(message, code=code)
        token = response.json()["token"]
    config = clientconfig.ClientConfig(url=url, token=token)
    me = request("GET", "/me", config=config)
    path = clientconfig.save(config)
    console.print(
        f"[green]✓[/green] Logged in as [bold]{me['user']['email']}[/bold] in account "
        f"[bold]{me['account']['name']}[/bold] ({me['role']}). Token kept in {path}"
    )


@click.command()
def whoami() -> None:
    """Show who the stored token acts as."""
    config = require_login()
    me = request("GET", "/me", config=config)
    console.print(f"[bold]{me['user']['email']}[/bold]")
    console.print(f"Account: {me['account']['name']} ({me['account']['slug']})")
    console.print(f"Role:    {me['role']}")
    console.print(f"Server:  {config.url}")
