"""Scripted and random failures: what a fault is, which one comes next, and how it is answered.

Each fault kind has one small renderer in :data:`_RENDERERS`; the handler looks the
kind up instead of branching on it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, NoReturn

import attrs
from aiohttp import web

from ._wire import REQUEST_ID_HEADER, Exchange, retry_after_value

__all__ = ["RANDOM_FAULT_KINDS", "Fault", "FaultContext", "FaultLike", "FaultQueue", "render"]


def _known_kind(_: object, __: attrs.Attribute[str], value: str) -> None:
    # The kinds are the renderers' names: a kind cannot be added without one.
    if value not in _RENDERERS:
        raise ValueError(f"'kind' must be in {sorted(_RENDERERS)!r} (got {value!r})")


@attrs.frozen
class Fault:
    """One scripted failure. Build them with the class methods.

    Attributes:
        kind: what happens, e.g. ``"status"``, ``"drop"``, ``"reset"``, ``"stall"``.
        status: the status to answer with, where the kind has one.
        retry_after: seconds, or an HTTP-date string, sent as ``Retry-After``.
        seconds: how long a stall lasts.
        size: the size of an oversized body, in bytes.
    """

    kind: str = attrs.field(validator=_known_kind)
    status: int = 200
    retry_after: float | str | None = None
    seconds: float = 0.0
    size: int = 0

    @classmethod
    def respond(cls, status: int, *, retry_after: float | str | None = None) -> Fault:
        """Answer ``status`` with the service's JSON error body (200: answer normally)."""
        return cls("status", status=status, retry_after=retry_after)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection before any response byte is sent."""
        return cls("drop")

    @classmethod
    def reset(cls) -> Fault:
        """Send the headers and part of the body, then reset the connection."""
        return cls("reset")

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before answering normally (ended early when the emulator closes)."""
        return cls("stall", seconds=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with ``application/json`` that does not parse."""
        return cls("malformed_json")

    @classmethod
    def html(cls, status: int = 502) -> Fault:
        """Answer with an HTML error page, as a proxy in front of the service would."""
        return cls("html", status=status)

    @classmethod
    def oversized(cls, size: int = 2 * 1024 * 1024) -> Fault:
        """Answer 200 with a valid JSON body padded to at least ``size`` bytes."""
        return cls("oversized", size=size)

    @classmethod
    def wrong_types(cls) -> Fault:
        """Answer 200 with every field of the right name and the wrong JSON type."""
        return cls("wrong_types")

    @classmethod
    def missing_fields(cls) -> Fault:
        """Answer 200 without the required fields."""
        return cls("missing_fields")

    @classmethod
    def extra_fields(cls) -> Fault:
        """Answer normally, with unknown fields added (a valid answer for a client)."""
        return cls("extra_fields")


FaultLike = Fault | int
"""A fault, or a bare status as a shorthand for :meth:`Fault.respond`."""


class FaultQueue:
    """The faults still to come: scripted ones per key or for anyone, then a random draw."""

    def __init__(self) -> None:
        """Start with no fault."""
        self._scripted: dict[str | None, collections.deque[Fault]] = {}
        self._random: tuple[float, tuple[Fault, ...], random.Random] | None = None

    def script(self, faults: Iterable[FaultLike], api_key: str | None) -> None:
        """Queue ``faults`` for ``api_key``'s requests (``None``: anyone's); an int is a status."""
        queue = self._scripted.setdefault(api_key, collections.deque())
        queue.extend(f if isinstance(f, Fault) else Fault.respond(f) for f in faults)

    def randomize(self, probability: float, kinds: Iterable[str | Fault], seed: int) -> None:
        """Fail each request with ``probability``, drawing from ``kinds``; 0 stops it."""
        mix = tuple(k if isinstance(k, Fault) else RANDOM_FAULT_KINDS[k] for k in kinds)
        self._random = (probability, mix, random.Random(seed)) if probability > 0 else None  # noqa: S311 - not for security

    def clear(self) -> None:
        """Forget every scripted fault and stop random ones."""
        self._scripted.clear()
        self._random = None

    def next(self, api_key: str | None) -> Fault | None:
        """The fault for a request with ``api_key`` (a known key, or ``None``), if any."""
        for owner in (api_key, None):
            queue = self._scripted.get(owner)
            if queue:
                return queue.popleft()
        if self._random is not None:
            probability, mix, rng = self._random
            if rng.random() < probability:
                return rng.choice(mix)
        return None


@attrs.frozen
class FaultContext:
    """What a fault renderer may use besides the fault.

    Attributes:
        exchange: the request being answered.
        answer: the normal answer to it, for faults that end in one (a stall, a 200).
        closing: set when the emulator closes, to end stalls at once.
    """

    exchange: Exchange
    answer: Callable[[], web.StreamResponse]
    closing: asyncio.Event


async def render(fault: Fault, context: FaultContext) -> web.StreamResponse:
    """Answer the request of ``context`` as ``fault`` says (or abort its connection)."""
    return await _RENDERERS[fault.kind](fault, context)


async def _status(fault: Fault, context: FaultContext) -> web.StreamResponse:
    if fault.status == 200:  # a scripted 200 means "answer this one normally"
        return context.answer()
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = retry_after_value(fault.retry_after)
    return context.exchange.error(fault.status, "injected fault", headers=headers)


async def _drop(fault: Fault, context: FaultContext) -> web.StreamResponse:
    _abort(context.exchange.request)


async def _reset(fault: Fault, context: FaultContext) -> web.StreamResponse:
    request = context.exchange.request
    stream = web.StreamResponse(
        headers={"Content-Type": "application/json", REQUEST_ID_HEADER: context.exchange.request_id}
    )
    stream.content_length = 1000
    await stream.prepare(request)
    await stream.write(b'{"credits": ')
    _abort(request)


def _abort(request: web.Request) -> NoReturn:
    transport = request.transport
    if transport is not None:
        # SO_LINGER 0 turns the close into a TCP reset, as a crashed proxy sends.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        transport.close()
    # Raising after the transport is gone makes aiohttp drop the handler quietly.
    raise asyncio.CancelledError


async def _stall(fault: Fault, context: FaultContext) -> web.StreamResponse:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(context.closing.wait(), fault.seconds)
    return context.answer()


_HTML: Final = "<html><head><title>502 Bad Gateway</title></head><body>bad gateway</body></html>"


async def _html(fault: Fault, context: FaultContext) -> web.StreamResponse:
    return web.Response(status=fault.status, text=_HTML, content_type="text/html")


async def _malformed_json(fault: Fault, context: FaultContext) -> web.StreamResponse:
    return web.Response(body=b'{"credits": 12.5', content_type="application/json")


async def _oversized(fault: Fault, context: FaultContext) -> web.StreamResponse:
    body = _normal_body(context.exchange)
    room = fault.size - len(json.dumps(body)) - len(', "padding": ""')
    body["padding"] = "x" * max(room, 0)
    return context.exchange.json(body)


def _normal_body(exchange: Exchange) -> dict[str, Any]:
    # A valid body of the resource asked for, which the faults below then spoil.
    if exchange.account is not None and exchange.endpoint == "account":
        return exchange.account.body()
    return {"credits": 1.0}


def _wrong_types(body: dict[str, Any]) -> dict[str, Any]:
    if "credits" in body:
        return {"credits": str(body["credits"])}
    body = dict(body, id=1234)
    body["organizations"] = [dict(o, is_default=1) for o in body["organizations"]] or "none"
    return body


def _missing_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("credits", "id", "organizations")}


def _extra_fields(body: dict[str, Any]) -> dict[str, Any]:
    body["unexpected"] = {"nested": [1, 2, 3]}
    for membership in body.get("organizations", ()):
        membership["added_later"] = True
    return body


_RESHAPERS: Final[Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "wrong_types": _wrong_types,
    "missing_fields": _missing_fields,
    "extra_fields": _extra_fields,
}


async def _reshaped(fault: Fault, context: FaultContext) -> web.StreamResponse:
    body = _RESHAPERS[fault.kind](_normal_body(context.exchange))
    return context.exchange.json(body)


_Renderer = Callable[[Fault, FaultContext], Awaitable[web.StreamResponse]]

_RENDERERS: Final[Mapping[str, _Renderer]] = {
    "status": _status,
    "drop": _drop,
    "reset": _reset,
    "stall": _stall,
    "html": _html,
    "malformed_json": _malformed_json,
    "oversized": _oversized,
    **dict.fromkeys(_RESHAPERS, _reshaped),
}

# After the renderers: building a fault checks that its kind has one.
RANDOM_FAULT_KINDS: Final[Mapping[str, Fault]] = {
    "503": Fault.respond(503),
    "500": Fault.respond(500),
    "429": Fault.respond(429, retry_after=1),
    "drop": Fault.drop(),
    "reset": Fault.reset(),
    "stall": Fault.stall(30.0),
    "html": Fault.html(502),
    "malformed_json": Fault.malformed_json(),
}
