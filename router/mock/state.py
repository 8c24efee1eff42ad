"""What the four API fakes of one fake upstream share: options, the request log and the faults."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from router.mock.faults import Faults
from router.mock.options import MockOptions, ReceivedRequest


class MockState:
    """The fake's mutable state: ``options`` (replaceable at runtime), the request log
    (``requests``, trimmed past ``log_limit``) and the :class:`Faults` every route injects."""

    def __init__(
        self,
        options: MockOptions | None = None,
        *,
        seed: int | None = None,
        log_limit: int = 10_000,
    ) -> None:
        self.options = options if options is not None else MockOptions()
        self.requests: list[ReceivedRequest] = []
        self.log_limit = log_limit  # the benchmark sends far more requests than anyone reads
        self.faults = Faults(seed)

    async def record(self, request: Request) -> Any:
        """Log ``request``; return its parsed JSON body (None when absent or not JSON)."""
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if self.log_limit > 0:
            if len(self.requests) >= self.log_limit:
                del self.requests[: max(1, self.log_limit // 10)]  # amortised trimming
            self.requests.append(
                ReceivedRequest(request.method, request.url.path, dict(request.headers), body)
            )
        return body

    def release_hangs(self) -> int:
        """Make requests held by ``fail="hang"`` answer now; return how many (any thread)."""
        return self.faults.release_hangs()
