"""``provider-router serve``: check the address first, optionally run the fake upstream beside
the proxy, then serve until a signal.

Exit codes: 0 after a clean stop, 2 for a bad setting, 3 when the address cannot be listened on
(port in use, or not permitted); nothing is created on disk before that check.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from router.cli.output import Subcommands
from router.settings import Settings, load_settings

EXIT_CANNOT_LISTEN = 3
MOCK_HOST = "127.0.0.1"
MOCK_PORT = 9000  # where config.example.toml's provider points


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        overrides={"host": args.host, "port": args.port, "database_url": args.database},
    )


@contextlib.contextmanager
def mock_upstream(port: int, *, ready_timeout_s: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``provider-router mock-upstream`` as a child process for as long as the block runs,
    and stop it (SIGTERM, then SIGKILL) when the block ends, however it ends."""
    command = [sys.executable, "-m", "router", "mock-upstream", "--host", MOCK_HOST,
               "--port", str(port)]  # fmt: skip
    child = subprocess.Popen(command)  # noqa: S603 - this interpreter, fixed arguments
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not _answers(MOCK_HOST, port):
            if child.poll() is not None:
                raise RuntimeError(f"The fake upstream exited at once (code {child.returncode}).")
            if time.monotonic() > deadline:
                raise RuntimeError(f"The fake upstream did not start within {ready_timeout_s} s.")
            time.sleep(0.05)
        yield child
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from router.server import CannotListen, check_listen, serve

    settings = _settings(args)
    try:
        check_listen(settings.host, settings.port)
        if args.with_mock:
            check_listen(MOCK_HOST, args.mock_port, "fake upstream")
    except CannotListen as exc:
        print(f"provider-router: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    if not args.with_mock:
        serve(settings)
        return 0
    # uvicorn re-raises SIGTERM after its graceful shutdown, which would end this process
    # before the fake upstream is stopped: take the signal as an exception until it is.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with mock_upstream(args.mock_port):
            serve(settings)
    except _Stopped:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


class _Stopped(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def register(commands: Subcommands, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. Exit codes: 0 stopped cleanly, 2 bad setting, "
        "3 cannot listen on the address (port in use).",
    )
    with_config(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument(
        "--with-mock",
        action="store_true",
        help=f"also run the fake upstream (mock-upstream) on {MOCK_HOST}, stopped with the proxy",
    )
    serve.add_argument(
        "--mock-port",
        type=int,
        default=MOCK_PORT,
        help="port of the fake upstream with --with-mock (default: %(default)s)",
    )
    serve.set_defaults(func=cmd_serve)
