"""The ``gemini`` provider type: ``adapter`` speaks HTTP, ``convert`` translates formats."""

from providers.gemini.adapter import GeminiAdapter

__all__ = ["GeminiAdapter"]
