"""``moorage apps logs``: an app's output, from the agents of its regions.

The control plane cannot call an agent, so a read is a request the agent answers through its
sync channel (``docs/sync.md``, "App logs"): ``POST /apps/{id}/logs`` asks every region of
the app (or one), and ``GET /apps/{id}/logs/{request}?after=N`` is polled for the lines until
each answer is finished. ``--follow`` then asks again from each answer's cursor, in windows of
:data:`WINDOW` seconds during which the agent streams new lines, until Ctrl-C.

Lines go to standard output as the app printed them (secret env values masked by the agent,
long lines cut; on a terminal, control characters such as colour escapes are shown escaped
rather than acted upon — pipe the output to get them as they are); with several regions each
line starts with its region. Notes (an answer cut
at its size limit, an agent that did not answer, an app that does not run) go to standard
error. Exit status: 0, 1 when a region could not answer (without ``--follow``), 130 after
Ctrl-C.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import click
from rich.markup import escape

from moorage.cli import clientconfig
from moorage.cli.apps import INTERRUPTED, _resolve_app, _say, _warn
from moorage.cli.output import fail
from moorage.cli.remote import ApiError, call, require_login
from moorage.protocol.logs import DEFAULT_TAIL, FOLLOW_WINDOW, MAX_ANSWER_BYTES, MAX_TAIL

#: Seconds one request of a follow keeps streaming (the server allows up to 30).
WINDOW = FOLLOW_WINDOW
#: How often an unfinished answer is read again.
POLL_SECONDS = 0.3
#: After a follow window that ended in an error (the app is not running, the agent is busy),
#: the pause before asking that region again.
RETRY_SECONDS = 2.0


def _pause() -> None:
    time.sleep(POLL_SECONDS)


#: C0 and C1 control characters but the tab: a terminal acts on them (moves the cursor,
#: rewrites the title, "clears" lines), so an app's output could fake what the user sees.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _terminal_safe(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _emit(text: str) -> None:
    """One line of the app's output (never markup) on standard output, flushed; on a
    terminal its control characters are shown escaped (``\\x1b``), not acted upon."""
    click.echo(_terminal_safe(text) if sys.stdout.isatty() else text)


@dataclass
class _Region:
    """One region's answer being read: which request, from which line index, and where the
    next window of a follow starts."""

    region: str
    request_id: int | None
    after: int = 0
    cursor: str | None = None
    ask_at: float = 0.0
    last_error: str = ""


def _ask(config: clientconfig.ClientConfig, app: dict[str, Any], body: dict[str, Any]
         ) -> list[dict[str, Any]] | None:
    """Create log requests; ``None`` when the server asks to wait (429), else fail."""
    try:
        return list(call("POST", f"/apps/{app['id']}/logs", config=config, json=body) or [])
    except ApiError as exc:
        if exc.status == 429:
            return None
        fail(exc.message, code=exc.code)


@click.command("logs")
@click.argument("name")
@click.option("--region", metavar="SLUG", help="Only this region (default: every region of "
                                               "the app, each line prefixed with its region).")
@click.option("--tail", "-n", type=click.IntRange(0, MAX_TAIL), default=DEFAULT_TAIL,
              show_default=True, help="How many of the newest lines to show first.")
@click.option("--follow", "-f", is_flag=True, help="Then show new lines as they come, until "
                                                   "Ctrl-C.")
@click.option("--timestamps", "-t", is_flag=True,
              help="Start each line with the engine's timestamp.")
def apps_logs(name: str, region: str | None, tail: int, follow: bool, timestamps: bool) -> None:
    """Show the app's output (stdout and stderr of its container, or of its service).

    Each answer is bounded: at most 1000 lines, 2000 characters a line, 256 KiB; the app's
    secret environment values are masked.
    """
    config = require_login()
    app = _resolve_app(config, name)
    body: dict[str, Any] = {"tail": tail, "follow": WINDOW if follow else 0}
    if region is not None:
        body["region"] = region
    started = _ask(config, app, body)
    if started is None:
        fail(f"Too many logs requests of {app['name']} are open; try again in a moment.",
             code="logs_busy")
    reading = [_Region(region=r["region"], request_id=r["id"]) for r in started]
    several = len(reading) > 1
    failed = False

    def show(where: str, line: dict[str, Any]) -> None:
        prefix = f"{where} | " if several else ""
        stamp = f"{line['at']} " if timestamps and line["at"] else ""
        _emit(f"{prefix}{stamp}{line['text']}")

    try:
        while reading:
            for item in list(reading):
                if item.request_id is None:
                    if time.monotonic() < item.ask_at:
                        continue
                    next_body = {"region": item.region, "follow": body["follow"],
                                 **({"since": item.cursor, "tail": None} if item.cursor
                                    else {"tail": tail})}
                    asked = _ask(config, app, next_body)
                    if asked is None:
                        item.ask_at = time.monotonic() + RETRY_SECONDS
                        continue
                    item.request_id, item.after = asked[0]["id"], 0
                try:
                    answer = call("GET", f"/apps/{app['id']}/logs/{item.request_id}",
                                  config=config, params={"after": item.after})
                except ApiError as exc:
                    if not (follow and exc.code == "log_request_not_found"):
                        fail(exc.message, code=exc.code)
                    item.request_id = None  # expired while we were away: ask again
                    continue
                for line in answer["lines"]:
                    show(item.region, line)
                item.after = answer["next"]
                if not answer["finished"]:
                    continue
                item.cursor = answer["cursor"] or item.cursor
                error = answer["error"]
                if answer["truncated"] and not follow:
                    _warn(f"{item.region}: older lines were left out; an answer is at most "
                          f"{MAX_ANSWER_BYTES // 1024} KiB. Ask for a shorter --tail.")
                if error is not None and error["message"] != item.last_error:
                    _say(f"[red]{escape(item.region)}:[/red] {escape(error['message'])} "
                         f"[dim]({escape(error['code'])})[/dim]", err=True)
                item.last_error = error["message"] if error is not None else ""
                if follow:
                    item.request_id = None
                    item.ask_at = time.monotonic() + (RETRY_SECONDS if error else 0.0)
                else:
                    failed = failed or error is not None
                    reading.remove(item)
            if reading:
                _pause()
    except KeyboardInterrupt:
        _say("Stopped following.", err=True)
        raise click.exceptions.Exit(INTERRUPTED) from None
    if failed:
        raise click.exceptions.Exit(1)
