"""``moorage worker``: the control plane's background work, and how ``moorage up`` keeps it
running beside the web server.

The work is Django tasks queued in the database (``django-tasks-db``): today, refreshing the
short-lived tokens of exchanged registry credentials before they expire. Several workers may
run against one database (each token is refreshed once: the refresh claims its rows).
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable

import click

from moorage.cli.django_setup import setup_django
from moorage.cli.output import err_console

#: Seconds ``moorage up`` waits before starting a worker that exited on its own again.
RESTART_DELAY = 2.0


@click.command()
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.1, 60),
              help="Seconds between looks at an empty queue.")
def worker(interval: float) -> None:
    """Run the control plane's background work (token refreshes) until stopped."""
    setup_django()
    from django.core.management import call_command
    from django.utils import timezone

    from moorage.credentials.refresh import refresh_schedule

    # A run now: it catches up after a stop, and starts the chain of runs if none is queued.
    refresh_schedule(at=timezone.now())
    call_command("db_worker", interval=interval, reload=False, startup_delay=False,
                 verbosity=1)


class Supervised:
    """A child process that lives as long as ``moorage up``: started again when it exits on
    its own, stopped (SIGTERM, then SIGKILL after ``grace`` seconds) when ``up`` stops."""

    def __init__(self, command: list[str], *, name: str,
                 preexec_fn: Callable[[], None] | None = None, grace: float = 10.0) -> None:
        self.command = command
        self.name = name
        self.preexec_fn = preexec_fn
        self.grace = grace
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def start(self) -> Supervised:
        """Start the process, and a watcher that restarts it."""
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name=f"supervise-{self.name}",
                                         daemon=True)
        self._watcher.start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self.process = subprocess.Popen(self.command, preexec_fn=self.preexec_fn)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self.process
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            err_console.print(f"[yellow]The {self.name} exited ({code}); starting it again in "
                              f"{RESTART_DELAY:.0f} s.[/yellow]")
            if self._stopping.wait(RESTART_DELAY):
                return
            self._spawn()

    def stop(self) -> None:
        """Stop the process and its watcher."""
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=self.grace)
