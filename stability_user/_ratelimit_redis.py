"""The rate limiter's state in Redis: shared by a fleet of workers on many machines.

Needs the extra: ``pip install 'stability-user[redis]'`` (redis-py's asyncio client).

Each operation is one Lua script, so it is atomic on the server, and reads the
server's clock (``TIME``), the one clock every machine shares. A key's state is
two sorted sets (slots in flight, by lease end; completed slots, by when they
free) and a lockout marker, named by a hash of the key in a hash tag
(``stability-user:{<key id>}:...``) so all three live on one Redis Cluster slot.
Every Redis key expires when its last entry does (a TTL relative to the clock
the scores use): nothing accumulates.

Redis unavailable: the store says so once (WARNING), limits in this process
meanwhile, and tries Redis again every few seconds; slots taken during the outage
are released where they were taken. Calls go on; none is lost or failed.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

from ._ratelimit import RateLimit, Wait, held_for
from ._ratelimit_memory import MemoryRateLimitStore
from ._secrets import display_text, mask_url, url_secrets
from ._types import Clock

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisRateLimitStore"]

logger = logging.getLogger("stability_user")

_PREFIX: Final = "stability-user"

# Every script starts here: "now" in milliseconds is ARGV[1] when the store has a
# clock of its own (tests), else the server's (one clock for the whole fleet).
_NOW: Final = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: in flight, completed, lockout. ARGV: now, requests, window ms, lease ms, token.
# Returns {1, 0, 0} with the slot taken, else {0, wait ms, 1 for a lockout}.
_ACQUIRE: Final = (
    _NOW
    + """
local locked = tonumber(redis.call('GET', KEYS[3]) or '0')
if locked > now then
  return {0, locked - now, 1}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local window = tonumber(ARGV[3])
if held < tonumber(ARGV[2]) then
  local frees = now + tonumber(ARGV[4]) + window
  redis.call('ZADD', KEYS[1], frees, ARGV[5])
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(last[2]) - now) + 1)
  return {1, 0, 0}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then
  return {0, tonumber(first[2]) - now, 0}
end
return {0, window, 0}
"""
)

# KEYS: in flight, completed. ARGV: now, token, window ms.
_RELEASE: Final = (
    _NOW
    + """
-- A slot whose lease ran out was handed on already: do not count it twice.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
local frees = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], frees, ARGV[2])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(last[2]) - now) + 1)
return 1
"""
)

# KEYS: lockout. ARGV: now, seconds in ms. Returns 1 when the key was not locked.
_LOCK: Final = (
    _NOW
    + """
local locked = tonumber(redis.call('GET', KEYS[1]) or '0')
local untl = math.max(locked, now + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], untl, 'PX', math.ceil(untl - now) + 1)
if locked > now then return 0 end
return 1
"""
)

_RETRY_REDIS_AFTER: Final = 5.0  # seconds of in-process limiting before trying Redis again


def _check_url(url: str) -> None:
    """Refuse a URL redis-py cannot connect with, now rather than at the first call."""
    from redis.connection import parse_url  # noqa: PLC0415 - see _redis_errors

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        # The parser's message may quote a password: only its kind of problem is shown.
        raise ValueError(f"not a Redis URL: {mask_url(url)!r} ({_problem(exc)})") from None


def _problem(exc: ValueError) -> str:
    text = str(exc)
    return "its port is not a number" if "Port" in text else "it does not parse"


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions  # noqa: PLC0415 - the optional dependency, imported when used

    return (redis.exceptions.RedisError, OSError)


class RedisRateLimitStore:
    """Rate-limit state in Redis, shared by every process on every machine using it.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL (redis-py's forms).
        client: a ``redis.asyncio.Redis`` or ``RedisCluster`` of the caller's instead
            of ``url`` (never closed here).
        clock: seconds to use instead of the server's clock, and for this
            process's own limiting and retry interval while Redis is away (for tests).

    Raises:
        ImportError: redis-py is not installed (``pip install 'stability-user[redis]'``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | Any | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Remember where Redis is; connections open on first use, in the running loop."""
        try:
            import redis.asyncio  # noqa: F401, PLC0415 - fail here, not at the first call
        except ImportError as exc:
            raise ImportError(
                "the Redis rate-limit store needs redis-py: pip install 'stability-user[redis]'"
            ) from exc
        if (url is None) == (client is None):
            raise ValueError("give RedisRateLimitStore a url or a client, not both")
        if url is not None:
            _check_url(url)
        self._url = url
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._local_clock = clock or time.monotonic
        self._scripts: dict[str, Any] = {}
        self._fallback = MemoryRateLimitStore(clock=self._local_clock)
        self._down_since: float | None = None
        self._errors = _redis_errors()

    def __repr__(self) -> str:
        """Where the state is kept, the password hidden."""
        where = mask_url(self._url) if self._url is not None else repr(self._client)
        return f"<RedisRateLimitStore {where}>"

    @property
    def where(self) -> str:
        """The Redis URL without its password (or the client's repr)."""
        return mask_url(self._url) if self._url is not None else repr(self._client)

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio  # noqa: PLC0415 - see __init__

            # Short socket timeouts: an outage is noticed in a second, not a minute.
            assert self._url is not None  # noqa: S101 - one of the two is set
            self._client = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        return self._client

    def _script(self, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._redis().register_script(source)
        return script

    def _keys(self, key_id: str) -> tuple[str, str, str]:
        base = f"{_PREFIX}:{{{key_id}}}"
        return f"{base}:in-flight", f"{base}:done", f"{base}:lockout"

    def _now_ms(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    def _use_redis(self) -> bool:
        if self._down_since is None:
            return True
        return self._local_clock() - self._down_since >= _RETRY_REDIS_AFTER

    def _went_down(self, error: BaseException) -> None:
        if self._down_since is None:
            # Any error, not only a lost connection: a read-only replica or an ACL
            # without EVALSHA must not stop the calls either; the reason says which.
            logger.warning(
                "rate-limit store %s is unavailable (%s: %s): limiting in this process "
                "until it is back",
                self.where,
                type(error).__name__,
                display_text(str(error), url_secrets(self._url), limit=200),
            )
        self._down_since = self._local_clock()

    def _came_back(self) -> None:
        if self._down_since is not None:
            logger.warning("rate-limit store %s is back: limits are shared again", self.where)
            self._down_since = None

    async def acquire(self, key_id: str, limit: RateLimit, lease: float) -> int | str | Wait:
        """Take a slot now and return its token, or say how long until one may be free."""
        if self._use_redis():
            token = uuid.uuid4().hex
            try:
                taken, wait_ms, lockout = await self._script(_ACQUIRE)(
                    keys=self._keys(key_id),
                    args=[
                        self._now_ms(),
                        limit.requests,
                        math.ceil(held_for(limit) * 1000),
                        int(lease * 1000),
                        token,
                    ],
                )
            except self._errors as error:
                self._went_down(error)
            else:
                self._came_back()
                if taken:
                    return token
                return Wait(max(int(wait_ms), 1) / 1000, lockout=bool(lockout))
        return self._fallback.acquire_nowait(key_id, limit, lease)

    async def release(self, key_id: str, token: int | str, limit: RateLimit) -> None:
        """The request of ``token`` completed now: hold its slot ``window`` seconds more."""
        if isinstance(token, int):  # taken in this process while Redis was away
            self._fallback.release_nowait(key_id, token, limit)
            return
        if not self._use_redis():
            return  # its slot frees when its lease runs out: no wait on a dead server
        keys = self._keys(key_id)
        try:
            await self._script(_RELEASE)(
                keys=keys[:2], args=[self._now_ms(), token, math.ceil(held_for(limit) * 1000)]
            )
        except self._errors as error:
            # Its slot frees when its lease runs out; limit here meanwhile.
            self._went_down(error)
        else:
            self._came_back()

    async def lock(self, key_id: str, seconds: float) -> bool:
        """Lock the key out for ``seconds``; ``True`` when it was not locked before."""
        fresh = await self._fallback.lock(key_id, seconds)  # this process knows at once
        if self._use_redis():
            try:
                fresh = bool(
                    await self._script(_LOCK)(
                        keys=self._keys(key_id)[2:], args=[self._now_ms(), int(seconds * 1000)]
                    )
                )
            except self._errors as error:
                self._went_down(error)
            else:
                self._came_back()
        return fresh

    async def aclose(self) -> None:
        """Close the connections, if this store opened them."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
