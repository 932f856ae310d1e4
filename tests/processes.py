"""Running the project's programs as real subprocesses, the way users run them."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

import attrs


@attrs.frozen
class Run:
    """What a finished program said and how it exited."""

    code: int
    out: str
    err: str


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any STABILITY_* variable, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}
    return {**base, **(extra or {})}


async def run_program(
    *argv: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> Run:
    """Run ``argv`` to completion without blocking the event loop (the emulator shares it)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_environment(env),
    )
    out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


CLI = shutil.which("stability-user", path=os.path.dirname(sys.executable))


async def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Run:
    """Run the installed ``stability-user`` console script with ``args``."""
    assert CLI is not None, "the stability-user console script is not installed"
    return await run_program(CLI, *args, stdin=stdin, env=env)


async def start_cli(
    *args: str,
    stdin: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.PIPE,
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start the installed ``stability-user`` with ``args``, stdout piped, for a test to drive."""
    assert CLI is not None, "the stability-user console script is not installed"
    return await asyncio.create_subprocess_exec(
        CLI,
        *args,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env=clean_environment(env),
    )


def no_key_in(result: Run, *keys: str) -> None:
    """Assert that no key appears anywhere in what the program printed."""
    for key in keys:
        assert key not in result.out
        assert key not in result.err
