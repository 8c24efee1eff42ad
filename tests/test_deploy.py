"""deploy/: the compose file and nginx config hang together.

No container engine runs here, so this reads the files the way compose and nginx would and checks
that every piece references the others consistently: the replicas reach the PostgreSQL and Redis
services by name with the credentials those services are given, share one admin token and one
secret key, nginx balances over exactly the replicas on the port they listen on, and every
variable compose requires is in env.example.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
VARIABLE = re.compile(r"\$\{([A-Z_]+)(?::\?[^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def replicas(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [None])[0] == "serve"
    }


def variables(value: str) -> list[str]:
    return VARIABLE.findall(value)


def test_two_or_more_replicas_run_one_image_with_the_same_settings(
    compose: dict[str, Any],
) -> None:
    found = replicas(compose)
    assert len(found) >= 2
    environments = [service["environment"] for service in found.values()]
    assert all(env == environments[0] for env in environments)
    assert len({service["image"] for service in found.values()}) == 1
    for service in found.values():
        assert service["build"]["context"] == ".."
        assert (DEPLOY / service["build"]["context"] / "Dockerfile").exists()
        assert service["command"][service["command"].index("--host") + 1] == "0.0.0.0"


def test_the_shared_secrets_come_from_the_env_file_not_the_compose_file(
    compose: dict[str, Any],
) -> None:
    env = next(iter(replicas(compose).values()))["environment"]
    for name in ("PROVIDER_ROUTER_ADMIN_TOKEN", "PROVIDER_ROUTER_SECRET_KEY"):
        assert variables(env[name]) == [name], f"{name} must be ${{{name}}}, shared by all"
    assert env["PROVIDER_ROUTER_REQUIRE_CLIENT_KEYS"] == "true"  # they listen on 0.0.0.0
    example = example_values()
    text = (DEPLOY / "compose.yaml").read_text()
    assert set(VARIABLE.findall(text)) == set(example)


def example_values() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )


def interpolated(value: str) -> str:
    """``value`` as compose passes it on, with env.example's values in place."""
    values = example_values()
    return VARIABLE.sub(lambda m: values[m.group(1)], value)


def test_the_replicas_reach_postgres_with_its_own_credentials(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres = services["postgres"]["environment"]
    assert variables(postgres["POSTGRES_PASSWORD"]) == ["POSTGRES_PASSWORD"]
    for service in replicas(compose).values():
        raw = service["environment"]["PROVIDER_ROUTER_DATABASE_URL"]
        assert variables(raw) == ["POSTGRES_PASSWORD"]
        url = urlsplit(interpolated(raw))
        assert url.scheme == "postgresql"
        assert url.hostname == "postgres" and url.hostname in services
        assert url.port == 5432
        assert url.username == postgres["POSTGRES_USER"]
        assert url.path == f"/{postgres['POSTGRES_DB']}"
        assert url.password == interpolated(postgres["POSTGRES_PASSWORD"])
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_the_replicas_share_one_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for service in replicas(compose).values():
        url = urlsplit(service["environment"]["PROVIDER_ROUTER_REDIS_URL"])
        assert url.scheme == "redis"
        assert url.hostname == "redis" and url.hostname in services
        assert url.port == 6379
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["redis"]["healthcheck"]["test"][-1] == "ping"


def test_nginx_balances_over_exactly_the_replicas(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    mount = next(v for v in nginx["volumes"] if v.endswith(":/etc/nginx/nginx.conf:ro"))
    conf = (DEPLOY / mount.split(":")[0]).read_text()
    upstream = re.search(r"upstream (\w+) \{(.*?)\}", conf, re.DOTALL)
    assert upstream is not None
    servers = re.findall(r"^\s*server ([\w.-]+):(\d+)", upstream.group(2), re.MULTILINE)
    found = replicas(compose)
    assert {name for name, _ in servers} == set(found)
    for name, port in servers:
        command = found[name]["command"]
        assert command[command.index("--port") + 1] == port
        assert port in found[name]["expose"]
        assert set(nginx["depends_on"]) >= {name}
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    listen = re.search(r"listen (\d+);", conf)
    assert listen is not None
    assert any(p.endswith(f":{listen.group(1)}") for p in nginx["ports"])
    # Streams pass through at once, and an answer may take the router's own total timeout.
    assert "proxy_buffering off;" in conf
    assert "proxy_read_timeout 600s;" in conf
