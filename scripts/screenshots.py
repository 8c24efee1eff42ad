"""Screenshots of the admin UI for the README, taken from a seeded demo gateway.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts two fake upstreams (one answers, one fails with 503) and a real ``serve`` process whose
config seeds three providers, adds a day of synthetic history, sends a few real requests (the
failing provider falls back, then its circuit opens), and has Debian's Chromium
(scripts/install-browser) photograph the overview, the providers and one routing trace.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from router.store import rollup

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "demo-admin-token-0123456789"  # noqa: S105 - a throwaway demo token
PROVIDERS = [
    ("openai-main", "OpenAI (main account)", 10, "fail"),
    ("azure-backup", "Azure OpenAI (backup)", 5, "ok"),
    ("local-ollama", "Ollama on the GPU box", 0, "ok"),
]
MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]


def start(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "router", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} never answered")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config(tmp: Path, port: int, ok: str, failing: str) -> Path:
    lines = [
        f"[server]\nport = {port}",
        f'[database]\nurl = "sqlite:///{tmp / "demo.db"}"',
        f'[auth]\nadmin_token = "{TOKEN}"',
        "[health]\ninterval_ms = 0",
        "[breaker]\nfailure_threshold = 3\ncooldown_ms = 600000",
    ]
    for provider_id, name, priority, kind in PROVIDERS:
        upstream = failing if kind == "fail" else ok
        models = ", ".join(
            f'{{ id = "{m}", input_cost_per_1k = 0.15, output_cost_per_1k = 0.6 }}' for m in MODELS
        )
        lines += [
            f'[[providers]]\nid = "{provider_id}"\nname = "{name}"\ntype = "openai"',
            f"priority = {priority}\nlimits = {{ rpm = 600 }}",
            f'config = {{ baseURL = "{upstream}/v1", apiKey = "sk-demo-{provider_id}-0000" }}',
            f"models = [{models}]",
        ]
    path = tmp / "demo.toml"
    path.write_text("\n".join(lines))
    return path


def history(database: Path, rows: int = 4000) -> None:
    """A day of synthetic traffic, busier in the afternoon, with a bad hour for one provider."""
    rng = random.Random(14)
    now = int(time.time() * 1000)
    data = []
    for i in range(rows):
        at = now - int(rng.triangular(0, 86400_000, 30000_000))
        provider = rng.choices(["azure-backup", "openai-main", "local-ollama"], [6, 3, 1])[0]
        bad_hour = provider == "openai-main" and now - at < 5 * 3600_000
        ok = rng.random() > (0.35 if bad_hour else 0.02)
        tokens = rng.randint(40, 900)
        data.append((
            f"req_demo{i:08d}", at, "chat.completions", rng.choice(MODELS), provider,
            "success" if ok else "error", 200 if ok else 503, rng.lognormvariate(6, 0.5),
            tokens // 3, tokens - tokens // 3, tokens, round(tokens * 0.0006 / 1000, 6), 1,
        ))  # fmt: skip
    with sqlite3.connect(database) as conn:
        conn.executemany(
            "INSERT INTO requests (id, created_at, endpoint, model, provider_id, status,"
            " status_code, latency_ms, prompt_tokens, completion_tokens, total_tokens, cost,"
            " attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            data,
        )
        # Written straight into the table: roll them up for the week and month windows.
        rollup.backfill(conn, 0, now + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ok_port, fail_port, port = free_port(), free_port(), free_port()
        processes = [
            start("mock-upstream", "--port", str(ok_port), "--latency-ms", "40", cwd=tmp),
            start("mock-upstream", "--port", str(fail_port), "--fail", "status:503", cwd=tmp),
        ]
        try:
            for p in (ok_port, fail_port):
                wait(f"http://127.0.0.1:{p}/health")
            path = config(tmp, port, f"http://127.0.0.1:{ok_port}", f"http://127.0.0.1:{fail_port}")
            processes.append(start("serve", "--config", str(path), cwd=tmp))
            base = f"http://127.0.0.1:{port}"
            wait(f"{base}/health")
            history(tmp / "demo.db")
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            ids = [
                httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30).headers[
                    "x-request-id"
                ]
                for _ in range(5)
            ]
            time.sleep(0.5)  # the recorder writes in the background
            shoot(base, ids[1], out)
        finally:
            for process in processes:
                process.terminate()
                process.wait(20)
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.png')))} to {out}")


def shoot(base: str, request_id: str, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        page.goto(f"{base}/ui/sign-in")
        page.get_by_label("Admin token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/ui/")
        page.screenshot(path=out / "overview.png")
        page.goto(f"{base}/ui/providers")
        page.locator("main").screenshot(path=out / "providers.png")
        page.goto(f"{base}/ui/requests/{request_id}")
        page.locator("main").screenshot(path=out / "trace.png")
        browser.close()


if __name__ == "__main__":
    main()
