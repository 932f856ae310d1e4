"""StabilitySession end to end against the bundled emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import aiohttp
import pytest

from stability_user import (
    Account,
    AuthenticationError,
    Balance,
    NotFoundError,
    OrganizationMembership,
    PermissionDeniedError,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    ServerError,
    StabilityError,
    StabilitySession,
)
from stability_user._endpoints import BALANCE
from stability_user._http import Handler, Request, Response
from stability_user._transport import AiohttpTransport
from stability_user.testing import EmulatedOrganization, Fault, StabilityEmulator

from .conftest import KEY
from .fakes import FakeClock


async def test_account_and_balance(session: StabilitySession, key: str) -> None:
    account = await session.account()
    assert account == Account(
        "user-1",
        "a@example.com",
        (OrganizationMembership("org-000001", "Organization 1", "OWNER", True),),
    )
    assert account.default_organization == account.organizations[0]
    assert await session.balance() == Balance(12.5)


async def test_organizations_default_and_per_call(emulator: StabilityEmulator) -> None:
    key = emulator.add_account(
        organizations=[
            EmulatedOrganization("org-a", "A", is_default=True, credits=1.0),
            EmulatedOrganization("org-b", "B", credits=2.0),
        ]
    )
    async with StabilitySession(key, base_url=emulator.base_url, organization="org-b") as session:
        assert await session.balance() == Balance(2.0)
        assert await session.balance(organization="org-a") == Balance(1.0)
        with pytest.raises(PermissionDeniedError) as info:
            await session.balance(organization="org-z")
        assert info.value.status == 403
        assert info.value.attempts == 1
        await session.account()
    sent = [r.headers.get("Organization") for r in emulator.requests]
    assert sent == ["org-b", "org-a", "org-z", None]  # account() never sends Organization


async def test_balance_changes_are_seen(
    session: StabilitySession, emulator: StabilityEmulator, key: str
) -> None:
    emulator.set_balance(key, 0.25)
    assert (await session.balance()).credits == 0.25


async def test_unknown_key_is_an_authentication_error(emulator: StabilityEmulator) -> None:
    async with StabilitySession(KEY, base_url=emulator.base_url) as session:
        with pytest.raises(AuthenticationError) as info:
            await session.account()
    assert str(info.value).startswith("401 unauthorized: ")
    assert KEY not in str(info.value)


@pytest.mark.parametrize("api_version", ["v1alpha", "v1"])
async def test_both_api_versions(emulator: StabilityEmulator, key: str, api_version: str) -> None:
    async with StabilitySession(key, base_url=emulator.base_url, api_version=api_version) as s:
        assert (await s.balance()).credits == 12.5
    assert emulator.requests[-1].path == f"/{api_version}/user/balance"


async def test_retired_v1alpha_names_the_fix(key: str) -> None:
    async with StabilityEmulator(retire_v1alpha=True) as emulator:
        emulator.add_account(api_key=key)
        old = StabilitySession(key, base_url=emulator.base_url, api_version="v1alpha")
        async with old as session:
            with pytest.raises(NotFoundError, match="api_version='v1'"):
                await session.balance()
        async with StabilitySession(key, base_url=emulator.base_url) as session:
            assert session.api_version == "v1"  # the default
            assert (await session.balance()).credits == 100.0


async def test_bearer_key(emulator: StabilityEmulator, key: str) -> None:
    async with StabilitySession("Bearer " + key, base_url=emulator.base_url) as session:
        assert (await session.balance()).credits == 12.5


async def test_scripted_statuses_are_retried(
    session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
) -> None:
    emulator.script(503, 502, 200)
    assert (await session.balance()).credits == 12.5
    assert [r.status for r in emulator.requests] == [503, 502, 200]
    assert len(clock.sleeps) == 2


async def test_retry_after_is_honoured(
    session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
) -> None:
    emulator.script(Fault.respond(429, retry_after=7))
    await session.balance()
    assert clock.sleeps == [7.0]


async def test_retry_after_too_long_raises_at_once(
    session: StabilitySession, emulator: StabilityEmulator, clock: FakeClock
) -> None:
    emulator.script(Fault.respond(503, retry_after=3600))
    with pytest.raises(ServerError) as info:
        await session.balance()
    assert info.value.retry_after == 3600.0
    assert info.value.attempts == 1
    assert clock.sleeps == []


async def test_emulated_rate_limit_lockout(emulator: StabilityEmulator, clock: FakeClock) -> None:
    key = emulator.add_account()
    async with StabilitySession(
        key, base_url=emulator.base_url, retry=RetryPolicy(max_attempts=1), rate_limit=None
    ) as session:
        for _ in range(150):
            await session.balance()
        with pytest.raises(RateLimitError) as info:
            await session.balance()
        assert info.value.retry_after == 60.0
        clock.advance(59)
        with pytest.raises(RateLimitError):
            await session.balance()
        clock.advance(1)
        assert (await session.balance()).credits == 100.0


async def test_wrong_types_from_the_server(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    emulator.script(Fault.wrong_types())
    with pytest.raises(ResponseValidationError, match=r"@ \$\.credits"):
        await session.balance()
    emulator.script(Fault.wrong_types())
    with pytest.raises(ResponseValidationError, match=r"@ \$\.organizations\[0\]\.is_default"):
        await session.account()
    assert len(emulator.requests) == 2  # validation failures are not retried


async def test_extra_fields_are_ignored(
    session: StabilitySession, emulator: StabilityEmulator
) -> None:
    emulator.script(Fault.extra_fields())
    assert (await session.account()).email == "a@example.com"


class _OpenTransport:
    holds_connections = True

    async def __call__(self, request: Request) -> Response:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        pass


class TestLifecycle:
    async def test_close_is_idempotent_and_use_after_close_fails(
        self, emulator: StabilityEmulator, key: str
    ) -> None:
        session = StabilitySession(key, base_url=emulator.base_url)
        await session.balance()
        await session.close()
        await session.close()
        assert session.closed
        with pytest.raises(StabilityError, match="closed"):
            await session.balance()

    async def test_views_share_the_pool_and_lifetime(
        self, emulator: StabilityEmulator, key: str
    ) -> None:
        other_key = emulator.add_account(credits=3.0)
        parent = StabilitySession(key, base_url=emulator.base_url)
        view = parent.with_options(api_key=other_key)
        assert (await parent.balance()).credits == 12.5
        assert (await view.balance()).credits == 3.0
        assert view._state.transport is parent._state.transport
        assert view._state.limiter is parent._state.limiter
        assert view._state.handler is parent._state.handler  # the middleware chain, built once
        assert view._state.default_request(BALANCE) != parent._state.default_request(BALANCE)
        await view.close()
        assert view.closed
        assert (await parent.balance()).credits == 12.5  # closing a view closes nothing shared
        fresh_view = parent.with_options(timeout=1.0, retry=RetryPolicy(max_attempts=1))
        assert (fresh_view.timeout, fresh_view.retry.max_attempts) == (1.0, 1)
        await parent.close()
        with pytest.raises(StabilityError, match="closed"):
            await fresh_view.balance()

    async def test_with_options_validates(self, session: StabilitySession) -> None:
        with pytest.raises(ValueError, match="organization"):
            session.with_options(organization="a\nb")
        with pytest.raises(TypeError, match="RetryPolicy"):
            session.with_options(retry=3)  # type: ignore[arg-type]
        assert session.with_options(organization="org-9").organization == "org-9"

    async def test_unclosed_session_warns(self, emulator: StabilityEmulator, key: str) -> None:
        session = StabilitySession(key, base_url=emulator.base_url)
        await session.balance()
        # Release the socket behind the session's back; the session stays unclosed
        # and still believes its transport holds connections.
        await session._state.transport.aclose()
        session._state.sender.transport = _OpenTransport()
        # Dropping the last reference and collecting are one act here.
        with pytest.warns(ResourceWarning, match="unclosed <StabilitySession") as record:  # noqa: PT031
            del session
            gc.collect()
        assert all(KEY not in str(w.message) for w in record)

    def test_use_from_another_loop_is_refused(self, key: str) -> None:
        async def setup() -> tuple[StabilityEmulator, StabilitySession]:
            emulator = StabilityEmulator()
            await emulator.start()
            emulator.add_account(api_key=key)
            session = StabilitySession(key, base_url=emulator.base_url)
            await session.balance()
            return emulator, session

        first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
        try:
            emulator, session = first.run_until_complete(setup())
            with pytest.raises(StabilityError, match="another event loop"):
                second.run_until_complete(session.balance())
            first.run_until_complete(session.close())
            first.run_until_complete(emulator.close())
        finally:
            first.close()
            second.close()

    async def test_no_key_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("STABILITY_API_KEY", raising=False)
        # A session without a key is fine until a call needs the session's own key.
        async with StabilitySession() as session:
            with pytest.raises(StabilityError, match="STABILITY_API_KEY"):
                await session.balance()
            with pytest.raises(StabilityError, match="STABILITY_API_KEY"):
                await session.account()
            with pytest.raises(StabilityError, match="STABILITY_API_KEY"):
                await session.balance(organization="org-1")

    def test_unused_session_holds_nothing_and_does_not_warn(self) -> None:
        session = StabilitySession(KEY)
        del session
        gc.collect()  # filterwarnings=error: a ResourceWarning here fails the test

    def test_key_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("STABILITY_API_KEY", KEY)
        monkeypatch.setenv("STABILITY_API_VERSION", "v1")
        session = StabilitySession()
        assert session.api_version == "v1"
        assert session.base_url == "https://api.stability.ai"
        assert session._state.config.api_key == KEY

    def test_repr_never_shows_the_key(self) -> None:
        session = StabilitySession(KEY)
        assert KEY not in repr(session)
        assert "sk-…" in repr(session)


async def test_key_never_in_logs(
    session: StabilitySession,
    emulator: StabilityEmulator,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.script(503, Fault.drop(), Fault.drop())
    await session.balance()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "retrying GET /v1/user/balance" in text
    assert key not in text


async def test_many_concurrent_calls_share_one_session(emulator: StabilityEmulator) -> None:
    emulator.rate_limit = None
    key = emulator.add_account(credits=5.0)
    async with StabilitySession(
        key, base_url=emulator.base_url, max_connections=20, rate_limit=None
    ) as session:
        results = await asyncio.gather(*(session.balance() for _ in range(500)))
        transport = session._state.transport
        assert isinstance(transport, AiohttpTransport)
        connector = transport._http_session.connector  # type: ignore[union-attr]
        assert connector is not None
        assert len(connector._conns.get(next(iter(connector._conns)), [])) <= 20
    assert results == [Balance(5.0)] * 500
    assert len(emulator.requests) == 500


async def test_caller_owned_http_session(emulator: StabilityEmulator, key: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with StabilitySession(key, base_url=emulator.base_url, http_session=http) as session:
            assert (await session.balance()).credits == 12.5
        assert not http.closed


async def test_a_middleware_may_wrap_whole_calls(session: StabilitySession) -> None:
    events: list[str] = []

    class Tracing:
        async def __call__(self, request: Request, handler: Handler) -> Response:
            events.append(f"attempt {request.attempt}")
            return await handler(request)

        async def around_call(self, request: Request, *, proceed: Any) -> Any:
            events.append(f"call {request.url.rsplit('/', 1)[1]}")
            try:
                return await proceed(request)
            finally:
                events.append("end")

    outer = session.with_options()
    traced = StabilitySession(
        outer._state.config.api_key,
        base_url=outer.base_url,
        middlewares=[Tracing()],
        sleep=outer._state.closing.sleep,
        clock=outer._state.clock,
    )
    async with traced:
        await traced.balance()
        await traced.account()
    assert events == ["call balance", "attempt 1", "end", "call account", "attempt 1", "end"]


def test_a_view_checks_what_it_changes(session: StabilitySession) -> None:
    for bad in ("", " sk-x", "sk-x\n"):
        with pytest.raises(ValueError, match="api_key"):
            session.with_options(api_key=bad)
    with pytest.raises(TypeError, match="api_key"):
        session.with_options(api_key=123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        session.with_options(timeout=0)


async def test_closing_forgets_the_keys_a_session_kept_to_send_faster(
    emulator: StabilityEmulator,
) -> None:
    # Requests and key ids are kept to spare work on every call: with them, the keys
    # of every target. A closed session holds none of them, whoever still holds it.
    keys = [emulator.add_account(credits=float(n)) for n in range(3)]
    session = StabilitySession(keys[0], base_url=emulator.base_url)
    async with session:
        for _ in range(3):  # a request is kept from its second sighting
            for key in keys:
                await session.with_options(api_key=key).balance()
        transport = session._state.transport
        assert isinstance(transport, AiohttpTransport)
        kept = (session._state.sender.key_ids, transport._frozen, transport._templates)
        assert all(len(cache) > 0 for cache in kept)
    assert [len(cache) for cache in kept] == [0, 0, 0]
