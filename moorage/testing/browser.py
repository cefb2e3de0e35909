"""Headless Debian Chromium driven by Playwright's sync API.

Playwright's own browser download cannot run here (no internet), so it drives
``/usr/bin/chromium`` from Debian's ``chromium`` package. The flags keep Chromium from
phoning home (the closed network refuses those connections, many at a time) and let it run
as root in a sandbox without a GPU.
"""

from __future__ import annotations

from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from moorage.testing.programs import require_binary

CHROMIUM_PATH = "/usr/bin/chromium"

CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def start_playwright() -> Playwright:
    """Start Playwright's sync API; call ``.stop()`` on the result when done.

    The sync API runs an asyncio event loop in the calling thread for as long as it is
    started — see the ``browser`` fixture for what that means for Django.
    """
    return sync_playwright().start()


def launch_chromium(playwright: Playwright, *, slow_mo: float | None = None) -> Browser:
    """Launch headless Debian Chromium with the sandbox-safe flags above."""
    executable = require_binary(CHROMIUM_PATH)
    return playwright.chromium.launch(
        executable_path=executable,
        headless=True,
        args=list(CHROMIUM_ARGS),
        slow_mo=slow_mo,
    )


def log_in(page: Page, url: str, email: str, password: str) -> None:
    """Log in through the login page at ``url`` and wait for the home page."""
    page.goto(url + "/login/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(url + "/")
