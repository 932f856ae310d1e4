"""The fleet-wide Redis a shared store keeps its state in: redis-py's asyncio client.

Needs the extra: ``pip install 'stability-user[redis]'``. Every operation is one
Lua script (atomic on the server, on the server's clock). A store given a URL
opens one connection of its own for each event loop that uses it (redis-py's
connections belong to one loop), lazily, with a short connect timeout, and runs
its scripts on it in the caller's task, one at a time: the leanest way redis-py
offers, without a pool, a lock of the client's or a task per command. A client
of the caller's is used through its own API, each script in a task of its own.
Both are behind the store's :class:`~._breaker.Breaker`: a Redis that hangs,
refuses or drops packets costs each call at most a second, once, and then none
until it is back. A loop's connection is closed with its loop (``asyncio.run()``
and ``asyncio.Runner`` cancel every task before closing it), so a store used
again from another loop leaves no connection behind.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from .._errors import StabilityError
from .._secrets import mask_url, url_secrets
from .._types import Clock
from ._breaker import Breaker, Outage
from ._redis_line import Line, close_with_its_loop

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SERVER_NOW_MS", "RedisLink", "check_redis_url", "import_redis"]

SERVER_NOW_MS: Final = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
"""Where every store's script starts: ``now`` in milliseconds, ``ARGV[1]`` when the store
has a clock of its own (tests), else the server's (one clock for the whole fleet)."""

# Sized so that a call meets an outage for one second at most (the breaker's bound).
# No timeout per command: the breaker bounds every script's wait and cancels one
# that hangs, which drops its connection; redis-py's own would cost a task and a
# timer on every command.
_CONNECT_TIMEOUT: Final = 0.5


def import_redis(what: str) -> None:
    """Fail now, not at the first call, when redis-py is missing.

    Raises:
        ImportError: naming the extra to install.
    """
    try:
        import redis.asyncio  # noqa: F401, PLC0415 - the optional dependency
    except ImportError as exc:
        raise ImportError(
            f"the Redis {what} needs redis-py: pip install 'stability-user[redis]'"
        ) from exc


def check_redis_url(url: str) -> None:
    """Refuse a URL redis-py cannot connect with, now rather than at the first call.

    Raises:
        ValueError: naming the kind of problem, never the URL's password.
    """
    from redis.connection import parse_url  # noqa: PLC0415 - see import_redis

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        # The parser's message may quote a password: only its kind of problem is shown.
        problem = "its port is not a number" if "Port" in str(exc) else "it does not parse"
        raise ValueError(f"not a Redis URL: {mask_url(url)!r} ({problem})") from None


def _errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions  # noqa: PLC0415 - see import_redis

    return (redis.exceptions.RedisError, OSError)


class RedisLink:
    """One store's way to its Redis: clients per event loop, scripts, and the breaker.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL, or ``None`` with ``client``.
        client: a ``redis.asyncio.Redis`` or ``RedisCluster`` of the caller's (never closed here).
        what: what the store is, for the log.
        clock: monotonic seconds, for the breaker.
    """

    def __init__(
        self,
        url: str | None,
        client: Redis | Any | None,
        *,
        what: str,
        clock: Clock = time.monotonic,
    ) -> None:
        """Check the URL; nothing is opened until the first operation."""
        if (url is None) == (client is None):
            raise ValueError("give the Redis store a url or a client, not both")
        if url is not None:
            check_redis_url(url)
        self.url = url
        self.what = what
        self._given = client
        self._lines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Line] = (
            weakref.WeakKeyDictionary()
        )
        # A task per loop that closes the loop's line when the loop ends.
        self._keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
        self._keepers = weakref.WeakKeyDictionary()
        self._shas: dict[str, str] = {}  # each script's name in Redis: its SHA-1
        import redis.exceptions  # noqa: PLC0415 - see import_redis

        self._no_script: type[Exception] = redis.exceptions.NoScriptError
        self.closed = False
        self.breaker = Breaker(
            what, self.where, errors=_errors(), clock=clock, secrets=url_secrets(url)
        )

    @property
    def where(self) -> str:
        """The URL without its password, or the caller's client's repr."""
        return mask_url(self.url) if self.url is not None else repr(self._given)

    @property
    def is_cluster(self) -> bool:
        """Whether keys must share one cluster slot per script (a ``RedisCluster`` client)."""
        from redis.asyncio.cluster import RedisCluster  # noqa: PLC0415 - see import_redis

        return isinstance(self._given, RedisCluster)

    def _line(self) -> Line:
        """The running event loop's line to Redis, made on first use.

        Raises:
            StabilityError: the store is closed.
        """
        if self.closed:
            raise StabilityError(f"the {self.what} {self.where} is closed")
        loop = asyncio.get_running_loop()
        line = self._lines.get(loop)
        if line is None:
            import redis.asyncio  # noqa: PLC0415 - see import_redis

            assert self.url is not None  # noqa: S101 - a line is for a URL's connection
            # The pool reads the URL (TCP, TLS or a Unix socket, password, database);
            # the line takes one connection of its making, never back to a pool.
            pool = redis.asyncio.ConnectionPool.from_url(
                self.url, socket_connect_timeout=_CONNECT_TIMEOUT
            )
            # The breaker bounds every command; redis-py's own timeout (a URL's
            # ?socket_timeout=) would cost a task per command and may swallow a
            # cancellation on Python 3.11.
            pool.connection_kwargs.pop("socket_timeout", None)
            line = self._lines[loop] = Line(pool.make_connection())  # type: ignore[no-untyped-call]
            self._keepers[loop] = loop.create_task(close_with_its_loop(line.close, self._forget))
        return line

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        # The line and its keeper hold the loop: dropped, so a loop ended is not kept.
        self._lines.pop(loop, None)
        self._keepers.pop(loop, None)

    def _sha(self, source: str) -> str:
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts so
        return sha

    async def run(
        self,
        source: str,
        keys: Sequence[str | bytes],
        args: Sequence[object],
        *,
        abandoned: Callable[[Any], object] | None = None,
    ) -> Any:
        """Run the script ``source`` through the breaker.

        On the store's own connection the script runs in the caller's task
        (:meth:`Breaker.call_here`); a caller cancelled before the answer came
        gets the cancellation, and gives back what the script may have taken.
        On a client of the caller's it runs in a task of its own
        (:meth:`Breaker.call`), and ``abandoned`` gets the answer its caller left.

        Args:
            source: the Lua script.
            keys: its ``KEYS``.
            args: its ``ARGV``.
            abandoned: given the script's answer if its caller left before it came
                (a client of the caller's only).

        Raises:
            Outage: Redis failed or did not answer within a second.
            StabilityError: the store is closed.
        """
        sha = self._sha(source)
        if self._given is not None:
            if self.closed:
                raise StabilityError(f"the {self.what} {self.where} is closed")
            return await self.breaker.call(
                functools.partial(self._evaluate_on, self._given, sha, source, keys, args),
                abandoned=abandoned,
            )
        line = self._line()
        command = ("EVALSHA", sha, len(keys), *keys, *args)

        async def evaluate(failures: int) -> Any:
            async with line.lock:  # one command at a time on the line: answers in order
                if self.breaker.failures != failures:
                    # Redis failed while this call waited its turn: it gives up at once.
                    raise Outage(f"the {self.what} at {self.where} is unavailable")
                try:
                    return await line.send(command)
                except self._no_script:
                    # A server that has not seen the script yet (new, restarted, flushed).
                    await line.send(("SCRIPT", "LOAD", source))
                    return await line.send(command)

        return await self.breaker.call_here(evaluate)

    async def _evaluate_on(
        self,
        client: Any,
        sha: str,
        source: str,
        keys: Sequence[str | bytes],
        args: Sequence[object],
    ) -> Any:
        try:
            return await client.evalsha(sha, len(keys), *keys, *args)
        except self._no_script:
            await client.script_load(source)
            return await client.evalsha(sha, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Close the connections it opened (a client of the caller's stays open); idempotent."""
        self.closed = True
        await self.breaker.settle()  # scripts their callers left end before the clients go
        keepers, self._keepers = list(self._keepers.items()), weakref.WeakKeyDictionary()
        self._lines = weakref.WeakKeyDictionary()
        running = asyncio.get_running_loop()
        for loop, keeper in keepers:
            if loop is running:
                keeper.cancel()  # it closes the line
                await asyncio.wait({keeper})
            elif not loop.is_closed():
                loop.call_soon_threadsafe(keeper.cancel)
