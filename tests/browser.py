"""Test support for the web dashboard: Debian's chromium driven by Playwright, and one
browser tab on a backend's /ui/ with the steps the tests share.

Playwright's own browser download cannot work here; ``make test`` installs the Debian
``chromium`` package instead (as root). Without it the browser tests are skipped, except
in CI, where that is a failure.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Backend, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
#: Where the tests save their screenshots of the main pages (README.rst links them).
SCREENSHOTS = ROOT / "docs" / "screenshots"
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 400, "height": 820}
#: How long Playwright's expect() polls by default: two cores are shared with other runs.
EXPECT_TIMEOUT_MS = 15_000


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium (a Playwright ``Browser``), closed on exit.

    Skips the test (fails it in CI) when Playwright or the browser is missing.
    """
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _unavailable(f"no {CHROMIUM} (make test installs it: apt-get install chromium)")
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests cannot run in CI: {reason}")
    pytest.skip(reason)


class Dashboard:
    """One browser tab on the dashboard of ``backend``; JavaScript errors fail the test."""

    def __init__(self, browser: Any, backend: Backend, viewport: dict[str, int]) -> None:
        self.backend = backend
        self.context = browser.new_context(viewport=viewport, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"JavaScript errors: {self.errors}"

    @property
    def key(self) -> str:
        """The API key the backend's test client sends (any string works without auth)."""
        return self.backend.http.headers.get("Authorization", "Bearer x").split(" ", 1)[1]

    def sign_in(self, key: str | None = None) -> None:
        """Sign in with ``key``, by default :attr:`key`."""
        from playwright.sync_api import expect

        key = self.key if key is None else key
        self.page.goto(self.backend.url + "/ui")
        expect(self.page.get_by_role("heading", name="Sign in")).to_be_visible()
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("heading", name="Simulations")).to_be_visible()

    def open(self, route: str) -> None:
        self.page.goto(f"{self.backend.url}/ui/#/{route}")

    def shot(self, name: str, full_page: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page,
                             animations="disabled", caret="initial")

    def sim_time(self) -> int:
        """The simulated time on a simulation's page, in ms."""
        text = self.page.locator("#fig-sim_time").inner_text()
        return int(re.sub(r"[^0-9]", "", text) or -1)

    def status_ticks(self) -> int:
        """How many status updates the simulation's page has shown."""
        return int(self.page.locator("#status").get_attribute("data-ticks"))

    def wait_status_ticks(self, more: int, timeout: float = 15.0) -> None:
        """Wait until ``more`` status events have reached the page. (Polled from here:
        the page's Content-Security-Policy forbids wait_for_function's eval.)"""
        now = self.status_ticks()
        wait_until(lambda: self.status_ticks() >= now + more, timeout,
                   f"{more} status updates on the page")
