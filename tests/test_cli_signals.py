"""Ctrl-C: at start-up, mid-run and while watching; one line, never a traceback."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal

from stability_user.testing import Fault, StabilityEmulator

from .processes import start_cli


async def test_ctrl_c_during_start_up(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "key"
    os.mkfifo(fifo)
    process = await start_cli("--key-file", str(fifo), "balance")
    # Opening a FIFO for writing returns once the program has opened it to read the
    # key: it is then waiting for the key, as a start-up blocked on a slow file would.
    writer = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)
    try:
        process.send_signal(signal.SIGINT)
        out, err = await process.communicate()
    finally:
        os.close(writer)
    assert process.returncode == 130
    assert (out, err) == (b"", b"stability-user: interrupted\n")


async def test_ctrl_c_mid_run_prints_a_partial_summary(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    keys = [live.add_account(credits=n) for n in (1, 2, 3, 4, 5)]
    for key in keys[3:]:
        live.script(Fault.stall(60), api_key=key)  # the rest of the run hangs
    targets = tmp_path / "targets.txt"
    targets.write_text("".join(f"{key}\n" for key in keys))
    process = await start_cli(
        "--base-url", live.base_url, "balances", str(targets), "--concurrency", "1", "--ordered"
    )
    assert process.stdout is not None
    lines = [await process.stdout.readline() for _ in range(4)]  # the header and 3 rows
    assert [line.split()[-1] for line in lines[1:]] == [b"ok"] * 3
    await live.wait_for_requests(4)  # the fourth is in flight, stalled
    process.send_signal(signal.SIGINT)
    out, err = await process.communicate()
    assert process.returncode == 130
    assert out == b""
    assert err.decode() == "interrupted after 3 of 5: failed 0, total credits 6.00\n"


async def test_ctrl_c_ends_a_watch(live: StabilityEmulator) -> None:
    key = live.add_account(credits=8)
    process = await start_cli(
        "watch",
        "--interval",
        "60",
        env={"STABILITY_API_KEY": key, "STABILITY_API_HOST": live.base_url},
    )
    assert process.stdout is not None
    first = await process.stdout.readline()
    assert first.endswith(b"  8.00 credits\n")
    process.send_signal(signal.SIGINT)
    out, err = await process.communicate()
    assert (process.returncode, out, err) == (130, b"", b"stability-user: interrupted\n")


async def test_ctrl_c_while_stdin_stays_open_counts_what_was_checked(
    live: StabilityEmulator,
) -> None:
    key = live.add_account(credits=3)
    process = await start_cli(
        "--base-url", live.base_url, "balances", "-", stdin=asyncio.subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(f"{key},,first\n".encode())  # and nothing more: a slow producer
    await process.stdin.drain()
    header = await asyncio.wait_for(process.stdout.readline(), 30)
    row = await asyncio.wait_for(process.stdout.readline(), 30)
    assert header.split() == [b"LINE", b"TARGET", b"ORGANIZATION", b"CREDITS", b"STATUS"]
    assert row.split() == [b"1", b"first", b"(default)", b"3.00", b"ok"]
    process.send_signal(signal.SIGINT)  # while its reader waits for the next line
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130
    assert out == b""
    assert err.decode() == "interrupted after 1: failed 0, total credits 3.00\n"
