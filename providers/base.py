"""The adapter interface: how provider-router talks to one upstream.

An adapter translates an OpenAI-shaped request into its upstream's format, sends it, and
translates the answer (or the stream) back into OpenAI's format. That is all: retries, fallback,
cooldowns, limits and recording belong to the router. One adapter instance serves one provider
and owns that provider's HTTP connection pool.

Failures are raised as :mod:`router.errors` ``Upstream*`` exceptions, chained ``from`` the
httpx error they came from, with messages that never contain a credential.

A minimal adapter::

    class EchoAdapter(Adapter):
        type = "echo"
        config_keys = {"baseURL": ConfigKey(str, required=True)}

        async def chat(self, body, upstream_model):
            ...  # return a Reply holding an OpenAI chat.completion body
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from router.errors import UpstreamUnsupported
from router.transport.limits import ResponseLimits


@dataclass(frozen=True)
class ConfigKey:
    """One provider config key an adapter understands."""

    kind: type | tuple[type, ...]
    required: bool = False
    sensitive: bool = False
    default: Any = None
    description: str = ""


# Keys every provider type accepts because the router, not the adapter, acts on them
# (router/resilience/timeouts.py, router/gateway/health.py); connectTimeout is applied by the
# HTTP client.
ROUTER_CONFIG_KEYS: Mapping[str, ConfigKey] = {
    "connectTimeout": ConfigKey(int, description="TCP/TLS connect timeout in milliseconds"),
    "firstByteTimeout": ConfigKey(int, description="ms until the first answer event"),
    "idleTimeout": ConfigKey(int, description="longest gap between stream chunks in ms"),
    "totalTimeout": ConfigKey(int, description="ms for a whole attempt, stream included"),
    "healthCheck": ConfigKey(bool, description="probe in the background (default: local types)"),
}


@dataclass(frozen=True)
class AdapterOptions:
    """Router-wide defaults an adapter applies when its provider's config does not say."""

    timeout_ms: int = 120_000
    connect_timeout_ms: int = 10_000
    max_connections: int = 256
    # How long a request waits for a free connection (one of max_connections) to its upstream.
    pool_timeout_ms: int = 10_000
    response_limits: ResponseLimits = field(default_factory=ResponseLimits)


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    @classmethod
    def from_openai(cls, data: Any) -> Usage | None:
        if not isinstance(data, dict):
            return None

        def count(key: str) -> int | None:
            value = data.get(key)
            plausible = (
                isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53
            )
            return value if plausible else None

        return cls(count("prompt_tokens"), count("completion_tokens"), count("total_tokens"))


@dataclass
class Reply:
    """A complete (non-streamed) answer, already in OpenAI's format."""

    body: bytes
    usage: Usage | None = None
    status_code: int = 200
    content_type: str = "application/json"


async def _no_events() -> AsyncIterator[bytes]:
    return
    yield b""  # makes this an (empty) async generator


@dataclass
class ChatStream:
    """A streamed answer in OpenAI's SSE format.

    Iterating yields blocks of complete ``data: {...}\\n\\n`` events, without the final
    ``data: [DONE]`` (the router writes that). Iteration ends normally only when the upstream
    finished its stream properly; a stream that breaks off raises ``UpstreamProtocolError``.
    ``usage`` is filled in when the upstream reports it, whether or not the client sees it.
    """

    events: AsyncIterator[bytes] = field(default_factory=lambda: _no_events())
    usage: Usage | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.events

    async def aclose(self) -> None:
        aclose = getattr(self.events, "aclose", None)
        if aclose is not None:
            await aclose()


def _is_kind(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):  # bool is an int subclass; 'true' is no timeout
        return bool in kinds
    return isinstance(value, kinds)


def _shown(value: Any, sensitive: bool) -> str:
    """The value a user typed, for an error: quoted and cut short; a secret only by its kind."""
    if sensitive:
        return f"a {type(value).__name__} (not shown: the key is sensitive)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _not_positive(value: Any) -> bool:
    return isinstance(value, int) and value <= 0


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", dict: "a table/object"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


class Adapter(ABC):
    """Base class of every provider adapter. Subclasses set ``type`` and ``config_keys``."""

    type: ClassVar[str]
    config_keys: ClassVar[Mapping[str, ConfigKey]] = {}
    # The client dialects this adapter can pass through untranslated (see send_native); an
    # adapter whose config decides may set its own in __init__.
    native_dialects: frozenset[str] = frozenset()

    # Whether the upstream refuses every call without an ``apiKey`` (Anthropic, Gemini): the CLI
    # then refuses to add such a provider enabled without one.
    requires_api_key: ClassVar[bool] = False

    def __init__(self, provider_id: str, config: Mapping[str, Any], options: AdapterOptions):
        self.provider_id = provider_id
        self.config = dict(config)
        self.options = options

    @classmethod
    def needs_api_key(cls, config: Mapping[str, Any]) -> bool:
        """Whether a provider with this ``config`` cannot work without an ``apiKey``."""
        return cls.requires_api_key

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, partial: bool = False) -> list[str]:
        """Return sentences describing what is wrong with ``config`` (empty when it is fine).

        ``partial`` skips the check for missing required keys (for single-key updates).
        """
        problems = []
        for key, value in config.items():
            spec = cls.config_keys.get(key) or ROUTER_CONFIG_KEYS.get(key)
            if spec is None:
                known = ", ".join(sorted({*cls.config_keys, *ROUTER_CONFIG_KEYS}))
                problems.append(
                    f"Provider type {cls.type!r} has no config key {key!r} (known keys: {known})."
                )
            elif value is not None and not _is_kind(value, spec.kind):
                problems.append(
                    f"Config key {key!r} must be {_kind_name(spec.kind)}, "
                    f"got {_shown(value, spec.sensitive)}."
                )
            elif spec.kind is int and key in ROUTER_CONFIG_KEYS and _not_positive(value):
                problems.append(f"Config key {key!r} is in milliseconds and must be > 0.")
        if not partial:
            for key, spec in cls.config_keys.items():
                if spec.required and config.get(key) in (None, ""):
                    problems.append(f"Provider type {cls.type!r} needs config key {key!r}.")
        return problems

    @abstractmethod
    async def chat(self, body: dict[str, Any], upstream_model: str) -> Reply:
        """Send a non-streamed chat completion; ``body`` is the client's OpenAI request."""

    @abstractmethod
    async def chat_stream(
        self, body: dict[str, Any], upstream_model: str, *, include_usage: bool
    ) -> ChatStream:
        """Start a streamed chat completion. Raise before returning if the upstream refuses.

        ``include_usage``: whether the client asked for the usage chunk.
        """

    async def send_native(
        self,
        dialect: str,
        body: dict[str, Any],
        upstream_model: str,
        headers: Mapping[str, str],
        *,
        stream: bool,
    ) -> Reply | ChatStream:
        """Optional: send a client's request that is already in the upstream's own dialect.

        Called only for a dialect in ``native_dialects`` (``"anthropic.messages"`` for a
        Messages request to an Anthropic upstream, say). ``body`` is the client's body: send it
        with only ``model`` replaced by ``upstream_model``, with ``headers`` (client headers the
        dialect forwards) added. Answer with the upstream's bytes untouched, a :class:`Reply`
        or a :class:`ChatStream` whose blocks are the upstream's events (the stream ends
        normally only after the dialect's terminal event), reading usage on the way. Errors as
        for :meth:`chat`; an ``UpstreamStatusError`` keeps the upstream's own body.
        """
        raise UpstreamUnsupported(
            f"Provider {self.provider_id!r} (type {self.type!r}) does not speak {dialect!r}."
        )

    async def count_tokens(self, body: dict[str, Any], upstream_model: str) -> int:
        """Optional: the input tokens of the OpenAI chat request ``body``, counted upstream."""
        raise UpstreamUnsupported(
            f"Provider {self.provider_id!r} (type {self.type!r}) cannot count tokens."
        )

    async def embeddings(self, body: dict[str, Any], upstream_model: str) -> Reply:
        """Create embeddings; the answer is in OpenAI's embeddings shape."""
        raise UpstreamUnsupported(
            f"Provider {self.provider_id!r} (type {self.type!r}) does not serve embeddings."
        )

    async def list_models(self) -> list[str]:
        """The model ids the upstream offers (for ``/test`` and ``provider models --remote``)."""
        raise UpstreamUnsupported(
            f"Provider {self.provider_id!r} (type {self.type!r}) cannot list its models."
        )

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections. Called when the provider changes or the router stops."""
