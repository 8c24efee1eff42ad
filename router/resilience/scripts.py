"""Running the shared-state Lua scripts: by hash, and the calls of one loop turn in one write.

Under load many requests check their limits at about the same moment. Sent one by one, each
check costs a socket write, a read and redis-py's per-command work in the proxy's one thread;
:class:`ScriptRunner` instead queues the calls made while the event loop runs its ready tasks
and sends them as one pipeline when that turn ends (``call_soon``): one write, one read, the same
answers. A lone call goes out alone, with no wait beyond the current turn. Each request still
makes one round trip; the round trips of concurrent requests are shared.

Scripts run with ``EVALSHA``; the first ``NOSCRIPT`` (a Redis that restarted, or never saw
them) loads every script and retries just the calls that were refused, which never ran.

Example::

    runner = ScriptRunner(redis, {"admit": lua.ADMIT})
    verdict = await runner.run("admit", keys, args)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

Call = tuple[str, Sequence[str], Sequence[Any], "asyncio.Future[Any]"]


class ScriptRunner:
    """Runs named Lua scripts on ``redis``, coalescing the calls of one event-loop turn."""

    def __init__(self, redis: Redis, scripts: Mapping[str, str]) -> None:
        self.redis = redis
        self.scripts = dict(scripts)
        # Redis names a script by the SHA-1 of its text (not a security use).
        self.shas = {
            name: hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
            for name, text in scripts.items()
        }
        self._pending: list[Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0  # pipelines sent (for tests and the bench)

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """The answer of script ``name``, sent when this loop turn ends. Cancelling the wait
        (a timeout) does not take the call back if it was already sent."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((name, keys, args, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            results = await self._execute(batch)
            refused = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if refused:
                await self._load()
                again = await self._execute([batch[i] for i in refused])
                for i, result in zip(refused, again, strict=True):
                    results[i] = result
        except BaseException as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError())
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller gave up waiting (timeout)
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list[Call]) -> list[Any]:
        self.batches += 1
        if len(batch) == 1:
            name, keys, args, _ = batch[0]
            try:
                return [
                    await self.redis.execute_command(  # type: ignore[no-untyped-call]
                        "EVALSHA", self.shas[name], len(keys), *keys, *args
                    )
                ]
            except NoScriptError as exc:
                return [exc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, keys, args, _ in batch:
                pipe.execute_command("EVALSHA", self.shas[name], len(keys), *keys, *args)
            found: list[Any] = await pipe.execute(raise_on_error=False)
            return found

    async def _load(self) -> None:
        for text in self.scripts.values():
            await self.redis.script_load(text)

    async def drain(self) -> None:
        """Wait until every queued call has been sent and answered."""
        while self._pending or self._sending:
            await asyncio.sleep(0)
            if self._sending:
                await asyncio.gather(*list(self._sending), return_exceptions=True)
