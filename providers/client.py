"""Deprecated: moved to :mod:`providers.http`. Kept for one release."""

from providers.moved import moved_to

__getattr__ = moved_to("providers.http", old=__name__)
