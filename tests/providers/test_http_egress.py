"""The providers' egress keys (proxy, caBundle, clientCert, http2) through the management API
and a chat completion: checked when written, applied to the upstream connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from providers.base import AdapterOptions
from providers.http import http_config_problems
from providers.openai import OpenAIAdapter
from router.errors import InvalidRequest
from tests.helpers import ADMIN, add_provider, app_client, make_settings
from tests.transport.servers import Certificates, ConnectProxy, RawServer, read_request

COMPLETION = orjson.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    }
)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


async def completion_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await read_request(reader) is not None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
            % (len(COMPLETION), COMPLETION)
        )


# -- checked when written -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"caBundle": "/nowhere/ca.pem"}, "Config key 'caBundle' names '/nowhere/ca.pem', which"),
        ({"clientCert": "/nowhere/c.pem"}, "Config key 'clientCert' names '/nowhere/c.pem', which"),
        ({"proxy": "socks5://p:1080"}, "Config key 'proxy' must be an http:// or https:// proxy"),
        ({"proxy": "proxy.internal:3128"}, "Config key 'proxy' must be an http:// or https://"),
        ({"proxy": "http://p:3128/path"}, "Config key 'proxy' must be a proxy's address"),
        ({"proxy": True}, "Config key 'proxy' must be a proxy URL, \"\" or false, got true."),
        ({"http2": "yes"}, "Config key 'http2' must be true or false, got 'yes'."),
    ],
)
async def test_bad_egress_config_is_refused_with_a_400(
    tmp_path: Path, config: dict[str, object], expected: str
) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        body = {"id": "up", "name": "up", "type": "openai",
                "config": {"baseURL": "https://up.test/v1", **config}}  # fmt: skip
        created = await client.post("/v1/providers", json=body, headers=ADMIN)
        assert created.status_code == 400, created.text
        error = created.json()["error"]
        assert expected in error["message"]
        assert error["param"] == "config"
        assert (await client.get("/v1/providers/up", headers=ADMIN)).status_code == 404


def test_a_file_that_is_not_pem_is_named(tmp_path: Path, certificates: Certificates) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    (problem,) = http_config_problems({"caBundle": str(junk)})
    assert problem.startswith(f"Config key 'caBundle' names '{junk}', which is not a PEM file")
    # A certificate without its key is not a client certificate.
    (problem,) = http_config_problems({"clientCert": str(certificates.ca)})
    assert "which is not a PEM file with a certificate and its key" in problem
    assert http_config_problems(
        {"caBundle": str(certificates.ca), "clientCert": str(certificates.client),
         "proxy": "http://user:pw@proxy.internal:3128", "http2": True}
    ) == []  # fmt: skip


def test_a_ca_bundle_removed_after_it_was_written_makes_a_clear_error(
    tmp_path: Path, certificates: Certificates
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(certificates.ca.read_bytes())
    config = {"baseURL": "https://internal.test/v1", "caBundle": str(bundle)}
    assert OpenAIAdapter.validate_config(config) == []
    bundle.unlink()
    with pytest.raises(InvalidRequest, match=f"names '{bundle}', which does not exist"):
        OpenAIAdapter("internal", config, AdapterOptions())


def test_a_proxy_password_is_not_echoed() -> None:
    (problem,) = http_config_problems({"proxy": "ftp://user:s3cret@proxy:21"})
    assert "s3cret" not in problem


# -- applied to the upstream connection ---------------------------------------------------------


async def test_chat_to_a_self_signed_upstream_works_once_ca_bundle_is_set(
    tmp_path: Path, certificates: Certificates
) -> None:
    async with (
        RawServer(completion_upstream, certificates.server_context()) as upstream,
        app_client(make_settings(tmp_path)) as (_, client),
    ):
        await add_provider(client, "internal", upstream.url + "/v1", ["m"])
        refused = await client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 502, refused.text
        assert "CERTIFICATE_VERIFY_FAILED" in refused.json()["error"]["message"]
        patched = await client.patch(
            "/v1/providers/internal/config/caBundle",
            json={"value": str(certificates.ca)},
            headers=ADMIN,
        )
        assert patched.status_code == 200, patched.text
        answer = await client.post("/v1/chat/completions", json=CHAT)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "hi"


async def test_chat_goes_through_the_configured_proxy_with_a_client_certificate(
    tmp_path: Path, certificates: Certificates
) -> None:
    demanding = certificates.server_context(require_client_cert=True)
    async with (
        RawServer(completion_upstream, demanding) as upstream,
        ConnectProxy() as proxy,
        app_client(make_settings(tmp_path)) as (_, client),
    ):
        config = {"proxy": proxy.url, "caBundle": str(certificates.ca),
                  "clientCert": str(certificates.client)}  # fmt: skip
        await add_provider(client, "internal", upstream.url + "/v1", ["m"], config=config)
        answer = await client.post("/v1/chat/completions", json=CHAT)
        shown = (await client.get("/v1/providers/internal/config", headers=ADMIN)).json()
    assert answer.status_code == 200, answer.text
    assert proxy.tunnels == [upstream.url.removeprefix("https://")]
    assert proxy.url not in str(shown)  # a proxy URL may hold a password: masked like a key
