"""The layout rules that the import-linter contracts in pyproject.toml cannot express.

No private name crosses a module boundary: a module uses another module's ``_name`` neither by
``from x import _name`` nor as ``x._name``. What a second module needs is public API, with a
docstring, or it moves to where it is used. The check reads the source (no import), so it also
covers ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("router", "providers", "tests", "bench", "examples")
# Files allowed a private cross-module use, each with the reason; each entry must still hold one
# (the check below fails otherwise), so the list only shrinks. Empty: none is allowed.
KNOWN: set[str] = set()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _first_party(module: str) -> bool:
    return module.split(".")[0] in FIRST_PARTY


def private_uses(source: str) -> list[str]:
    """Every use of another first-party module's private name in ``source``, as text."""
    tree = ast.parse(source)
    found: list[str] = []
    modules: dict[str, str] = {}  # local name -> first-party module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not _first_party(node.module):
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"from {node.module} import {alias.name} (line {node.lineno})")
                modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _first_party(alias.name):
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = _dotted(node.value)
            if owner and owner.split(".")[0] in modules:
                found.append(f"{owner}.{node.attr} (line {node.lineno})")
    return found


def _dotted(node: ast.expr) -> str:
    """``a.b.c`` for a chain of plain attributes on a name, else ``""``."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    return ".".join([node.id, *reversed(parts)])


def _sources() -> list[Path]:
    return sorted(
        path
        for top in FIRST_PARTY
        for path in (ROOT / top).rglob("*.py")
        if ".venv" not in path.parts
    )


def test_no_private_name_crosses_a_module_boundary() -> None:
    offenders = {
        str(path.relative_to(ROOT)): uses
        for path in _sources()
        if (uses := private_uses(path.read_text(encoding="utf-8")))
    }
    unexpected = {path: uses for path, uses in offenders.items() if path not in KNOWN}
    assert unexpected == {}
    assert set(offenders) >= KNOWN, f"clean now, drop from KNOWN: {KNOWN - set(offenders)}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from router.store.db import _x\n", ["from router.store.db import _x (line 1)"]),
        ("from router.store import db\ndb._x\n", ["db._x (line 2)"]),
        ("import router.store.db\nrouter.store.db._x\n", ["router.store.db._x (line 2)"]),
        ("import providers.http as h\nh._y()\n", ["h._y (line 2)"]),
        # Our own names, the dunders and other packages' names are not the rule's business.
        ("_x = 1\nclass A:\n    _y = 2\nA._y\n", []),
        ("from router import __version__\nimport argparse\nargparse._SubParsersAction\n", []),
        ("def f(self):\n    return self._state\n", []),
    ],
)
def test_the_check_finds_what_it_should(source: str, expected: list[str]) -> None:
    assert private_uses(source) == expected
