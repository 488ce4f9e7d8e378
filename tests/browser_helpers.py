"""Debian's chromium, headless, driven by Playwright, for the tests that need a real browser.

Playwright's own browser downloads (``playwright install``) are never used: they come from a
CDN that CI cannot reach. CI installs chromium with apt (.ci/run), and there a missing
chromium fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """The chromium executable; skips the test when absent, unless in CI (then it fails)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").exists():
        path = "/usr/bin/chromium"
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing: .ci/run installs it with apt")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@contextmanager
def chromium(profile: Path) -> Iterator[object]:
    """A headless chromium with a fresh profile in ``profile``; yields a Playwright
    ``BrowserContext`` (open pages with ``new_page()``)."""
    executable = chromium_path()
    if os.environ.get("CI") == "true":
        from playwright.sync_api import sync_playwright
    else:
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield context
        finally:
            context.close()
