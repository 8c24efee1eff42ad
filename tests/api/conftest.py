"""The management API runs on both backends: ``settings`` (and so ``client``) is parametrised."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.settings import Settings
from tests.helpers import backend_settings


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return backend_settings(request, tmp_path)
