"""The standalone emulator's command line: its options, checked, and laid out as the others'.

It needs nothing beyond the standard library: click, the command line's extra, is
not installed for the ``testing`` use of the package, yet the help and the errors
read as those of the ``stability-user`` commands.
"""

from __future__ import annotations

import argparse
import math
import textwrap
from typing import Final, NoReturn

from ._rate_limit import DOCUMENTED_RATE_LIMIT
from ._state import MAX_GENERATED

__all__ = ["PROG", "UsageError", "build_parser"]

PROG = "python -m stability_user.testing"
"""The program name the standalone emulator's ``main`` uses when not given one."""

_DEFAULT: Final = DOCUMENTED_RATE_LIMIT
_DESCRIPTION = (
    "Serve a local emulator of the Stability user API on loopback, with demo accounts.",
    "Stop it with Ctrl+C: exit 0. Exit 1 when it cannot listen (the port is in use, say), "
    "2 for a usage error.",
)
# The layout of the ``stability-user`` commands' help (click's): every command of the
# package's command line reads the same, though this one needs nothing but the standard
# library (the ``testing`` use of the package installs no command-line extra).
_WIDTH: Final = 78
_COLUMN: Final = 30


class UsageError(Exception):
    """A wrong command line; the message says what is wrong, in the command line's words."""


def _option_words(message: str) -> str:
    """An error of argparse's in the words of the package's other commands (click's)."""
    if message.startswith("unrecognized arguments: "):
        first = message.removeprefix("unrecognized arguments: ").split(" ", 1)[0]
        if first.startswith("-"):
            return f"no such option {first.split('=', 1)[0]!r}"
        return f"got unexpected extra argument ({first})"
    argument, colon, problem = message.partition(": ")
    if colon and argument.startswith("argument "):
        name = argument.removeprefix("argument ").split("/", 1)[0]
        if problem == "expected one argument":
            return f"option {name!r} requires an argument"
        if problem.startswith("ignored explicit argument"):
            return f"option {name!r} does not take a value"
        return f"{name}: {problem}"
    return message


class _Parser(argparse.ArgumentParser):
    """An argument parser laid out and worded as the package's other commands.

    Its errors are raised, to be shown as one line; its help has their layout.
    """

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` in the command line's words."""
        raise UsageError(_option_words(message))

    def format_help(self) -> str:
        """Usage, description and options, as click lays them out."""
        lines = [f"Usage: {self.prog} [OPTIONS]", ""]
        for paragraph in _DESCRIPTION:
            lines += textwrap.wrap(paragraph, _WIDTH, initial_indent="  ", subsequent_indent="  ")
            lines.append("")
        lines.append("Options:")
        rows = [(", ".join(a.option_strings) + _metavar(a), _help(a)) for a in self._actions]
        first = min(max(len(term) for term, _ in rows), _COLUMN) + 2
        for term, text in rows:
            wrapped = textwrap.wrap(text, max(_WIDTH - first - 2, 10)) or [""]
            if len(term) <= first - 2:
                lines.append(f"  {term:<{first}}{wrapped[0]}".rstrip())
                wrapped = wrapped[1:]
            else:
                lines.append(f"  {term}")
            lines += [" " * (first + 2) + line for line in wrapped]
        return "\n".join(lines) + "\n"


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    return f" {action.metavar or action.dest.upper()}"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    default = action.default
    if default in (None, False, argparse.SUPPRESS):
        return text
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{text}  [default: {shown}]"


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return value


def _generated(text: str) -> int:
    value = _count(text)
    if value > MAX_GENERATED:
        raise argparse.ArgumentTypeError(f"expected at most 35 digits, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of at least 0, got {text!r}")
    return value


def _rate(text: str) -> tuple[int, float]:
    requests, slash, seconds = text.partition("/")
    try:
        count, window = int(requests), float(seconds)
    except ValueError:
        count, window = 0, math.nan
    if not slash or count < 1 or not (math.isfinite(window) and window > 0):
        raise argparse.ArgumentTypeError(
            "expected REQUESTS/SECONDS, a whole number of requests above 0 and a finite "
            f"number of seconds above 0 (such as 20/1), got {text!r}"
        )
    return count, window


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line of the standalone emulator, under the program name ``prog``."""
    parser = _Parser(prog=prog, add_help=False, allow_abbrev=False)
    add = parser.add_argument
    add(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="The address: localhost or a loopback IP.",
    )
    add("--port", type=_port, default=8700, metavar="PORT", help="The port; 0 picks a free one.")
    add("--accounts", type=_count, default=3, metavar="N", help="Demo accounts to create.")
    add(
        "--credits",
        type=_number,
        default=100.0,
        metavar="CREDITS",
        help="The credits of each demo account.",
    )
    add(
        "--generated-accounts",
        type=_generated,
        default=0,
        metavar="N",
        help="also serve N generated accounts, computed from their keys, not stored "
        "(sk-generated- and the number in 35 digits; default 0)",
    )
    add(
        "--rate-limit",
        type=_rate,
        metavar="REQUESTS/SECONDS",
        help=f"The limit per key [default: {_DEFAULT.requests}/{_DEFAULT.window:g}].",
    )
    add(
        "--lockout",
        type=_number,
        metavar="SECONDS",
        help=f"How long a key past the limit gets 429 [default: {_DEFAULT.lockout:g}].",
    )
    add("--no-rate-limit", action="store_true", help="Turn the limit per key off.")
    add("--retire-v1alpha", action="store_true", help="Answer the v1alpha paths with 404.")
    add(
        "--max-recorded",
        type=_count,
        default=10_000,
        metavar="N",
        help="Requests kept in the request log.",
    )
    add("--certfile", metavar="FILE", help="Serve HTTPS with this PEM certificate (chain).")
    add("--keyfile", metavar="FILE", help="The certificate's private key, if not in --certfile.")
    add(
        "--allow-remote",
        action="store_true",
        help="Allow a --host beyond loopback: exposes the demo keys to the network.",
    )
    add("-h", "--help", action="help", help="Show this message and exit.")
    return parser
