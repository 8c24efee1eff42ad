"""Old import paths of the adapter API, kept working for one release.

Third-party adapters import from ``providers.*``. When a module moves, its old name stays as a
thin module whose attributes come from the new place, each lookup with a ``DeprecationWarning``
that names the new path::

    # providers/client.py
    __getattr__ = moved_to("providers.http", old=__name__)
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_to(new: str, *, old: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves ``old``'s names from module ``new``, with a warning."""

    def __getattr__(name: str) -> Any:
        # Only the public names moved as API; a private one was never part of it.
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(importlib.import_module(new), name)
        warnings.warn(
            f"{old}.{name} has moved to {new}.{name}; the old path goes away in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__
