"""Fixtures for the browser tests: Debian's Chromium under Playwright (scripts/install-browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import require

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Launch the system Chromium: ``playwright install`` cannot download browsers here."""
    require(CHROMIUM.exists(), "Chromium (/usr/bin/chromium)")
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    }
