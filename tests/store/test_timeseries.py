"""GET /v1/stats/timeseries: buckets, groups, totals and histogram percentiles, from SQL."""

from __future__ import annotations

import pytest

from router.errors import InvalidRequest
from router.store import timeseries
from router.store.db import Database

ROWS = [
    # created_at, provider, model, status, latency, tokens, cost
    (1_000, "a", "m1", "success", 100.0, 10, 0.5),
    (1_500, "a", "m2", "error", 1000.0, None, None),
    (2_500, "b", "m1", "success", 50.0, 30, 0.25),
    (3_999, "b", "m1", "success", 52.0, 40, 0.25),
    (4_000, "a", "m1", "success", 10.0, 1, 0.0),  # outside [1000, 4000)
]


async def fill(db: Database) -> None:
    async with db.transaction() as conn:
        for pid in ("a", "b"):
            await conn.execute(
                "INSERT INTO providers (id, name, type, created_at, updated_at)"
                " VALUES (?, ?, 'openai', 0, 0)",
                (pid, pid),
            )
        await conn.executemany(
            "INSERT INTO requests (id, created_at, endpoint, provider_id, model, status,"
            " status_code, latency_ms, total_tokens, cost)"
            " VALUES (?, ?, 'chat.completions', ?, ?, ?, 200, ?, ?, ?)",
            [(f"r{i}", *row) for i, row in enumerate(ROWS)],
        )


async def test_buckets_groups_and_totals(db: Database) -> None:
    await fill(db)
    params = {"since": "1000", "until": "4000", "bucket_ms": "1000"}
    found = await timeseries.timeseries(db, params)

    assert found["buckets"] == [1000, 2000, 3000]
    totals = found["totals"]
    assert (totals["requests"], totals["errors"], totals["total_tokens"]) == (4, 1, 80)
    assert totals["error_rate"] == 0.25 and totals["cost"] == 1.0
    assert [s["requests"] for s in found["series"]] == [2, 1, 1]
    assert [s["errors"] for s in found["series"]] == [1, 0, 0]
    by = {g["provider"]: g for g in found["groups"]}
    assert [g["provider"] for g in found["groups"]] == ["a", "b"]  # most requests first, by id
    assert [s["requests"] for s in by["a"]["series"]] == [2, 0, 0]
    assert [s["requests"] for s in by["b"]["series"]] == [0, 1, 1]
    assert "p50_latency_ms" not in by["a"]["series"][0]
    # Percentiles are the upper edge of a ~4% histogram bin around the nearest-rank value.
    assert 50.0 <= by["b"]["p50_latency_ms"] <= 50.0 * 1.05  # rank 1 of 50, 52
    assert 1000.0 <= totals["p95_latency_ms"] <= 1000.0 * 1.05
    assert 52.0 <= totals["p50_latency_ms"] <= 52.0 * 1.05  # rank 2 of 50, 52, 100, 1000


async def test_by_model_and_the_default_window(db: Database) -> None:
    await fill(db)
    found = await timeseries.timeseries(db, {"group_by": "model"}, now_ms=5_000)
    assert (found["since"], found["until"]) == (0, 5_000)
    assert found["bucket_ms"] == 1000  # a short window still has buckets of at least 1 s
    assert {g["model"]: g["requests"] for g in found["groups"]} == {"m1": 4, "m2": 1}
    models = await timeseries.totals(db, {"group_by": "model", "since": "0", "until": "5000"})
    assert [(m["model"], m["requests"]) for m in models] == [("m1", 4), ("m2", 1)]


def test_percentile_of_a_histogram() -> None:
    assert timeseries.percentile({}, 50) is None
    histogram = {10: 1, 20: 98, 30: 1}
    assert timeseries.percentile(histogram, 50) == timeseries.bin_latency(20)
    assert timeseries.percentile(histogram, 100) == timeseries.bin_latency(30)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": "key"}, "Parameter 'group_by' must be 'provider' or 'model', got 'key'."),
        ({"since": "soon"}, "Parameter 'since' must be a Unix time in milliseconds, got 'soon'."),
        ({"since": "10", "until": "10"}, "Parameter 'until' must be after 'since'."),
        ({"bucket_ms": "5"}, "Parameter 'bucket_ms' must be an integer of at least 1000, got '5'."),
        ({"since": "0", "until": "2000000", "bucket_ms": "1000"}, "makes 2000 buckets"),
        ({"window": "day"}, "Unknown query parameter 'window'."),
    ],
)
async def test_bad_parameters_are_refused(
    db: Database, params: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await timeseries.timeseries(db, params, now_ms=10_000)
    assert message in caught.value.message
