"""What recording the routing trace costs per request (issue 14): a micro-measure.

    python -m bench.trace

On the request path the trace costs two attribute stores (the snapshot and the candidate order,
references the attempt loop already holds) plus one small tuple per skipped candidate; the
recorder turns them into the ``trace`` JSON column in the background. This times both parts
per request; ``bench/run.sh`` measures the whole proxy.
"""

from __future__ import annotations

import timeit

from providers.base import AdapterOptions
from providers.openai import OpenAIAdapter
from router.gateway.recorder import RequestRecord, trace_document
from router.gateway.routing import Candidate, Snapshot


def main() -> None:
    adapter = OpenAIAdapter("p", {"baseURL": "http://127.0.0.1:1/v1"}, AdapterOptions())
    candidates = tuple(Candidate(f"p{i}", adapter, "m", 10 - i, 1) for i in range(3))
    snapshot = Snapshot(
        routes={"m": candidates},
        linked={"m": {c.provider_id: c for c in candidates}},
        disabled=frozenset({"p9"}),
    )
    n = 200_000

    def plain() -> RequestRecord:
        return RequestRecord(id="req_x", created_at=0, endpoint="chat.completions", model="m")

    def traced() -> RequestRecord:
        record = RequestRecord(id="req_x", created_at=0, endpoint="chat.completions", model="m")
        record.snapshot = snapshot
        record.order = candidates
        return record

    def traced_with_skip() -> RequestRecord:
        record = traced()
        record.skip("p0", "circuit_open", 12.5)
        return record

    base = min(timeit.repeat(plain, number=n, repeat=5)) / n * 1e9
    hot = min(timeit.repeat(traced, number=n, repeat=5)) / n * 1e9
    skip = min(timeit.repeat(traced_with_skip, number=n, repeat=5)) / n * 1e9
    record = traced_with_skip()
    background = min(timeit.repeat(lambda: trace_document(record), number=n, repeat=5))
    print(f"request path: record {base:.0f} ns, with trace refs {hot:.0f} ns "
          f"(+{hot - base:.0f} ns), with one skipped candidate {skip:.0f} ns")  # fmt: skip
    print(f"recorder (background): trace_document {background / n * 1e9:.0f} ns per request")
    print(f"example: {trace_document(record)}")


if __name__ == "__main__":
    main()
