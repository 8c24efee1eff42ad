"""Prometheus metrics: what the proxy did, counted exactly and read at scrape time.

The request path pays one call per finished request (:meth:`Metrics.observe`), which adds to
plain dicts and lists on the event loop's thread: no lock, no label validation, no allocation
beyond a key tuple. A scrape turns those totals, and the live state read from the recorder, the
breakers and the proxy (queue length, circuit states, requests in flight), into metric families
of ``prometheus-client``, which writes the exposition format. Each app has its own
:class:`~prometheus_client.CollectorRegistry` (tests build many apps in one process), with the
library's process, platform and garbage-collector collectors beside ours.

The names, types and labels below are a public interface, listed in ``docs/metrics.md`` and
pinned by ``tests/gateway/test_metrics.py``: renaming one breaks dashboards and alerts.

Cardinality stays bounded: ``model`` is a catalog model id (anything else, a typo or a pinned
``provider/model`` name that is not in the catalog, becomes ``unknown``), ``provider`` the
provider the request is attributed to in the history (the one that answered, or after failures
the last one tried) or ``""`` when none was tried, ``endpoint`` a front door's name.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from router.gateway.recorder import RequestRecord
from router.resilience.breaker import CLOSED, HALF_OPEN, OPEN

if TYPE_CHECKING:
    from router.gateway.recorder import Recorder
    from router.gateway.snapshots import SnapshotManager
    from router.resilience.policy import Resilience

UNKNOWN_MODEL = "unknown"
PREFIX = "provider_router_"

# Seconds. LLM answers take from tens of milliseconds (a cached embedding) to minutes (a long
# generation), so the buckets reach further than the library's defaults (10 s).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

REQUEST_STATUS = {"success": "ok", "error": "error", "client_closed": "client_closed"}
CIRCUIT_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


def attempt_outcome(status: str, status_code: int | None) -> str:
    """An attempt's ``outcome`` label: ``ok``, ``error``, ``timeout``, ``rate_limited`` (the
    upstream answered 429), ``client_error`` (another 4xx but 408, passed back to the client) or
    ``client_closed`` (the client hung up during it)."""
    if status == "success":
        return "ok"
    if status in ("timeout", "client_closed"):
        return status
    if status_code == 429:
        return "rate_limited"
    if status_code is not None and 400 <= status_code < 500 and status_code != 408:
        return "client_error"
    return "error"


class Histograms:
    """Histograms of durations by label values, as plain lists: ``[bucket counts..., count,
    sum]``, observed in milliseconds (what the records hold) and exposed in seconds.

    A series' count doubles as a counter: the requests counter and the request-duration
    histogram share one series per key, so a request costs one lookup for both; a family can
    leave trailing labels out (``width``), summing the series that differ only there.
    """

    __slots__ = ("bounds", "bounds_ms", "series")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.bounds_ms = tuple(b * 1000 for b in self.bounds)
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], ms: float) -> None:
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = [0.0] * (len(self.bounds) + 3)
        # bisect_left: a value equal to a bound falls into that bucket (le is "<=").
        found[bisect_left(self.bounds_ms, ms)] += 1
        found[-2] += 1
        found[-1] += ms

    def counts(self) -> dict[tuple[str, ...], float]:
        return {key: found[-2] for key, found in self.series.items()}

    def family(
        self, name: str, doc: str, labels: Sequence[str], width: int | None = None
    ) -> HistogramMetricFamily:
        merged: dict[tuple[str, ...], list[float]] = {}
        for key, found in self.series.items():
            into = merged.setdefault(key[:width], [0.0] * len(found))
            for i, count in enumerate(found):
                into[i] += count
        family = HistogramMetricFamily(name, doc, labels=labels)
        n = len(self.bounds)
        for key, found in merged.items():
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self.bounds, float("inf")), found[: n + 1], strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            family.add_metric(list(key), buckets, found[-1] / 1000)
        return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _counter(name: str, doc: str, labels: Sequence[str], values: Mapping[Any, float]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


class Metrics(Collector):
    """The gateway's metrics: fed by :meth:`observe`, read by :meth:`exposition`.

    ``inflight`` and ``client_rate_limited`` are callables reading the proxy's own integer
    counters, so that counting those costs the request path an integer addition.
    """

    def __init__(
        self,
        snapshots: SnapshotManager,
        recorder: Recorder,
        resilience: Resilience,
        *,
        inflight: Callable[[], int],
        client_rate_limited: Callable[[], int],
    ) -> None:
        self.snapshots = snapshots
        self.recorder = recorder
        self.resilience = resilience
        self._inflight = inflight
        self._client_rate_limited = client_rate_limited
        # (endpoint, model, provider, status): the requests counter and duration histogram.
        self.requests = Histograms(DURATION_BUCKETS)
        # (provider, outcome): the attempts counter and upstream duration histogram.
        self.attempts = Histograms(DURATION_BUCKETS)
        self.ttft = Histograms(TTFT_BUCKETS)
        self.tokens: dict[tuple[str, str], list[int]] = {}  # (model, provider): [in, out]
        self.key_tokens: dict[str, list[int]] = {}  # client key id: [in, out]
        self.cost: dict[tuple[str, str, str], float] = {}
        self.provider_rate_limited = 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def model_label(self, record: RequestRecord) -> str:
        model = record.model
        if model is None:
            return UNKNOWN_MODEL
        snapshot = record.snapshot or self.snapshots.current
        return model if model in snapshot.models else UNKNOWN_MODEL

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request, its attempts, tokens and cost."""
        model = self.model_label(record)
        provider = record.provider_id or ""
        status = REQUEST_STATUS.get(record.status, "error")
        self.requests.observe((record.endpoint, model, provider, status), record.latency_ms)
        if record.ttft_ms is not None:
            self.ttft.observe((model, provider), record.ttft_ms)
        observe_attempt = self.attempts.observe
        for a in record.attempts:
            outcome = "ok" if a.status == "success" else attempt_outcome(a.status, a.status_code)
            observe_attempt((a.provider_id, outcome), a.latency_ms)
        if record.prompt_tokens or record.completion_tokens:
            tokens = self.tokens.get((model, provider))
            if tokens is None:
                tokens = self.tokens[(model, provider)] = [0, 0]
            tokens[0] += record.prompt_tokens or 0
            tokens[1] += record.completion_tokens or 0
            key_id = record.client_key_id
            if key_id is not None:
                tokens = self.key_tokens.get(key_id)
                if tokens is None:
                    tokens = self.key_tokens[key_id] = [0, 0]
                tokens[0] += record.prompt_tokens or 0
                tokens[1] += record.completion_tokens or 0
        if record.cost and record.currency:
            triple = (model, provider, record.currency)
            self.cost[triple] = self.cost.get(triple, 0) + record.cost
        if record.skips:
            self.provider_rate_limited += sum(1 for s in record.skips if s[1] == "rate_limited")

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the scraper asked for (text, or OpenMetrics), and its
        content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def describe(self) -> Iterable[Metric]:
        # The same families, empty: registering reads them once, and a scrape before the first
        # request still lists every name.
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        p = PREFIX
        yield _counter(
            f"{p}requests", "Client requests by front door, model, provider and outcome.",
            ("endpoint", "model", "provider", "status"), self.requests.counts(),
        )  # fmt: skip
        yield self.requests.family(
            f"{p}request_duration_seconds",
            "Time from a request's arrival to its last byte sent.",
            ("endpoint", "model", "provider"),
            width=3,
        )
        yield self.ttft.family(
            f"{p}time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first block sent.",
            ("model", "provider"),
        )
        yield _counter(
            f"{p}upstream_attempts", "Upstream attempts by provider and outcome.",
            ("provider", "outcome"), self.attempts.counts(),
        )  # fmt: skip
        yield self.attempts.family(
            f"{p}upstream_duration_seconds",
            "Time of one upstream attempt, to its last byte.",
            ("provider",),
            width=1,
        )
        tokens = {}
        for (model, provider), (prompt, completion) in self.tokens.items():
            if prompt:
                tokens[(model, provider, "prompt")] = prompt
            if completion:
                tokens[(model, provider, "completion")] = completion
        yield _counter(
            f"{p}tokens", "Tokens the upstreams reported, by model, provider and kind.",
            ("model", "provider", "kind"), tokens,
        )  # fmt: skip
        by_key = {}
        for key_id, (prompt, completion) in self.key_tokens.items():
            if prompt:
                by_key[(key_id, "prompt")] = prompt
            if completion:
                by_key[(key_id, "completion")] = completion
        yield _counter(
            f"{p}client_key_tokens",
            "Tokens by client key (its id; keys are made by the admin, so the set is bounded).",
            ("client_key", "kind"), by_key,
        )  # fmt: skip
        yield _counter(
            f"{p}cost", "Cost of the answered requests from the catalog's prices.",
            ("model", "provider", "currency"), self.cost,
        )  # fmt: skip
        circuits = GaugeMetricFamily(
            f"{p}circuit_state",
            "Circuit of each provider: 0 closed, 1 half-open, 2 open.",
            labels=("provider",),
        )
        for provider_id, state in self.circuit_states().items():
            circuits.add_metric([provider_id], CIRCUIT_VALUE[state])
        yield circuits
        yield _counter(
            f"{p}rate_limited",
            "Requests or candidates refused by the router's own rate limits: scope 'provider'"
            " (a candidate skipped at its provider's limit), 'client_key' (a request refused"
            " at its key's limit).",
            ("scope",),
            {"provider": self.provider_rate_limited, "client_key": self._client_rate_limited()},
        )
        yield GaugeMetricFamily(
            f"{p}inflight_requests", "Client requests being served now.", value=self._inflight()
        )
        recorder = self.recorder
        yield GaugeMetricFamily(
            f"{p}recorder_queue_rows",
            "Request records waiting in the recorder's queue.",
            value=recorder.queue.qsize(),
        )
        yield CounterMetricFamily(
            f"{p}recorder_written_rows",
            "Request records written to the history.",
            value=recorder.rows_written,
        )
        yield CounterMetricFamily(
            f"{p}recorder_dropped_rows",
            "Request records the history could not keep (written neither now nor on retry).",
            value=recorder.rows_dropped,
        )

    def circuit_states(self) -> dict[str, str]:
        """Every known provider's circuit; a provider that never failed is closed."""
        states = dict.fromkeys(self.snapshots.adapters(), CLOSED)
        for provider_id, breaker in self.resilience.breakers.items():
            states[provider_id] = breaker.as_dict()["state"]
        return dict(sorted(states.items()))
