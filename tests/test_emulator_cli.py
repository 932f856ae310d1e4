"""The standalone emulator, ``python -m stability_user.testing``, as users run it."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import secrets
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator

import aiohttp
import attrs
import pytest
import trustme

from stability_user.testing import StabilityEmulator
from stability_user.testing.__main__ import _emulator, build_parser, main

from .processes import clean_environment
from .wire import get, malformed_requests, send_raw

PROG = "python -m stability_user.testing"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - never bound: the tests check it is refused


@attrs.define
class Served:
    """A standalone emulator process: what it printed at start-up, then at exit."""

    process: asyncio.subprocess.Process
    lines: list[str]
    out: str = ""
    err: str = ""
    code: int | None = None

    @property
    def base_url(self) -> str:
        return self.lines[0].rsplit(" ", 1)[1].strip()

    @property
    def keys(self) -> list[str]:
        return [line.rsplit(" ", 1)[1].strip() for line in self.lines if "demo key" in line]


@contextlib.asynccontextmanager
async def standalone(*args: str) -> AsyncIterator[Served]:
    """Run the emulator with ``args`` until it is ready; Ctrl+C (SIGINT) it on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stability_user.testing",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_environment({"PYTHONUNBUFFERED": "1"}),
    )
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("Press Ctrl+C"):
        line = (await process.stdout.readline()).decode()
        if not line:  # it exited before it was ready
            break
        lines.append(line)
    served = Served(process, lines)
    try:
        yield served
    finally:
        # Only a ready emulator is signalled: it runs until then. One that stopped by itself
        # may be gone already, and signalling it would reap it (Popen.send_signal polls) under
        # asyncio's child watcher, which then reports 255 instead of its exit status.
        if lines and lines[-1].startswith("Press Ctrl+C"):
            process.send_signal(signal.SIGINT)
        try:
            # wait_for guards against a hang only: the emulator stops within a second.
            out, err = await asyncio.wait_for(process.communicate(), 60)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise
        served.out, served.err = "".join(lines) + out.decode(), err.decode()
        served.code = process.returncode


async def test_serves_until_interrupted_and_shows_how_to_use_it() -> None:
    async with standalone("--port", "0", "--accounts", "2", "--credits", "7") as served:
        assert served.base_url.startswith("http://127.0.0.1:")
        assert served.lines[1] == f"  export STABILITY_API_HOST={served.base_url}\n"
        first, second = served.keys
        assert served.lines[4] == (
            f'  try: curl -H "Authorization: {first}" {served.base_url}/v1/user/balance\n'
        )
        assert served.lines[5] == "  rate limit: 150 requests per 10 s per key, then 60 s of 429\n"
        status, _, body = await get(served.base_url, "/v1/user/balance", second)
        assert (status, body) == (200, {"credits": 7})
    assert (served.code, served.err) == (0, "")
    assert len(served.out.splitlines()) == 7


async def test_rate_limit_counts_per_key_across_connections() -> None:
    async with standalone("--port", "0", "--rate-limit", "3/60", "--lockout", "120") as served:
        key, other = served.keys[:2]
        assert served.lines[6] == "  rate limit: 3 requests per 60 s per key, then 120 s of 429\n"
        # Six clients, each with its own connection pool, at once: the key gets three answers.
        answers = await asyncio.gather(
            *(get(served.base_url, "/v1/user/balance", key) for _ in range(6))
        )
        assert sorted(status for status, _, _ in answers) == [200, 200, 200, 429, 429, 429]
        refused = [(headers, body) for status, headers, body in answers if status == 429]
        for headers, body in refused:
            assert headers["Retry-After"] in ("120", "119")  # 120 for the first, then less
            assert set(body) == {"id", "name", "message"}
        assert (await get(served.base_url, "/v1alpha/user/account", other))[0] == 200
    assert served.code == 0


async def test_no_rate_limit_and_a_small_log() -> None:
    async with standalone(
        "--port", "0", "--no-rate-limit", "--max-recorded", "2", "--accounts", "1"
    ) as served:
        assert served.lines[4] == "  rate limit: off\n"
        statuses = [
            (await get(served.base_url, "/v1/user/balance", served.keys[0]))[0] for _ in range(160)
        ]
        assert set(statuses) == {200}
    assert served.code == 0


async def test_no_demo_accounts_no_curl_line() -> None:
    async with standalone("--port", "0", "--accounts", "0", "--retire-v1alpha") as served:
        assert not any("try:" in line for line in served.lines)
        assert (await get(served.base_url, "/v1alpha/user/balance"))[0] == 404
    assert served.code == 0


async def test_a_busy_port_is_one_line_and_status_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with standalone("--port", str(port)) as served:
            assert served.lines == []
    assert served.code == 1
    assert served.err == (
        f"{PROG}: error: cannot listen on 127.0.0.1:{port}: address already in use "
        "(try --port 0 for a free one)\n"
    )


async def test_a_non_loopback_host_is_refused_in_one_line() -> None:
    async with standalone("--host", ALL_INTERFACES, "--port", "0") as served:
        assert served.lines == []
    assert served.code == 2
    assert served.err == (
        f"{PROG}: error: refusing to listen on '0.0.0.0': not a loopback address, so the demo "
        "keys and clear-text HTTP would be exposed to the network (add --allow-remote to do it "
        f"anyway) (see '{PROG} --help')\n"
    )


async def test_https_with_certfile_and_keyfile(ca: trustme.CA, tmp_path: pathlib.Path) -> None:
    issued = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(certfile)
    issued.private_key_pem.write_to_path(keyfile)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    args = ("--port", "0", "--certfile", str(certfile), "--keyfile", str(keyfile))
    async with standalone(*args) as served:
        assert served.base_url.startswith("https://127.0.0.1:")
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                served.base_url + "/v1/user/balance",
                headers={"Authorization": served.keys[0]},
                ssl=client,
            ) as resp,
        ):
            assert (resp.status, await resp.json()) == (200, {"credits": 100})
    assert served.code == 0


async def test_malformed_requests_leave_no_key_in_its_output() -> None:
    key = f"sk-{secrets.token_hex(24)}"
    async with standalone("--port", "0") as served:
        port = int(served.base_url.rsplit(":", 1)[1])
        for data in malformed_requests(key).values():
            assert (await send_raw(port, data)).startswith(b"HTTP/1.0 400")
    assert served.code == 0
    assert key not in served.out
    assert key not in served.err
    assert served.err.count("answered 400 to a malformed request") == 5
    assert "Traceback" not in served.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate-limit", "20"], "--rate-limit: expected REQUESTS/SECONDS"),
        (["--rate-limit", "0/1"], "--rate-limit: expected REQUESTS/SECONDS"),
        (["--rate-limit", "2.5/1"], "--rate-limit: expected REQUESTS/SECONDS"),
        (["--rate-limit", "5/0"], "--rate-limit: expected REQUESTS/SECONDS"),
        (["--rate-limit", "5/nan"], "--rate-limit: expected REQUESTS/SECONDS"),
        (["--rate-limit", "5/inf"], "--rate-limit: expected REQUESTS/SECONDS"),
        (["--lockout", "-1"], "--lockout: expected a finite number of at least 0"),
        (["--lockout", "soon"], "--lockout: expected a finite number of at least 0"),
        (["--credits", "inf"], "--credits: expected a finite number of at least 0"),
        (["--accounts", "-2"], "--accounts: expected a whole number of at least 0"),
        (
            ["--generated-accounts", "-1"],
            "--generated-accounts: expected a whole number of at least 0",
        ),
        (
            ["--generated-accounts", "1" + "0" * 35],
            "--generated-accounts: expected at most 35 digits",
        ),
        (["--max-recorded", "x"], "--max-recorded: expected a whole number of at least"),
        (["--port", "65536"], "--port: expected a port from 0 to 65535, got '65536'"),
        (["--no-rate-limit", "--lockout", "5"], "--no-rate-limit cannot be combined with"),
        (["--no-rate-limit", "--rate-limit", "1/1"], "--no-rate-limit cannot be combined with"),
        (["--keyfile", "key.pem"], "--keyfile needs --certfile"),
        (["--certfile", "/nonexistent.pem"], "cannot read --certfile/--keyfile: no such file"),
        (["--certfile", __file__], "cannot use --certfile/--keyfile as a PEM certificate"),
        (["--host", "192.0.2.1"], "refusing to listen on '192.0.2.1': not a loopback address"),
        (["--unknown"], "no such option '--unknown'"),
        (["--acc", "2"], "no such option '--acc'"),  # no abbreviations, as click has none
        (["--port"], "option '--port' requires an argument"),
        (["--no-rate-limit=yes"], "option '--no-rate-limit' does not take a value"),
        (["extra"], "got unexpected extra argument (extra)"),
    ],
)
def test_a_wrong_command_line_is_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{PROG}: error: {message}")
    assert err.endswith(f" (see '{PROG} --help')\n")
    assert err.count("\n") == 1


def test_another_command_line_passes_its_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "-1"], prog="stability-user emulator", program="stability-user") == 2
    assert capsys.readouterr().err == (
        "stability-user: error: --port: expected a whole number of at least 0, got '-1' "
        "(see 'stability-user emulator --help')\n"
    )
    assert main(["--help"], prog="stability-user emulator") == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: stability-user emulator [OPTIONS]\n")
    assert "--rate-limit REQUESTS/SECONDS" in out
    assert "Exit 1 when it cannot listen" in out


def test_allow_remote_warns_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["--host", ALL_INTERFACES, "--allow-remote"])
    emulator = _emulator(args, parser)  # made, never started: nothing listens beyond loopback
    assert emulator.host == ALL_INTERFACES
    assert capsys.readouterr().err == (
        f"{PROG}: warning: the emulator listens on '0.0.0.0', beyond loopback: its demo keys "
        "and its clear-text HTTP are exposed to anyone who can reach it\n"
    )


def test_ctrl_c_while_starting_prints_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    start = StabilityEmulator.start
    started: list[StabilityEmulator] = []

    async def interrupted_start(self: StabilityEmulator) -> None:
        started.append(self)
        signal.raise_signal(signal.SIGINT)  # Ctrl+C while the socket is being opened
        await start(self)

    monkeypatch.setattr(StabilityEmulator, "start", interrupted_start)
    assert main(["--port", "0"]) == 0
    assert capsys.readouterr() == ("", "")
    assert len(started) == 1
    with pytest.raises(RuntimeError, match="not started"):
        _ = started[0].base_url
