"""A small TOML writer for what ``export`` prints: arrays of tables holding plain values.

The standard library reads TOML (tomllib) but does not write it; the export holds only strings,
numbers, booleans, lists and small tables, so this covers it without a new dependency.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(value: str) -> str:
    # A JSON string is a valid TOML basic string, apart from escapes TOML lacks ("\/" is never
    # produced by orjson) and DEL, which TOML requires escaped and JSON does not.
    return orjson.dumps(value).decode().replace("\x7f", "\\u007f")


def value(item: Any) -> str:
    """One TOML value (inline form for tables)."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if math.isnan(item) or math.isinf(item):
            raise ValueError("TOML export cannot hold NaN or infinity")
        return repr(item)
    if isinstance(item, str):
        return _string(item)
    if isinstance(item, list | tuple):
        return "[" + ", ".join(value(v) for v in item) + "]"
    if isinstance(item, dict):
        pairs = [f"{_key(k)} = {value(v)}" for k, v in item.items() if v is not None]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    raise TypeError(f"cannot write {type(item).__name__} as TOML")


def dumps(data: dict[str, list[dict[str, Any]]]) -> str:
    """``{"providers": [{...}], ...}`` as ``[[providers]]`` tables, ``None`` values left out."""
    lines: list[str] = []
    for name, tables in data.items():
        for table in tables:
            lines.append(f"[[{_key(name)}]]")
            for key, item in table.items():
                if item is not None:
                    lines.append(f"{_key(key)} = {value(item)}")
            lines.append("")
    return "\n".join(lines)
