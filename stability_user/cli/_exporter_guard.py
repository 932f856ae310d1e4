"""The exporter's connection guard: a deadline for each request's head, and a cap on connections.

A client that connects and sends nothing, or half a request, a byte now and then
("slowloris"), would otherwise hold its connection for ever. So:

* a request's head (its request line and headers) must arrive whole within
  :data:`HEADER_TIMEOUT` seconds of the connection, or of its first byte on a
  kept-alive connection, and a connection that hears nothing for
  :data:`IDLE_TIMEOUT` seconds between requests is closed;
* at most a few connections are kept (:func:`connection_cap`, from the file
  limit); one more closes the connection waiting for its head the longest, else
  the one idle the longest, so a scrape always gets in: it sends its request at
  once, and is served in milliseconds.

The server (:mod:`._exporter_server`) tells the guard of each connection through
:class:`GuardedProtocol`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import resource
from typing import Final, cast

import attrs

from .._types import Clock

__all__ = [
    "HEADER_TIMEOUT",
    "IDLE_TIMEOUT",
    "ConnectionGuard",
    "GuardedProtocol",
    "ThrottledWarning",
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
_SAY_EVERY: Final = 60.0  # seconds between two lines about one condition
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


class ThrottledWarning:
    """Says a thing at most once a minute, as a WARNING, counting the times it did not."""

    def __init__(self, clock: Clock) -> None:
        """Tell the time by ``clock``, in seconds."""
        self._clock = clock
        self._said: float | None = None
        self._unsaid = 0

    def say(self, message: str) -> None:
        """Log ``message``, unless a message was logged less than a minute ago."""
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
        self._full = ThrottledWarning(clock)

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


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard told of what comes."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        """Tell ``guard`` of what comes, and hand it on to ``inner``."""
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
