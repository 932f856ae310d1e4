"""What the command line says when something fails: one line, and what to do about it."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import IO, Any, ParamSpec, TypeVar

import click

from .._errors import StabilityError
from .._secrets import escape_controls, redact
from .._targets import TargetFileError
from ._describe import describe
from ._masking import KEY_HINT, mask_keys

__all__ = [
    "PROG",
    "Failure",
    "Interrupted",
    "UsageFailure",
    "interruptible",
    "os_reason",
    "run_async",
    "usage_line",
]

T = TypeVar("T")
P = ParamSpec("P")

PROG = "stability-user"


def _one_line(message: str, *, usage: bool) -> str:
    """``message`` made safe to print: control characters escaped, keys masked.

    A usage error that quoted a key was given one on the command line: it says
    where a key goes instead.
    """
    text = escape_controls(message)
    masked = mask_keys(text)
    if usage and masked != text:
        return f"{masked}; {KEY_HINT}"
    return masked


class Failure(click.ClickException):
    """A failure shown as one line, ``stability-user: error: ...``; exit 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the one line on stderr."""
        line = _one_line(self.message, usage=self.exit_code == 2)
        click.echo(f"{PROG}: error: {line}", err=True)


class UsageFailure(Failure):
    """A usage error shown as one line (no key, an unreadable file); exit 2."""

    exit_code = 2


class Interrupted(Exception):  # noqa: N818 - it is not an error: the user asked for it
    """Ctrl-C stopped the work; the command says what was done and exits 130."""


def _option_name(error: click.BadParameter) -> str | None:
    """The option (or argument, or environment variable) a bad value was given to."""
    param, ctx = error.param, error.ctx
    if param is None:
        return None
    from_env = click.core.ParameterSource.ENVIRONMENT
    if (
        isinstance(param, click.Option)
        and isinstance(param.envvar, str)
        and ctx is not None
        and ctx.get_parameter_source(param.name or "") == from_env
    ):
        return param.envvar
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name


def _sentence(text: str) -> str:
    """A message of click's as a clause of ours: no capital to start, no full stop to end."""
    text = text.strip().rstrip(".")
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    return text


def usage_line(error: click.UsageError) -> str:
    """One line for a usage error from click: the option, what is wrong, where help is.

    ``--rate-limit: rate limit must be REQUESTS/SECONDS, e.g. 150/10, got 'abc'
    (see 'stability-user --help')``; an API key on the command line is masked, and
    the line says where a key goes instead.
    """
    name = _option_name(error) if isinstance(error, click.BadParameter) else None
    if name is not None and not isinstance(error, click.MissingParameter):
        what = f"{name}: {_sentence(error.message)}"
    else:
        what = _sentence(error.format_message())
    text = escape_controls(what)
    if mask_keys(text) != text:
        return _one_line(what, usage=True)
    command = error.ctx.command_path if error.ctx is not None else PROG
    return f"{text} (see '{command} --help')"


def interruptible(callback: Callable[P, T]) -> Callable[P, T]:
    """``callback`` with Ctrl-C turned into :class:`Interrupted` (exit 130, one line)."""

    @functools.wraps(callback)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted from None

    return wrapper


def os_reason(error: OSError) -> str:
    """What an operating-system error says, in the lower case of the middle of a line."""
    return (error.strerror or str(error)).lower()


def run_async(
    work: Coroutine[Any, Any, T],
    *,
    debug: bool,
    api_version: str | None = None,
    secrets: Sequence[str] = (),
) -> T:
    """Run ``work`` in a fresh event loop; a failure becomes a :class:`Failure`.

    Raises:
        Failure: a library error, a bad value or an OS error (unless ``debug``).
        Interrupted: Ctrl-C.
    """
    try:
        return asyncio.run(work)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise Interrupted from None
    except click.ClickException:
        raise
    except TargetFileError as error:  # a bad line met mid-run (stdin is not read ahead)
        raise UsageFailure(str(error)) from None
    except (StabilityError, ValueError, OSError) as error:
        if debug:
            raise
        raise Failure(redact(describe(error, api_version=api_version), secrets)) from None
