"""What the command line says when something fails: one line, and what to do about it."""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Container, Coroutine, Sequence
from typing import IO, Any, Final, ParamSpec, TypeVar

import click
from tqdm import tqdm

from .._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    ServerError,
    StabilityError,
)
from .._secrets import REDACTED, escape_controls, mask_secret, redact
from .._targets import TargetFileError

__all__ = [
    "KEY_HINT",
    "Failure",
    "Hints",
    "Interrupted",
    "UsageFailure",
    "describe",
    "in_option_terms",
    "install_log_handler",
    "interruptible",
    "mask_keys",
    "os_reason",
    "run_async",
    "usage_line",
    "utc_now",
]

T = TypeVar("T")
P = ParamSpec("P")

PROG = "stability-user"

# What a Stability API key looks like. Wherever one turns up in what the command
# line prints (a key pasted as an argument, a file named after one), it is masked.
_KEY_LIKE: Final = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9]{20,}")
KEY_HINT: Final = (
    "an API key goes in STABILITY_API_KEY or --key-file FILE, never on the command line"
)


def mask_keys(text: str, redacted: Container[str] = ()) -> str:
    """``text`` with every key-looking token masked (``sk-…abcd``), or redacted if known.

    A token in ``redacted`` (keys the program holds) is replaced whole (``[redacted]``).
    """

    def hide(match: re.Match[str]) -> str:
        key = match.group(0)
        return REDACTED if key in redacted else mask_secret(key)

    return _KEY_LIKE.sub(hide, text)


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


def _attempts(error: APIError | APIConnectionError) -> str:
    return f" after {error.attempts} attempts" if error.attempts > 1 else ""


# What to do about each kind of failure, the most specific first.
_HINTS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (AuthenticationError, "check STABILITY_API_KEY or --key-file"),
    (PermissionDeniedError, "'stability-user account' lists the organizations of the key"),
    (NotFoundError, "check --base-url"),
    (RateLimitError, "the key is rate limited: try again later"),
    (ServerError, "the service failed: try again later"),
    (APITimeoutError, "the service did not answer in time: try again, or raise --timeout"),
    (APIConnectionError, "is the service or emulator running? check --base-url"),
    (ResponseValidationError, "is --base-url the Stability API?"),
)


_CA_HINT: Final = (
    "a TLS-inspecting proxy or a private CA needs its CA certificate: pass --ca-bundle FILE"
)

# The library's advice to programs in a connection error's message ("pass ssl=..."):
# the command line gives its own, naming its option.
_PROGRAM_ADVICE: Final = re.compile(r" \([^()]*\bssl=[^()]*\)")

# The library's parameters that are options here, as its errors name them: at the start
# of a configuration error ("timeout must be..."), or as advice ("rate_limit_store='memory'").
_PARAMETERS: Final = "base_url|timeout|proxy|rate_limit_store|max_attempts|api_version"
_PARAMETER: Final = re.compile(rf"^({_PARAMETERS})\b")
_PARAMETER_VALUE: Final = re.compile(rf"\b({_PARAMETERS})=(?:'([^']*)'|([^\s,;)']+))")


def _option(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def in_option_terms(message: str) -> str:
    """A message of the library naming options instead of its parameters.

    ``rate_limit_store='memory'`` becomes ``--rate-limit-store memory`` wherever it is,
    and a leading parameter (``timeout must be...``) its option.
    """
    message = _PARAMETER_VALUE.sub(
        lambda match: f"{_option(match.group(1))} {match.group(2) or match.group(3) or ''}",
        message,
    )
    return _PARAMETER.sub(lambda match: _option(match.group(1)), message)


Hints = Sequence[tuple[type[BaseException], str]]
"""Advice of a command's own, by kind of error, tried before the general advice."""


def _hint(error: BaseException, api_version: str | None, hints: Hints = ()) -> str | None:
    """What to do about ``error``, or ``None`` when its message says it all."""
    own = next((hint for kind, hint in hints if isinstance(error, kind)), None)
    if own is not None:
        return own
    if isinstance(error, NotFoundError) and api_version == "v1alpha":
        return "the service may have retired v1alpha: try --api-version v1"
    if isinstance(error, RateLimitError) and error.retry_after is not None:
        return f"the key is rate limited: try again in {math.ceil(error.retry_after)} s"
    if isinstance(error, APIConnectionError) and not error.retryable:
        return _CA_HINT  # a certificate that failed verification: never retried
    return next((hint for kind, hint in _HINTS if isinstance(error, kind)), None)


def utc_now() -> str:
    """The time a line of a long-running command carries, in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def os_reason(error: OSError) -> str:
    """What an operating-system error says, in the lower case of the middle of a line."""
    return (error.strerror or str(error)).lower()


def describe(error: BaseException, *, api_version: str | None = None, hints: Hints = ()) -> str:
    """One line for ``error``: what failed, after how many attempts, and what to do.

    ``hints`` are a command's own advice: the exporter's keys come from its targets
    file, not from ``STABILITY_API_KEY``, so a 401 there points to the file.
    """
    if isinstance(error, APIConnectionError):
        message = str(error.args[0]) if error.args else type(error).__name__
        text = f"{_PROGRAM_ADVICE.sub('', message)}{_attempts(error)}"
    elif isinstance(error, NotFoundError) and api_version == "v1alpha":
        # The library's detail tells programs to pass api_version='v1'; the hint names
        # the option instead. The same error without that detail:
        bare = NotFoundError(error.status, error.error, request_id=error.request_id)
        text = f"{bare}{_attempts(error)}"
    elif isinstance(error, APIError):
        text = f"{error}{_attempts(error)}"
    elif isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        text = f"{where}{error.strerror.lower()}"
    else:
        text = str(error) or type(error).__name__
    if not isinstance(error, (APIError, APIConnectionError, OSError)):
        # The library's own errors (a store that cannot be used, a bad setting) may name
        # its parameters; the service's text is left as it was sent.
        text = in_option_terms(text)
    hint = _hint(error, api_version, hints)
    return mask_keys(escape_controls(f"{text}: {hint}" if hint else text))


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


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        return f"{PROG}: {level}: {mask_keys(escape_controls(record.getMessage()))}"


class _Quiet(logging.Filter):
    """Retry notices are for ``--debug``: a final error already counts the attempts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and record.msg.startswith("retrying "))


class _BarAwareHandler(logging.Handler):
    """Writes each record on stderr as one line, above a progress bar if one is drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def install_log_handler(*, debug: bool) -> Callable[[], None]:
    """Show the library's log on stderr, one line a record; returns the undo."""
    logger = logging.getLogger("stability_user")
    handler = _BarAwareHandler()
    handler.setFormatter(_OneLine())
    if not debug:
        handler.addFilter(_Quiet())
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    return undo
