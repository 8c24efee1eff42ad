"""The ``anthropic`` provider type: ``adapter`` speaks HTTP, ``convert`` translates formats."""

from providers.anthropic.adapter import AnthropicAdapter

__all__ = ["AnthropicAdapter"]
