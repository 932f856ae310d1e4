"""pytest fixtures for code that uses stability-user, registered through ``pytest11``.

Any test suite with stability-user installed gets, without imports:

- ``stability_emulator``: a running :class:`~stability_user.testing.StabilityEmulator`
  on a free loopback port, with the rate limit on.
- ``stability_session``: a :class:`~stability_user.StabilitySession` bound to it with
  a fresh demo account (100 credits), closed after the test; its rate-limit waits
  are recorded in ``stability_rate_limit_waits``.
- ``stability_rate_limit_waits``: a list the test's rate-limit waits are appended to
  (pass ``on_rate_limit_wait=stability_rate_limit_waits.append`` to a session of your own).
- ``stability_rate_limit_store``: a fresh in-process rate-limit store, for sessions a
  test builds that must share a limit (or a lockout) on purpose.

Rate-limit state never leaks from one test into another: the default store
(``"memory"``) belongs to the running event loop, and pytest-asyncio gives each
test its own. The fixtures are async and need pytest-asyncio; without it they
fail with a message saying so, and a suite that does not use them is not affected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ._emulator import StabilityEmulator


def _missing_pytest_asyncio() -> None:
    pytest.fail("stability-user's async fixtures need pytest-asyncio: pip install pytest-asyncio")


@pytest.fixture(name="stability_rate_limit_waits")
def stability_rate_limit_waits() -> list[Any]:
    """The rate-limit waits of this test's ``stability_session``: ``RateLimitWait`` values."""
    return []


@pytest.fixture(name="stability_rate_limit_store")
def stability_rate_limit_store() -> Any:
    """A fresh ``MemoryRateLimitStore``: pass it as ``rate_limit_store=`` to share it on purpose."""
    from stability_user import MemoryRateLimitStore  # noqa: PLC0415 - only when used

    return MemoryRateLimitStore()


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without pytest-asyncio

    @pytest.fixture(name="stability_emulator")
    def stability_emulator() -> None:
        """Fails: the async fixture needs pytest-asyncio."""
        _missing_pytest_asyncio()

    @pytest.fixture(name="stability_session")
    def stability_session() -> None:
        """Fails: the async fixture needs pytest-asyncio."""
        _missing_pytest_asyncio()

else:
    # mypy sees both branches; only one of them ever defines the fixtures.
    @pytest_asyncio.fixture(name="stability_emulator")
    async def stability_emulator() -> AsyncIterator[StabilityEmulator]:  # type: ignore[misc]
        """A running emulator on 127.0.0.1, closed after the test."""
        async with StabilityEmulator() as emulator:
            yield emulator

    @pytest_asyncio.fixture(name="stability_session")
    async def stability_session(  # type: ignore[misc]
        stability_emulator: StabilityEmulator, stability_rate_limit_waits: list[Any]
    ) -> AsyncIterator[Any]:
        """A StabilitySession on the emulator with a fresh demo account."""
        from stability_user import StabilitySession  # noqa: PLC0415 - only when used

        key = stability_emulator.add_account(email="demo@example.com", credits=100.0)
        async with StabilitySession(
            key,
            base_url=stability_emulator.base_url,
            on_rate_limit_wait=stability_rate_limit_waits.append,
        ) as session:
            yield session
