"""The exporter's ``/metrics`` server: aiohttp's, behind a guard that keeps it reachable.

aiohttp serves the requests; this module owns the sockets around them, because
a server that any local user can reach must survive them. A client that connects
and sends nothing, or half a request, a byte now and then ("slowloris"), would
otherwise hold its connection for ever; a thousand of them would use up the
process's file descriptors, and with them the scrapes, the checks of the service
and the rate-limit store. So:

* a request's head (its request line and headers) must arrive whole within
  :data:`HEADER_TIMEOUT` seconds of the connection, or of its first byte on a
  kept-alive connection, and a connection that hears nothing for
  :data:`IDLE_TIMEOUT` seconds between requests is closed;
* at most a few connections are kept (:func:`connection_cap`, from the file
  limit); one more closes the connection waiting for its head the longest, else
  the one idle the longest, so a scrape always gets in: it sends its request at
  once, and is served in milliseconds;
* the accept loop is this module's own: when the file limit is reached anyway
  (descriptors taken elsewhere) it closes such a connection to make room, instead
  of asyncio's, which logs a traceback per attempt; and what it does about it is
  one line on stderr at most once a minute.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import resource
import select
import socket
from collections.abc import Callable
from typing import Final, cast

import attrs
from aiohttp import web

from .._types import Clock

__all__ = [
    "HEADER_TIMEOUT",
    "IDLE_TIMEOUT",
    "ConnectionGuard",
    "GuardedServer",
    "ListenError",
    "connection_cap",
]

logger = logging.getLogger("stability_user.cli")

HEADER_TIMEOUT: Final = 10.0
"""Seconds a request's head may take to arrive, from the connection or its first byte."""
IDLE_TIMEOUT: Final = 60.0
"""Seconds a connection may stay silent between requests (a scrape a minute keeps it)."""
_MAX_CONNECTIONS: Final = 128
_MIN_CONNECTIONS: Final = 4
# Descriptors left for everything else: the checks' connections, the rate-limit
# store, the standard streams, the event loop's own.
_RESERVED_FILES: Final = 64
_SWEEP_EVERY: Final = 1.0  # seconds between two looks at the deadlines
_SAY_EVERY: Final = 60.0  # seconds between two lines about one condition
_OUT_OF_FILES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_HEAD_END: Final = b"\r\n\r\n"


def connection_cap(file_limit: int | None = None) -> int:
    """How many connections the server keeps, given the process's file limit.

    Half of what the limit leaves beyond 64 descriptors (the checks' connections,
    the rate-limit store, the event loop's own), between 4 and 128: a few scrapers
    need a connection each, and no more.
    """
    if file_limit is None:
        file_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if file_limit == resource.RLIM_INFINITY:
        return _MAX_CONNECTIONS
    return max(_MIN_CONNECTIONS, min(_MAX_CONNECTIONS, (file_limit - _RESERVED_FILES) // 2))


class _Once:
    """Says a thing at most once per :data:`_SAY_EVERY` seconds, counting the times it did not."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._said: float | None = None
        self._unsaid = 0

    def say(self, message: str) -> None:
        now = self._clock()
        if self._said is not None and now - self._said < _SAY_EVERY:
            self._unsaid += 1
            return
        since = f" ({self._unsaid} more times since it was last said)" if self._unsaid else ""
        logger.warning("%s%s; said at most once a minute", message, since)
        self._said, self._unsaid = now, 0


@attrs.define(eq=False)
class _Connection:
    transport: asyncio.Transport
    heard: float  # when bytes last came (or the connection opened)
    head_since: float | None  # when the head being awaited began; None between requests
    tail: bytes = b""  # the last bytes heard, to find a head's end across two reads


class ConnectionGuard:
    """The connections of one server: their deadlines, and which one goes when room is needed.

    Connections awaiting a request's head (new, or half-sent) are kept in the order
    their head began, the others (between requests, or being answered) in the order
    they were last heard from: the first of each is the one to close first, and the
    deadlines are checked from the front.
    """

    def __init__(
        self,
        *,
        cap: int,
        clock: Clock,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        """Keep at most ``cap`` connections; ``clock`` gives the time in seconds."""
        self.cap = cap
        self.clock = clock
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._awaiting_head: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self._between: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self._full = _Once(clock)

    def __len__(self) -> int:
        """Connections open."""
        return len(self._awaiting_head) + len(self._between)

    def opened(self, transport: asyncio.Transport) -> _Connection:
        """A new connection; one already kept is closed first when there are ``cap``."""
        if len(self) >= self.cap:
            open_ = f"{len(self)} connection{'s' if len(self) != 1 else ''} open"
            self._full.say(
                f"/metrics has {open_}, as many as it keeps: each new one closes the one "
                "waiting for its request the longest"
            )
            self.evict()
        now = self.clock()
        connection = _Connection(transport, heard=now, head_since=now)
        self._awaiting_head[connection] = None
        return connection

    def heard(self, connection: _Connection, data: bytes) -> None:
        """Bytes came on ``connection``: a head may have begun or ended."""
        now = self.clock()
        connection.heard = now
        seen = connection.tail + data
        end = seen.rfind(_HEAD_END)
        if connection.head_since is None:  # the first bytes of a new request
            connection.head_since = now
            self._between.pop(connection, None)
            self._awaiting_head[connection] = None
        if end < 0:
            connection.tail = seen[-(len(_HEAD_END) - 1) :]
            return
        rest = seen[end + len(_HEAD_END) :]
        connection.tail = rest[-(len(_HEAD_END) - 1) :]
        self._awaiting_head.pop(connection, None)
        if rest:  # the next request's first bytes (pipelined): its head is awaited from now
            connection.head_since = now
            self._awaiting_head[connection] = None
        else:
            connection.head_since = None
            self._between[connection] = None

    def closed(self, connection: _Connection) -> None:
        """The connection is gone, whoever closed it."""
        self._awaiting_head.pop(connection, None)
        self._between.pop(connection, None)

    def evict(self) -> bool:
        """Close the connection awaiting its head the longest, else the one idle the longest.

        Returns ``False`` when there is none.
        """
        for kept in (self._awaiting_head, self._between):
            if kept:
                connection, _ = kept.popitem(last=False)
                connection.transport.abort()
                return True
        return False

    def sweep(self) -> None:
        """Close every connection past its deadline."""
        now = self.clock()
        while self._awaiting_head:
            connection = next(iter(self._awaiting_head))
            since = connection.head_since
            if since is not None and now - since <= self.header_timeout:
                break
            del self._awaiting_head[connection]
            connection.transport.abort()  # nothing worth flushing to a client this slow
        while self._between:
            connection = next(iter(self._between))
            if now - connection.heard <= self.idle_timeout:
                break
            del self._between[connection]
            connection.transport.close()

    def close_all(self) -> None:
        """Close every connection (the server stops)."""
        for kept in (self._awaiting_head, self._between):
            while kept:
                connection, _ = kept.popitem()
                connection.transport.abort()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard told of what comes."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._connection: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A socket's transport, made by connect_accepted_socket(): it can be aborted.
        self._connection = self._guard.opened(cast(asyncio.Transport, transport))
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._connection is not None:
            self._guard.heard(self._connection, data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            self._guard.closed(self._connection)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ListenError(Exception):
    """The address cannot be listened on; the message says why."""


def _reason(error: OSError) -> str:
    if error.errno and error.errno > 0 and not isinstance(error, socket.gaierror):
        # A bind error's strerror may repeat the address: the errno alone says it best.
        return os.strerror(error.errno).lower()
    return (error.strerror or str(error)).lower()  # a host name that does not resolve


class GuardedServer:
    """aiohttp's server for ``app`` on ``host`` and ``port``, behind a :class:`ConnectionGuard`."""

    def __init__(
        self,
        app: web.Application,
        *,
        cap: int | None = None,
        clock: Clock | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        """Serve ``app``; ``cap`` connections at most (from the file limit by default)."""
        # No access log: a scrape a minute, every minute, says nothing.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=idle_timeout,
        )
        self._cap = cap if cap is not None else connection_cap()
        self._clock = clock
        self._timeouts = (header_timeout, idle_timeout)
        self._sockets: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.guard: ConnectionGuard | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The host and port of the first address served."""
        host, port = self._sockets[0].getsockname()[:2]
        return host, port

    async def start(self, host: str, port: int) -> None:
        """Listen on every address of ``host`` and start serving.

        Raises:
            ListenError: the address cannot be resolved or listened on.
        """
        loop = asyncio.get_running_loop()
        header_timeout, idle_timeout = self._timeouts
        self.guard = ConnectionGuard(
            cap=self._cap,
            clock=self._clock or loop.time,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
        )
        await self._runner.setup()
        try:
            self._sockets = await _listen(host, port)
        except OSError as error:
            await self._runner.cleanup()
            shown = f"[{host}]" if ":" in host else host
            raise ListenError(f"cannot listen on {shown}:{port}: {_reason(error)}") from None
        server = self._runner.server
        if server is None:  # pragma: no cover - setup() made it
            raise RuntimeError("the application's server was not set up")
        guard = self.guard

        def protocol() -> asyncio.Protocol:
            return _Guarded(guard, server())

        for listening in self._sockets:
            self._tasks.append(asyncio.ensure_future(self._accept(listening, protocol, guard)))
        self._tasks.append(asyncio.ensure_future(self._sweep(guard)))

    async def _accept(
        self,
        listening: socket.socket,
        protocol: Callable[[], asyncio.Protocol],
        guard: ConnectionGuard,
    ) -> None:
        loop = asyncio.get_running_loop()
        out_of_files = _Once(guard.clock)
        while True:
            # accept() fails for want of a descriptor even when no one waits: so a
            # connection is closed to make room only when one is known to wait.
            await _readable(listening)
            while _waiting(listening):
                try:
                    connection, _ = listening.accept()
                except (BlockingIOError, InterruptedError):
                    break  # the client went away in between
                except OSError as error:
                    if error.errno not in _OUT_OF_FILES:
                        continue  # the client gave up before it was accepted (ECONNABORTED...)
                    made_room = guard.evict()
                    limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
                    then = (
                        "closing the connection waiting for its request the longest"
                        if made_room
                        else "waiting for a descriptor to be freed"
                    )
                    out_of_files.say(
                        f"/metrics cannot accept a connection: {_reason(error)} "
                        f"(the file limit is {limit}): {then}"
                    )
                    # A closed transport frees its descriptor on the loop's next turn: let
                    # it come before accepting again. Without room, the descriptors are in
                    # use elsewhere (the checks, the store): wait a little for one.
                    await asyncio.sleep(0 if made_room else 0.1)
                    continue
                connection.setblocking(False)
                try:
                    await loop.connect_accepted_socket(protocol, connection)
                except OSError:  # reset before it could be served
                    connection.close()

    async def _sweep(self, guard: ConnectionGuard) -> None:
        while True:
            await asyncio.sleep(_SWEEP_EVERY)
            guard.sweep()

    async def stop(self) -> None:
        """Stop listening, close every connection and the application."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for listening in self._sockets:
            listening.close()
        if self.guard is not None:
            self.guard.close_all()
        await self._runner.cleanup()


def _waiting(listening: socket.socket) -> bool:
    """A connection waits to be accepted on ``listening`` (a look that takes no descriptor)."""
    poll = select.poll()
    poll.register(listening, select.POLLIN)
    return bool(poll.poll(0))


async def _readable(listening: socket.socket) -> None:
    """Wait until a connection waits to be accepted on ``listening``."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(listening.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(listening.fileno())


async def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to, as asyncio's servers bind."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listening: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            listening.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
    except OSError:
        for sock in listening:
            sock.close()
        raise
    return listening
