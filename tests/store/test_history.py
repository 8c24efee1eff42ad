"""Reading history back: newest first, cursor pagination, filters, one request with its attempts."""

from __future__ import annotations

from typing import Any

import pytest

from router.errors import InvalidRequest, NotFound
from router.store import history
from router.store.db import Database
from tests.helpers import query, store_provider


def insert_request(db: Database, request_id: str, created_at: int, **columns: Any) -> None:
    values: dict[str, Any] = {
        "id": request_id,
        "created_at": created_at,
        "endpoint": "/v1/chat/completions",
        "model": "m-a",
        "provider_id": "p1",
        "status": "success",
        "status_code": 200,
        "latency_ms": 10.0,
    }
    values.update(columns)
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    query(db, f"INSERT INTO requests ({names}) VALUES ({marks})", tuple(values.values()))


def insert_attempt(db: Database, request_id: str, n: int, provider_id: str, status: str) -> None:
    query(
        db,
        "INSERT INTO attempts (request_id, n, provider_id, started_at, status, status_code,"
        " latency_ms, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            request_id,
            n,
            provider_id,
            1_000 + n,
            status,
            200 if status == "success" else 503,
            float(n),
            None if status == "success" else f"failure {n}",
        ),
    )


async def seven_requests(db: Database) -> None:
    """r1 (oldest) .. r7 (newest); r4 and r5 share a timestamp, to test the tie-break on id."""
    await store_provider(db, "p1")
    await store_provider(db, "p2")
    rows: list[tuple[str, int, dict[str, Any]]] = [
        ("r1", 1_000, {}),
        ("r2", 2_000, {"model": "m-b", "provider_id": "p2"}),
        ("r3", 3_000, {"status": "error", "status_code": 502, "provider_id": None}),
        ("r4", 4_000, {}),
        ("r5", 4_000, {"model": "m-b", "stream": 1}),
        ("r6", 6_000, {"provider_id": "p2", "status": "error", "status_code": 429}),
        ("r7", 7_000, {}),
    ]
    for request_id, created_at, columns in rows:
        insert_request(db, request_id, created_at, **columns)


def ids(page: dict[str, Any]) -> list[str]:
    return [row["id"] for row in page["data"]]


async def test_pages_of_three_newest_first(db: Database) -> None:
    await seven_requests(db)
    first = await history.list_requests(db, {"limit": "3"})
    assert ids(first) == ["r7", "r6", "r5"]
    assert isinstance(first["next_cursor"], str)
    second = await history.list_requests(db, {"limit": "3", "cursor": first["next_cursor"]})
    assert ids(second) == ["r4", "r3", "r2"]
    assert isinstance(second["next_cursor"], str)
    third = await history.list_requests(db, {"limit": "3", "cursor": second["next_cursor"]})
    assert ids(third) == ["r1"]
    assert third["next_cursor"] is None


async def test_an_exact_last_page_has_no_cursor(db: Database) -> None:
    await seven_requests(db)
    page = await history.list_requests(db, {"limit": "7"})
    assert len(page["data"]) == 7
    assert page["next_cursor"] is None


async def test_new_rows_do_not_shift_the_next_page(db: Database) -> None:
    await seven_requests(db)
    first = await history.list_requests(db, {"limit": "3"})
    insert_request(db, "r8", 8_000)
    second = await history.list_requests(db, {"limit": "3", "cursor": first["next_cursor"]})
    assert ids(second) == ["r4", "r3", "r2"]


async def test_default_limit_and_row_shape(db: Database) -> None:
    await seven_requests(db)
    page = await history.list_requests(db, {})
    assert ids(page) == ["r7", "r6", "r5", "r4", "r3", "r2", "r1"]
    assert page["next_cursor"] is None
    r5 = page["data"][2]
    assert r5 == {
        "id": "r5",
        "created_at": 4_000,
        "endpoint": "/v1/chat/completions",
        "client_key_id": None,
        "model": "m-b",
        "provider_id": "p1",
        "upstream_model": None,
        "stream": True,
        "status": "success",
        "status_code": 200,
        "latency_ms": 10.0,
        "ttft_ms": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "total_tokens": None,
        "cost": None,
        "currency": None,
        "attempts": 0,
        "error": None,
    }
    assert page["data"][0]["stream"] is False


async def test_an_empty_history(db: Database) -> None:
    assert await history.list_requests(db, {}) == {"data": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"model": "m-b"}, ["r5", "r2"]),
        ({"model": "nope"}, []),
        ({"provider_id": "p2"}, ["r6", "r2"]),
        ({"status": "error"}, ["r6", "r3"]),
        ({"since": "4000"}, ["r7", "r6", "r5", "r4"]),
        ({"since": "0"}, ["r7", "r6", "r5", "r4", "r3", "r2", "r1"]),
        ({"model": "m-a", "provider_id": "p1", "status": "success"}, ["r7", "r4", "r1"]),
        ({"provider_id": "p2", "since": "3000"}, ["r6"]),
    ],
)
async def test_filters(db: Database, params: dict[str, str], expected: list[str]) -> None:
    await seven_requests(db)
    page = await history.list_requests(db, params)
    assert ids(page) == expected
    assert page["next_cursor"] is None


async def test_filters_combine_with_pagination(db: Database) -> None:
    await seven_requests(db)
    params = {"model": "m-a", "limit": "2"}
    first = await history.list_requests(db, params)
    assert ids(first) == ["r7", "r6"]
    second = await history.list_requests(db, {**params, "cursor": first["next_cursor"]})
    assert ids(second) == ["r4", "r3"]
    third = await history.list_requests(db, {**params, "cursor": second["next_cursor"]})
    assert ids(third) == ["r1"]
    assert third["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1", "2.5", ""])
async def test_a_bad_limit_is_refused(db: Database, limit: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await history.list_requests(db, {"limit": limit})
    assert caught.value.param == "limit"
    assert "from 1 to 1000" in caught.value.message
    assert repr(limit) in caught.value.message


@pytest.mark.parametrize("status", ["ok", "Success", "timeout", ""])
async def test_an_unknown_status_is_refused_not_answered_with_nothing(
    db: Database, status: str
) -> None:
    """A typo in the filter must not look like "no failed requests"."""
    with pytest.raises(InvalidRequest) as caught:
        await history.list_requests(db, {"status": status})
    assert caught.value.param == "status" and "client_closed" in caught.value.message


async def test_limits_at_the_bounds_are_accepted(db: Database) -> None:
    await seven_requests(db)
    assert ids(await history.list_requests(db, {"limit": "1"})) == ["r7"]
    assert len((await history.list_requests(db, {"limit": "1000"}))["data"]) == 7


@pytest.mark.parametrize("params", [{"limit": "²"}, {"since": "²"}])
async def test_superscript_digits_are_refused(db: Database, params: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        await history.list_requests(db, params)


@pytest.mark.parametrize(
    "params", [{"since": "9" * 30}, {"cursor": history.encode_cursor(10**30, "x")}]
)
async def test_a_huge_time_is_refused(db: Database, params: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        await history.list_requests(db, params)


@pytest.mark.parametrize("since", ["yesterday", "-5", "1.5"])
async def test_a_bad_since_is_refused(db: Database, since: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await history.list_requests(db, {"since": since})
    assert caught.value.param == "since"


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "not-a-cursor",
        "YWJjOng",  # base64 of "abc:x": the time is not a number
        "Ong",  # base64 of ":x": no time at all
        "gICA",  # base64 of bytes that are not UTF-8
        "a",  # not base64 at all (a single character cannot be decoded)
    ],
)
async def test_a_bad_cursor_is_refused(db: Database, cursor: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await history.list_requests(db, {"cursor": cursor})
    assert caught.value.param == "cursor"
    assert "not valid" in caught.value.message


def test_a_cursor_round_trips() -> None:
    cursor = history.encode_cursor(1_700_000_000_123, "req:with:colons")
    assert "=" not in cursor
    assert history.decode_cursor(cursor) == (1_700_000_000_123, "req:with:colons")


async def test_an_unknown_parameter_is_refused(db: Database) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await history.list_requests(db, {"limit": "3", "offset": "3"})
    assert caught.value.param == "offset"
    assert "'offset'" in caught.value.message


async def test_get_request_with_attempts_in_order(db: Database) -> None:
    await seven_requests(db)
    insert_request(db, "fb", 9_000, provider_id="p2", attempts=3)
    insert_attempt(db, "fb", 3, "p2", "success")
    insert_attempt(db, "fb", 1, "p1", "error")
    insert_attempt(db, "fb", 2, "p1", "error")
    insert_attempt(db, "r7", 1, "p1", "success")  # another request's attempt stays out
    data = await history.get_request(db, "fb")
    assert data["id"] == "fb"
    assert data["provider_id"] == "p2"
    assert data["attempts"] == 3
    assert data["stream"] is False
    assert data["attempt_details"] == [
        {
            "n": 1,
            "provider_id": "p1",
            "started_at": 1_001,
            "status": "error",
            "status_code": 503,
            "latency_ms": 1.0,
            "error": "failure 1",
        },
        {
            "n": 2,
            "provider_id": "p1",
            "started_at": 1_002,
            "status": "error",
            "status_code": 503,
            "latency_ms": 2.0,
            "error": "failure 2",
        },
        {
            "n": 3,
            "provider_id": "p2",
            "started_at": 1_003,
            "status": "success",
            "status_code": 200,
            "latency_ms": 3.0,
            "error": None,
        },
    ]


async def test_get_request_without_attempts(db: Database) -> None:
    await seven_requests(db)
    data = await history.get_request(db, "r3")
    assert data["status"] == "error"
    assert data["provider_id"] is None
    assert data["attempt_details"] == []


async def test_get_request_unknown_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound) as caught:
        await history.get_request(db, "ghost")
    assert caught.value.param == "id"
    assert "'ghost'" in caught.value.message
