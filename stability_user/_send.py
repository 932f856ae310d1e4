"""The bottom of every call, below the middlewares: a connection, a rate-limit slot, the transport.

For each request it waits for one of the session's ``max_connections`` (within
the call's deadline), then takes a slot of the request's key at the request's
service from the rate limiter. Only then is the request sent, so a slot's lease
(``timeout`` + :data:`~stability_user._ratelimit.LEASE_MARGIN`) runs from the
send and no wait can outlast it. When no slot is free the connection is given
back while the call waits, so one busy key never holds the pool. The key is the
``Authorization`` the request carries, so a middleware that changes it is
limited under the key it sends.

After a 429 the key's lockout is recorded *before* its slot is given back, so no
other process can slip a request in between. The response is stamped with the
attempt and request it answers, whatever transport made it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
import weakref
from collections.abc import Awaitable, Sequence

import attrs

from ._closing import Closing
from ._config import KeyIds
from ._errors import SESSION_CLOSED, APITimeoutError, StabilityError
from ._http import AroundSend, Handler, Request, Response, Transport
from ._ratelimit import LEASE_MARGIN, RateLimiter, Slot, Wait
from ._sansio import retry_after_of
from ._types import Clock

__all__ = ["Gate", "Sender"]


class Gate:
    """How many requests of a session may be in flight at once, on one event loop.

    A semaphore that costs the common case nothing: a free place is taken without
    an await. A place given back goes straight to the oldest waiter, so no request
    is overtaken while it waits.
    """

    __slots__ = ("_waiters", "free")

    def __init__(self, places: int) -> None:
        """``places`` requests at once."""
        self.free = places
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for a place now."""
        return len(self._waiters)

    def take_now(self) -> bool:
        """Take a place if one is free and nobody waits for it."""
        if self.free and not self._waiters:
            self.free -= 1
            return True
        return False

    def enqueue(self) -> asyncio.Future[None]:
        """A place in the queue: the future resolves when a place is handed to it."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def leave(self, waiter: asyncio.Future[None]) -> None:
        """The waiter gave up (cancelled, timed out, closed): out of the queue."""
        if waiter.done() and not waiter.cancelled():
            self.give()  # handed a place in the very moment it gave up: pass it on
        else:
            waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def give(self) -> None:
        """Give a place back: to the oldest waiter, or to the free ones."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class Sender:
    """Sends each request through the pool's gate, the rate limiter and the transport.

    Args:
        transport: what sends.
        limiter: the rate limiter, or ``None`` when the limit is off.
        closing: the session's life: its waits end when it closes.
        max_connections: requests in flight at once.
        clock: the session's monotonic clock (deadlines are on it).
        around_send: the middlewares' ``around_send`` hooks, the first outermost.
    """

    __slots__ = (
        "_gate",
        "_gates",
        "_loop",
        "_max_connections",
        "_send_chain",
        "clock",
        "closing",
        "key_ids",
        "limiter",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        limiter: RateLimiter | None,
        closing: Closing,
        *,
        max_connections: int,
        clock: Clock,
        around_send: Sequence[AroundSend] = (),
    ) -> None:
        """Send with ``transport``, limited by ``limiter``."""
        self.transport = transport
        self.limiter = limiter
        self.closing = closing
        self.clock = clock
        self._max_connections = max_connections
        send: Handler | None = None
        for around in reversed(around_send):
            send = functools.partial(around, send=send or self._transport)
        self._send_chain = send
        # One gate per event loop: a transport passed in may serve tests on many loops.
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Gate] = (
            weakref.WeakKeyDictionary()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gate = Gate(max_connections)
        self.key_ids = KeyIds()  # forgotten when the session closes, with the keys

    @property
    def queued(self) -> int:
        """Requests of the running event loop waiting for a connection now."""
        return self._gate_of(asyncio.get_running_loop()).waiting

    def _gate_of(self, loop: asyncio.AbstractEventLoop) -> Gate:
        if loop is not self._loop:
            gate = self._gates.get(loop)
            if gate is None:
                gate = self._gates[loop] = Gate(self._max_connections)
            self._loop, self._gate = loop, gate
        return self._gate

    async def __call__(self, request: Request) -> Response:  # noqa: PLR0912, PLR0915 - one frame
        """Send ``request`` once it has a connection and a slot; its whole response.

        One coroutine from the gate to the transport, on purpose: every frame in
        between would be resumed at each step of every request's I/O.

        Raises:
            APITimeoutError: the call's deadline ran out before or while it was sent.
            RateLimitError: unsent, when the key's wait is longer than allowed.
            StabilityError: the session closed meanwhile.
            APIConnectionError, ResponseValidationError: from the transport.
        """
        closing = self.closing
        if closing.closed:
            raise StabilityError(SESSION_CLOSED)
        loop = asyncio.get_running_loop()
        gate = self._gate if loop is self._loop else self._gate_of(loop)
        limiter = self.limiter
        # Counted from here until everything taken is given back: close() waits for it.
        closing.sending()
        try:
            slot: Slot | None = None
            waited = 0.0
            while True:
                if not gate.take_now():
                    await self._queue(gate, request)
                if limiter is None:
                    break
                try:
                    key_id = self.key_ids.of(request.url, request.api_key or "")
                    lease = request.timeout + LEASE_MARGIN
                    taken = limiter.take_now(key_id, lease, loop)
                    if taken is None:
                        taken = await limiter.take(key_id, lease)
                    if not isinstance(taken, Wait):
                        slot = taken
                        break
                    self._check_wait(limiter, request, taken, waited)
                except BaseException:
                    gate.give()
                    raise
                gate.give()  # the wait is the key's alone: the pool serves the others
                waited += taken.seconds
                await closing.sleep(taken.seconds)
            try:
                if closing.closed:  # closed while this request waited: nothing is sent
                    raise StabilityError(SESSION_CLOSED)
                sent = request
                deadline = request.deadline
                if deadline is not None:
                    sent = self._within(request, deadline)
                try:
                    chain = self._send_chain
                    if chain is None:
                        response = await self.transport(sent)
                    else:
                        response = await chain(sent)
                except APITimeoutError as exc:
                    if sent is not request:  # its timeout was what the deadline left
                        raise _deadline_error(sent, f"during attempt {sent.attempt}") from exc
                    raise
                if response.status == 429 and slot is not None:
                    await self._lock(slot, sent, response)
            finally:
                if slot is not None:
                    limiter.give_back(slot)  # type: ignore[union-attr]
                gate.give()
        finally:
            closing.sent()
        if response.attempt != sent.attempt or response.request is not sent:
            # A transport of the user's numbers nothing: the response says what it answers.
            response = response.answering(sent)
        return response

    async def _queue(self, gate: Gate, request: Request) -> None:
        deadline = request.deadline
        left = None if deadline is None else deadline - self.clock()
        waiter = gate.enqueue()
        try:
            await self.closing.wait(waiter, timeout=left)
        except asyncio.TimeoutError:
            gate.leave(waiter)
            raise _deadline_error(
                request, f"while attempt {request.attempt} waited for a connection"
            ) from None
        except BaseException:
            gate.leave(waiter)
            raise

    def _check_wait(
        self, limiter: RateLimiter, request: Request, wait: Wait, waited: float
    ) -> None:
        """Refuse a wait longer than the call allows; else say who waits and why."""
        api_key = request.api_key or ""
        deadline = request.deadline
        # A wait ending at the deadline would leave nothing to send the request in.
        if wait.seconds > request.max_retry_after - waited or (
            deadline is not None and wait.seconds >= deadline - self.clock()
        ):
            raise limiter.refusal(api_key, wait, request.attempt - 1)
        limiter.waiting(api_key, wait)

    def _within(self, request: Request, deadline: float) -> Request:
        """The request, its timeout cut to what the deadline leaves; refused when nothing is."""
        left = deadline - self.clock()
        if left <= 0:
            raise _deadline_error(request, f"before attempt {request.attempt} was sent")
        if left < request.timeout:
            return attrs.evolve(request, timeout=left)
        return request

    async def _lock(self, slot: Slot, request: Request, response: Response) -> None:
        # Locked before the slot is given back: nothing slips in between.
        assert self.limiter is not None  # noqa: S101 - a slot comes from it
        retry_after = retry_after_of(response.headers, now=time.time())
        await self.limiter.lock(slot[0], request.api_key or "", retry_after)

    def _transport(self, request: Request) -> Awaitable[Response]:
        # Looked up at each send: the innermost step of the around_send hooks.
        return self.transport(request)


def _deadline_error(request: Request, when: str) -> APITimeoutError:
    return APITimeoutError(
        f"the call's deadline ran out {when}",
        attempts=request.attempt,
        retryable=False,
    )
