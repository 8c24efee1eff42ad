"""The echo adapter keeps provider-router's adapter contract (run with pytest)."""

from collections.abc import Awaitable, Callable

import pytest
from echo_adapter import EchoAdapter

from providers.base import AdapterOptions
from providers.testing import AdapterContract, opened

CONTRACT = AdapterContract(
    lambda fault: opened(EchoAdapter("echo", {"prefix": "echo: "}, AdapterOptions())),
    model="parrot",
)


@pytest.mark.parametrize("check", CONTRACT.checks(), ids=lambda check: check.__name__)
async def test_the_adapter_contract(check: Callable[[], Awaitable[None]]) -> None:
    await check()
