"""Serve the emulator: ``python -m stability_user.testing --port 8700 --accounts 3``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from ._emulator import StabilityEmulator
from ._state import RateLimit


def build_parser() -> argparse.ArgumentParser:
    """The command line of the standalone emulator."""
    parser = argparse.ArgumentParser(
        prog="python -m stability_user.testing",
        description="Serve a local emulator of the Stability user API on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8700, help="port; 0 picks a free one")
    parser.add_argument("--accounts", type=int, default=3, help="demo accounts to create")
    parser.add_argument("--credits", type=float, default=100.0, help="credits of each account")
    parser.add_argument(
        "--no-rate-limit", action="store_true", help="turn the 150 per 10 s limit off"
    )
    parser.add_argument(
        "--retire-v1alpha", action="store_true", help="answer the v1alpha paths with 404"
    )
    return parser


async def serve(args: argparse.Namespace, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled, printing the base URL and the demo keys first."""
    emulator = StabilityEmulator(
        host=args.host,
        port=args.port,
        rate_limit=None if args.no_rate_limit else RateLimit(),
        retire_v1alpha=args.retire_v1alpha,
    )
    async with emulator:
        keys = [
            emulator.add_account(email=f"demo-{n}@example.com", credits=args.credits)
            for n in range(1, args.accounts + 1)
        ]
        print(f"Stability user API emulator on {emulator.base_url}")
        print(f"  export STABILITY_API_HOST={emulator.base_url}")
        for number, key in enumerate(keys, 1):
            # Demo keys are made up on the spot and valid only here, so they are shown whole.
            print(f"  demo key {number}: {key}")
        print("Press Ctrl+C to stop.", flush=True)
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until interrupted."""
    args = build_parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
