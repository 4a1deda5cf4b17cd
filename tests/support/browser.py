"""Headless Chromium for the dashboard's tests: Debian's `chromium` driven by Playwright's bundled
driver (no downloaded browser), with every request the page makes recorded."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

CHROMIUM = os.environ.get("CROSSCOMPUTE_TEST_CHROMIUM", "/usr/bin/chromium")
#: `required` in CI: a missing chromium fails the run instead of skipping the browser tests.
BROWSER_POLICY = os.environ.get("CROSSCOMPUTE_TEST_BROWSER", "optional")
#: Quiet flags: without the background-networking ones Chromium calls Google's hosts at start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "var" / "artifacts" / "dashboard"


def require_chromium() -> str:
    """The chromium binary; skip (or, when required, fail) without it."""
    if shutil.which(CHROMIUM) is None:
        message = f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)"
        if BROWSER_POLICY == "required":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@contextmanager
def chromium() -> Iterator[tuple[Playwright, Browser]]:
    """A headless Debian Chromium, closed afterwards."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield playwright, browser
        finally:
            browser.close()


@dataclass
class Session:
    """One browser context (its own storage), its page and every URL it requested."""

    context: BrowserContext
    page: Page
    requested: list[str] = field(default_factory=list)
    shots: int = 0

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """Save a numbered screenshot under var/artifacts/dashboard/ and return its path."""
        self.shots += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.shots:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def outside_requests(self) -> list[str]:
        """Requests to anything but this machine's loopback address (data: URLs are local)."""
        return [
            url
            for url in self.requested
            if not url.startswith(("data:", "blob:")) and urlsplit(url).hostname != "127.0.0.1"
        ]


@contextmanager
def browser_session(browser: Browser, *, width: int = 1280, height: int = 900) -> Iterator[Session]:
    """A fresh context that records every request its pages make."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
    session = Session(context=context, page=context.new_page())
    context.on("request", lambda request: session.requested.append(request.url))
    try:
        yield session
    finally:
        context.close()


def inject_supabase_session(context: BrowserContext, supabase_url: str, session: dict[str, object]) -> None:
    """Sign the browser in the way supabase-js itself would have: its session entry in localStorage
    (`sb-<project ref>-auth-token`, the ref being the URL's first host label), written once, before
    the page's scripts run."""
    storage_key = f"sb-{(urlsplit(supabase_url).hostname or '').split('.')[0]}-auth-token"
    script = (
        "if (localStorage.getItem('crosscompute-test-signed-in') === null) {"
        f"  localStorage.setItem({json.dumps(storage_key)}, {json.dumps(json.dumps(session))});"
        "  localStorage.setItem('crosscompute-test-signed-in', '1');"
        "}"
    )
    context.add_init_script(script)
