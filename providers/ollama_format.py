"""Deprecated: moved to :mod:`providers.ollama.convert`. Kept for one release."""

from providers.moved import moved_to

__getattr__ = moved_to("providers.ollama.convert", old=__name__)
