"""Serve the emulator: ``python -m stability_user.testing --port 8700 --accounts 3``.

:func:`main` takes the arguments and the program name, so another command line
(``stability-user emulator``) can hand its own arguments straight to it. Exit
status: 0 when stopped with Ctrl+C, 1 when it cannot listen, 2 for a wrong
command line; errors are one line on stderr, never a traceback, worded and laid
out as the ``stability-user`` commands' are (``PROG: error: --port: ... (see
'PROG --help')``). It needs nothing beyond the standard library and the package's
core: click, the command line's extra, is not installed for the ``testing`` use.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import math
import os
import ssl
import sys
import textwrap
import warnings
from collections.abc import Sequence
from typing import Final, NoReturn

from ._emulator import StabilityEmulator
from ._listen import is_loopback
from ._logs import SERVER_LOGGER
from ._rate_limit import RateLimit
from ._state import MAX_GENERATED

PROG = "python -m stability_user.testing"
"""The program name :func:`main` uses when not given one."""

_DEFAULT = RateLimit()
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


def _rate_limit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RateLimit | None:
    if args.no_rate_limit:
        if args.rate_limit is not None or args.lockout is not None:
            parser.error("--no-rate-limit cannot be combined with --rate-limit or --lockout")
        return None
    requests, window = args.rate_limit or (_DEFAULT.requests, _DEFAULT.window)
    lockout = _DEFAULT.lockout if args.lockout is None else args.lockout
    return RateLimit(requests=requests, window=window, lockout=lockout)


def _ssl_context(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> ssl.SSLContext | None:
    if args.certfile is None:
        if args.keyfile is not None:
            parser.error("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except ssl.SSLError as error:
        # Not OpenSSL's "[SSL] PEM lib (_ssl.c:3905)", which it says of any file without PEM.
        reason = error.reason.lower().replace("_", " ") if error.reason else None
        problem = reason or "no PEM certificate and private key in them"
        parser.error(f"cannot use --certfile/--keyfile as a PEM certificate and key: {problem}")
    except OSError as error:
        parser.error(f"cannot read --certfile/--keyfile: {_reason(error)}")
    return context


def _reason(error: OSError) -> str:
    # asyncio's bind error spells out the address again; the errno alone says it best.
    return os.strerror(error.errno).lower() if error.errno else str(error)


def _emulator(
    args: argparse.Namespace, parser: argparse.ArgumentParser, *, program: str | None = None
) -> StabilityEmulator:
    tls = args.certfile is not None
    if not is_loopback(args.host) and not args.allow_remote:
        exposed = "the demo keys" if tls else "the demo keys and clear-text HTTP"
        parser.error(
            f"refusing to listen on {args.host!r}: not a loopback address, so {exposed} "
            "would be exposed to the network (add --allow-remote to do it anyway)"
        )
    rate_limit = _rate_limit(args, parser)
    ssl_context = _ssl_context(args, parser)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emulator = StabilityEmulator(
            host=args.host,
            port=args.port,
            rate_limit=rate_limit,
            retire_v1alpha=args.retire_v1alpha,
            max_recorded=args.max_recorded,
            allow_remote=args.allow_remote,
            ssl_context=ssl_context,
            generated_accounts=args.generated_accounts,
        )
    for warning in caught:
        print(f"{program or parser.prog}: warning: {warning.message}", file=sys.stderr)
    return emulator


class ListenError(Exception):
    """The emulator could not listen on its host and port; the message says why."""


async def serve(
    emulator: StabilityEmulator,
    *,
    accounts: int = 3,
    credits: float = 100.0,
) -> None:
    """Serve until cancelled, printing the base URL and the demo keys first.

    Raises:
        ListenError: the host and port cannot be listened on.
    """
    try:
        await emulator.start()
    except OSError as error:
        host = f"[{emulator.host}]" if ":" in emulator.host else emulator.host
        reason = _reason(error)
        if error.errno == errno.EADDRINUSE:
            reason += " (try --port 0 for a free one)"
        raise ListenError(f"cannot listen on {host}:{emulator.port}: {reason}") from error
    try:
        keys = [
            emulator.add_account(email=f"demo-{n}@example.com", credits=credits)
            for n in range(1, accounts + 1)
        ]
        base_url = emulator.base_url
        print(f"Stability user API emulator on {base_url}")
        print(f"  export STABILITY_API_HOST={base_url}")
        for number, key in enumerate(keys, 1):
            # Demo keys are made up on the spot and valid only here, so they are shown whole.
            print(f"  demo key {number}: {key}")
        generated = emulator.generated_accounts
        if generated:
            print(
                f"  generated accounts: {generated:,}, keys {emulator.generated_key(1)} "
                f"to {emulator.generated_key(generated)}"
            )
        if keys:
            print(f'  try: curl -H "Authorization: {keys[0]}" {base_url}/v1/user/balance')
        limit = emulator.rate_limit
        if limit is None:
            print("  rate limit: off")
        else:
            print(
                f"  rate limit: {limit.requests} requests per {limit.window:g} s per key, "
                f"then {limit.lockout:g} s of 429"
            )
        print("Press Ctrl+C to stop.", flush=True)
        await asyncio.Event().wait()
    finally:
        await emulator.close()


def main(argv: Sequence[str] | None = None, *, prog: str = PROG, program: str | None = None) -> int:
    """Run the emulator until interrupted and return the exit status.

    Args:
        argv: the arguments, without the program name; ``sys.argv[1:]`` by default.
        prog: the command as typed, shown in its help (``stability-user emulator``).
        program: the name that starts its error and warning lines (``stability-user``,
            as every command of that program says); ``prog`` by default.
    """
    program = program or prog
    parser = build_parser(prog)
    # A program of its own: the server's log goes to stderr (the package's logger has
    # only a NullHandler, as a library's should).
    log = logging.StreamHandler(sys.stderr)
    log.setFormatter(logging.Formatter(f"{program}: %(message)s"))
    SERVER_LOGGER.addHandler(log)
    try:
        try:
            args = parser.parse_args(argv)
            emulator = _emulator(args, parser, program=program)
        except SystemExit as exit_:  # --help
            return exit_.code if isinstance(exit_.code, int) else 0
        except UsageError as error:
            print(f"{program}: error: {error} (see '{prog} --help')", file=sys.stderr)
            return 2
        try:
            asyncio.run(serve(emulator, accounts=args.accounts, credits=args.credits))
        except ListenError as error:
            print(f"{program}: error: {error}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:  # Ctrl+C, while starting as well as while serving
        return 0
    finally:
        SERVER_LOGGER.removeHandler(log)
    return 0  # pragma: no cover - serve() ends only when interrupted


if __name__ == "__main__":
    sys.exit(main())
