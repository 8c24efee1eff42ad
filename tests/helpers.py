"""What tests share: settings, the app in process, real servers on loopback, management calls.

Fixtures live in conftest.py; everything here is a plain function or constant to import.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
import pytest
import uvicorn

from providers.base import Adapter, AdapterOptions
from providers.registry import get_adapter_class
from router.app import ProviderRouterApp, create_app
from router.mock.upstream import MockOptions, MockUpstream
from router.settings import Settings
from router.store import providers
from router.store.db import Database
from router.store.postgres import PostgresDatabase, translate

T = TypeVar("T")

ADMIN_TOKEN = "test-admin-token-0123456789"
TEST_SECRET_KEY = "dGVzdC1zZWNyZXQta2V5LTAxMjM0NTY3ODlhYmNkZWY="
# The admin token as a client sends it.
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'router.db'}",
        "admin_token": ADMIN_TOKEN,
        "recorder_flush_interval_ms": 1,
        "reload_interval_ms": 100,
        # The in-process clients' host names (httpx: base_url "http://router"; Starlette's
        # TestClient: "testserver") are not loopback names; real sockets use 127.0.0.1.
        "allowed_hosts": ("router", "testserver"),
    }
    values.update(overrides)
    return Settings(**values)


def backend_settings(request: pytest.FixtureRequest, tmp_path: Path, **overrides: Any) -> Settings:
    """Test settings on the backend ``request.param`` names: a SQLite file, or a fresh
    PostgreSQL database (with the secret key set, as replicas share it)."""
    if request.param == "sqlite":
        return make_settings(tmp_path, **overrides)
    url = request.getfixturevalue("postgres_url")
    return make_settings(
        tmp_path, **{"database_url": url, "secret_key": TEST_SECRET_KEY, **overrides}
    )


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[ProviderRouterApp]:
    """The app with its lifespan entered, as uvicorn would run it."""
    app = create_app(settings)
    async with app.starlette.router.lifespan_context(app.starlette):
        yield app


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings,
) -> AsyncIterator[tuple[ProviderRouterApp, httpx.AsyncClient]]:
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            yield app, client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any,
    port: int | None = None,
    *,
    server_factory: Callable[[uvicorn.Config], uvicorn.Server] = uvicorn.Server,
) -> AsyncIterator[str]:
    """Run ``app`` under a real uvicorn server on loopback; yield its base URL.

    Without ``port`` the server binds port 0 and reports the one it got (no race for a free
    port). ``log_config=None`` leaves logging alone, so uvicorn's records reach pytest's caplog.
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port or 0, log_level="warning", log_config=None,
        lifespan="on", timeout_graceful_shutdown=2,
    )  # fmt: skip
    server = server_factory(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    await eventually(lambda: server.started or task.done(), "uvicorn started")
    if task.done():
        task.result()
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def add_provider(
    client: httpx.AsyncClient,
    provider_id: str,
    base_url: str,
    models: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Create an ``openai`` provider through the management API and link ``models`` to it."""
    config = {"baseURL": base_url, "apiKey": f"sk-upstream-{provider_id}"}
    config.update(fields.pop("config", {}))
    body = {"id": provider_id, "name": provider_id, "type": "openai", "config": config, **fields}
    response = await client.post("/v1/providers", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    for model in models or []:
        link = {"model_id": model}
        linked = await client.post(f"/v1/providers/{provider_id}/models", json=link, headers=ADMIN)
        assert linked.status_code == 201, linked.text
    created: dict[str, Any] = response.json()
    return created


async def store_provider(db: Database, provider_id: str) -> None:
    """Create an ``openai`` provider straight in the store (no app), for store-level tests."""
    body = {"id": provider_id, "name": provider_id, "type": "openai"}
    await providers.create_provider(db, {**body, "config": {"baseURL": "http://127.0.0.1:9/v1"}})


async def last_request(
    client: httpx.AsyncClient, app: ProviderRouterApp, answer: httpx.Response | None = None
) -> dict[str, Any]:
    """The newest history row, with its attempts, or the row of ``answer`` (by its
    ``x-request-id``) when given. A server records a request just after its last byte went out,
    so this waits for the row rather than read too early. Give ``answer`` after several requests:
    an earlier row may be recorded while the last one is still on its way."""
    services = app.services
    assert services is not None
    wanted = answer.headers["x-request-id"] if answer is not None else None

    async def newest() -> list[dict[str, Any]]:
        await services.recorder.flush()
        found: list[dict[str, Any]] = (await client.get("/v1/requests", headers=ADMIN)).json()[
            "data"
        ]
        if wanted is not None:
            return [row for row in found if row["id"] == wanted]
        return found

    rows = await eventually(newest, "a request was recorded")
    detail = await client.get(f"/v1/requests/{rows[0]['id']}", headers=ADMIN)
    found: dict[str, Any] = detail.json()
    return found


def require(available: bool, what: str) -> None:
    """Skip a test whose real component is missing, except under CI, where that is a failure.

    ``.ci/run`` installs every component the tests need, so in CI a missing one means the run is
    broken, not that the test may be left out.
    """
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing under CI=true; .ci/run should have installed it.")
    pytest.skip(f"{what} is not installed here (.ci/run installs it).")


# Written by scripts/test-services: the real PostgreSQL and Redis the scale-out tests drive.
TEST_SERVICES_ENV = Path(__file__).resolve().parent.parent / ".tools" / "test-services.env"


def service_url(name: str) -> str | None:
    """``PROVIDER_ROUTER_TEST_<NAME>_URL`` from the environment, else from the file
    scripts/test-services writes; None when neither has it."""
    key = f"PROVIDER_ROUTER_TEST_{name.upper()}_URL"
    if os.environ.get(key):
        return os.environ[key]
    if TEST_SERVICES_ENV.exists():
        for line in TEST_SERVICES_ENV.read_text().splitlines():
            found, _, value = line.partition("=")
            if found.strip() == key and value.strip():
                return value.strip()
    return None


def answers(url: str) -> bool:
    """Whether something accepts a TCP connection at ``url``'s host and port."""
    parts = httpx.URL(url)
    try:
        with socket.create_connection((parts.host, parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def require_postgres() -> str:
    """The URL of the test PostgreSQL (scripts/test-services), or skip (fail under CI=true)."""
    url = service_url("postgres")
    require(url is not None and answers(url), "PostgreSQL (scripts/test-services)")
    assert url is not None
    return url


def require_redis() -> str:
    """The URL of the test Redis (scripts/test-services), or skip (fail under CI=true)."""
    url = service_url("redis")
    require(url is not None and answers(url), "Redis (scripts/test-services)")
    assert url is not None
    return url


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "router", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


@contextlib.contextmanager
def mock_upstream_process(cwd: Path, *options: str) -> Iterator[str]:
    """A real ``provider-router mock-upstream`` process; yields its root URL."""
    port = free_port()
    process = start("mock-upstream", "--port", str(port), *options, cwd=cwd)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout:
            process.stdout.close()


@overload
async def eventually(
    check: Callable[[], Awaitable[T]], what: str, *, timeout_s: float = 10.0
) -> T: ...
@overload
async def eventually(check: Callable[[], T], what: str, *, timeout_s: float = 10.0) -> T: ...
async def eventually(check: Callable[[], Any], what: str, *, timeout_s: float = 10.0) -> Any:
    """Call ``check`` (sync or async) until it returns something truthy, and return that.

    For what another task or server does in its own time (a reload, a recorder flush, a request
    reaching a fake). The bound only keeps a broken test from hanging: a passing one returns as
    soon as the condition holds. Fails with ``what`` (the condition, as a sentence) when it never
    does.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.01)


def sse_data(body: bytes | str) -> list[str]:
    """The ``data`` of each event of a complete server-sent-events body, in order.

    Checks the framing on the way: events are separated by a blank line (LF or CRLF) and the body
    ends with one; ``event:`` lines and comments are allowed, and every event has data.
    """
    text = body.decode() if isinstance(body, bytes) else body
    text = text.replace("\r\n", "\n")
    frames = text.split("\n\n")
    assert frames[-1] == "", f"an SSE body must end with a blank line: {text[-80:]!r}"
    data = []
    for frame in frames[:-1]:
        lines = [line for line in frame.split("\n") if not line.startswith((":", "event:"))]
        assert lines and all(line.startswith("data:") for line in lines), frame
        data.append("\n".join(line.removeprefix("data:").removeprefix(" ") for line in lines))
    return data


def sse_chunks(body: bytes | str, *, done: bool) -> list[dict[str, Any]]:
    """The JSON events of a complete SSE body. ``done``: whether it must end with OpenAI's
    ``data: [DONE]`` (which is not returned); without it, no event may be ``[DONE]``."""
    data = sse_data(body)
    if done:
        assert data and data[-1] == "[DONE]", data[-1:]
        data = data[:-1]
    assert "[DONE]" not in data
    return [orjson.loads(event) for event in data]


def query(
    where: Database | Path | Settings | str, sql: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` run straight on the database (a :class:`Database`'s, the settings', a
    SQLite path or a PostgreSQL URL),
    on a connection of its own, committed, as tuples; ``sql`` may be a script of statements
    when there are no ``params``."""
    if isinstance(where, str):  # a PostgreSQL URL
        url = where
        return in_thread(lambda: _pg_query(url, sql, params))
    if isinstance(where, Settings):
        if where.database_is_postgres:
            url = where.database_url
            return in_thread(lambda: _pg_query(url, sql, params))
        where = where.database_path
    if isinstance(where, PostgresDatabase):
        url = where.url
        return in_thread(lambda: _pg_query(url, sql, params))
    conn = sqlite3.connect(where.path if isinstance(where, Database) else where)
    try:
        if not params and ";" in sql.strip().rstrip(";"):
            conn.executescript(sql)
            return []
        conn.execute("PRAGMA foreign_keys = ON")
        found = [tuple(row) for row in conn.execute(sql, params)]
        conn.commit()
        return found
    finally:
        conn.close()


def query_many(db: Database, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """Run ``sql`` once per row of parameters straight on the database, in one transaction."""
    rows = list(rows)
    if isinstance(db, PostgresDatabase):

        async def run() -> None:
            conn = await asyncpg.connect(db.url)
            try:
                await conn.executemany(translate(sql)[0], rows)
            finally:
                await conn.close()

        in_thread(run)
        return
    conn = sqlite3.connect(db.path)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executemany(sql, rows)
        conn.commit()
    finally:
        conn.close()


def backfill(db: Database, since: int, until: int) -> None:
    """Roll up requests inserted straight into the table (``rollup.backfill`` on either backend,
    on a connection of its own)."""
    from router.store import rollup

    for sql in rollup.backfill_sql():
        query(db, sql.replace(":since", str(int(since))).replace(":until", str(int(until))))


def stored_bytes(db: Database) -> bytes:
    """Everything the database holds as bytes: the SQLite file, or every PostgreSQL row as text."""
    if not isinstance(db, PostgresDatabase):
        return db.path.read_bytes()
    tables = query(
        db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    rows = [query(db, f'SELECT t::text FROM "{name}" t') for (name,) in tables]
    return "\n".join(str(row) for found in rows for row in found).encode()


def in_thread(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work()`` on an event loop of its own in another thread (from sync code, even while
    a test's loop runs in this one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()  # type: ignore[arg-type]


async def _pg_query(url: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        text, _ = translate(sql)
        if not params and ";" in text.strip().rstrip(";"):
            await conn.execute(text)  # a script of several statements
            return []
        return [tuple(row) for row in await conn.fetch(text, *params)]
    finally:
        await conn.close()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server at ``admin_url``, dropped on the way out."""
    name = f"pr_test_{secrets.token_hex(6)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create() -> None:
        # CREATE DATABASE copies template1 and refuses while another session uses it (another
        # test creating its database at the same moment): try again a few times.
        for attempt in range(20):
            try:
                await run(f'CREATE DATABASE "{name}"')
                return
            except asyncpg.ObjectInUseError:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.1)

    async def drop() -> None:
        # FORCE ends the test's own leftover sessions; it refuses while a session of another
        # role is there (autovacuum, after a migration): wait for that one to finish.
        for attempt in range(50):
            try:
                await run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)

    in_thread(create)
    try:
        yield with_database(admin_url, name)
    finally:
        in_thread(drop)


@contextlib.asynccontextmanager
async def adapter_on_fake(
    type_name: str, config: Callable[[str], dict[str, Any]], options: MockOptions | None = None
) -> AsyncIterator[tuple[Adapter, MockUpstream]]:
    """An adapter of ``type_name`` talking to a fake upstream on a loopback socket.

    ``config(url)`` is the provider config for the fake's root URL. Yields the adapter and the
    fake (its ``requests`` are what the upstream received); closes both on the way out.
    """
    upstream = MockUpstream(options)
    async with serve_asgi(upstream.app()) as url:
        adapter = get_adapter_class(type_name)("p", config(url), AdapterOptions())
        try:
            yield adapter, upstream
        finally:
            await adapter.aclose()
            upstream.release_hangs()


@contextlib.contextmanager
def small_disk(where: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``: a real disk that fills up (needs root, as CI
    runs; skipped elsewhere, a failure under CI=true)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    require(mounted, "a small tmpfs (mount -t tmpfs, as root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill_disk(where: Path) -> Path:
    """Write a ballast file in ``where`` until the file system refuses more; return it."""
    ballast = where / "ballast"
    with ballast.open("wb", buffering=0) as out:
        chunk = b"\0" * 4096
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
    return ballast
