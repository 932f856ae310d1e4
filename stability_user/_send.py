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
import functools
import time
import weakref
from collections.abc import Awaitable, Sequence
from typing import Final

import attrs

from ._closing import Closing
from ._config import key_id_of, origin_of
from ._errors import APITimeoutError
from ._http import AroundSend, Handler, Request, Response, Transport
from ._ratelimit import LEASE_MARGIN, RateLimiter, Slot, Wait
from ._sansio import retry_after_of
from ._types import Clock

__all__ = ["Sender", "request_key_id"]

_KEY_IDS_KEPT: Final = 65_536  # (url, key) -> key id; cleared when full
_key_ids: dict[tuple[str, str], str] = {}


def request_key_id(request: Request) -> str:
    """The name of the state of the key ``request`` sends, at the service it goes to."""
    api_key = request.api_key or ""
    cache_key = (request.url, api_key)
    key_id = _key_ids.get(cache_key)
    if key_id is None:
        if len(_key_ids) >= _KEY_IDS_KEPT:
            _key_ids.clear()
        key_id = _key_ids[cache_key] = key_id_of(api_key, origin_of(request.url))
    return key_id


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
        "_gates",
        "_max_connections",
        "_send_chain",
        "clock",
        "closing",
        "limiter",
        "queued",
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
        self.queued = 0  # requests waiting for a connection now
        send: Handler | None = None
        for around in reversed(around_send):
            send = functools.partial(around, send=send or self._transport)
        self._send_chain = send
        # One gate per event loop: a transport passed in may serve tests on many loops.
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self._max_connections)
        return gate

    async def __call__(self, request: Request) -> Response:
        """Send ``request`` once it has a connection and a slot; its whole response.

        Raises:
            APITimeoutError: the call's deadline ran out before or while it was sent.
            RateLimitError: unsent, when the key's wait is longer than allowed.
            StabilityError: the session closed meanwhile.
            APIConnectionError, ResponseValidationError: from the transport.
        """
        closing = self.closing
        closing.check()
        gate = self._gate()
        limiter = self.limiter
        # Counted from here until everything taken is given back: close() waits for it.
        closing.sending()
        try:
            slot: Slot | None = None
            waited = 0.0
            while True:
                if gate.locked():
                    await self._queue(gate, request)
                else:
                    await gate.acquire()  # free: no suspension
                if limiter is None:
                    break
                try:
                    taken = await self._take(limiter, request, waited)
                except BaseException:
                    gate.release()
                    raise
                if isinstance(taken, Slot):
                    slot = taken
                    break
                gate.release()  # the wait is the key's alone: the pool serves the others
                waited += taken.seconds
                await closing.sleep(taken.seconds)
            try:
                return await self._send(request, slot)
            finally:
                gate.release()
        finally:
            closing.sent()

    async def _queue(self, gate: asyncio.Semaphore, request: Request) -> None:
        deadline = request.deadline
        left = None if deadline is None else deadline - self.clock()
        acquiring = asyncio.ensure_future(gate.acquire())
        self.queued += 1
        try:
            await self.closing.wait(acquiring, timeout=left)
        except asyncio.TimeoutError:
            raise _deadline_error(
                request, f"while attempt {request.attempt} waited for a connection"
            ) from None
        except BaseException:
            if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
                gate.release()  # acquired in the very moment the wait ended
            raise
        finally:
            self.queued -= 1

    async def _take(self, limiter: RateLimiter, request: Request, waited: float) -> Slot | Wait:
        """A slot now, or the wait until one may be free (refused when too long)."""
        key_id = request_key_id(request)
        lease = request.timeout + LEASE_MARGIN
        answer = limiter.take_now(key_id, lease)
        if answer is None:
            answer = await limiter.take(key_id, lease)
        if isinstance(answer, Slot):
            return answer
        api_key = request.api_key or ""
        deadline = request.deadline
        # A wait ending at the deadline would leave nothing to send the request in.
        if answer.seconds > request.max_retry_after - waited or (
            deadline is not None and answer.seconds >= deadline - self.clock()
        ):
            raise limiter.refusal(api_key, answer, request.attempt - 1)
        limiter.waiting(api_key, answer)
        return answer

    async def _send(self, request: Request, slot: Slot | None) -> Response:
        try:
            self.closing.check()  # closed while this request waited: nothing is sent
            deadline = request.deadline
            cut = False
            if deadline is not None:
                left = deadline - self.clock()
                if left <= 0:
                    raise _deadline_error(request, f"before attempt {request.attempt} was sent")
                if left < request.timeout:
                    request = attrs.evolve(request, timeout=left)
                    cut = True
            try:
                chain = self._send_chain
                if chain is None:
                    response = await self.transport(request)
                else:
                    response = await chain(request)
            except APITimeoutError as exc:
                if cut:
                    raise _deadline_error(request, f"during attempt {request.attempt}") from exc
                raise
            if response.status == 429 and slot is not None:
                # Locked before the slot is given back: nothing slips in between.
                assert self.limiter is not None  # noqa: S101 - a slot comes from it
                retry_after = retry_after_of(response.headers, now=time.time())
                await self.limiter.lock(slot.key_id, request.api_key or "", retry_after)
        finally:
            if slot is not None:
                self.limiter.give_back(slot)  # type: ignore[union-attr]
        if response.attempt != request.attempt or response.request is not request:
            # A transport of the user's numbers nothing: the response says what it answers.
            response = attrs.evolve(response, attempt=request.attempt, request=request)
        return response

    def _transport(self, request: Request) -> Awaitable[Response]:
        # Looked up at each send: the innermost step of the around_send hooks.
        return self.transport(request)


def _deadline_error(request: Request, when: str) -> APITimeoutError:
    return APITimeoutError(
        f"the call's deadline ran out {when}",
        attempts=request.attempt,
        retryable=False,
    )
