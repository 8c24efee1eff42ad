"""Helpers for bench/run.sh (stdlib only).

Subcommands:
  wait URL [--timeout S]             poll GET URL until it answers 200
  check URL BODY_FILE {json,stream}  POST once and check the answer's shape
  render RUNS_DIR [options]          parse wrk outputs, print markdown, write JSON

wrk output files in RUNS_DIR are named ``<mode>-<target>-c<N>.txt`` (mode: json|stream,
target: direct|proxy) and hold the ``BENCH_RESULT {...}`` line printed by post.lua's
done(). An optional ``<same name>.cpu`` holds "<ticks before> <ticks after>" of the
proxy process's utime+stime around the measured run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import re
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODES = ("json", "stream")
TARGETS = ("direct", "proxy")
RUN_FILE = re.compile(r"^(json|stream)-(direct|proxy)-c(\d+)\.txt$")
RESULT_PREFIX = "BENCH_RESULT "


# --------------------------------------------------------------------------- wait


def _conn(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise SystemExit(f"only http:// URLs are supported: {url}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout), path


def cmd_wait(url: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        conn, path = _conn(url, timeout=2.0)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return 0
            last = f"HTTP {resp.status}"
        except OSError as exc:
            last = str(exc)
        finally:
            conn.close()
        time.sleep(0.1)
    print(f"wait: {url} not ready after {timeout:.0f}s ({last})", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------- check


def _post(url: str, body: bytes) -> tuple[int, str, bytes]:
    conn, path = _conn(url, timeout=10.0)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def _check_json(data: bytes) -> str:
    obj = json.loads(data)
    if not isinstance(obj, dict) or obj.get("object") != "chat.completion":
        raise ValueError("not a chat.completion object")
    content = obj["choices"][0]["message"]["content"]
    if not isinstance(content, str) or not content:
        raise ValueError("empty choices[0].message.content")
    return f"chat.completion, {len(content)} chars of content"


def _check_stream(data: bytes, expect_chunks: int) -> str:
    text = data.decode("utf-8").replace("\r\n", "\n")
    payloads = [
        line[len("data:") :].strip() for line in text.split("\n") if line.startswith("data:")
    ]
    if not payloads or payloads[-1] != "[DONE]":
        raise ValueError("stream does not end with data: [DONE]")
    chunks = [json.loads(p) for p in payloads[:-1]]
    content = 0
    usage = 0
    for chunk in chunks:
        if chunk.get("object") != "chat.completion.chunk":
            raise ValueError(f"unexpected event object {chunk.get('object')!r}")
        for choice in chunk.get("choices") or []:
            if choice.get("delta", {}).get("content"):
                content += 1
        if chunk.get("usage") and not chunk.get("choices"):
            usage += 1
    if content != expect_chunks:
        raise ValueError(f"{content} content chunks, expected {expect_chunks}")
    if usage != 1:
        raise ValueError(f"{usage} usage chunks (choices []), expected 1")
    return f"{len(chunks)} chunks ({content} with content, 1 usage) + [DONE]"


def cmd_check(url: str, body_file: Path, mode: str, expect_chunks: int) -> int:
    try:
        status, ctype, data = _post(url, body_file.read_bytes())
        if status != 200:
            raise ValueError(f"HTTP {status}: {data[:300]!r}")
        want = "application/json" if mode == "json" else "text/event-stream"
        if not ctype.startswith(want):
            raise ValueError(f"content-type {ctype!r}, expected {want}")
        what = _check_json(data) if mode == "json" else _check_stream(data, expect_chunks)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        print(f"check FAILED {mode} {url}: {exc}", file=sys.stderr)
        return 1
    print(f"check ok  {mode:6} {url}: {what}")
    return 0


# --------------------------------------------------------------------------- render


@dataclass
class Run:
    mode: str
    target: str
    concurrency: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    proxy_cpu_us_per_req: float | None = None


@dataclass
class Overhead:
    mode: str
    concurrency: int
    p50_added_ms: float
    p99_added_ms: float
    rps_ratio: float
    proxy_cpu_us_per_req: float | None


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw[key]
    if not isinstance(value, int | float):
        raise ValueError(f"{key} is not a number")
    return int(value)


def parse_run(path: Path, clk_tck: int) -> Run:
    m = RUN_FILE.match(path.name)
    if m is None:
        raise ValueError(f"unexpected file name {path.name}")
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith(RESULT_PREFIX)]
    if len(lines) != 1:
        raise ValueError(f"{path}: expected one {RESULT_PREFIX.strip()} line, got {len(lines)}")
    raw: dict[str, Any] = json.loads(lines[0][len(RESULT_PREFIX) :])
    requests = _int(raw, "requests")
    duration_s = _int(raw, "duration_us") / 1e6
    errors = {
        k[len("err_") :]: _int(raw, k) for k in sorted(raw) if k.startswith("err_") and raw[k]
    }
    cpu: float | None = None
    cpu_file = path.with_suffix(".cpu")
    if cpu_file.exists() and requests > 0:
        before, after = (int(x) for x in cpu_file.read_text().split())
        cpu = (after - before) / clk_tck * 1e6 / requests

    def ms(key: str) -> float:
        return _int(raw, key) / 1000.0

    return Run(
        mode=m.group(1),
        target=m.group(2),
        concurrency=int(m.group(3)),
        requests=requests,
        duration_s=round(duration_s, 3),
        rps=round(requests / duration_s, 1) if duration_s > 0 else 0.0,
        p50_ms=ms("p50_us"),
        p90_ms=ms("p90_us"),
        p99_ms=ms("p99_us"),
        p999_ms=ms("p99_9_us"),
        mean_ms=round(float(raw["lat_mean_us"]) / 1000.0, 3),
        max_ms=ms("lat_max_us"),
        errors=errors,
        proxy_cpu_us_per_req=round(cpu, 1) if cpu is not None else None,
    )


def _sort_key(r: Run) -> tuple[int, int, int]:
    return MODES.index(r.mode), r.concurrency, TARGETS.index(r.target)


def overheads(runs: list[Run]) -> list[Overhead]:
    by_key = {(r.mode, r.concurrency, r.target): r for r in runs}
    out: list[Overhead] = []
    for mode, conc in sorted(
        {(r.mode, r.concurrency) for r in runs}, key=lambda k: (MODES.index(k[0]), k[1])
    ):
        direct = by_key.get((mode, conc, "direct"))
        proxy = by_key.get((mode, conc, "proxy"))
        if direct is None or proxy is None:
            continue
        out.append(
            Overhead(
                mode=mode,
                concurrency=conc,
                p50_added_ms=round(proxy.p50_ms - direct.p50_ms, 3),
                p99_added_ms=round(proxy.p99_ms - direct.p99_ms, 3),
                rps_ratio=round(proxy.rps / direct.rps, 4) if direct.rps else 0.0,
                proxy_cpu_us_per_req=proxy.proxy_cpu_us_per_req,
            )
        )
    return out


def _fmt_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in errors.items()) if errors else "0"


def markdown(
    runs: list[Run], over: list[Overhead], proxy: dict[str, Any], config: dict[str, Any]
) -> str:
    out: list[str] = []
    out.append(
        f"### Throughput and latency (wrk -t1, {config['duration_s']} s per run "
        f"after {config['warmup_s']} s warm-up)\n"
    )
    out.append("| mode | conc | target | req/s | p50 ms | p99 ms | errors |")
    out.append("|---|---:|---|---:|---:|---:|---|")
    for r in runs:
        out.append(
            f"| {r.mode} | {r.concurrency} | {r.target} | {r.rps:,.0f} | {r.p50_ms:.3f} "
            f"| {r.p99_ms:.3f} | {_fmt_errors(r.errors)} |"
        )
    out.append("")
    if over:
        out.append("### What the proxy adds\n")
        out.append("| mode | conc | +p50 ms | +p99 ms | proxy/direct req/s | proxy CPU µs/req |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for o in over:
            cpu = f"{o.proxy_cpu_us_per_req:.0f}" if o.proxy_cpu_us_per_req is not None else "-"
            out.append(
                f"| {o.mode} | {o.concurrency} | {o.p50_added_ms:+.3f} | {o.p99_added_ms:+.3f} "
                f"| {o.rps_ratio:.3f} | {cpu} |"
            )
        out.append("")
    else:
        out.append("_No proxy runs: overhead not computed._\n")
    hwm = proxy.get("vm_hwm_kb")
    if hwm:
        idle = proxy.get("vm_rss_idle_kb")
        idle_txt = f" (VmRSS idle after start: {idle / 1024:.1f} MiB)" if idle else ""
        out.append(f"**Proxy peak RSS (VmHWM): {hwm / 1024:.1f} MiB**{idle_txt}")
        out.append("")
    return "\n".join(out)


def cmd_render(args: argparse.Namespace) -> int:
    runs_dir: Path = args.runs_dir
    files = sorted(p for p in runs_dir.iterdir() if RUN_FILE.match(p.name))
    if not files:
        print(f"render: no wrk outputs in {runs_dir}", file=sys.stderr)
        return 1
    runs = sorted((parse_run(p, args.clk_tck) for p in files), key=_sort_key)
    over = overheads(runs)
    meta: dict[str, str] = {}
    for item in args.meta:
        key, _, value = item.partition("=")
        meta[key] = value
    proxy: dict[str, Any] = {}
    if args.proxy_hwm_kb:
        proxy["vm_hwm_kb"] = args.proxy_hwm_kb
    if args.proxy_rss_idle_kb:
        proxy["vm_rss_idle_kb"] = args.proxy_rss_idle_kb
    config: dict[str, Any] = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        **meta,
    }
    doc = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": config,
        "runs": [asdict(r) for r in runs],
        "overhead": [asdict(o) for o in over],
        "proxy": proxy,
    }
    text = markdown(runs, over, proxy, config)
    print(text)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.md_out is not None:
        args.md_out.parent.mkdir(parents=True, exist_ok=True)
        args.md_out.write_text(text + "\n")
    bad = [r for r in runs if r.errors or r.requests == 0]
    if bad:
        for r in bad:
            print(
                f"WARNING: {r.mode}-{r.target}-c{r.concurrency}: {r.requests} requests, "
                f"errors: {_fmt_errors(r.errors)}",
                file=sys.stderr,
            )
        return 3
    return 0


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bench/run.sh helpers")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p_wait = sub.add_parser("wait", help="poll GET URL until 200")
    p_wait.add_argument("url")
    p_wait.add_argument("--timeout", type=float, default=30.0)

    p_check = sub.add_parser("check", help="POST once and check the answer's shape")
    p_check.add_argument("url")
    p_check.add_argument("body_file", type=Path)
    p_check.add_argument("mode", choices=MODES)
    p_check.add_argument("--expect-chunks", type=int, default=20)

    p_render = sub.add_parser("render", help="parse wrk outputs, print markdown, write JSON")
    p_render.add_argument("runs_dir", type=Path)
    p_render.add_argument("--json-out", type=Path)
    p_render.add_argument("--md-out", type=Path)
    p_render.add_argument("--duration", type=float, required=True)
    p_render.add_argument("--warmup", type=float, required=True)
    p_render.add_argument("--clk-tck", type=int, default=100)
    p_render.add_argument("--proxy-hwm-kb", type=int, default=0)
    p_render.add_argument("--proxy-rss-idle-kb", type=int, default=0)
    p_render.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")

    args = parser.parse_args(argv)
    if args.cmd == "wait":
        return cmd_wait(args.url, args.timeout)
    if args.cmd == "check":
        return cmd_check(args.url, args.body_file, args.mode, args.expect_chunks)
    return cmd_render(args)


if __name__ == "__main__":
    sys.exit(main())
