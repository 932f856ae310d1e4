"""The emulator itself: fidelity to the spec, state, rate limit, faults, recording, CLI, plugin."""

from __future__ import annotations

import asyncio
import json
import pathlib
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import jsonschema
import pytest

from stability_user.testing import (
    EmulatedOrganization,
    Fault,
    RateLimit,
    StabilityEmulator,
)

from .fakes import FakeClock
from .wire import get

SPEC = json.loads((pathlib.Path(__file__).parent / "data" / "openapi.json").read_text())
SCHEMAS = SPEC["components"]["schemas"]


def validate(body: Any, name: str) -> None:
    """Validate against a component schema of the official spec, $refs resolved in place."""
    schema = {**SCHEMAS[name], "components": SPEC["components"]}
    jsonschema.validate(body, schema)


async def test_bearer_and_raw_keys(emulator: StabilityEmulator) -> None:
    key = emulator.add_account(credits=5)
    assert (await get(emulator.base_url, "/v1/user/balance", f"Bearer {key}"))[2] == {"credits": 5}
    assert (await get(emulator.base_url, "/v1/user/balance", key))[2] == {"credits": 5}


async def test_state(emulator: StabilityEmulator) -> None:
    key = emulator.add_account(
        api_key="sk-chosen",
        account_id="user-x",
        organizations=[
            EmulatedOrganization("org-a", "A", is_default=True, credits=1),
            EmulatedOrganization("org-b", "B", credits=2),
        ],
    )
    assert key == "sk-chosen"
    emulator.set_balance(key, 10)
    emulator.set_balance(key, 20, organization="org-b")
    assert emulator.balance(key) == 10
    assert emulator.balance(key, organization="org-b") == 20
    assert emulator.account(key).id == "user-x"
    assert emulator.api_keys == ["sk-chosen"]
    with pytest.raises(ValueError, match="another emulated account"):
        emulator.add_account(api_key="sk-chosen")
    with pytest.raises(KeyError):
        emulator.set_balance(key, 1, organization="org-z")


async def test_account_without_a_default_organization_reads_the_first(
    emulator: StabilityEmulator,
) -> None:
    key = emulator.add_account(organizations=[EmulatedOrganization("org-a", "A", credits=4)])
    assert emulator.balance(key) == 4


class TestRateLimit:
    async def test_documented_numbers_by_default(self) -> None:
        assert StabilityEmulator().rate_limit == RateLimit(150, 10.0, 60.0)

    async def test_limit_window_and_lockout(
        self, emulator: StabilityEmulator, clock: FakeClock
    ) -> None:
        emulator.rate_limit = RateLimit(requests=3, window=10, lockout=60)
        key, other = emulator.add_account(), emulator.add_account()
        for _ in range(3):
            assert (await get(emulator.base_url, "/v1/user/balance", key))[0] == 200
        status, headers, body = await get(emulator.base_url, "/v1/user/balance", key)
        assert (status, headers["Retry-After"], body["name"]) == (429, "60", "rate_limit_exceeded")
        assert set(body) == {"id", "name", "message"}  # the v1 shape on a v1 path
        assert (await get(emulator.base_url, "/v1/user/balance", other))[0] == 200  # per key
        clock.advance(30.5)
        status, headers, _ = await get(emulator.base_url, "/v1/user/balance", key)
        assert (status, headers["Retry-After"]) == (429, "30")
        clock.advance(30)
        assert (await get(emulator.base_url, "/v1/user/balance", key))[0] == 200

    async def test_window_slides(self, emulator: StabilityEmulator, clock: FakeClock) -> None:
        emulator.rate_limit = RateLimit(requests=2, window=10, lockout=60)
        key = emulator.add_account()
        for _ in range(2):
            await get(emulator.base_url, "/v1/user/balance", key)
            clock.advance(6)
        assert (await get(emulator.base_url, "/v1/user/balance", key))[0] == 200

    async def test_switched_off(self, emulator: StabilityEmulator) -> None:
        emulator.rate_limit = None
        key = emulator.add_account()
        statuses = [(await get(emulator.base_url, "/v1/user/balance", key))[0] for _ in range(200)]
        assert set(statuses) == {200}


class TestFaults:
    async def test_script_is_consumed_in_order_per_key_first(
        self, emulator: StabilityEmulator
    ) -> None:
        key, other = emulator.add_account(), emulator.add_account()
        emulator.script(500, 200, 503)
        emulator.script(429, api_key=key)
        statuses = [
            (await get(emulator.base_url, "/v1/user/balance", k))[0]
            for k in (key, other, key, other, key)
        ]
        assert statuses == [429, 500, 200, 503, 200]

    async def test_retry_after_seconds_and_date(self, emulator: StabilityEmulator) -> None:
        key = emulator.add_account()
        emulator.script(
            Fault.respond(503, retry_after=2.5),
            Fault.respond(429, retry_after="Wed, 21 Oct 2026 07:28:00 GMT"),
        )
        _, headers, body = await get(emulator.base_url, "/v1alpha/user/balance", key)
        assert headers["Retry-After"] == "2.5"
        validate(body, "Error")
        _, headers, _ = await get(emulator.base_url, "/v1alpha/user/balance", key)
        assert parsedate_to_datetime(headers["Retry-After"]).year == 2026

    async def test_drop(self, emulator: StabilityEmulator) -> None:
        key = emulator.add_account()
        emulator.script(Fault.drop(), Fault.drop())  # aiohttp re-sends once on a fresh drop
        with pytest.raises(aiohttp.ClientError):
            await get(emulator.base_url, "/v1/user/balance", key)
        assert [r.status for r in emulator.requests] == [None, None]

    async def test_reset_mid_body(self, emulator: StabilityEmulator) -> None:
        key = emulator.add_account()
        emulator.script(Fault.reset())
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(emulator.base_url, "/v1/user/balance", key)

    async def test_stall_ends_when_the_emulator_closes(self) -> None:
        emulator = StabilityEmulator()
        await emulator.start()
        key = emulator.add_account(credits=1)
        emulator.script(Fault.stall(3600))
        request = asyncio.ensure_future(get(emulator.base_url, "/v1/user/balance", key))
        await emulator.wait_for_requests(1)
        assert not request.done()
        await emulator.close()
        # The stall ends at once and the request is answered during the graceful shutdown.
        # wait_for only guards against a hang: without the early end this would take an hour.
        assert (await asyncio.wait_for(request, 30))[0] == 200

    async def test_bodies_the_client_must_refuse(self, emulator: StabilityEmulator) -> None:
        key = emulator.add_account()
        emulator.script(
            Fault.malformed_json(),
            Fault.html(502),
            Fault.oversized(5000),
            Fault.wrong_types(),
            Fault.missing_fields(),
            Fault.extra_fields(),
        )
        url = emulator.base_url
        status, _, body = await get(url, "/v1/user/balance", key)
        assert (status, body) == (200, b'{"credits": 12.5')
        status, headers, body = await get(url, "/v1/user/balance", key)
        assert status == 502
        assert headers["Content-Type"].startswith("text/html")
        status, headers, body = await get(url, "/v1/user/balance", key)
        assert int(headers["Content-Length"]) >= 5000
        assert (await get(url, "/v1/user/balance", key))[2] == {"credits": "1.0"}
        assert (await get(url, "/v1/user/balance", key))[2] == {}
        body = (await get(url, "/v1/user/balance", key))[2]
        assert body["credits"] == 1.0
        assert "unexpected" in body

    async def test_wrong_and_missing_fields_on_account(self, emulator: StabilityEmulator) -> None:
        key = emulator.add_account()
        emulator.script(Fault.wrong_types(), Fault.missing_fields(), Fault.extra_fields())
        wrong = (await get(emulator.base_url, "/v1/user/account", key))[2]
        assert wrong["id"] == 1234
        assert wrong["organizations"][0]["is_default"] == 1
        missing = (await get(emulator.base_url, "/v1/user/account", key))[2]
        assert "id" not in missing
        assert "organizations" not in missing
        extra = (await get(emulator.base_url, "/v1/user/account", key))[2]
        validate(extra, "AccountResponseBody")
        assert extra["organizations"][0]["added_later"] is True

    def test_an_unknown_kind_is_refused(self) -> None:
        with pytest.raises(ValueError, match="'kind' must be in"):
            Fault("teapot")
        assert Fault("status", status=418) == Fault.respond(418)

    async def test_random_faults_are_seeded_and_mixed(self, emulator: StabilityEmulator) -> None:
        emulator.rate_limit = None
        key = emulator.add_account()

        async def run() -> list[int]:
            emulator.random_faults(0.3, kinds=("503", "500", Fault.respond(418)), seed=7)
            return [(await get(emulator.base_url, "/v1/user/balance", key))[0] for _ in range(100)]

        first, second = await run(), await run()
        assert first == second
        assert set(first) == {200, 503, 500, 418}
        assert 15 <= sum(s != 200 for s in first) <= 45
        emulator.random_faults(0)
        assert (await get(emulator.base_url, "/v1/user/balance", key))[0] == 200
        emulator.random_faults(1.0, kinds=("503",))
        emulator.clear_faults()
        assert (await get(emulator.base_url, "/v1/user/balance", key))[0] == 200


async def test_settings_change_while_serving(emulator: StabilityEmulator) -> None:
    key = emulator.add_account(credits=3)
    emulator.retire_v1alpha = True
    assert emulator.retire_v1alpha
    assert (await get(emulator.base_url, "/v1alpha/user/balance", key))[0] == 404
    emulator.retire_v1alpha = False
    assert (await get(emulator.base_url, "/v1alpha/user/balance", key))[0] == 200
    emulator.record = False
    assert not emulator.record
    await get(emulator.base_url, "/v1/user/balance", key)
    emulator.record = True
    emulator.clock = lambda: 42.0
    assert emulator.clock() == 42.0
    await get(emulator.base_url, "/v1/user/balance", key)
    assert [(r.path, r.time) for r in emulator.requests][-1] == ("/v1/user/balance", 42.0)
    assert (len(emulator.requests), emulator.request_count) == (3, 4)


async def test_base_url_needs_a_started_emulator() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = StabilityEmulator().base_url


async def test_ipv6_loopback() -> None:
    async with StabilityEmulator(host="::1") as emulator:
        key = emulator.add_account(credits=2)
        assert emulator.base_url.startswith("http://[::1]:")
        assert (await get(emulator.base_url, "/v1/user/balance", key))[2] == {"credits": 2}


def test_pytest_plugin_gives_fixtures_without_imports(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_balance(stability_session, stability_emulator):
            balance = await stability_session.balance()
            assert balance.credits == 100.0
            account = await stability_session.account()
            assert account.email == "demo@example.com"
            assert [r.path for r in stability_emulator.requests] == [
                "/v1/user/balance", "/v1/user/account"
            ]
        """
    )
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
