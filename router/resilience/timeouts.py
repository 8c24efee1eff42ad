"""The four timeouts of one upstream attempt, per provider with global defaults.

* ``connectTimeout``: TCP (and TLS) connect; applied by the provider's HTTP client.
* ``firstByteTimeout``: from sending the request to the first answer event (for a non-streamed
  answer: to the whole answer). Running out falls back to the next candidate.
* ``idleTimeout``: the longest gap between two streamed chunks.
* ``totalTimeout``: the whole attempt, stream included.

After the first byte reached the client a timeout cannot fall back any more: the stream ends with
an OpenAI-shaped error event and the attempt is recorded as ``timeout``. Config values are in
milliseconds, like every duration in provider config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Provider config key -> Timeouts field
CONFIG_KEYS = {
    "firstByteTimeout": "first_byte_s",
    "idleTimeout": "idle_s",
    "totalTimeout": "total_s",
}


@dataclass(frozen=True)
class Timeouts:
    """Seconds, as asyncio wants them."""

    first_byte_s: float = 120.0
    idle_s: float = 60.0
    total_s: float = 600.0

    def for_provider(self, config: Mapping[str, Any]) -> Timeouts:
        """These defaults, overridden by the provider's own config keys (ms)."""
        values = {
            name: config[key] / 1000
            for key, name in CONFIG_KEYS.items()
            if isinstance(config.get(key), int) and not isinstance(config[key], bool)
        }
        return Timeouts(**{**self.__dict__, **values}) if values else self
