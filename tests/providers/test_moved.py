"""Old import paths of the adapter API keep working for one release, with a warning."""

from __future__ import annotations

import importlib

import pytest

import providers.anthropic.convert
import providers.gemini.convert
import providers.http
import providers.ollama.convert

MOVED = [
    ("providers.client", providers.http, "client_from_config"),
    ("providers.anthropic_format", providers.anthropic.convert, "messages_request"),
    ("providers.gemini_translate", providers.gemini.convert, "gemini_request"),
    ("providers.ollama_format", providers.ollama.convert, "chat_request"),
]


@pytest.mark.parametrize(("old", "new", "name"), MOVED)
def test_an_old_path_serves_the_new_object_and_says_where_it_went(
    old: str, new: object, name: str
) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} has moved to {new.__name__}"):  # type: ignore[attr-defined]
        value = getattr(module, name)
    assert value is getattr(new, name)


def test_a_name_that_never_existed_is_still_an_attribute_error() -> None:
    module = importlib.import_module("providers.client")
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_a_private_name_is_not_served_through_an_old_path() -> None:
    # Only public names moved as API; the new module's private helpers stay private.
    new = vars(providers.anthropic.convert)
    private = [n for n in new if n.startswith("_") and not n.startswith("__")]
    assert private, "the check needs a private name in the new module"
    module = importlib.import_module("providers.anthropic_format")
    with pytest.raises(AttributeError):
        getattr(module, private[0])
