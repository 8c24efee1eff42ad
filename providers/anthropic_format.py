"""Deprecated: moved to :mod:`providers.anthropic.convert`. Kept for one release."""

from providers.moved import moved_to

__getattr__ = moved_to("providers.anthropic.convert", old=__name__)
