"""A Redis store's own connection on one event loop: one command at a time.

redis-py's ``Connection`` (connecting, TLS, authentication, hiredis's parser)
used the leanest way it offers: no pool, no client lock, no task per command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ._breaker import Outage

__all__ = ["Line", "close_with_its_loop"]


async def close_with_its_loop(
    close: Callable[[], Awaitable[object]], forget: Callable[[asyncio.AbstractEventLoop], object]
) -> None:
    """Wait for the loop's end (its tasks cancelled); then ``forget`` it, and ``close()``."""
    loop = asyncio.get_running_loop()
    try:
        await loop.create_future()
    finally:
        forget(loop)
        await close()


class Line:
    """The store's own connection to Redis on one event loop, and its turn-taking.

    One command at a time (:attr:`lock`): the next is written once the answer
    before it is read. A command its caller left mid-way (cancelled, timed out)
    drops the connection, which may still owe an answer; the next opens a new one.
    Commands are packed by hiredis when it is installed (the ``redis`` extra
    brings it), else by redis-py; answers are parsed by redis-py's parser (hiredis's).
    """

    __slots__ = ("_pack", "closed", "connection", "lock")

    def __init__(self, connection: Any) -> None:
        """A line on ``connection`` (not connected yet: the first command connects)."""
        self.connection = connection
        self.lock = asyncio.Lock()
        self.closed = False
        self._pack: Callable[[tuple[Any, ...]], Any]
        try:
            from hiredis import pack_command  # noqa: PLC0415 - optional: the redis extra has it
        except ImportError:
            self._pack = _packing_by(connection)
        else:
            self._pack = pack_command

    async def send(self, command: tuple[object, ...]) -> Any:
        """Write ``command`` and read its answer (the caller holds :attr:`lock`).

        Raises:
            redis.exceptions.ResponseError: Redis answered with an error.
            redis.exceptions.RedisError, OSError: the connection failed (it is dropped).
            Outage: the line is closed.
        """
        if self.closed:  # its store or its loop is closing: no connection is opened again
            raise Outage("the connection to Redis is closed")
        connection = self.connection
        try:
            await connection.send_packed_command(self._pack(command), check_health=False)
            return await connection.read_response()
        except BaseException as exc:
            if not _is_an_answer(exc):  # an answer may still be on its way: a new connection
                await connection.disconnect(nowait=True)
            raise

    async def close(self) -> None:
        """Close the connection, for good: a command sent later fails with :class:`Outage`."""
        self.closed = True
        await self.connection.disconnect()


def _packing_by(connection: Any) -> Callable[[tuple[Any, ...]], Any]:
    def pack(command: tuple[Any, ...]) -> Any:
        return connection.pack_command(*command)

    return pack


def _is_an_answer(error: BaseException) -> bool:
    from redis.exceptions import ResponseError  # noqa: PLC0415 - redis-py is optional

    return isinstance(error, ResponseError)
