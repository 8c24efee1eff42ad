"""Where stored responses wait to be written, so the request path never waits for the database.

:meth:`ResponseKeeper.keep` puts a finished response in memory and writes it in a background
task; every read (``previous_response_id``, ``GET /v1/responses/{id}``) looks in memory first,
so a client that continues or fetches a response the moment it was answered finds it.
:meth:`ResponseKeeper.stop` writes whatever is still pending at shutdown.
"""

from __future__ import annotations

import asyncio
import logging

from router.store import responses
from router.store.db import Database
from router.store.responses import MAX_CHAIN, Owner, StoredResponse

log = logging.getLogger("provider_router.responses")


class ResponseKeeper:
    """Stored responses of one process: written in the background, read back at once."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: dict[str, StoredResponse] = {}
        self._writes: dict[str, asyncio.Task[None]] = {}
        self.failed = 0

    def keep(self, stored: StoredResponse) -> None:
        """Store ``stored``: readable at once, written to the database in the background."""
        self.pending[stored.id] = stored
        task = asyncio.get_running_loop().create_task(self._write(stored))
        self._writes[stored.id] = task

    async def _write(self, stored: StoredResponse) -> None:
        try:
            await responses.save_response(self.db, stored)
        except Exception:
            self.failed += 1
            log.exception("Could not store response %s", stored.id)
        finally:
            self.pending.pop(stored.id, None)
            self._writes.pop(stored.id, None)

    async def get(self, response_id: str, owner: Owner) -> StoredResponse | None:
        found = self.pending.get(response_id)
        if found is not None:
            return found if found.visible_to(owner) else None
        return await responses.get_response(self.db, response_id, owner)

    async def conversation(self, response_id: str, owner: Owner) -> list[StoredResponse]:
        """``response_id`` and the responses before it, oldest first (empty: not found)."""
        newest_first: list[StoredResponse] = []
        current: str | None = response_id
        while current is not None and current in self.pending and len(newest_first) < MAX_CHAIN:
            stored = self.pending[current]
            if not stored.visible_to(owner):
                break
            newest_first.append(stored)
            current = stored.previous_response_id
        else:
            if current is not None and len(newest_first) < MAX_CHAIN:
                older = await responses.conversation(self.db, current, owner)
                return older + newest_first[::-1]
        return newest_first[::-1]

    async def delete(self, response_id: str, owner: Owner) -> bool:
        write = self._writes.get(response_id)
        if write is not None:
            await asyncio.shield(write)  # delete what was written, not race the write
        return await responses.delete_response(self.db, response_id, owner)

    async def stop(self) -> None:
        """Wait for every pending write."""
        while self._writes:
            await asyncio.gather(*list(self._writes.values()), return_exceptions=True)
