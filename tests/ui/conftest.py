"""Fixtures for the browser tests: Debian's Chromium under Playwright (scripts/install-browser).

pytest-playwright's own ``page`` hangs off session-scoped fixtures that keep Playwright's event
loop running until the session ends, which breaks every asyncio test collected after them; this
``page`` starts Playwright for one test and stops it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from router.settings import Settings
from tests.helpers import backend_settings, require

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


@pytest.fixture
def page() -> Iterator[Page]:
    """A fresh page in the system Chromium (``playwright install`` cannot download one here)."""
    require(CHROMIUM.exists(), "Chromium (/usr/bin/chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(15_000)
            yield context.new_page()
            context.close()
        finally:
            browser.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The pages that read and write the store run on both backends."""
    return backend_settings(request, tmp_path)
