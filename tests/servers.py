"""Real servers the tests start: Redis (Debian's redis-server) on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_binary() -> str:
    """Where redis-server is; the test skips (fails in CI) when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide redis-server (.ci/run installs it)")
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    return binary


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """A redis-server of its own on 127.0.0.1, stopped at the end; yields its URL."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            redis_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(1000):  # until it accepts connections
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            if process.poll() is not None:
                pytest.fail("redis-server exited at start-up")
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
