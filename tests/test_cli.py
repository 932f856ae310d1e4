"""The stability-user command line, run as a real subprocess against the emulator."""

from __future__ import annotations

import json
import pathlib
import signal
import sys

import pytest

from stability_user import __version__
from stability_user.testing import EmulatedOrganization, Fault, StabilityEmulator
from stability_user.testing import RateLimit as EmulatorRateLimit

from .processes import no_key_in, run_program, start_cli
from .processes import run_cli as run


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
    assert as_json == {
        "id": "user-1",
        "email": "me@example.com",
        "profile_picture": None,
        "organizations": [
            {"id": "org-a", "name": "Alpha", "role": "OWNER", "is_default": True},
            {"id": "org-b", "name": "Beta", "role": "MEMBER", "is_default": False},
        ],
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
    assert (
        usage.err
        == f"stability-user: error: --key-file {empty} holds no API key on its first line\n"
    )
    missing = await run("--key-file", str(tmp_path / "nope"), "balance")
    assert (missing.code, missing.err) == (
        2,
        f"stability-user: error: --key-file {tmp_path / 'nope'}: no such file or directory\n",
    )


async def test_a_byte_order_mark_is_not_part_of_the_key(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    key = live.add_account(credits=9)
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xef\xbb\xbf" + key.encode() + b"\r\n")  # as Notepad saves it
    result = await run("--key-file", str(key_file), "--base-url", live.base_url, "balance")
    assert (result.code, result.out, result.err) == (0, "9.00 credits\n", "")


async def test_errors_are_one_line_without_traceback(live: StabilityEmulator) -> None:
    bad_key = "sk-" + "0" * 48
    env = {"STABILITY_API_KEY": bad_key, "STABILITY_API_HOST": live.base_url}
    result = await run("balance", env=env)
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith("stability-user: error: 401 unauthorized")
    assert result.err.endswith(": check STABILITY_API_KEY or --key-file\n")
    assert "Traceback" not in result.err
    no_key_in(result, bad_key)
    debug = await run("--debug", "balance", env=env)
    assert debug.code == 1
    assert "Traceback" in debug.err
    assert "AuthenticationError" in debug.err


async def test_missing_key_is_a_usage_error_naming_both_ways() -> None:
    result = await run("balance")
    assert result.code == 2
    assert result.err == (
        "stability-user: error: no API key: set STABILITY_API_KEY or pass --key-file FILE "
        "(a file whose first line is the key)\n"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--rate-limit", "abc", "balance"],
            "--rate-limit: rate limit must be REQUESTS/SECONDS, e.g. 150/10, got 'abc' "
            "(see 'stability-user --help')",
        ),
        (
            ["--timeout", "0", "balance"],
            "--timeout: must be a number of seconds > 0, got 0 (see 'stability-user --help')",
        ),
        (
            ["balances"],
            "give a FILE of targets, or - to read them from stdin "
            "(see 'stability-user balances --help')",
        ),
        (["--foo", "balance"], "no such option '--foo' (see 'stability-user --help')"),
        (
            ["balance", "extra"],
            "got unexpected extra argument (extra) (see 'stability-user balance --help')",
        ),
        (["nonsense"], "no such command 'nonsense' (see 'stability-user --help')"),
        (
            ["--api-version", "v1beta", "balance"],
            "--api-version: 'v1beta' is not one of 'v1', 'v1alpha' (see 'stability-user --help')",
        ),
        (
            ["--emulator", "1", "watch", "--below", "nan"],
            "--below: must be a finite number, got nan (see 'stability-user watch --help')",
        ),
        (
            ["--emulator", "1", "exporter", "--interval", "nan"],
            "--interval: must be a number of seconds > 0, got nan "
            "(see 'stability-user exporter --help')",
        ),
        (
            ["--emulator", "1", "watch", "--interval", "inf", "--once"],
            "--interval: must be a number of seconds > 0, got inf "
            "(see 'stability-user watch --help')",
        ),
        (
            ["--emulator", "1", "exporter", "--interval", "90000"],
            "--interval: must be at most 86400 seconds, got 90000 "
            "(see 'stability-user exporter --help')",
        ),
        (
            ["--emulator", "1", "balances", "-c", "0"],
            "--concurrency: 0 is not in the range 1<=x<=10000 "
            "(see 'stability-user balances --help')",
        ),
    ],
)
async def test_a_usage_error_is_one_line_naming_the_option(args: list[str], line: str) -> None:
    result = await run(*args)
    assert (result.code, result.out, result.err) == (2, "", f"stability-user: error: {line}\n")


async def test_an_option_from_the_environment_is_named_by_its_variable() -> None:
    result = await run("balance", env={"STABILITY_RATE_LIMIT": "abc"})
    assert (result.code, result.err) == (
        2,
        "stability-user: error: STABILITY_RATE_LIMIT: rate limit must be REQUESTS/SECONDS, "
        "e.g. 150/10, got 'abc' (see 'stability-user --help')\n",
    )


async def test_help_is_still_click_s_own() -> None:
    result = await run("--help")
    assert result.code == 0
    assert result.out.startswith("Usage: stability-user [OPTIONS] COMMAND [ARGS]...")
    bare = await run()  # no command at all: the help, as before (on stderr since click 8.2)
    assert (bare.out + bare.err).startswith("Usage: stability-user [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in bare.out + bare.err


KEY = "sk-" + "Ab3" * 16
MASKED = f"sk-…{KEY[-4:]}"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["balance", KEY], f"got unexpected extra argument ({MASKED})"),
        ([f"--key-file={KEY}", "balance"], f"--key-file {MASKED}: no such file or directory"),
        (["balances", KEY], f"cannot read {MASKED}: no such file or directory"),
        (["emulator", "--port", "0", KEY], f"unexpected argument {MASKED}"),
    ],
)
async def test_a_key_given_as_an_argument_is_masked_and_the_way_to_give_one_told(
    args: list[str], line: str
) -> None:
    result = await run(*args)
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"stability-user: error: {line}; an API key goes in STABILITY_API_KEY "
        "or --key-file FILE, never on the command line\n"
    )
    no_key_in(result, KEY)


async def test_a_key_looking_token_is_masked_in_any_error() -> None:
    result = await run("--base-url", KEY, "balance", env={"STABILITY_API_KEY": KEY})
    assert result.code == 2
    assert MASKED in result.err
    no_key_in(result, KEY)


async def test_the_emulator_option_does_not_apply_to_the_emulator_command() -> None:
    result = await run("--emulator", "2", "emulator", "--port", "0")
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        "stability-user: error: --emulator N does not apply to the emulator command: "
        "its own --accounts N sets how many demo accounts it serves "
        "(see 'stability-user emulator --help')\n"
    )


async def test_an_emulator_certificate_that_is_no_pem_says_so(tmp_path: pathlib.Path) -> None:
    keys = tmp_path / "keys.csv"
    keys.write_text("api_key,label\n")
    result = await run("emulator", "--certfile", str(keys))
    assert (result.code, result.err) == (
        2,
        "stability-user: error: cannot use --certfile/--keyfile as a PEM certificate "
        "and key: no PEM certificate and private key in them "
        "(see 'stability-user emulator --help')\n",
    )


# A core-only install (no [cli] extra) is one without click: as if it were not installed.
WITHOUT_CLICK = """
import sys
sys.modules["click"] = None  # `import click` raises ModuleNotFoundError
from stability_user.cli import main
main(["--version"])
"""


async def test_without_its_extra_the_command_line_says_what_to_install() -> None:
    result = await run_program(sys.executable, "-c", WITHOUT_CLICK)
    assert (result.code, result.out, result.err) == (
        1,
        "",
        "stability-user: the command line needs its extra: pip install 'stability-user[cli]'\n",
    )


OTHER_MISSING_MODULE = """
import sys
sys.modules["stability_user.cli._app"] = None
from stability_user.cli import main
main(["--version"])
"""


async def test_a_missing_module_of_the_package_itself_is_not_blamed_on_the_extra() -> None:
    result = await run_program(sys.executable, "-c", OTHER_MISSING_MODULE)
    assert result.code == 1
    assert "ModuleNotFoundError" in result.err
    assert "pip install" not in result.err


async def test_a_connection_refused_is_one_line_with_what_to_do() -> None:
    env = {"STABILITY_API_KEY": "sk-" + "4" * 48}
    result = await run("--base-url", "http://127.0.0.1:1", "balance", env=env)
    assert result.code == 1
    # One line: no retry notices before it (the attempts are counted in it), no traceback.
    assert result.err.count("\n") == 1
    assert result.err.startswith("stability-user: error: cannot connect to http://127.0.0.1:1 (")
    assert result.err.endswith(
        ") after 3 attempts: is the service or emulator running? check --base-url\n"
    )
    debug = await run("--debug", "--base-url", "http://127.0.0.1:1", "balance", env=env)
    assert debug.err.count("stability-user: warning: retrying GET /v1/user/balance") == 2
    assert "Traceback" in debug.err


async def test_a_forbidden_organization_points_to_the_account_command(
    live: StabilityEmulator,
) -> None:
    key = live.add_account(credits=1)
    env = {"STABILITY_API_KEY": key, "STABILITY_API_HOST": live.base_url}
    result = await run("balance", "-o", "org-not-mine", env=env)
    assert result.code == 1
    assert result.err.startswith("stability-user: error: 403 ")
    assert result.err.endswith(": 'stability-user account' lists the organizations of the key\n")


async def test_a_retired_v1alpha_gives_the_command_line_s_advice_only() -> None:
    async with StabilityEmulator(retire_v1alpha=True) as emulator:
        key = emulator.add_account(credits=1)
        env = {"STABILITY_API_KEY": key, "STABILITY_API_HOST": emulator.base_url}
        result = await run("--api-version", "v1alpha", "balance", env=env)
        request_id = emulator.requests[0].request_id
    assert result.code == 1
    assert result.err == (
        "stability-user: error: 404 not_found: nothing at /v1alpha/user/balance "
        f"(request id {request_id}): the service may have retired v1alpha: try --api-version v1\n"
    )


async def test_api_version_defaults_to_v1_and_offers_the_library_versions(
    live: StabilityEmulator,
) -> None:
    key = live.add_account(credits=1)
    env = {"STABILITY_API_KEY": key, "STABILITY_API_HOST": live.base_url}
    assert (await run("balance", env=env)).code == 0
    assert (await run("--api-version", "v1alpha", "balance", env=env)).code == 0
    assert [r.path for r in live.requests] == ["/v1/user/balance", "/v1alpha/user/balance"]
    help_text = " ".join((await run("--help")).out.split())
    assert "--api-version [v1|v1alpha]" in help_text
    assert "default v1]" in help_text


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
    failed = await run("--max-attempts", "1", "watch", "--once", "--below", "5", env=env)
    assert failed.code == 3  # not 1: "could not check" is not "below the threshold"
    assert failed.out == ""
    assert "poll failed: " in failed.err
    assert "1 below it, 3 when the balance could not be read" in " ".join(
        (await run("watch", "--help")).out.split()
    )


async def test_version_and_help() -> None:
    assert (await run("--version")).out.strip().endswith(__version__)
    assert "Check many balances" in (await run("balances", "--help")).out


async def test_runs_as_a_module() -> None:
    result = await run_program(sys.executable, "-m", "stability_user.cli", "--version")
    assert (result.code, result.out.strip()) == (0, f"stability-user, version {__version__}")


async def test_the_emulator_command_is_the_standalone_emulator() -> None:
    help_text = await run("emulator", "--help")
    assert help_text.code == 0
    assert help_text.out.startswith("Usage: stability-user emulator [OPTIONS]\n")
    assert "--rate-limit" in help_text.out
    wrong = await run("emulator", "--port", "nope")
    assert wrong.code == 2
    assert wrong.err.startswith("stability-user: error: --port: ")
    process = await start_cli("emulator", "--port", "0", "--accounts", "1")
    assert process.stdout is not None
    first = await process.stdout.readline()
    assert first.startswith(b"Stability user API emulator on http://127.0.0.1:")
    process.send_signal(signal.SIGINT)
    await process.communicate()
    assert process.returncode == 0


async def test_back_to_back_runs_share_one_window_through_the_local_store(
    tmp_path: pathlib.Path,
) -> None:
    # The service's limit scaled down: 20 requests per second, 3 s of 429 past it.
    limit = EmulatorRateLimit(requests=20, window=1.0, lockout=3.0)
    async with StabilityEmulator(rate_limit=limit) as emulator:
        key = emulator.add_account(credits=1)
        targets = tmp_path / "targets.txt"
        targets.write_text(f"{key}\n" * 20)
        env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # a private machine-wide store
        args = (
            *("--base-url", emulator.base_url, "--rate-limit", "20/1"),
            *("--rate-limit-store", "local", "balances", str(targets), "--summary", "none"),
        )
        first = await run(*args, env=env)
        second = await run(*args, env=env)
        assert (first.code, second.code) == (0, 0), first.err + second.err
        statuses = [request.status for request in emulator.requests]
    assert len(statuses) == 40
    assert statuses.count(429) == 0


# Run apart: importing the command line here would add `cli` to the package's attributes.
LIST_OPTIONS = """
import json
from stability_user.cli._app import cli
options = [o for p in cli.params for o in p.opts if o.startswith("--")]
for name, command in cli.commands.items():
    options += [f"``{name}"] + [o for p in command.params for o in p.opts if o.startswith("-")]
print(json.dumps(options))
"""


async def test_the_docs_describe_every_command_option_and_exit_code() -> None:
    listed = await run_program(sys.executable, "-c", LIST_OPTIONS)
    assert listed.code == 0, listed.err
    options = json.loads(listed.out)
    assert "``balances" in options
    assert "--rate-limit-store" in options
    text = (pathlib.Path(__file__).parent.parent / "docs" / "cli.rst").read_text()
    missing = [opt for opt in options if opt not in text and opt not in ("--help", "--version")]
    assert missing == []
    for code in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n{code}" in text


def help_layout(text: str) -> list[str]:
    """The shape of a help text: its sections, and how each line is indented."""
    shape = []
    for line in text.splitlines():
        if line.startswith("Usage: "):
            shape.append("Usage: PROG [OPTIONS]...")
        elif line in ("Options:", "Commands:", ""):
            shape.append(line)
        else:
            shape.append(" " * (len(line) - len(line.lstrip())) + "text")
    return list(dict.fromkeys(shape))  # each distinct shape once, in order


async def test_every_command_s_help_and_errors_read_the_same() -> None:
    emulator = await run("emulator", "--help")
    balances = await run("balances", "--help")
    assert emulator.code == balances.code == 0
    assert emulator.out.startswith("Usage: stability-user emulator [OPTIONS]\n\n  ")
    assert help_layout(emulator.out)[:4] == help_layout(balances.out)[:4]
    assert "\nOptions:\n" in emulator.out
    help_line = "  -h, --help"
    assert emulator.out.splitlines()[-1].startswith(help_line)
    assert emulator.out.splitlines()[-1].endswith("  Show this message and exit.")
    assert balances.out.splitlines()[-1].endswith("  Show this message and exit.")
    errors = [
        await run("balances", "--nope"),
        await run("emulator", "--nope"),
        await run("exporter", "--nope"),
    ]
    assert [(e.code, e.err) for e in errors] == [
        (2, f"stability-user: error: no such option '--nope' (see 'stability-user {c} --help')\n")
        for c in ("balances", "emulator", "exporter")
    ]


# The `testing` use of the package installs no command-line extra: no click.
STANDALONE_WITHOUT_CLICK = """
import sys
sys.modules["click"] = None
from stability_user.testing.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


async def test_the_standalone_emulator_needs_no_click() -> None:
    help_text = await run_program(sys.executable, "-c", STANDALONE_WITHOUT_CLICK, "--help")
    assert help_text.code == 0, help_text.err
    assert help_text.out.startswith("Usage: python -m stability_user.testing [OPTIONS]\n")
    wrong = await run_program(sys.executable, "-c", STANDALONE_WITHOUT_CLICK, "--port", "x")
    assert (wrong.code, wrong.err) == (
        2,
        "python -m stability_user.testing: error: --port: expected a whole number of at "
        "least 0, got 'x' (see 'python -m stability_user.testing --help')\n",
    )


async def test_help_lists_every_exit_code_and_whole_summaries() -> None:
    out = (await run("--help")).out
    codes = " ".join(out.split()).split("Exit codes: ", 1)[1].split(" Options:", 1)[0]
    for said in (
        "0 success, or a server (`exporter`, `emulator`) stopped;",
        "1 a failed call, a failed target of `balances`, a balance below --below with "
        "`watch --once`, an address a server cannot listen on, or an extra not installed;",
        "2 a usage error",
        "3 `watch --once` could not read the balance;",
        "130 interrupted.",
    ):
        assert said in codes
    summaries = dict(line.split(None, 1) for line in out.split("Commands:\n", 1)[1].splitlines())
    assert set(summaries) == {"account", "balance", "balances", "emulator", "exporter", "watch"}
    for summary in summaries.values():
        assert summary.endswith(".")
        assert not summary.endswith("...")
