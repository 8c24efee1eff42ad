"""An operator's day in a real browser: Chromium drives the UI of a real ``serve`` process that
routes to real fake-upstream processes."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.helpers import ADMIN_TOKEN, free_port, mock_upstream_process, start, wait_until_up

UPSTREAM_SECRET = "sk-browser-upstream-secret-9876"


@dataclass
class Gateway:
    url: str
    healthy: str  # a second healthy fake upstream, for the provider added in the UI
    pages: list[str]  # the HTML of every page the test saw, checked for secrets at the end


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    with ExitStack() as stack:
        failing = stack.enter_context(mock_upstream_process(tmp_path, "--fail", "status:503"))
        backup = stack.enter_context(mock_upstream_process(tmp_path))
        healthy = stack.enter_context(mock_upstream_process(tmp_path))
        port = free_port()
        config = tmp_path / "config.toml"
        config.write_text(
            "\n".join(
                [
                    f"[server]\nport = {port}",
                    f'[database]\nurl = "sqlite:///{tmp_path / "router.db"}"',
                    f'[auth]\nadmin_token = "{ADMIN_TOKEN}"',
                    "[ui]\nsign_in_delay_ms = 0",
                    "[recorder]\nflush_interval_ms = 5",
                    "[health]\ninterval_ms = 0",
                    "[breaker]\nfailure_threshold = 1000",
                    '[[providers]]\nid = "flaky"\nname = "Flaky"\ntype = "openai"\npriority = 10',
                    f'config = {{ baseURL = "{failing}/v1", apiKey = "{UPSTREAM_SECRET}" }}',
                    'models = ["m"]',
                    '[[providers]]\nid = "backup"\nname = "Backup"\ntype = "openai"\npriority = 0',
                    f'config = {{ baseURL = "{backup}/v1", apiKey = "{UPSTREAM_SECRET}" }}',
                    'models = ["m"]',
                ]
            )
        )
        server = start("serve", "--config", str(config), cwd=tmp_path)
        try:
            wait_until_up(f"http://127.0.0.1:{port}/health", server)
            yield Gateway(f"http://127.0.0.1:{port}", healthy, [])
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            if server.stdout:
                server.stdout.close()


def chat(gateway: Gateway, n: int) -> list[str]:
    """Send ``n`` chat completions through the proxy; the request ids, in order."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    ids = []
    for _ in range(n):
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        ids.append(answer.headers["x-request-id"])
    # The server records a request just after its last byte went out: wait for the rows, so a
    # page opened next shows them.
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    for request_id in ids:
        for _ in range(500):
            found = httpx.get(f"{gateway.url}/v1/requests/{request_id}", headers=admin)
            if found.status_code == 200:
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"request {request_id} was never recorded")
    return ids


def nav(page: Page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()


def seen(page: Page, gateway: Gateway) -> None:
    gateway.pages.append(page.content())


def test_an_operator_runs_the_gateway_from_the_ui(page: Page, gateway: Gateway) -> None:
    ui = f"{gateway.url}/ui"
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

    # Sign in: any page without a session leads to the sign-in form.
    page.goto(f"{ui}/providers")
    expect(page).to_have_url(f"{ui}/sign-in")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    # Add a provider with the form generated for its type, then link a model to it.
    nav(page, "Providers")
    page.get_by_role("link", name="Add a provider").click()
    page.get_by_label("Provider type").select_option("openai")
    page.get_by_label("Name", exact=True).fill("Primary")
    page.get_by_label("Id (optional; made from the name)").fill("primary")
    page.get_by_label("Priority (higher runs first)").fill("5")
    page.get_by_label("baseURL (required)").fill(f"{gateway.healthy}/v1")
    page.get_by_label("apiKey").fill(UPSTREAM_SECRET)
    page.get_by_role("button", name="Create provider").click()
    expect(page.get_by_role("status")).to_have_text("Provider created.")
    seen(page, gateway)
    nav(page, "Models")
    page.get_by_label("Provider", exact=True).select_option("primary")
    page.get_by_label("Model (created if new)").fill("m")
    page.get_by_role("button", name="Link model").click()
    expect(page.get_by_role("status")).to_have_text("Model linked.")
    expect(page.get_by_role("row", name=re.compile(r"^m primary 5 "))).to_be_visible()
    seen(page, gateway)

    # Test it: the result and its latency.
    page.goto(f"{ui}/providers/primary")
    page.get_by_role("button", name="Test").click()
    expect(page.locator("#test-result")).to_contain_text(re.compile(r"Test passed in [\d.]+ ms"))

    # Traffic: the failing top-priority provider falls back to the new one.
    ids = chat(gateway, 3)
    nav(page, "Overview")
    expect(page.locator("#total-requests")).to_have_text("3")
    expect(page.get_by_role("row", name=re.compile(r"^primary 3 "))).to_be_visible()
    seen(page, gateway)
    nav(page, "Requests")
    expect(page.get_by_role("link", name=ids[-1])).to_be_visible()
    page.get_by_role("link", name=ids[-1]).click()
    expect(page.locator("#answered-by")).to_have_text("primary")
    trace = page.locator("#trace tbody tr")
    expect(trace.nth(0)).to_contain_text("flaky")
    expect(trace.nth(0)).to_contain_text("503")
    expect(trace.nth(1)).to_contain_text("primary")
    expect(trace.nth(1)).to_contain_text("success (answered)")
    expect(trace.nth(2)).to_contain_text("backup")
    expect(trace.nth(2)).to_contain_text("not reached")
    seen(page, gateway)

    # Disable the provider: traffic moves to the backup.
    nav(page, "Providers")
    page.get_by_role("row", name=re.compile(r"^Primary")).get_by_role(
        "button", name="Disable"
    ).click()
    expect(page.get_by_role("status")).to_have_text("Provider disabled.")
    moved = chat(gateway, 2)
    page.goto(f"{ui}/requests?provider_id=backup")
    for request_id in moved:
        expect(page.get_by_role("link", name=request_id)).to_be_visible()
    expect(page.get_by_role("link", name=ids[0])).to_have_count(0)
    seen(page, gateway)

    # A client key: shown once, then revoked (the confirmation dialog is accepted).
    nav(page, "Client keys")
    page.get_by_label("Name").fill("ci")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("New client key").input_value()
    assert key.startswith("pr-")
    nav(page, "Client keys")
    assert key not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("row", name=re.compile(r"^ci ")).get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_have_text("Client key revoked.")
    expect(page.get_by_role("row", name=re.compile(r"^ci "))).to_contain_text("revoked")
    refused = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Bearer {key}"},
    )
    assert refused.status_code == 401

    # Settings: where each value came from, secrets masked.
    nav(page, "Settings")
    expect(page.get_by_role("row", name=re.compile(r"^auth\.admin_token "))).to_contain_text("file")
    seen(page, gateway)

    # Sign out: the session is gone.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{ui}/sign-in")
    page.goto(f"{ui}/")
    expect(page).to_have_url(f"{ui}/sign-in")

    assert problems == []  # no CSP violation, no script error
    for html in gateway.pages:
        assert UPSTREAM_SECRET not in html
        assert ADMIN_TOKEN not in html
