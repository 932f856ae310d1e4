"""Who does this key belong to, and how many credits are left?

Run it with your key::

    STABILITY_API_KEY=sk-... python examples/quickstart.py

Without ``STABILITY_API_KEY`` it runs against the bundled emulator, offline.
"""

from __future__ import annotations

import asyncio
import os

from stability_user import StabilityError, StabilitySession
from stability_user.testing import StabilityEmulator


async def show(session: StabilitySession) -> None:
    """Print the account, its organizations and each one's balance."""
    account = await session.account()
    print(f"{account.email} ({account.id})")
    for membership in account.organizations:
        balance = await session.balance(organization=membership.id)
        default = " (default)" if membership.is_default else ""
        print(f"  {membership.name} [{membership.role}]{default}: {balance.credits:,.2f} credits")


async def main() -> None:
    """Use the real service when a key is set, else the emulator."""
    if os.environ.get("STABILITY_API_KEY"):
        async with StabilitySession() as session:
            await show(session)
        return
    print("STABILITY_API_KEY is not set: using the bundled emulator.")
    async with StabilityEmulator() as emulator:
        key = emulator.add_account(email="demo@example.com", credits=42.5)
        async with StabilitySession(key, base_url=emulator.base_url) as session:
            await show(session)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except StabilityError as error:
        raise SystemExit(f"error: {error}") from None
