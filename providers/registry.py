"""Provider types by name: the built-in adapters plus any installed through entry points.

A third-party package adds a type by declaring an entry point in the ``provider_router.providers``
group whose value is an :class:`~providers.base.Adapter` subclass::

    [project.entry-points."provider_router.providers"]
    my-llm = "my_package.adapter:MyLLMAdapter"
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from providers.anthropic.adapter import AnthropicAdapter
from providers.base import Adapter
from providers.gemini.adapter import GeminiAdapter
from providers.ollama.adapter import OllamaAdapter
from providers.openai import LMStudioAdapter, OpenAIAdapter
from router.errors import InvalidRequest

ENTRY_POINT_GROUP = "provider_router.providers"
BUILTIN: dict[str, type[Adapter]] = {
    OpenAIAdapter.type: OpenAIAdapter,
    LMStudioAdapter.type: LMStudioAdapter,
    OllamaAdapter.type: OllamaAdapter,
    GeminiAdapter.type: GeminiAdapter,
    AnthropicAdapter.type: AnthropicAdapter,
}


@cache
def adapter_types() -> dict[str, type[Adapter]]:
    """Every known provider type, built-ins first; an entry point may not replace a built-in."""
    types = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in types:
            continue
        loaded = entry.load()
        if isinstance(loaded, type) and issubclass(loaded, Adapter):
            types[entry.name] = loaded
    return types


def get_adapter_class(type_name: str) -> type[Adapter]:
    """The adapter class for ``type_name``, or a 400 naming the known types."""
    types = adapter_types()
    try:
        return types[type_name]
    except KeyError:
        known = ", ".join(sorted(types))
        raise InvalidRequest(
            f"Unknown provider type {type_name!r}; known types: {known}.", param="type"
        ) from None
