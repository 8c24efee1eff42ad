"""Stored responses in a real SQLite file: chains, owners, pruning, and the keeper's pending
writes."""

from __future__ import annotations

from typing import Any

from router.doors.responses_keeper import ResponseKeeper
from router.store import responses
from router.store.db import Database
from router.store.responses import EVERY_OWNER, StoredResponse
from tests.helpers import query


def stored(
    response_id: str, created_at: int = 1, owner: str | None = "key_a", previous: str | None = None
) -> StoredResponse:
    item: dict[str, Any] = {"type": "message", "id": f"msg_{response_id}", "role": "user",
                            "content": response_id}  # fmt: skip
    return StoredResponse(
        id=response_id, created_at=created_at, client_key_id=owner, request_id="req_1",
        model="m", status="completed", previous_response_id=previous, input_items=[item],
        response={"id": response_id, "output": []},
    )  # fmt: skip


async def test_a_conversation_is_read_back_oldest_first(db: Database) -> None:
    for one in (stored("r1"), stored("r2", previous="r1"), stored("r3", previous="r2")):
        await responses.save_response(db, one)
    chain = await responses.conversation(db, "r3", "key_a")
    assert [r.id for r in chain] == ["r1", "r2", "r3"]
    assert [r.id for r in await responses.conversation(db, "r3", EVERY_OWNER)] == [
        "r1", "r2", "r3"
    ]  # fmt: skip
    assert await responses.conversation(db, "r3", "key_b") == []
    assert await responses.conversation(db, "missing", EVERY_OWNER) == []
    await responses.delete_response(db, "r2", "key_a")
    assert [r.id for r in await responses.conversation(db, "r3", "key_a")] == ["r3"]


async def test_only_the_owner_or_every_owner_sees_or_deletes(db: Database) -> None:
    await responses.save_response(db, stored("r1"))
    assert await responses.get_response(db, "r1", "key_b") is None
    assert await responses.get_response(db, "r1", None) is None
    found = await responses.get_response(db, "r1", "key_a")
    assert found is not None and found.input_items[0]["content"] == "r1"
    assert await responses.delete_response(db, "r1", "key_b") is False
    assert await responses.delete_response(db, "r1", EVERY_OWNER) is True
    assert await responses.get_response(db, "r1", EVERY_OWNER) is None


async def test_prune_before_deletes_older_responses_in_batches(db: Database) -> None:
    for n in range(7):
        await responses.save_response(db, stored(f"old{n}", created_at=1000 + n))
    await responses.save_response(db, stored("new", created_at=5000))
    assert await responses.prune_before(db, 2000, batch=3) == 7
    assert query(db, "SELECT id FROM responses") == [("new",)]
    assert await responses.prune_before(db, 2000, batch=3) == 0


async def test_the_keeper_answers_from_memory_until_written(db: Database) -> None:
    keeper = ResponseKeeper(db)
    keeper.keep(stored("r1"))
    keeper.keep(stored("r2", previous="r1"))
    assert "r2" in keeper.pending  # not written yet: read from memory
    assert [r.id for r in await keeper.conversation("r2", "key_a")] == ["r1", "r2"]
    assert await keeper.get("r2", "key_b") is None
    await keeper.stop()
    assert keeper.pending == {} and keeper.failed == 0
    assert sorted(query(db, "SELECT id FROM responses")) == [("r1",), ("r2",)]
    keeper.keep(stored("r3", previous="r2"))  # a chain half in memory, half on disk
    assert [r.id for r in await keeper.conversation("r3", "key_a")] == ["r1", "r2", "r3"]
    assert await keeper.delete("r3", "key_a") is True  # waits for the write, then deletes
    assert await keeper.get("r3", EVERY_OWNER) is None
