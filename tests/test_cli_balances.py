"""``stability-user balances``: target files, formats, summaries and the progress bar."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import json
import os
import pathlib
import pty
import struct
import termios

from stability_user.testing import EmulatedOrganization, Fault, StabilityEmulator

from .processes import no_key_in, run_cli, start_cli

BALANCE_HEADER = "index,label,key,organization,credits,ok,low,error_type,error,line"


async def test_a_file_in_every_line_form(live: StabilityEmulator, tmp_path: pathlib.Path) -> None:
    one = live.add_account(credits=1)
    two = live.add_account(
        organizations=[
            EmulatedOrganization("org-x", "X", is_default=True, credits=2),
            EmulatedOrganization("org-y", "Y", credits=20),
        ]
    )
    targets = tmp_path / "targets.txt"
    targets.write_text(f"# customers\n{one}\n\n{two},org-y\n{two},org-x,acme\n")
    result = await run_cli(
        "--base-url", live.base_url, "balances", str(targets), "--format", "json", "--ordered"
    )
    assert result.code == 0
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [(r["index"], r["organization"], r["label"], r["credits"]) for r in rows] == [
        (0, None, None, 1.0),
        (1, "org-y", None, 20.0),
        (2, "org-x", "acme", 2.0),
    ]
    assert rows[0]["key"] == f"sk-…{one[-4:]}"
    assert result.err == "checked 3, failed 0, total credits 23.00\n"
    no_key_in(result, one, two)


async def test_csv_from_stdin_with_a_header_and_a_byte_order_mark(live: StabilityEmulator) -> None:
    one, two = live.add_account(credits=5), live.add_account(credits=6)
    stdin = f"\ufeffLabel,API_KEY\nfirst,{one}\nsecond,{two}\n"
    result = await run_cli(
        "--base-url", live.base_url, "balances", "-", "--format", "csv", "--ordered", stdin=stdin
    )
    assert result.code == 0, result.err
    rows = list(csv.reader(io.StringIO(result.out)))
    assert rows[0] == BALANCE_HEADER.split(",")
    assert rows[1] == ["0", "first", f"sk-…{one[-4:]}", "", "5.0", "true", "false", "", "", "2"]
    assert rows[2][:2] == ["1", "second"]
    assert "checked 2, failed 0, total credits 11.00" in result.err
    no_key_in(result, one, two)


async def test_csv_cells_cannot_start_a_formula(live: StabilityEmulator) -> None:
    key = live.add_account(credits=5)
    labels = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "plain"]
    stdin = "".join(f"{key},,{label}\n" for label in labels)
    result = await run_cli(
        "--base-url", live.base_url, "balances", "-", "--format", "csv", "--ordered", stdin=stdin
    )
    assert result.code == 0, result.err
    cells = [row[1] for row in csv.reader(io.StringIO(result.out))][1:]
    assert cells == ['\'=HYPERLINK("http://x")', "'+1", "'-2", "'@SUM(A1)", "plain"]


async def test_failures_are_rows_and_exit_1(live: StabilityEmulator) -> None:
    good = live.add_account(credits=5)
    unknown = "sk-" + "9" * 48
    live.script(503, 503, api_key=good)  # retried, then fine
    stdin = f"{good}\n{unknown}\n"
    result = await run_cli("--base-url", live.base_url, "balances", "-", "--ordered", stdin=stdin)
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[1].split()[-1] == "ok"
    assert "AuthenticationError: 401 unauthorized" in lines[2]
    # The retries of the first target succeeded: no notice of them, only the summary.
    assert result.err == "checked 2, failed 1, total credits 5.00\n"
    no_key_in(result, good, unknown)


async def test_json_summary_for_scripts(live: StabilityEmulator) -> None:
    rich, poor = live.add_account(credits=50), live.add_account(credits=2)
    stdin = f"{rich},,rich\n{poor},,poor\nsk-{'7' * 48},,gone\n"
    result = await run_cli(
        "--base-url",
        live.base_url,
        "balances",
        "-",
        "--below",
        "10",
        "--summary",
        "json",
        "--format",
        "json",
        stdin=stdin,
    )
    assert result.code == 1
    assert json.loads(result.err) == {
        "targets": None,  # stdin: not known ahead
        "checked": 3,
        "failed": 1,
        "low": 1,
        "below": 10.0,
        "total_credits": 52.0,
        "total_credits_overflow": False,
        "interrupted": False,
    }
    assert len(result.out.splitlines()) == 3
    quiet = await run_cli(
        "--base-url", live.base_url, "balances", "-", "--summary", "none", stdin=f"{rich}\n"
    )
    assert (quiet.code, quiet.err) == (0, "")


async def test_a_file_is_read_through_before_any_call(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    key = live.add_account(credits=1)
    targets = tmp_path / "t.txt"
    targets.write_text(f"{key}\n" * 50 + "a,b,c,d\n")
    result = await run_cli("--base-url", live.base_url, "balances", str(targets))
    assert result.code == 2
    assert result.out == ""
    assert result.err == (
        f"stability-user: error: {targets}:51: expected key[,organization[,label]], got 4 fields\n"
    )
    assert live.requests == []  # nothing was sent


async def test_unreadable_target_files_name_the_file_and_line(tmp_path: pathlib.Path) -> None:
    base = ("--base-url", "http://127.0.0.1:9")
    binary = tmp_path / "keys.bin"
    binary.write_bytes(b"sk-" + b"1" * 40 + b"\n\x89PNG\r\n\x1a\n\x00\x00")
    result = await run_cli(*base, "balances", str(binary))
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"stability-user: error: {binary}:2: not UTF-8 text (byte 0x89 at column 1): "
        "is it a binary file?\n"
    )
    huge = tmp_path / "huge.txt"
    huge.write_text("sk-" + "x" * 200_000 + "\n")
    result = await run_cli(*base, "balances", str(huge))
    assert result.code == 2
    assert result.err == (
        f"stability-user: error: {huge}:1: a field is longer than 131,072 characters: "
        "not a target\n"
    )
    missing = await run_cli(*base, "balances", str(tmp_path / "nope.txt"))
    assert missing.code == 2
    assert missing.err == (
        f"stability-user: error: cannot read {tmp_path / 'nope.txt'}: no such file or directory\n"
    )


async def test_a_bad_line_on_stdin_stops_the_run_with_exit_2() -> None:
    result = await run_cli("--base-url", "http://127.0.0.1:9", "balances", "-", stdin="a,b,c,d,e\n")
    assert result.code == 2
    assert result.err == (
        "stability-user: error: stdin:1: expected key[,organization[,label]], got 5 fields\n"
    )


async def test_no_targets_is_exit_2(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody yet\n\n")
    result = await run_cli("--base-url", "http://127.0.0.1:9", "balances", str(empty))
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"stability-user: error: no targets in {empty}: it holds only blank lines and comments\n"
    )
    stdin = await run_cli("--base-url", "http://127.0.0.1:9", "balances", "-", stdin="")
    assert (stdin.code, stdin.out) == (2, "")  # not even the table's header
    assert stdin.err == "stability-user: error: no targets on stdin\n"
    as_csv = await run_cli("--emulator", "1", "balances", "-", "--format", "csv", stdin="# x\n")
    assert (as_csv.code, as_csv.out) == (2, "")


async def test_stdin_is_checked_line_by_line_as_it_comes(live: StabilityEmulator) -> None:
    one, two = live.add_account(credits=1), live.add_account(credits=2)
    process = await start_cli(
        *("--base-url", live.base_url, "balances", "-", "--format", "json"),
        stdin=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        # One line at a time, stdin left open: each row comes before the next line is sent.
        for key, label, credits in ((one, "one", 1.0), (two, "two", 2.0)):
            process.stdin.write(f"{key},,{label}\n".encode())
            await process.stdin.drain()
            row = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
            assert (row["label"], row["credits"]) == (label, credits)
        process.stdin.close()
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (process.returncode, out) == (0, b"")
    assert err.decode() == "checked 2, failed 0, total credits 3.00\n"


async def test_a_key_looking_label_is_masked_in_the_rows(live: StabilityEmulator) -> None:
    key = live.add_account(credits=1)
    pasted = "sk-" + "Z" * 40  # the columns in the wrong order: a key where the label goes
    result = await run_cli(
        "--base-url", live.base_url, "balances", "-", "--format", "csv", stdin=f"{key},,{pasted}\n"
    )
    assert result.code == 0, result.err
    assert list(csv.reader(io.StringIO(result.out)))[1][1] == "sk-…ZZZZ"
    no_key_in(result, key, pasted)


async def test_a_header_without_a_key_column_stops_the_run(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    targets = tmp_path / "keys.csv"
    targets.write_text("organization,label\norg-1,acme\n")
    result = await run_cli("--base-url", live.base_url, "balances", str(targets))
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"stability-user: error: {targets}:1: a header row needs an api_key (or key) column\n"
    )
    assert live.requests == []


async def test_terminal_text_has_its_control_characters_escaped(
    live: StabilityEmulator,
) -> None:
    key = live.add_account(
        email="\x1b]0;owned\x07me@example.com",
        organizations=[EmulatedOrganization("org-a", "A\x1b[2J", is_default=True, credits=3)],
    )
    env = {"STABILITY_API_KEY": key, "STABILITY_API_HOST": live.base_url}
    account = await run_cli("account", env=env)
    assert account.out.splitlines() == [
        "\\x1b]0;owned\\x07me@example.com (user-1)",
        "  org-a  A\\x1b[2J  [MEMBER]  (default)",
    ]
    table = await run_cli("balances", "-", env=env, stdin=f"{key},,\x1b[31mred\u202e\n")
    assert table.code == 0, table.err
    assert table.out.splitlines()[1].startswith("    1  \\x1b[31mred\\u202e ")
    assert "\x1b" not in table.out + account.out
    as_json = await run_cli("account", "--json", env=env)
    assert json.loads(as_json.out)["email"] == "\x1b]0;owned\x07me@example.com"
    assert "\x1b" not in as_json.out  # the encoder escapes it


async def test_account_text_is_hostile_input_too(live: StabilityEmulator) -> None:
    key, stranger = "sk-" + "k" * 44 + "abcd", "sk-" + "s" * 44 + "wxyz"
    # A server echoing the key it was sent, another key, and a name of 300,000 characters.
    live.add_account(
        api_key=key,
        email=f"{key} x@example.com",
        organizations=[EmulatedOrganization(stranger, "N" * 300_000, is_default=True)],
    )
    env = {"STABILITY_API_KEY": key, "STABILITY_API_HOST": live.base_url}
    text = await run_cli("account", env=env)
    assert text.code == 0, text.err
    assert text.out.splitlines() == [
        "[redacted] x@example.com (user-1)",
        f"  sk-…wxyz  {'N' * 200}… (299800 more characters)  [MEMBER]  (default)",
    ]
    as_json = json.loads((await run_cli("account", "--json", env=env)).out)
    assert as_json["email"] == "[redacted] x@example.com"
    assert as_json["organizations"][0]["id"] == "sk-…wxyz"
    assert len(as_json["organizations"][0]["name"]) < 300
    no_key_in(text, key, stranger)


async def test_progress_bar_on_a_terminal_shows_the_total_and_the_waits(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    key = live.add_account(credits=1)
    targets = tmp_path / "t.txt"
    targets.write_text(f"{key}\n" * 5)
    leader, follower = pty.openpty()
    # A terminal has a size; tqdm draws nothing on one zero columns wide.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        process = await start_cli(
            *("--base-url", live.base_url, "--rate-limit", "2/1"),
            *("--rate-limit-store", "memory", "balances", str(targets)),
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
    text = err.decode()
    assert "0/5 [" in text  # the known total
    assert "%|" in text  # and so a percentage
    assert f"waiting 1 s: rate limit, sk-…{key[-4:]}" in text
    assert "checked 5, failed 0" in text
    assert len(out.decode().splitlines()) == 6
    assert len(live.requests) == 5  # every check sent once: the limit waited, never a 429


async def test_off_a_terminal_there_is_no_bar() -> None:
    result = await run_cli("--emulator", "3", "balances")
    assert result.code == 0
    assert result.err == "checked 3, failed 0, total credits 226.50\n"


async def test_a_lockout_is_one_warning_line(live: StabilityEmulator) -> None:
    key = live.add_account(credits=1)
    live.script(Fault.respond(429, retry_after=1), api_key=key)
    result = await run_cli(
        "--base-url",
        live.base_url,
        "--rate-limit-store",
        "memory",
        "balances",
        "-",
        stdin=f"{key}\n",
    )
    assert result.code == 0, result.err
    assert result.err.splitlines() == [
        f"stability-user: warning: the service locked sk-…{key[-4:]} out for 1 s (429): "
        "its calls wait until then",
        "checked 1, failed 0, total credits 1.00",
    ]


async def test_every_format_names_each_row_s_line(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    good = live.add_account(credits=4)
    # Two invalid keys too short to show even their last four characters: both are "…".
    targets = tmp_path / "targets.txt"
    targets.write_text(f"# customers\n{good}\n\nsk-short1\n# gone\nsk-short2,org-9\n")
    args = ("--base-url", live.base_url, "--max-attempts", "1", "balances", "--ordered")
    table = await run_cli(*args, str(targets))
    assert table.code == 1
    head, *rows = table.out.splitlines()
    assert head.split() == ["LINE", "TARGET", "ORGANIZATION", "CREDITS", "STATUS"]
    assert [row.split()[:2] for row in rows] == [["2", "sk-…" + good[-4:]], ["4", "…"], ["6", "…"]]
    assert "AuthenticationError" in rows[1]
    as_json = await run_cli(*args, str(targets), "--format", "json")
    assert [(row["index"], row["line"]) for row in map(json.loads, as_json.out.splitlines())] == [
        (0, 2),
        (1, 4),
        (2, 6),
    ]
    as_csv = await run_cli(*args, "-", "--format", "csv", stdin=targets.read_text())
    records = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert [(r["index"], r["line"], r["ok"]) for r in records] == [
        ("0", "2", "true"),
        ("1", "4", "false"),
        ("2", "6", "false"),
    ]
    no_key_in(table, good)


async def test_demo_accounts_have_no_line() -> None:
    table = await run_cli("--emulator", "2", "balances", "--ordered")
    head, *rows = table.out.splitlines()
    assert head.split() == ["TARGET", "ORGANIZATION", "CREDITS", "STATUS"]
    assert [row.split()[0] for row in rows] == ["demo-1", "demo-2"]
    as_json = await run_cli("--emulator", "1", "balances", "--format", "json")
    assert json.loads(as_json.out)["line"] is None
