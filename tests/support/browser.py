"""Headless Chromium (Debian's `chromium` package) driven by Playwright, for the test page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Debian's chromium first; GitHub's Ubuntu runners ship Google Chrome instead (Ubuntu's own
# chromium-browser is a snap shim that cannot run there)
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/google-chrome-stable", "/usr/bin/google-chrome")
# quiet and self-contained: no sandbox (CI runs as root), no GPU, nothing fetched from Google
CHROMIUM_ARGUMENTS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
]


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")  # elsewhere on PATH (Windows: where it is installed by hand)


@contextmanager
def chromium() -> Iterator[object]:
    """A Playwright Browser on the system Chromium; skips the test where either is missing."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian/Ubuntu: apt-get install chromium); .ci/run installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGUMENTS)
        try:
            yield browser
        finally:
            browser.close()
