"""Deprecated: moved to :mod:`providers.gemini.convert`. Kept for one release."""

from providers.moved import moved_to

__getattr__ = moved_to("providers.gemini.convert", old=__name__)
