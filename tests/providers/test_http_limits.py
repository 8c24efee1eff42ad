"""How the shared HTTP client names failures that are the proxy's own, and which credentials it
scrubs from a provider's answers (issue 16)."""

from __future__ import annotations

import errno
import os

import httpx
import pytest

from providers.http import credentials_in, translate_httpx_error
from router.errors import (
    LocalLimitReached,
    UpstreamConnectError,
    UpstreamResponseTooLarge,
    UpstreamTimeout,
)
from router.transport.limits import ResponseTooLarge

REQUEST = httpx.Request("POST", "http://upstream.test/v1/chat/completions")


def test_the_credentials_of_a_config_are_its_key_header_values_and_proxy_password() -> None:
    config = {
        "baseURL": "http://upstream.test/v1",
        "apiKey": "sk-the-key-1",
        "headers": {"x-org-token": "org-secret-2", "x-other": "plain"},
        "proxy": "http://user:proxy-pass-3@proxy.test:3128",
        "timeout": 1000,
    }
    assert credentials_in(config) == ["sk-the-key-1", "org-secret-2", "plain", "proxy-pass-3"]
    assert credentials_in({"baseURL": "http://x", "proxy": "http://proxy.test:3128"}) == []


def caused_by(exc: httpx.HTTPError, cause: BaseException) -> httpx.HTTPError:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        caused_by(httpx.ConnectError("x", request=REQUEST), OSError(errno.EMFILE, "Too many")),
        # httpx's own transport: httpx error <- httpcore error <- OSError
        caused_by(
            httpx.ConnectError("x", request=REQUEST),
            caused_by(httpx.ConnectError("inner"), OSError(errno.ENFILE, "table full")),
        ),
        httpx.ConnectError(f"[Errno {errno.ENOBUFS}] {os.strerror(errno.ENOBUFS)}"),
        httpx.PoolTimeout("Timed out waiting for a free connection.", request=REQUEST),
    ],
    ids=["EMFILE", "ENFILE-chained", "ENOBUFS-text", "pool"],
)
def test_local_resource_failures_are_the_proxys_own_limit(exc: httpx.HTTPError) -> None:
    error = translate_httpx_error("p1", exc)
    assert isinstance(error, LocalLimitReached)
    assert "'p1'" in error.message
    assert error.limit in {
        "open files (RLIMIT_NOFILE)", "socket buffers (kernel memory)", "upstream.max_connections",
    }  # fmt: skip


def test_provider_failures_stay_the_providers() -> None:
    refused = caused_by(httpx.ConnectError("x"), OSError(errno.ECONNREFUSED, "refused"))
    assert type(translate_httpx_error("p1", refused)) is UpstreamConnectError
    assert type(translate_httpx_error("p1", httpx.ReadTimeout("slow"))) is UpstreamTimeout
    too_large = translate_httpx_error("p1", ResponseTooLarge("the body is over the limit"))
    assert isinstance(too_large, UpstreamResponseTooLarge)
    assert too_large.code == "upstream_response_too_large"
