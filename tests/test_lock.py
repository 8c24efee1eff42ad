"""requirements.lock (what the container installs, with hashes) agrees with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, tuple[str, list[str]]]:
    text = (ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        pin, *options = line.split()
        name, version = pin.split("==")
        found[norm(name)] = (version, [o.removeprefix("--hash=sha256:") for o in options])
    return found


def test_every_runtime_dependency_is_locked_at_its_pyproject_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = locked()
    for requirement in project["dependencies"]:
        spec = requirement.split(";")[0].strip()
        name, version = spec.split("==")
        assert norm(name) in lock, (
            f"{name} is missing from requirements.lock: run scripts/lock-deps"
        )
        assert lock[norm(name)][0] == version, f"{name}: pyproject {version}, lock {lock[name][0]}"


def test_every_locked_package_carries_sha256_hashes() -> None:
    lock = locked()
    assert {"anyio", "h11", "httpcore", "cffi"} <= set(lock)  # the transitive tree is there too
    for name, (_, hashes) in lock.items():
        assert hashes, f"{name} has no hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name


def test_the_image_installs_from_the_lock_with_hashes_required() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
