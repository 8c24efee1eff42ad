"""The deterministic content every fake answers with: the same words in every API's shape."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

WORDS = ("mock", "reply", "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf")


@functools.lru_cache(maxsize=64)
def answer_pieces(n: int) -> tuple[str, ...]:
    """The ``n`` tokens of an answer ("mock", " reply", " alpha", ...)."""
    # Leading spaces, like real tokens, so a cut answer ("mock reply") stays tidy.
    words = [WORDS[i % len(WORDS)] for i in range(n)]
    return (words[0], *(" " + w for w in words[1:]))


def count_words(messages: list[Any]) -> int:
    """The prompt's token count as the fakes report it: words of every text content (at least 1)."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"].split())
    return max(total, 1)


def embed(text: str) -> list[float]:
    """A stable 8-dimensional vector for ``text``."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest]
