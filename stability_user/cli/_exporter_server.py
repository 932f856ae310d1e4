"""The exporter's ``/metrics`` server: aiohttp's, behind a guard that keeps it reachable.

aiohttp serves the requests; this module owns the sockets around them, because
a server that any local user can reach must survive them. A client that holds
a connection without finishing its request would otherwise keep it for ever; a
thousand of them would use up the process's file descriptors, and with them the
scrapes, the checks of the service and the rate-limit store. So each connection
is watched by a :class:`~._exporter_guard.ConnectionGuard` (deadlines, and a cap
on how many are kept), and the accept loop is this module's own: when the file
limit is reached anyway (descriptors taken elsewhere) it closes such a connection
to make room, instead of asyncio's, which logs a traceback per attempt; and what
it does about it is one line on stderr at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import select
import socket
from collections.abc import Callable
from typing import Final

from aiohttp import web

from .._types import Clock
from ._exporter_guard import (
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    ConnectionGuard,
    GuardedProtocol,
    ThrottledWarning,
    connection_cap,
)

__all__ = ["GuardedServer", "ListenError"]

_SWEEP_EVERY: Final = 1.0  # seconds between two looks at the deadlines
_OUT_OF_FILES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


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
            return GuardedProtocol(guard, server())

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
        out_of_files = ThrottledWarning(guard.clock)
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
