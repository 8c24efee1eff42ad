"""The admin UI in process: sign-in and its safety rules, forms that go through the service layer,
the overview, the request log and a routing trace."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from router.mock.upstream import MockOptions, MockUpstream
from router.settings import Settings
from router.ui.web import CSP
from tests.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    add_provider,
    app_client,
    make_settings,
    query,
    serve_asgi,
)

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def sign_in(client: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> httpx.Response:
    form = await client.get("/ui/sign-in")
    nonce = CSRF.search(form.text)
    assert nonce is not None
    return await client.post("/ui/sign-in", data={"csrf": nonce.group(1), "token": token})


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found is not None
    return found.group(1)


async def test_no_session_redirects_to_sign_in_and_pages_carry_the_safety_headers(
    tmp_path: Path,
) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        for path in ("/ui/", "/ui/providers", "/ui/requests", "/ui/settings", "/ui/keys"):
            response = await client.get(path)
            assert response.status_code == 303
            assert response.headers["location"] == "/ui/sign-in"
        response = await client.post("/ui/keys", data={"name": "x", "csrf": "nope"})
        assert (response.status_code, response.headers["location"]) == (303, "/ui/sign-in")
        page = await client.get("/ui/sign-in")
        assert page.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert page.headers["x-frame-options"] == "DENY"
        assert "<script>" not in page.text  # only <script src=...>


async def test_sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        response = await sign_in(client)
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert "pr_ui_session=" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
        assert "Secure" not in cookie  # plain http here; https gets Secure
        stolen = client.cookies["pr_ui_session"]
        assert (await client.get("/ui/")).status_code == 200
        token = await csrf_of(client, "/ui/")
        assert (await client.post("/ui/sign-out", data={"csrf": token})).status_code == 303
        client.cookies.set("pr_ui_session", stolen)  # a replayed cookie is refused too
        assert (await client.get("/ui/")).status_code == 303


async def test_session_cookie_is_secure_over_https(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (app, _):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://router") as client:
            response = await sign_in(client)
            assert "Secure" in response.headers["set-cookie"]


async def test_failed_sign_ins_are_refused_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with app_client(make_settings(tmp_path, ui_sign_in_delay_ms=0)) as (app, client):
        for _ in range(3):
            response = await sign_in(client, "wrong-token-123")
            assert response.status_code == 401
            assert "not the admin token" in response.text
        assert "pr_ui_session" not in client.cookies
        assert app.starlette.state.ui.sessions.failed_sign_ins == 3
        assert "Failed UI sign-in from 127.0.0.1 (3 from there" in caplog.text
        assert "wrong-token-123" not in caplog.text
        await sign_in(client)
        assert re.search(r'id="failed-sign-ins">3<', (await client.get("/ui/settings")).text)


async def test_sign_in_without_its_form_nonce_is_refused(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        response = await client.post("/ui/sign-in", data={"csrf": "x", "token": ADMIN_TOKEN})
        assert response.status_code == 403
        assert "pr_ui_session" not in client.cookies


async def test_a_form_without_the_csrf_token_changes_nothing(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await sign_in(client)
        for token in (None, "0" * 64):
            data = {"name": "sneaky"} | ({"csrf": token} if token else {})
            response = await client.post("/ui/keys", data=data)
            assert response.status_code == 403
            assert "CSRF token is missing or wrong" in response.text
        keys = await client.get("/v1/keys", headers=ADMIN)
        assert keys.json()["data"] == []


async def test_a_session_is_refused_once_the_admin_token_changes(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await sign_in(client)
        cookie = client.cookies["pr_ui_session"]
    changed = make_settings(tmp_path, admin_token="another-admin-token-456")
    async with app_client(changed) as (_, client):
        client.cookies.set("pr_ui_session", cookie)
        assert (await client.get("/ui/")).status_code == 303
        assert (await client.post("/ui/keys", data={"name": "x"})).status_code == 303


async def test_provider_forms_use_the_api_rules_and_never_show_a_secret(settings: Settings) -> None:
    async with app_client(settings) as (_, client):
        await sign_in(client)
        token = await csrf_of(client, "/ui/providers/new?type=anthropic")
        new_page = (await client.get("/ui/providers/new?type=anthropic")).text
        assert 'name="config.anthropicVersion"' in new_page  # fields from the adapter
        assert 'name="config.firstByteTimeout"' in new_page  # and the router's own keys
        form = {
            "csrf": token, "type": "anthropic", "name": "Claude", "id": "claude",
            "enabled": "on", "priority": "3", "weight": "2", "display_name": "Claude (team)",
            "config.baseURL": "http://127.0.0.1:1/v1", "config.apiKey": "sk-ant-secret-value-1234",
            "config.timeout": "soon",
        }  # fmt: skip
        refused = await client.post("/ui/providers", data=form)
        assert refused.status_code == 400
        assert "must be an integer, got &#39;soon&#39;." in refused.text  # the value typed
        assert (await client.get("/v1/providers/claude", headers=ADMIN)).status_code == 404
        form["config.timeout"] = "1500"
        created = await client.post("/ui/providers", data=form)
        assert (created.status_code, created.headers["location"]) == (
            303, "/ui/providers/claude?done=created"
        )  # fmt: skip
        api = (await client.get("/v1/providers/claude", headers=ADMIN)).json()
        assert api["config"]["apiKey"] == "****1234"
        assert (api["priority"], api["weight"], api["config"]["timeout"]) == (3, 2, 1500)
        page = await client.get("/ui/providers/claude")
        assert "Claude (team)" in page.text
        assert "sk-ant-secret-value-1234" not in page.text
        assert ADMIN_TOKEN not in page.text
        # Saving the edit form with the secret left empty keeps the stored secret.
        token = await csrf_of(client, "/ui/providers/claude")
        edit = {"csrf": token, "name": "Claude", "priority": "4", "weight": "2",
                "config.baseURL": "http://127.0.0.1:1/v1", "config.apiKey": "",
                "config.timeout": "1500", "preferences": '{"color": "teal"}'}  # fmt: skip
        saved = await client.post("/ui/providers/claude", data=edit)
        assert saved.status_code == 303
        api = (await client.get("/v1/providers/claude", headers=ADMIN)).json()
        assert (api["priority"], api["config"]["apiKey"]) == (4, "****1234")
        assert app_config_secret_kept(settings)


def app_config_secret_kept(settings: Settings) -> bool:
    rows = query(settings, "SELECT display_name, ui_preferences FROM providers WHERE id = 'claude'")
    return bool(rows == [(None, '{"color":"teal"}')])


async def test_buttons_enable_disable_archive_restore_and_keys(settings: Settings) -> None:
    async with app_client(settings) as (app, client):
        await add_provider(client, "p1", "http://127.0.0.1:1/v1", ["m1"])
        await sign_in(client)
        listing = (await client.get("/ui/providers")).text
        for label in ("Disable", "Test"):
            assert f">{label}</button>" in listing
        token = await csrf_of(client, "/ui/providers")
        for verb, enabled in (("disable", False), ("enable", True)):
            response = await client.post(f"/ui/providers/p1/{verb}", data={"csrf": token})
            assert response.status_code == 303
            assert (await client.get("/v1/providers/p1", headers=ADMIN)).json()[
                "enabled"
            ] is enabled
        assert app.services is not None
        assert app.services.snapshots.current.routes["m1"][0].provider_id == "p1"
        tested = await client.post("/ui/providers/p1/test", data={"csrf": token})
        assert 'id="test-result"' in tested.text and "Test failed in" in tested.text
        archived = await client.post("/ui/providers/p1/archive", data={"csrf": token})
        assert archived.headers["location"] in (
            "/ui/providers/p1?done=archived", "/ui/providers?done=deleted"
        )  # fmt: skip
        created = await client.post("/ui/keys", data={"csrf": token, "name": "ci", "models": "m1"})
        key = re.search(r'id="new-key" readonly value="([^"]+)"', created.text)
        assert key is not None
        assert key.group(1) not in (await client.get("/ui/keys")).text  # shown once
        listed = (await client.get("/v1/keys", headers=ADMIN)).json()["data"][0]
        assert listed["models"] == ["m1"]
        revoked = await client.post(f"/ui/keys/{listed['id']}/revoke", data={"csrf": token})
        assert revoked.status_code == 303
        assert (await client.get("/v1/keys", headers=ADMIN)).json()["data"][0]["revoked_at"]
        bad = await client.post("/ui/keys", data={"csrf": token, "name": "x", "rpm_limit": "0"})
        assert bad.status_code == 400 and "rpm_limit" in bad.text


async def test_overview_log_and_trace_after_a_fallback(settings: Settings) -> None:
    upstream = MockUpstream(MockOptions())
    async with (
        serve_asgi(upstream.app()) as good,
        app_client(settings) as (app, client),
    ):
        await add_provider(client, "broken", "http://127.0.0.1:1/v1", ["m"], priority=10)
        await add_provider(client, "spare", f"{good}/v1", ["m"], priority=5)
        await add_provider(client, "off", f"{good}/v1", ["m"], enabled=False)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        answer = await client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200
        request_id = answer.headers["x-request-id"]
        assert app.services is not None
        await app.services.recorder.flush()
        await sign_in(client)
        overview = await client.get("/ui/")
        assert re.search(r'id="total-requests">1<', overview.text)
        assert "<svg" in overview.text and '<th scope="row">spare</th>' in overview.text
        log = await client.get("/ui/requests?provider_id=spare")
        assert request_id in log.text
        later = await client.get("/ui/requests?since=2999-01-01T00:00")  # datetime-local, UTC
        assert request_id not in later.text and "No requests match." in later.text
        bad = await client.get("/ui/requests?since=yesterday")
        refused = "Parameter &#39;since&#39; must be a Unix time in milliseconds, got "
        assert refused + "&#39;yesterday&#39;." in bad.text
        assert request_id not in (await client.get("/ui/requests?provider_id=broken")).text
        trace = await client.get(f"/ui/requests/{request_id}")
        assert 'id="answered-by">spare<' in trace.text
        rows = re.findall(r"<tr>(.*?)</tr>", trace.text.split('id="trace"')[1], re.S)
        text = [re.sub(r"<[^>]+>|\s+", " ", row).split() for row in rows]
        # The refused connection is retried once on the same provider, then it falls back.
        assert [row[:4] for row in text[1:3]] == [["1", "broken", "error", "1"],
                                                  ["1", "broken", "error", "2"]]  # fmt: skip
        assert text[3][:5] == ["2", "spare", "success", "(answered)", "3"]
        assert text[4][:3] == ["-", "off", "skipped"] and text[4][-1] == "disabled"


async def test_pages_explain_an_unknown_id_and_the_ui_can_be_turned_off(tmp_path: Path) -> None:
    async with app_client(make_settings(tmp_path)) as (_, client):
        await sign_in(client)
        for path in ("/ui/providers/nope", "/ui/requests/req_nope"):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("text/html")
            assert (
                "No provider with id &#39;nope&#39;." in response.text
                or "req_nope" in response.text
            )
        settings_page = (await client.get("/ui/settings")).text
        assert "(set, hidden)" in settings_page and ADMIN_TOKEN[-4:] + "<" not in settings_page
    async with app_client(make_settings(tmp_path, ui_enabled=False)) as (_, client):
        assert (await client.get("/ui/sign-in")).status_code == 404


async def test_the_settings_page_hides_the_metrics_token(tmp_path: Path) -> None:
    token = "metrics-token-abcdef123456"
    async with app_client(make_settings(tmp_path)) as (_, client):
        await sign_in(client)
        unset = (await client.get("/ui/settings")).text
    async with app_client(make_settings(tmp_path, metrics_token=token)) as (_, client):
        await sign_in(client)
        page = (await client.get("/ui/settings")).text
    assert "only the admin token opens /metrics" in unset
    assert "metrics.token" in page and token not in page and token[-4:] + "<" not in page
    assert "only the admin token opens /metrics" not in page


async def test_the_ui_provider_page_names_the_problem(tmp_path: Path) -> None:
    upstream = MockUpstream(MockOptions(api_key="sk-the-right-key"))
    settings = make_settings(tmp_path, breaker_failure_threshold=1)
    async with serve_asgi(upstream.app()) as url, app_client(settings) as (_, client):
        await add_provider(client, "wrong-key", f"{url}/v1", ["m"])
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert (await client.post("/v1/chat/completions", json=chat)).status_code == 502
        await sign_in(client)
        page = await client.get("/ui/providers/wrong-key")
    assert page.status_code == 200
    assert "(credential rejected)" in page.text
