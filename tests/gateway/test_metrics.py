"""GET /metrics: the names are a public interface, the counts are exact, the labels bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from router.gateway.metrics import Histograms, attempt_outcome
from router.mock.upstream import MockOptions, MockUpstream
from router.resilience.breaker import OPEN
from tests.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    add_provider,
    app_client,
    eventually,
    make_settings,
    serve_asgi,
)
from tests.helpers import query as sql

CHAT = {"messages": [{"role": "user", "content": "hello"}]}
METRICS_TOKEN = "metrics-token-0123456789"

# The public interface (docs/metrics.md): every name, its type and its label names. A rename,
# a new label or a dropped metric must change this table on purpose.
PINNED: dict[str, tuple[str, tuple[str, ...]]] = {
    "provider_router_requests": ("counter", ("endpoint", "model", "provider", "status")),
    "provider_router_request_duration_seconds": ("histogram", ("endpoint", "model", "provider")),
    "provider_router_time_to_first_token_seconds": ("histogram", ("model", "provider")),
    "provider_router_upstream_attempts": ("counter", ("provider", "outcome")),
    "provider_router_upstream_duration_seconds": ("histogram", ("provider",)),
    "provider_router_tokens": ("counter", ("model", "provider", "kind")),
    "provider_router_client_key_tokens": ("counter", ("client_key", "kind")),
    "provider_router_cost": ("counter", ("model", "provider", "currency")),
    "provider_router_circuit_state": ("gauge", ("provider",)),
    "provider_router_rate_limited": ("counter", ("scope",)),
    "provider_router_inflight_requests": ("gauge", ()),
    "provider_router_recorder_queue_rows": ("gauge", ()),
    "provider_router_recorder_written_rows": ("counter", ()),
    "provider_router_recorder_dropped_rows": ("counter", ()),
}


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list[Sample]:
    """Every sample whose name is ``name`` (``..._total``, ``..._bucket``, a gauge's name)."""
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of ``name`` with exactly ``labels`` (0 when absent, as
    Prometheus reads a series that was never created)."""
    found = [s.value for s in samples(text, name) if s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else 0.0


def series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in samples(text, name)}


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


async def test_every_metric_keeps_its_name_type_and_labels(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        text = await scrape(client)
    found = families(text)
    ours = {name: f for name, f in found.items() if name.startswith("provider_router_")}
    assert set(ours) == set(PINNED)
    for name, (kind, _) in PINNED.items():
        assert ours[name].type == kind, name
    # Label names show on samples; check them after traffic in the exact-count test, and here
    # that each family's HELP line is written.
    for name in PINNED:
        assert f"# HELP {name}" in text
    # The library's process, platform and garbage-collector collectors are there too.
    assert {"process_cpu_seconds", "python_info", "python_gc_objects_collected"} <= set(found)


async def test_metrics_answer_the_metrics_token_or_the_admin_token_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, metrics_token=METRICS_TOKEN)
    async with app_client(settings) as (_, client):
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"authorization": "Bearer not-the-token"})
        by_token = await client.get(
            "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
        )
        by_admin = await client.get("/metrics", headers={"x-api-key": ADMIN_TOKEN})
        # The metrics token is read-only: it opens nothing else.
        elsewhere = await client.get(
            "/v1/providers", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
        )
    for refused in (anonymous, wrong):
        assert refused.status_code == 401
        error = refused.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "authentication_error"
        assert METRICS_TOKEN not in refused.text and ADMIN_TOKEN not in refused.text
    assert "metrics.token" in anonymous.json()["error"]["message"]
    assert by_token.status_code == 200 and "provider_router_requests_total" in by_token.text
    assert by_admin.status_code == 200
    assert elsewhere.status_code == 401


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        accept = "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"
        response = await client.get("/metrics", headers={**ADMIN, "accept": accept})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, metrics_enabled=False)
    async with app_client(settings) as (app, client):
        response = await client.get("/metrics", headers=ADMIN)
        assert app.services is not None and app.services.proxy.metrics is None
        chat = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert chat.status_code == 404  # the proxy still works without metrics


async def test_the_model_label_takes_only_catalog_ids(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await add_provider(client, "p", "http://127.0.0.1:9/v1", ["known"], enabled=False)
        for model in ("req_0123456789abcdef", "sk-looks-like-a-key", "p/known", "known"):
            await client.post("/v1/chat/completions", json={**CHAT, "model": model})
        text = await scrape(client)
    models = {s.labels["model"] for s in samples(text, "provider_router_requests_total")}
    assert models == {"unknown", "known"}
    assert value(text, "provider_router_requests_total", endpoint="chat.completions",
                 model="unknown", provider="", status="error") == 3  # fmt: skip
    assert "req_0123456789abcdef" not in text and "sk-looks-like-a-key" not in text


@contextlib.asynccontextmanager
async def upstream(options: MockOptions) -> AsyncIterator[str]:
    fake = MockUpstream(options)
    async with serve_asgi(fake.app()) as url:
        yield f"{url}/v1"


async def test_every_counter_equals_what_happened_over_real_sockets(tmp_path: Path) -> None:
    """A known mix through a real uvicorn server, against fakes on their own sockets."""
    settings = make_settings(tmp_path, breaker_failure_threshold=100)
    async with (
        upstream(MockOptions()) as good_url,
        upstream(MockOptions(fail="status:500")) as bad_url,
        upstream(MockOptions(fail="status:400")) as rejects_url,
        upstream(MockOptions(fail="status:429", retry_after_s=60)) as throttled_url,
        upstream(MockOptions(chunks=200, chunk_delay_ms=50)) as slow_url,
        app_client(settings) as (app, admin),
        serve_asgi(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        await add_provider(admin, "good", good_url, ["m-fallback"], priority=1)
        link = {"model_id": "m-ok", "input_cost_per_1k": 1.0, "output_cost_per_1k": 2.0}
        linked = await admin.post("/v1/providers/good/models", json=link, headers=ADMIN)
        assert linked.status_code == 201
        await add_provider(admin, "bad", bad_url, ["m-fail", "m-fallback"], priority=2)
        await add_provider(admin, "rejects", rejects_url, ["m-400"])
        await add_provider(admin, "throttled", throttled_url, ["m-429"])
        await add_provider(admin, "slow", slow_url, ["m-slow"])

        async def chat(model: str, **extra: Any) -> int:
            response = await client.post("/v1/chat/completions", json={**CHAT, "model": model,
                                                                      **extra})  # fmt: skip
            return response.status_code

        statuses = [await chat("m-ok") for _ in range(3)]
        statuses += [await chat("m-ok", stream=True) for _ in range(2)]
        statuses += [await chat("m-fail") for _ in range(2)]
        statuses += [await chat("m-fallback") for _ in range(2)]
        statuses += [await chat("m-400"), await chat("m-429"), await chat("no-such-model")]
        assert statuses == [200] * 5 + [502] * 2 + [200] * 2 + [400, 429, 404]

        # A client that leaves mid-stream; while it reads, one request is in flight.
        body = {**CHAT, "model": "m-slow", "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if "content" in line:
                    break
            during = await scrape(client)

        async def settled() -> str | None:
            text = await scrape(client)
            done = value(text, "provider_router_requests_total", endpoint="chat.completions",
                         model="m-slow", provider="slow", status="client_closed")  # fmt: skip
            return text if done == 1 else None

        text = await eventually(settled, "the disconnected request was counted")
        assert app.services is not None
        await app.services.recorder.flush()
        text = await scrape(client)
        rows = sql(tmp_path / "router.db", "SELECT model, provider_id, status, prompt_tokens,"
                   " completion_tokens, cost FROM requests")  # fmt: skip

    assert value(during, "provider_router_inflight_requests") == 1
    assert value(text, "provider_router_inflight_requests") == 0

    door = {"endpoint": "chat.completions"}
    assert series(text, "provider_router_requests_total") == {
        tuple(sorted({**door, "model": m, "provider": p, "status": s}.items())): n
        for m, p, s, n in [
            ("m-ok", "good", "ok", 5),
            # A request that failed belongs to the last provider tried, as in the history.
            ("m-fail", "bad", "error", 2),
            ("m-fallback", "good", "ok", 2),
            ("m-400", "rejects", "error", 1),
            ("m-429", "throttled", "error", 1),
            ("unknown", "", "error", 1),
            ("m-slow", "slow", "client_closed", 1),
        ]
    }
    assert series(text, "provider_router_upstream_attempts_total") == {
        (("outcome", o), ("provider", p)): n
        for p, o, n in [
            ("good", "ok", 7),
            ("bad", "error", 4),
            ("rejects", "client_error", 1),
            ("throttled", "rate_limited", 1),
            ("slow", "client_closed", 1),
        ]
    }
    # Every request and attempt is in its duration histogram once.
    durations = series(text, "provider_router_request_duration_seconds_count")
    assert sum(durations.values()) == 13
    assert (
        durations[(("endpoint", "chat.completions"), ("model", "m-ok"), ("provider", "good"))] == 5
    )
    upstream_counts = series(text, "provider_router_upstream_duration_seconds_count")
    assert upstream_counts == {
        (("provider", "good"),): 7, (("provider", "bad"),): 4, (("provider", "rejects"),): 1,
        (("provider", "throttled"),): 1, (("provider", "slow"),): 1,
    }  # fmt: skip
    inf = [s for s in samples(text, "provider_router_upstream_duration_seconds_bucket")
           if s.labels["le"] == "+Inf"]  # fmt: skip
    assert sum(s.value for s in inf) == 14
    # Streams (the two answered, the one left) have a time to first token.
    assert series(text, "provider_router_time_to_first_token_seconds_count") == {
        (("model", "m-ok"), ("provider", "good")): 2,
        (("model", "m-slow"), ("provider", "slow")): 1,
    }

    # Tokens and cost agree with the history rows, written by another path (the recorder).
    def total(column: int, model: str, provider: str) -> float:
        return sum(r[column] or 0 for r in rows if (r[0], r[1]) == (model, provider))

    for model in ("m-ok", "m-fallback"):
        prompt = value(text, "provider_router_tokens_total", model=model, provider="good",
                       kind="prompt")  # fmt: skip
        completion = value(text, "provider_router_tokens_total", model=model, provider="good",
                           kind="completion")  # fmt: skip
        assert prompt == total(3, model, "good") > 0
        assert completion == total(4, model, "good") > 0
    cost = value(text, "provider_router_cost_total", model="m-ok", provider="good",
                 currency="USD")  # fmt: skip
    assert cost == pytest.approx(total(5, "m-ok", "good")) and cost > 0
    assert not samples(text, "provider_router_cost_total")[1:]  # only m-ok has prices

    # The 429 opened its provider's circuit (Retry-After 60 s); the others are closed.
    assert series(text, "provider_router_circuit_state") == {
        (("provider", p),): v
        for p, v in [("bad", 0), ("good", 0), ("rejects", 0), ("slow", 0), ("throttled", 2)]
    }
    assert value(text, "provider_router_recorder_written_rows_total") == len(rows) == 13
    assert value(text, "provider_router_recorder_dropped_rows_total") == 0
    assert value(text, "provider_router_recorder_queue_rows") == 0
    # Label names, per family, as pinned.
    for name, (_, labels) in PINNED.items():
        for sample in families(text)[name].samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample)


async def test_router_rate_limits_are_counted_by_scope(tmp_path: Path) -> None:
    async with (
        upstream(MockOptions()) as good_url,
        app_client(make_settings(tmp_path)) as (_, client),
    ):
        await add_provider(client, "limited", good_url, ["m"], limits={"rpm": 1})
        await add_provider(client, "free", good_url, ["m2"])
        key = await client.post(
            "/v1/keys", json={"name": "one-a-minute", "rpm_limit": 1}, headers=ADMIN
        )
        assert key.status_code == 201, key.text
        as_key = {"authorization": f"Bearer {key.json()['key']}"}
        # Once a key exists, the proxy wants one (or the admin token).
        first = await client.post(
            "/v1/chat/completions", json={**CHAT, "model": "m"}, headers=ADMIN
        )
        second = await client.post(
            "/v1/chat/completions", json={**CHAT, "model": "m"}, headers=ADMIN
        )
        by_key = [
            await client.post("/v1/chat/completions", json={**CHAT, "model": "m2"}, headers=as_key)
            for _ in range(3)
        ]
        text = await scrape(client)
    assert (first.status_code, second.status_code) == (200, 429)
    assert [r.status_code for r in by_key] == [200, 429, 429]
    assert value(text, "provider_router_rate_limited_total", scope="provider") == 1
    assert value(text, "provider_router_rate_limited_total", scope="client_key") == 2
    # The one answered request of the key counts its tokens under the key's id.
    key_id = key.json()["id"]
    prompt = value(text, "provider_router_client_key_tokens_total", client_key=key_id,
                   kind="prompt")  # fmt: skip
    assert prompt == value(text, "provider_router_tokens_total", model="m2", provider="free",
                           kind="prompt") > 0  # fmt: skip
    assert {s.labels["client_key"] for s in samples(text, "provider_router_client_key_tokens_total")
            } == {key_id}  # fmt: skip


async def test_recorder_counters_read_the_recorder(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (app, client):
        assert app.services is not None
        recorder = app.services.recorder
        await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
        await recorder.flush()
        recorder.rows_dropped += 3  # as the history does when it gives rows up
        text = await scrape(client)
    assert value(text, "provider_router_recorder_written_rows_total") == 1
    assert value(text, "provider_router_recorder_dropped_rows_total") == 3


async def test_a_circuit_half_open_reads_1(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (app, client):
        await add_provider(client, "p", "http://127.0.0.1:9/v1", ["m"])
        assert app.services is not None
        breaker = app.services.proxy.resilience.breakers.get("p")
        breaker.rate_limited("slow down", retry_after=0.0)
        assert breaker.state == OPEN
        await asyncio.sleep(0.01)  # the cooldown is over: the next request is the probe
        text = await scrape(client)
    assert value(text, "provider_router_circuit_state", provider="p") == 1


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        ("success", 200, "ok"),
        ("timeout", None, "timeout"),
        ("client_closed", None, "client_closed"),
        ("error", 429, "rate_limited"),
        ("error", 400, "client_error"),
        ("error", 404, "client_error"),
        ("error", 408, "error"),
        ("error", 503, "error"),
        ("error", None, "error"),
        ("error", 200, "error"),  # a stream that broke off after its 200
    ],
)
def test_attempt_outcomes(status: str, code: int | None, outcome: str) -> None:
    assert attempt_outcome(status, code) == outcome


def test_a_value_on_a_bucket_bound_falls_in_that_bucket() -> None:
    histograms = Histograms((0.1, 1.0))
    for ms in (100, 500, 1000, 7000):
        histograms.observe(("x",), ms)
    family = histograms.family("h_seconds", "A test histogram.", ("k",))
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "h_seconds_bucket"}
    assert buckets == {"0.1": 1, "1.0": 3, "+Inf": 4}
    total = next(s.value for s in family.samples if s.name == "h_seconds_sum")
    assert total == pytest.approx(8.6)


def test_every_metric_and_its_labels_are_documented() -> None:
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "metrics.md").read_text()
    observability = (root / "docs" / "observability.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in doc.splitlines() if "| `" in line}
    for name, (kind, labels) in PINNED.items():
        shown = f"{name}_total" if kind == "counter" else name
        assert shown in rows, f"{shown} is not in docs/metrics.md"
        row = rows[shown].split("|")
        assert row[2].strip() == kind, shown
        assert [label.strip(" `") for label in row[3].split(",") if label.strip()] == list(labels)
    assert "metrics.md" in observability and "scrape_configs" in observability
