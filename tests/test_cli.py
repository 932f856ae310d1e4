"""The stability-user command line, run as a real subprocess against the emulator."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pathlib
import pty
import shutil
import struct
import sys
import termios

from stability_user import __version__
from stability_user.testing import EmulatedOrganization, Fault, StabilityEmulator

from .processes import Run, run_program

EXECUTABLE = shutil.which("stability-user", path=os.path.dirname(sys.executable))


async def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Run:
    assert EXECUTABLE is not None, "the stability-user console script is not installed"
    return await run_program(EXECUTABLE, *args, stdin=stdin, env=env)


def no_key_in(result: Run, *keys: str) -> None:
    for key in keys:
        assert key not in result.out
        assert key not in result.err


async def test_offline_main_job() -> None:
    result = await run("--emulator", "12", "balances", "--below", "50", "--ordered")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["TARGET", "ORGANIZATION", "CREDITS", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == [f"demo-{n}" for n in range(1, 13)]
    assert "checked 12, failed 0, total credits" in result.err
    assert "2 below 50" in result.err
    assert "\r" not in result.err  # no progress bar: stderr is not a terminal


async def test_account_and_balance(live: StabilityEmulator) -> None:
    key = live.add_account(
        email="me@example.com",
        organizations=[
            EmulatedOrganization("org-a", "Alpha", "OWNER", is_default=True, credits=12.5),
            EmulatedOrganization("org-b", "Beta", credits=3),
        ],
    )
    env = {"STABILITY_API_KEY": key, "STABILITY_API_HOST": live.base_url}
    account = await run("account", env=env)
    assert account.code == 0
    assert account.out.splitlines() == [
        "me@example.com (user-1)",
        "  org-a  Alpha  [OWNER]  (default)",
        "  org-b  Beta  [MEMBER]",
    ]
    as_json = json.loads((await run("account", "--json", env=env)).out)
    assert as_json["organizations"][1] == {
        "id": "org-b",
        "name": "Beta",
        "role": "MEMBER",
        "is_default": False,
    }
    assert (await run("balance", env=env)).out == "12.50 credits\n"
    balance_json = json.loads((await run("balance", "-o", "org-b", "--json", env=env)).out)
    assert balance_json == {"organization": "org-b", "credits": 3.0}
    no_key_in(account, key)


async def test_key_from_a_file(live: StabilityEmulator, tmp_path: pathlib.Path) -> None:
    key = live.add_account(credits=7)
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    result = await run("--key-file", str(key_file), "--base-url", live.base_url, "balance")
    assert (result.code, result.out) == (0, "7.00 credits\n")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    usage = await run("--key-file", str(empty), "--base-url", live.base_url, "balance")
    assert usage.code == 2
    assert "holds no API key" in usage.err


async def test_errors_are_one_line_without_traceback(live: StabilityEmulator) -> None:
    bad_key = "sk-" + "0" * 48
    env = {"STABILITY_API_KEY": bad_key, "STABILITY_API_HOST": live.base_url}
    result = await run("balance", env=env)
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith("stability-user: error: 401 unauthorized")
    assert "STABILITY_API_KEY" in result.err
    assert "Traceback" not in result.err
    no_key_in(result, bad_key)
    debug = await run("--debug", "balance", env=env)
    assert debug.code == 1
    assert "Traceback" in debug.err
    assert "AuthenticationError" in debug.err


async def test_missing_key_says_what_to_do() -> None:
    result = await run("balance")
    assert result.code == 1
    assert "STABILITY_API_KEY" in result.err


async def test_usage_errors_exit_2() -> None:
    assert (await run("balances")).code == 2  # no source and no emulator
    assert (await run("--timeout", "0", "balance")).code == 2
    assert (await run("nonsense")).code == 2


async def test_balances_from_a_file_in_every_line_form(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    one = live.add_account(credits=1)
    two = live.add_account(
        organizations=[
            EmulatedOrganization("org-x", "X", is_default=True, credits=2),
            EmulatedOrganization("org-y", "Y", credits=20),
        ]
    )
    targets = tmp_path / "targets.txt"
    targets.write_text(f"# customers\n{one}\n\n{two},org-y\n{two},org-x,acme\n")
    result = await run(
        "--base-url",
        live.base_url,
        "balances",
        str(targets),
        "--format",
        "json",
        "--ordered",
    )
    assert result.code == 0
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [(r["index"], r["organization"], r["label"], r["credits"]) for r in rows] == [
        (0, None, None, 1.0),
        (1, "org-y", None, 20.0),
        (2, "org-x", "acme", 2.0),
    ]
    assert rows[0]["key"] == f"sk-…{one[-4:]}"
    no_key_in(result, one, two)


async def test_balances_csv_with_header_from_stdin(live: StabilityEmulator) -> None:
    one, two = live.add_account(credits=5), live.add_account(credits=6)
    stdin = f"label,api_key\nfirst,{one}\nsecond,{two}\n"
    result = await run(
        "--base-url",
        live.base_url,
        "balances",
        "-",
        "--format",
        "csv",
        "--ordered",
        stdin=stdin,
    )
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == "index,label,key,organization,credits,ok,low,error_type,error"
    assert lines[1].startswith("0,first,sk-…")
    assert lines[1].endswith(",5.0,True,False,,")
    assert "checked 2, failed 0, total credits 11.00" in result.err
    no_key_in(result, one, two)


async def test_failures_are_reported_and_exit_1(live: StabilityEmulator) -> None:
    good = live.add_account(credits=5)
    unknown = "sk-" + "9" * 48
    live.script(503, 503, api_key=good)  # retried, then fine
    result = await run(
        "--base-url",
        live.base_url,
        "balances",
        "-",
        "--ordered",
        stdin=f"{good}\n{unknown}\n",
    )
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[1].split()[-1] == "ok"
    assert "AuthenticationError: 401 unauthorized" in lines[2]
    assert "checked 2, failed 1, total credits 5.00" in result.err
    no_key_in(result, good, unknown)


async def test_malformed_target_line_is_a_usage_error(tmp_path: pathlib.Path) -> None:
    targets = tmp_path / "t.txt"
    targets.write_text("a,b,c,d\n")
    result = await run("--base-url", "http://127.0.0.1:9", "balances", str(targets))
    assert result.code == 2
    assert "t.txt:1: expected key[,organization[,label]]" in result.err


async def test_watch_once_for_cron(live: StabilityEmulator) -> None:
    key = live.add_account(credits=8)
    env = {"STABILITY_API_KEY": key, "STABILITY_API_HOST": live.base_url}
    low = await run("watch", "--once", "--below", "10", env=env)
    assert low.code == 1
    assert low.out.rstrip().endswith("8.00 credits  BELOW 10")
    fine = await run("watch", "--once", "--below", "5", env=env)
    assert fine.code == 0
    assert fine.out.rstrip().endswith("8.00 credits")
    live.script(Fault.reset(), api_key=key)
    failed = await run("--max-attempts", "1", "watch", "--once", env=env)
    assert failed.code == 1
    assert "poll failed" in failed.err


async def test_progress_bar_only_on_a_terminal() -> None:
    leader, follower = pty.openpty()
    # A terminal has a size; tqdm draws nothing on one zero columns wide.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        assert EXECUTABLE is not None
        process = await asyncio.create_subprocess_exec(
            EXECUTABLE,
            "--emulator",
            "5",
            "balances",
            stdout=asyncio.subprocess.PIPE,
            stderr=follower,
        )
        os.close(follower)
        out, _ = await process.communicate()
        assert process.returncode == 0
        err = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the follower side is closed: all of it has been read
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(leader)
    assert b"0/5 [" in err  # tqdm's bar, drawn on the terminal
    assert b"checks/s" in err
    assert b"checked 5, failed 0" in err
    assert len(out.decode().splitlines()) == 6


async def test_version_and_help() -> None:
    assert (await run("--version")).out.strip().endswith(__version__)
    assert "Check many balances" in (await run("balances", "--help")).out
