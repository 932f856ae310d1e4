"""The command line's rate-limit store when the machine-wide one cannot be used."""

from __future__ import annotations

import pathlib
import sys

import pytest

from stability_user import StabilityError
from stability_user.cli._describe import describe
from stability_user.testing import StabilityEmulator

from .processes import no_key_in, run_cli, run_program

FALLBACK = (
    "stability-user: warning: the machine-wide rate-limit store cannot be used "
    "({where}: {reason}): this run keeps its rate limit to itself "
    "(--rate-limit-store memory or STABILITY_RATE_LIMIT_STORE=memory does so without "
    "this warning)\n"
)


def not_a_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    """A cache 'folder' that is a regular file: nothing can be created under it."""
    cache = tmp_path / "cache"
    cache.write_text("a file, not a folder\n")
    return cache


async def test_an_unusable_cache_folder_falls_back_to_memory_with_one_warning(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    key = live.add_account(credits=7)
    cache = not_a_folder(tmp_path)
    env = {"XDG_CACHE_HOME": str(cache), "STABILITY_API_KEY": key}
    result = await run_cli("--base-url", live.base_url, "balance", env=env)
    where = cache / "stability-user" / "ratelimit.sqlite3"
    assert (result.code, result.out) == (0, "7.00 credits\n")
    assert result.err == FALLBACK.format(where=where, reason="not a directory")
    # Every command goes on the same way, bulk runs too.
    rows = await run_cli(
        "--base-url",
        live.base_url,
        "balances",
        "-",
        "--summary",
        "none",
        stdin=f"{key}\n",
        env={"XDG_CACHE_HOME": str(cache)},
    )
    assert rows.code == 0
    assert rows.err == FALLBACK.format(where=where, reason="not a directory")
    no_key_in(result, key)
    no_key_in(rows, key)


async def test_choosing_memory_silences_it(live: StabilityEmulator, tmp_path: pathlib.Path) -> None:
    key = live.add_account(credits=7)
    env = {"XDG_CACHE_HOME": str(not_a_folder(tmp_path)), "STABILITY_API_KEY": key}
    flag = await run_cli(
        "--base-url", live.base_url, "--rate-limit-store", "memory", "balance", env=env
    )
    variable = await run_cli(
        "--base-url", live.base_url, "balance", env={**env, "STABILITY_RATE_LIMIT_STORE": "memory"}
    )
    assert (flag.code, flag.out, flag.err) == (0, "7.00 credits\n", "")
    assert (variable.code, variable.out, variable.err) == (0, "7.00 credits\n", "")


async def test_a_store_file_that_is_not_a_database_falls_back_too(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    key = live.add_account(credits=3)
    where = tmp_path / "cache" / "stability-user" / "ratelimit.sqlite3"
    where.parent.mkdir(parents=True)
    where.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 4096)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "STABILITY_API_KEY": key}
    # Chosen explicitly, the store is as unusable: the same warning, and the run goes on.
    result = await run_cli(
        "--base-url", live.base_url, "--rate-limit-store", "local", "balance", env=env
    )
    assert (result.code, result.out) == (0, "3.00 credits\n")
    assert result.err == FALLBACK.format(where=where, reason="file is not a database")
    assert where.read_bytes().startswith(b"\x89PNG")  # left as it was


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (
            "the machine-wide rate-limit store /x/r.sqlite3 stayed busy for 10 s (another "
            "process holds it): try again, or choose another store (rate_limit_store='memory')",
            "the machine-wide rate-limit store /x/r.sqlite3 stayed busy for 10 s (another "
            "process holds it): try again, or choose another store (--rate-limit-store memory)",
        ),
        (
            "404: pass api_version='v1' or set STABILITY_API_VERSION=v1",
            "404: pass --api-version v1 or set STABILITY_API_VERSION=v1",
        ),
        ("timeout must be above 0", "--timeout must be above 0"),
    ],
)
def test_errors_name_options_never_library_parameters(message: str, line: str) -> None:
    assert describe(StabilityError(message)) == line


WITHOUT_PLATFORMDIRS = """
import sys
sys.modules["platformdirs"] = None  # `import platformdirs` raises ModuleNotFoundError
from stability_user.cli import main
main(["--base-url", sys.argv[1], "balance"])
"""


async def test_without_platformdirs_it_says_what_to_install(live: StabilityEmulator) -> None:
    key = live.add_account(credits=1)
    result = await run_program(
        sys.executable, "-c", WITHOUT_PLATFORMDIRS, live.base_url, env={"STABILITY_API_KEY": key}
    )
    assert (result.code, result.out, result.err) == (
        1,
        "",
        "stability-user: error: the command line needs its extra: "
        "pip install 'stability-user[cli]'\n",
    )
