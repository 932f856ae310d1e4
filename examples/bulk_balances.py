"""Check the balances of many keys at once and summarise them.

    python examples/bulk_balances.py keys.csv      # lines of label,api_key
    python examples/bulk_balances.py               # 50 demo accounts on the bundled emulator

The keys file stays on your machine: keys are never passed on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from stability_user import BalanceTarget, StabilitySession
from stability_user.testing import StabilityEmulator

LOW = 25.0  # credits under which a key is reported as low


def read_targets(path: Path) -> Iterator[BalanceTarget]:
    """One target per ``label,api_key`` line, read lazily."""
    with path.open(newline="") as lines:
        for row in csv.reader(lines):
            if len(row) >= 2 and not row[0].startswith("#"):
                yield BalanceTarget(api_key=row[1].strip(), label=row[0].strip())


async def summarise(
    session: StabilitySession, targets: Iterator[BalanceTarget]
) -> dict[str, float]:
    """Check every target; print the low and failed ones and a summary, and return it."""
    checked = failed = low = 0
    total = 0.0
    async for result in session.balances(targets, concurrency=32):
        checked += 1
        if result.balance is None:
            failed += 1
            print(f"FAILED {result.target.display_name}: {result.error}")
            continue
        total += result.balance.credits
        if result.balance.credits < LOW:
            low += 1
            print(f"LOW    {result.target.display_name}: {result.balance.credits:,.2f} credits")
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
        async with StabilitySession(targets[0].api_key, base_url=emulator.base_url) as session:
            yield session, targets


async def main(argv: list[str]) -> dict[str, float]:
    """Check the keys in ``argv[0]``, or the demo accounts when no file is given."""
    if argv:
        async with StabilitySession(api_key="unused: every target has its own") as session:
            return await summarise(session, read_targets(Path(argv[0])))
    async with demo() as (session, targets):
        return await summarise(session, iter(targets))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
