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
import os
import ssl
import sys
import warnings
from collections.abc import Sequence

from ._command_line import PROG, UsageError, build_parser
from ._emulator import StabilityEmulator
from ._listen import is_loopback
from ._logs import SERVER_LOGGER
from ._rate_limit import DOCUMENTED_RATE_LIMIT, RateLimit

__all__ = ["PROG", "ListenError", "build_parser", "main", "serve"]


def _rate_limit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RateLimit | None:
    if args.no_rate_limit:
        if args.rate_limit is not None or args.lockout is not None:
            parser.error("--no-rate-limit cannot be combined with --rate-limit or --lockout")
        return None
    default = DOCUMENTED_RATE_LIMIT
    requests, window = args.rate_limit or (default.requests, default.window)
    lockout = default.lockout if args.lockout is None else args.lockout
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
