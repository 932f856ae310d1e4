"""Real servers the tests start: Redis (Debian's redis-server) on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    for _ in range(1000):
        port = random.randrange(20_000, 50_000)  # noqa: S311 - not a secret
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 10_000):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of ports for a cluster node")


def installed(name: str, package: str) -> str:
    """Where program ``name`` is; the test skips (fails in CI) when it is not installed."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {name} (.ci/run installs Debian's {package})")
        pytest.skip(f"{name} is not installed (Debian: apt-get install {package})")
    return found


def redis_binary() -> str:
    """Where redis-server is; the test skips (fails in CI) when it is not installed."""
    return installed("redis-server", "redis-server")


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """A redis-server of its own on 127.0.0.1, stopped at the end; yields its URL."""
    with redis_process(port) as (url, _):
        yield url


@contextlib.contextmanager
def redis_process(
    port: int | None = None, *options: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`redis_server` with more ``options``, and its process (to SIGSTOP it, say)."""
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
            *options,
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
        yield f"redis://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGCONT)  # a frozen server cannot stop
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def redis_cluster(tmp_path: Path, nodes: int = 3) -> Iterator[tuple[str, int]]:
    """A Redis Cluster of ``nodes`` masters on 127.0.0.1; yields one node's host and port."""
    binary = redis_binary()
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed (Debian: apt-get install redis-tools)")
    ports = [free_cluster_port() for _ in range(nodes)]
    processes = []
    try:
        for port in ports:
            folder = tmp_path / str(port)
            folder.mkdir()
            processes.append(
                subprocess.Popen(
                    [
                        binary,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--cluster-enabled",
                        "yes",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    cwd=folder,
                    stdout=subprocess.DEVNULL,
                )
            )
        for port in ports:
            for _ in range(1000):
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.1),
                ):
                    break
                time.sleep(0.01)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )
        for _ in range(500):  # until every node agrees the cluster is up
            info = subprocess.run(
                [cli, "-p", str(ports[0]), "cluster", "info"],
                check=False,
                capture_output=True,
                text=True,
            ).stdout
            if "cluster_state:ok" in info:
                break
            time.sleep(0.01)
        yield "127.0.0.1", ports[0]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
