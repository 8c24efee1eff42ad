"""Checks for management input. Each failure is an :class:`InvalidRequest` naming the field."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from router.errors import InvalidRequest

SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}$")


def is_digits(value: str) -> bool:
    """True for a query value that is a plain non-negative integer of at most 16 digits."""
    # str.isdigit() also accepts digits such as "²" that int() refuses.
    return value.isascii() and value.isdigit() and len(value) <= 16


def object_body(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data


def only_fields(data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidRequest(
            f"Unknown field {unknown[0]!r}; allowed fields: {', '.join(sorted(allowed))}.",
            param=unknown[0],
        )


def text(data: Mapping[str, Any], key: str, *, required: bool = False, max_len: int = 200) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"Field {key!r} is required.", param=key)
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidRequest(f"Field {key!r} must be a non-empty string.", param=key)
    if len(value) > max_len:
        raise InvalidRequest(f"Field {key!r} is longer than {max_len} characters.", param=key)
    return value


def integer(data: Mapping[str, Any], key: str, *, minimum: int | None = None) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"Field {key!r} must be an integer, got {value!r}.", param=key)
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"Field {key!r} must be at least {minimum}, got {value}.", param=key)
    if abs(value) > 2**53:
        raise InvalidRequest(f"Field {key!r} is out of range.", param=key)
    return value


def number(data: Mapping[str, Any], key: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise InvalidRequest(f"Field {key!r} must be a number >= 0, got {value!r}.", param=key)
    if value > 1e9:
        raise InvalidRequest(f"Field {key!r} is out of range.", param=key)
    return float(value)


def boolean(data: Mapping[str, Any], key: str) -> Any:
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"Field {key!r} must be true or false, got {value!r}.", param=key)
    return value


def slug(value: Any, key: str) -> str:
    if not isinstance(value, str) or not SLUG.match(value):
        raise InvalidRequest(
            f"Field {key!r} must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a "
            f"letter or digit; got {value!r}.",
            param=key,
        )
    return value


def model_id(value: Any, key: str) -> str:
    if not isinstance(value, str) or not MODEL_ID.match(value):
        raise InvalidRequest(
            f"Field {key!r} must be a model id of letters, digits and . _ : @ / + -, "
            f"got {value!r}.",
            param=key,
        )
    return value


def slugify(name: str) -> str:
    value = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64]
    return value or "provider"


def limits(data: Mapping[str, Any], key: str = "limits") -> Any:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f'Field {key!r} must be an object like {{"rpm": 60}}.', param=key)
    only_fields(value, ("rpm", "rpd", "tpm"))
    for name in value:
        integer(value, name, minimum=1)
    return value
