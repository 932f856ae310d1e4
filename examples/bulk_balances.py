"""Check the balances of many keys at once and summarise them.

    python examples/bulk_balances.py keys.csv      # the CLI's target format, below
    python examples/bulk_balances.py               # 50 demo accounts on the bundled emulator

The keys file has one target per line, the format ``stability-user balances``
reads: ``key``, ``key,organization`` or ``key,organization,label`` (or CSV with
a header naming ``api_key``, ``organization``, ``label``); ``#`` starts a comment.
It stays on your machine: keys are never passed on the command line, and only
labels or masked keys (``sk-…abcd``) are printed.

Exit status: 0 when every check succeeded, 1 when any failed, 2 when the file
cannot be read or holds no target.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator, Iterable

from stability_user import BalanceTarget, StabilitySession, TargetFileError, read_targets
from stability_user.testing import StabilityEmulator

LOW = 25.0  # credits under which a key is reported as low


async def summarise(
    session: StabilitySession, targets: Iterable[BalanceTarget]
) -> dict[str, float]:
    """Check every target; print the low and failed ones and a summary, and return it."""
    checked = failed = low = 0
    total = 0.0
    async for result in session.balances(targets, concurrency=32):
        checked += 1
        # display_name is the label, else the masked key: safe to print.
        name = result.target.display_name
        if result.balance is None:
            failed += 1
            print(f"FAILED {name}: {result.error}")
            continue
        total += result.balance.credits
        if result.balance.credits < LOW:
            low += 1
            print(f"LOW    {name}: {result.balance.credits:,.2f} credits")
    print(f"checked {checked}, failed {failed}, low {low}, total {total:,.2f} credits")
    return {"checked": checked, "failed": failed, "low": low, "total": total}


@contextlib.asynccontextmanager
async def demo() -> AsyncIterator[tuple[StabilitySession, list[BalanceTarget]]]:
    """A session on the bundled emulator with 50 demo accounts."""
    async with StabilityEmulator() as emulator:
        targets = [
            BalanceTarget(
                api_key=emulator.add_account(credits=float(n * 7 % 100)), label=f"customer-{n}"
            )
            for n in range(1, 51)
        ]
        async with StabilitySession(base_url=emulator.base_url) as session:
            yield session, targets


class NoTargets(Exception):  # noqa: N818 - named for what the user sees
    """The keys file holds only blank lines and comments."""


async def main(argv: list[str]) -> dict[str, float]:
    """Check the targets in ``argv[0]``, or the demo accounts when no file is given."""
    if argv:
        lines = read_targets(argv[0])
        first = next(lines, None)  # an empty file is a mistake, not "checked 0"
        if first is None:
            raise NoTargets(f"no targets in {argv[0]}: it holds only blank lines and comments")
        # No key of its own: every target brings one.
        async with StabilitySession() as session:
            return await summarise(session, itertools.chain([first], lines))
    async with demo() as (session, targets):
        return await summarise(session, targets)


if __name__ == "__main__":
    try:
        summary = asyncio.run(main(sys.argv[1:]))
    except (TargetFileError, NoTargets) as error:  # names the file (and line), never a key
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"error: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if summary["failed"] else 0)
