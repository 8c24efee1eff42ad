"""Fixtures only: a fresh database per test, the app in process, fake upstreams.

Shared plain helpers are in tests/helpers.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx

from router.secrets import Cipher
from router.settings import Settings
from router.store.db import Database
from router.store.migrations import migrate, migrate_postgres
from router.store.postgres import PostgresDatabase
from tests.helpers import (
    TEST_SECRET_KEY,
    app_client,
    fresh_postgres_database,
    make_settings,
    require_postgres,
)
from tests.transport.servers import Certificates


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database of its own on the test server (scripts/test-services),
    created here and dropped after the test. Skips when no server answers; fails under CI=true.
    """
    with fresh_postgres_database(require_postgres()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty database of its own: a SQLite file, and a PostgreSQL database."""
    database: Database
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        migrate(path)
        database = Database(path, cipher=Cipher(TEST_SECRET_KEY))
    else:
        url = request.getfixturevalue("postgres_url")
        await migrate_postgres(url)
        database = PostgresDatabase(url, cipher=Cipher(TEST_SECRET_KEY))
    await database.open()
    yield database
    await database.close()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in process."""
    async with app_client(settings) as (_, http):
        yield http


@pytest.fixture
def upstreams() -> Iterator[respx.MockRouter]:
    """Fake upstreams for in-process tests; any unmocked upstream call fails the test.

    Mocked at the httpx client level, so it works whatever transport the adapters use; calls
    from the test client to the app itself (host "router") pass through.
    """
    with respx.mock(assert_all_mocked=True, assert_all_called=False, using="httpx") as router:
        router.route(host="router").pass_through()
        yield router


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstreams are on loopback: a proxy set on the machine must not carry the tests' calls.
    A test that wants one sets it."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A test CA, with a server certificate for 127.0.0.1 and a client certificate."""
    return Certificates(tmp_path_factory.mktemp("tls"))
