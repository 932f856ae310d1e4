"""What a million-key run needs of the emulator: generated accounts, and a rate limit that forgets.

Generated accounts are computed from their key, never stored; the per-key rate-limit
state lasts as long as the key's window (or lockout), on the emulator's injected clock.
"""

from __future__ import annotations

import signal

import aiohttp
import pytest

from stability_user.testing import Fault, RateLimit, StabilityEmulator
from stability_user.testing._rate_limit import RateLimiter

from .fakes import FakeClock
from .processes import start_cli
from .wire import get

generated_key = StabilityEmulator.generated_key


async def test_generated_accounts_are_answered_from_their_keys(
    emulator: StabilityEmulator,
) -> None:
    emulator.generated_accounts = 5
    key = generated_key(3)
    assert key == "sk-generated-" + "0" * 34 + "3"
    assert len(key) == 48
    assert (await get(emulator.base_url, "/v1/user/balance", key))[2] == {"credits": 237.57}
    status, _, account = await get(emulator.base_url, "/v1alpha/user/account", f"Bearer {key}")
    assert (status, account) == (
        200,
        {
            "id": "generated-3",
            "email": "generated-3@example.com",
            "organizations": [
                {
                    "id": "org-generated-3",
                    "name": "Generated organization 3",
                    "role": "OWNER",
                    "is_default": True,
                }
            ],
        },
    )
    for other in (
        generated_key(6),  # past the count
        "sk-generated-" + "0" * 33 + "3",  # the number in 34 digits: another key
        "sk-generated-+" + "0" * 33 + "3",
        "sk-generated-" + "0" * 34 + "\u0663",  # ARABIC-INDIC DIGIT THREE
        "sk-generated-" + "0" * 35,  # account 0
    ):
        assert (await get(emulator.base_url, "/v1/user/balance", other))[0] == 401, other
    assert emulator.api_keys == []  # served, never stored
    assert emulator.balance(key) == 237.57
    assert emulator.api_keys == []


async def test_a_generated_account_changed_stays_changed(emulator: StabilityEmulator) -> None:
    emulator.generated_accounts = 5
    key = generated_key(2)
    emulator.set_balance(key, 1.5)
    assert emulator.api_keys == [key]
    assert (await get(emulator.base_url, "/v1/user/balance", key))[2] == {"credits": 1.5}
    emulator.account(generated_key(4)).email = "changed@example.com"
    emulator.generated_accounts = 1  # the changed ones are stored: still served
    account = (await get(emulator.base_url, "/v1/user/account", generated_key(4)))[2]
    assert account["email"] == "changed@example.com"
    assert (await get(emulator.base_url, "/v1/user/balance", generated_key(3)))[0] == 401
    with pytest.raises(ValueError, match="belongs to another emulated account"):
        emulator.add_account(api_key=generated_key(1))
    with pytest.raises(KeyError):
        emulator.balance(generated_key(3))
    with pytest.raises(KeyError):
        emulator.account(generated_key(3))


def test_generated_keys_and_balances() -> None:
    assert generated_key(10**35 - 1) == "sk-generated-" + "9" * 35
    for number, error in [(0, ValueError), (-1, ValueError), (10**35, ValueError)]:
        with pytest.raises(error):
            generated_key(number)
    for wrong in (True, 1.5, "1"):
        with pytest.raises(TypeError):
            generated_key(wrong)  # type: ignore[arg-type]
    emulator = StabilityEmulator(generated_accounts=100_000)  # never started: it only computes
    credits = [emulator.balance(generated_key(n)) for n in range(1, 100_001)]
    # Every value from 0.00 to 999.99 once in any 100,000 accounts; one in a hundred is low.
    assert sorted(credits) == [n / 100 for n in range(100_000)]
    assert sum(c < 10 for c in credits) == 1000
    for count in (-1, True, 10**35, 2.0):
        with pytest.raises(ValueError, match="generated_accounts must be an int"):
            StabilityEmulator(generated_accounts=count)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="generated_accounts must be an int"):
            emulator.generated_accounts = count  # type: ignore[assignment]
    assert emulator.generated_accounts == 100_000


async def test_answers_are_counted_by_status(emulator: StabilityEmulator) -> None:
    emulator.rate_limit = RateLimit(requests=1, window=10, lockout=60)
    key = emulator.add_account()
    assert emulator.status_counts == {}
    await get(emulator.base_url, "/v1/user/balance", key)
    await get(emulator.base_url, "/v1/user/balance", key)  # past the limit
    await get(emulator.base_url, "/v1/user/balance", "sk-unknown")
    await get(emulator.base_url, "/v1/nothing", key)
    emulator.script(Fault.drop(), Fault.drop())  # aiohttp re-sends once on a fresh drop
    with pytest.raises(aiohttp.ClientError):
        await get(emulator.base_url, "/v1/user/balance", key)
    counts = emulator.status_counts
    assert counts == {200: 1, 429: 1, 401: 1, 404: 1}
    counts[200] = 99  # a copy
    assert emulator.status_counts[200] == 1
    assert emulator.request_count == 6  # the dropped ones answered nothing


class TestRateLimitForgets:
    def test_a_key_is_forgotten_once_its_window_has_passed(self) -> None:
        limiter = RateLimiter(RateLimit(requests=3, window=10, lockout=60))
        for n in range(1000):
            assert limiter.check(f"key-{n}", 100 + n / 1000) is None
        assert limiter.tracked_keys == 1000
        # key-0 came 10 s ago: out of the window. key-1 came 9.9995 s ago.
        assert limiter.check("other", 110.0005) is None
        assert limiter.tracked_keys == 1000
        assert limiter.check("other", 111) is None
        assert limiter.tracked_keys == 1
        # A key seen again moves to the end: it is kept while its window lasts.
        assert limiter.check("late", 115) is None
        assert limiter.check("other", 119) is None
        assert limiter.check("next", 125.5) is None
        assert limiter.tracked_keys == 2  # "late" came 10.5 s ago: gone; "other" is kept

    def test_the_limit_holds_as_before(self) -> None:
        limiter = RateLimiter(RateLimit(requests=2, window=10, lockout=60))
        assert [limiter.check("a", t) for t in (0, 5)] == [None, None]
        assert limiter.check("a", 9.5) == 60  # three in ten seconds: locked out
        assert limiter.check("a", 12) == 57.5

    def test_a_lockout_outlives_the_window(self) -> None:
        limiter = RateLimiter(RateLimit(requests=1, window=10, lockout=60))
        assert limiter.check("locked", 0) is None
        assert limiter.check("locked", 1) == 60
        assert limiter.check("other", 30) is None  # "locked" has no request left in its window
        assert limiter.tracked_keys == 2  # its lockout is still on
        assert limiter.check("locked", 40) == 21
        assert limiter.check("other", 61.5) is None
        assert limiter.tracked_keys == 1  # the lockout ended at 61: forgotten
        assert limiter.check("locked", 62) is None

    def test_no_limit_keeps_nothing(self) -> None:
        limiter = RateLimiter(None)
        assert limiter.check("a", 0) is None
        assert limiter.tracked_keys == 0

    async def test_a_run_over_many_keys_keeps_only_the_last_window(
        self, emulator: StabilityEmulator, clock: FakeClock
    ) -> None:
        emulator.generated_accounts = 300
        limiter = emulator._backend.limiter
        for n in range(1, 301):
            assert (await get(emulator.base_url, "/v1/user/balance", generated_key(n)))[0] == 200
            clock.advance(0.125)  # 8 requests a second: 80 keys in the 10 s window
            assert limiter.tracked_keys <= 80
        assert limiter.tracked_keys == 80


async def test_the_command_line_serves_generated_accounts() -> None:
    process = await start_cli(
        "emulator", "--port", "0", "--accounts", "0", "--generated-accounts", "1000000"
    )
    assert process.stdout is not None
    try:
        lines = [(await process.stdout.readline()).decode() for _ in range(5)]
        base_url = lines[0].rsplit(" ", 1)[1].strip()
        assert lines[2] == (
            f"  generated accounts: 1,000,000, keys {generated_key(1)} "
            f"to {generated_key(1_000_000)}\n"
        )
        assert lines[4] == "Press Ctrl+C to stop.\n"
        status, _, body = await get(base_url, "/v1/user/balance", generated_key(999_999))
        assert (status, body) == (200, {"credits": 999_999 * 7919 % 100_000 / 100})
        assert (await get(base_url, "/v1/user/balance", generated_key(1_000_001)))[0] == 401
    finally:
        process.send_signal(signal.SIGINT)  # a failed check must not leave it serving
        await process.communicate()
    assert process.returncode == 0
