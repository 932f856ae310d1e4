"""A local, stateful emulator of the Stability user API over real HTTP on loopback.

It speaks HTTP only and imports nothing of the client it is used to test, so a
test through it exercises the same sockets, headers and bodies as production.
This module is the facade: lifecycle and the public methods; the state, the
faults, the HTTP handling and the serving live in their own modules.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType

from aiohttp import web

from ._app import Backend, build_app
from ._faults import Fault, FaultLike, FaultQueue
from ._listen import check_host, serve_app
from ._rate_limit import DOCUMENTED_RATE_LIMIT, RateLimit, RateLimiter
from ._recording import RecordedRequest, RequestLog
from ._state import (
    Accounts,
    EmulatedAccount,
    EmulatedOrganization,
    check_generated_count,
    generated_key,
)

__all__ = ["StabilityEmulator"]


class StabilityEmulator:
    """A local Stability user API on ``127.0.0.1``, for tests and offline runs.

    ::

        async with StabilityEmulator() as emu:
            key = emu.add_account(email="a@example.com", credits=12.5)
            async with StabilitySession(key, base_url=emu.base_url) as session:
                ...

    Args:
        host: the address to listen on: ``localhost`` or a loopback IP (127.0.0.0/8,
            ``::1``); any other one raises ``ValueError`` unless ``allow_remote``.
        port: the port; 0 picks a free one.
        rate_limit: the per-key limit, or ``None`` to turn it off.
        clock: monotonic seconds, for the rate limit and the request log; tests pass a
            fake one so the 60-second lockout never makes them wait.
        retire_v1alpha: answer the v1alpha paths with 404, as the service may.
        record: keep requests in :attr:`requests`; ``False`` keeps none (they are
            still counted in :attr:`request_count`).
        max_recorded: how many of the latest requests :attr:`requests` keeps; older
            ones make way, so a long run's memory stays flat.
        allow_remote: allow a ``host`` beyond loopback (e.g. ``0.0.0.0``), with a
            :class:`RemoteAccessWarning`: anyone who reaches it can use its keys.
        ssl_context: serve HTTPS with this server-side context (its certificate
            loaded); :attr:`base_url` then starts with ``https://``.
        generated_accounts: serve this many generated accounts besides the added
            ones, without storing them: account ``n`` (from 1) has the key
            :meth:`generated_key(n) <generated_key>` and a balance computed from ``n``
            (0.00 to 999.99). A million of them cost no memory; the rate limit
            forgets a key once its window has passed.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = DOCUMENTED_RATE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        retire_v1alpha: bool = False,
        record: bool = True,
        max_recorded: int = 10_000,
        allow_remote: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        generated_accounts: int = 0,
    ) -> None:
        """Configure the emulator; :meth:`start` (or ``async with``) serves it."""
        check_host(host, allow_remote=allow_remote, tls=ssl_context is not None)
        check_generated_count(generated_accounts)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._backend = Backend(
            accounts=Accounts(generated_accounts),
            limiter=RateLimiter(rate_limit),
            faults=FaultQueue(),
            log=RequestLog(max_recorded=max_recorded, enabled=record),
            clock=clock,
            retire_v1alpha=retire_v1alpha,
        )
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # -- settings, changeable at any time -------------------------------------

    @property
    def rate_limit(self) -> RateLimit | None:
        """The per-key limit in force, or ``None``; set it to change it."""
        return self._backend.limiter.limit

    @rate_limit.setter
    def rate_limit(self, value: RateLimit | None) -> None:
        self._backend.limiter.limit = value

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock of the rate limit and the request log."""
        return self._backend.clock

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        self._backend.clock = value

    @property
    def retire_v1alpha(self) -> bool:
        """Whether the v1alpha paths answer 404."""
        return self._backend.retire_v1alpha

    @retire_v1alpha.setter
    def retire_v1alpha(self, value: bool) -> None:
        self._backend.retire_v1alpha = value

    @property
    def record(self) -> bool:
        """Whether requests are kept in :attr:`requests` (they are counted either way)."""
        return self._backend.log.enabled

    @record.setter
    def record(self, value: bool) -> None:
        self._backend.log.enabled = value

    @property
    def generated_accounts(self) -> int:
        """How many generated accounts are served; set it to change it."""
        return self._backend.accounts.generated

    @generated_accounts.setter
    def generated_accounts(self, value: int) -> None:
        check_generated_count(value)
        self._backend.accounts.generated = value

    # -- state -----------------------------------------------------------------

    def add_account(
        self,
        *,
        email: str | None = None,
        credits: float = 100.0,
        organizations: Sequence[EmulatedOrganization] | None = None,
        api_key: str | None = None,
        account_id: str | None = None,
        profile_picture: str | None = None,
    ) -> str:
        """Create an account and return a new API key for it.

        Args:
            email: the account's e-mail; a numbered ``user-N@example.com`` by default.
            credits: the balance of the default organization (when ``organizations``
                is not given).
            organizations: the memberships; by default one default organization.
            api_key: the key to accept; a random ``sk-...`` one by default.
            account_id: the user's ID; ``user-N`` by default.
            profile_picture: a picture URL, or ``None`` to leave the field out.
        """
        return self._backend.accounts.add(
            email=email,
            credits=credits,
            organizations=organizations,
            api_key=api_key,
            account_id=account_id,
            profile_picture=profile_picture,
        )

    def account(self, api_key: str) -> EmulatedAccount:
        """The emulated account of ``api_key`` (its state may be changed in place).

        A generated account is stored from then on, so that changes to it last.
        """
        return self._backend.accounts[api_key]

    @property
    def api_keys(self) -> list[str]:
        """Every API key added, in order (and the generated ones changed through :meth:`account`).

        The generated keys are :meth:`generated_key` of 1 to :attr:`generated_accounts`.
        """
        return self._backend.accounts.keys()

    @staticmethod
    def generated_key(number: int) -> str:
        """The key of generated account ``number`` (from 1): ``sk-generated-`` and 35 digits.

        The same in every emulator, so another process can make the keys of a run.

        Raises:
            ValueError: a number below 1 (or past 35 digits).
        """
        return generated_key(number)

    def set_balance(self, api_key: str, credits: float, *, organization: str | None = None) -> None:
        """Set the balance of the key's default organization, or of ``organization``."""
        self.account(api_key).organization(organization).credits = credits

    def balance(self, api_key: str, *, organization: str | None = None) -> float:
        """The balance the emulator would report for the key (and organization)."""
        account = self._backend.accounts.get(api_key)  # a generated one is not stored
        if account is None:
            raise KeyError(api_key)
        return account.organization(organization).credits

    # -- faults ----------------------------------------------------------------

    def script(self, *faults: FaultLike, api_key: str | None = None) -> None:
        """Queue faults, consumed one per request in order; an int is a status.

        With ``api_key`` they apply to that key's requests only (and are taken
        before the global ones); without it, to any request. ``200`` in a
        script means "answer this one normally".
        """
        self._backend.faults.script(faults, api_key)

    def random_faults(
        self,
        probability: float,
        *,
        kinds: Iterable[str | Fault] = ("503", "429", "drop", "stall"),
        seed: int = 0,
    ) -> None:
        """Fail each request with ``probability``, the kind drawn from ``kinds``.

        ``kinds`` names entries of :data:`RANDOM_FAULT_KINDS` or gives faults;
        the draw is seeded, so a soak run is repeatable. ``probability=0`` stops it.
        """
        self._backend.faults.randomize(probability, kinds, seed)

    def clear_faults(self) -> None:
        """Forget every scripted fault and stop random ones."""
        self._backend.faults.clear()

    # -- recording -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """The latest requests (at most ``max_recorded``), oldest first, keys redacted.

        A copy: it does not change as more requests arrive.
        """
        return self._backend.log.records

    @property
    def request_count(self) -> int:
        """How many requests have arrived since the emulator was made, kept or not."""
        return self._backend.log.total

    @property
    def status_counts(self) -> dict[int, int]:
        """How many answers of each status were sent since the emulator was made.

        Every answer counts, kept in :attr:`requests` or not; a dropped or reset
        connection sends none. A copy: ``emulator.status_counts.get(429, 0)``.
        """
        return self._backend.log.statuses

    @property
    def max_recorded(self) -> int:
        """How many of the latest requests :attr:`requests` keeps."""
        return self._backend.log.max_recorded

    async def wait_for_requests(self, count: int) -> None:
        """Wait until at least ``count`` requests have arrived in all (answered or not).

        It counts every request, :attr:`request_count`, so it works with ``record=False``
        and after the oldest records have made way.
        """
        await self._backend.log.wait_for(count)

    # -- serving ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give the client as ``base_url``."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not started")
        return self._base_url

    async def start(self) -> None:
        """Listen on the host and port (port 0 picks a free one)."""
        self._backend.closing.clear()
        self._runner, self.port, self._base_url = await serve_app(
            build_app(self._backend), self.host, self.port, ssl_context=self.ssl_context
        )

    async def close(self) -> None:
        """Stop serving; ends stalls at once."""
        self._backend.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> StabilityEmulator:
        """Start and return the emulator."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the emulator."""
        await self.close()
