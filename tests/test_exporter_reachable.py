"""The exporter stays reachable: a real process, slow clients by the thousand, few files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import resource
import sys
from collections.abc import AsyncIterator, Iterator

import aiohttp
import attrs
import pytest

from stability_user.testing import StabilityEmulator

from .processes import clean_environment

HALF = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # a head that never ends


@attrs.define
class Running:
    process: asyncio.subprocess.Process
    address: str
    lines: list[str]
    reader: asyncio.Task[None]

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.terminate()
        code = await asyncio.wait_for(self.process.wait(), 30)
        await self.reader
        return code


@contextlib.asynccontextmanager
async def exporter(*args: str, files: int) -> AsyncIterator[Running]:
    """``stability-user [args] --port 0`` with at most ``files`` open files, until it serves."""

    def lower_the_file_limit() -> None:  # in the child, before the program starts
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, hard))

    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "stability_user.cli", *args, "--port", "0"),
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=clean_environment(),
        preexec_fn=lower_the_file_limit,
    )
    assert process.stderr is not None
    stderr = process.stderr
    first = (await asyncio.wait_for(stderr.readline(), 30)).decode()
    assert "serving http://" in first, first + (await stderr.read()).decode()
    lines = [first.rstrip("\n")]

    async def read() -> None:
        async for line in stderr:
            lines.append(line.decode().rstrip("\n"))

    address = first.split("http://", 1)[1].split("/metrics", 1)[0]
    running = Running(process, address, lines, asyncio.ensure_future(read()))
    try:
        yield running
    finally:
        await running.stop()


@contextlib.contextmanager
def files_for_this_process(count: int) -> Iterator[None]:
    """Room for ``count`` more open files in the test process itself, while it lasts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(os.listdir("/proc/self/fd")) + count + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"the test needs {wanted} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.asynccontextmanager
async def slowloris(address: str, count: int) -> AsyncIterator[None]:
    """``count`` connections, every other one sending half a request head, all kept open."""
    host, port = address.rsplit(":", 1)
    writers: list[asyncio.StreamWriter] = []

    async def connect(number: int) -> None:
        with contextlib.suppress(ConnectionError):
            _, writer = await asyncio.open_connection(host, int(port))
            writers.append(writer)
            if number % 2:
                writer.write(HALF)
                await writer.drain()

    try:
        await asyncio.gather(*(connect(n) for n in range(count)))
        yield
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def scrape(address: str) -> str:
    # Generous: the exporter answers within a second or two; no time is asserted here.
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(f"http://{address}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


def exporter_args(live: StabilityEmulator, tmp_path: pathlib.Path, credits: float) -> list[str]:
    """An exporter of one target, "a", checked once a minute: once while the test runs."""
    path = tmp_path / "targets.csv"
    path.write_text(f"{live.add_account(credits=credits)},,a\n")
    return [
        *("--base-url", live.base_url, "--rate-limit-store", "memory"),
        *("exporter", str(path), "--interval", "60"),
    ]


def about_it(lines: list[str]) -> list[str]:
    """What the exporter said besides its first line."""
    return lines[1:]


@pytest.mark.parametrize(
    ("files", "connections"),
    # The usual default limit, a crowd beyond it, and a tight limit.
    [(1024, 1000), (1024, 1500), (64, 80)],
)
async def test_a_scrape_gets_in_past_a_crowd_of_idle_and_half_sent_connections(
    live: StabilityEmulator, tmp_path: pathlib.Path, files: int, connections: int
) -> None:
    args = exporter_args(live, tmp_path, credits=42)
    with files_for_this_process(connections):
        async with (
            exporter(*args, files=files) as running,
            slowloris(running.address, connections),
        ):
            text = await scrape(running.address)
            assert 'stability_credits{organization="",target="a"} 42.0' in text
            assert await running.stop() == 0
    said = about_it(running.lines)
    assert len(said) <= 2, said
    assert not any("Traceback" in line or "accept" in line.lower() for line in said), said


async def test_out_of_files_a_connection_is_closed_to_let_the_scrape_in(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    args = exporter_args(live, tmp_path, credits=7)
    async with exporter(*args, files=64) as running:
        # Its limit lowered while it runs: room for two connections, fewer than it keeps
        # (its cap was set from 64), as when descriptors are taken elsewhere.
        pid = running.process.pid
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 2, hard))
        async with slowloris(running.address, 80):
            text = await scrape(running.address)
            assert 'stability_credits{organization="",target="a"} 7.0' in text
            assert await running.stop() == 0
    said = about_it(running.lines)
    assert len(said) <= 2, said
    assert any("cannot accept a connection: too many open files" in line for line in said), said
    assert not any("Traceback" in line for line in said), said
