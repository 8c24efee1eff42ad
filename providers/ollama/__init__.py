"""The ``ollama`` provider type: ``adapter`` speaks HTTP, ``convert`` translates formats."""

from providers.ollama.adapter import OllamaAdapter

__all__ = ["OllamaAdapter"]
