"""Readings in Redis, shared by a fleet: each step one Lua script, on the server's clock.

An entry lives under ``stability-user:{<key id>}:read:<name>`` (the reading: the
time it was answered, ``|``, the service's JSON) and ``...:lease:<name>`` (the
token of the process reading it), the key id in a hash tag so that one Redis
Cluster slot holds both. Both expire by themselves. Redis unavailable: the link's
breaker (:mod:`stability_user._backends._breaker`) makes reads go on in each
process alone, with one WARNING, within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

from .._backends import Outage
from .._backends._redis import SERVER_NOW_MS, RedisLink, import_redis
from .._checks import check_seconds
from .._types import Clock
from ._store import Begun

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisReadingStore"]

_WHAT: Final = "cache store"
_SKEW_MS: Final = 1000  # a reading answered further ahead than this is corrupt


# KEYS: reading, lease. ARGV: now, max age ms, lease ms, token, skew ms.
# Returns {body or '', age ms or -1, 1 if the lease is granted, 1 if corrupt state was dropped}.
BEGIN: Final = (
    SERVER_NOW_MS
    + """
local corrupt = 0
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' and kind ~= 'string' then redis.call('DEL', KEYS[1]); corrupt = 1 end
kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'none' and kind ~= 'string' then redis.call('DEL', KEYS[2]); corrupt = 1 end
local raw = redis.call('GET', KEYS[1])
local body, age = '', -1
if raw then
  local sep = string.find(raw, '|', 1, true)
  local answered = sep and tonumber(string.sub(raw, 1, sep - 1))
  if not answered or answered ~= answered or answered < 0
      or answered > now + tonumber(ARGV[5]) or sep == string.len(raw) then
    redis.call('DEL', KEYS[1])
    corrupt = 1
  else
    body = string.sub(raw, sep + 1)
    age = math.max(0, now - answered)
  end
end
if age >= 0 and age <= tonumber(ARGV[2]) then
  return {body, age, 0, corrupt}
end
-- A lease that would never expire, or not for far longer than any lease given: not
-- one of this library's (a foreign writer's); it would block every reader.
local left = redis.call('PTTL', KEYS[2])
if left == -1 or left > tonumber(ARGV[3]) + tonumber(ARGV[5]) then
  redis.call('DEL', KEYS[2])
  corrupt = 1
end
local granted = 0
if redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[3]) then granted = 1 end
return {body, age, granted, corrupt}
"""
)

# KEYS: reading, lease. ARGV: now, body, keep ms, token.
PUT: Final = (
    SERVER_NOW_MS
    + """
redis.call('SET', KEYS[1], now .. '|' .. ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return 1
"""
)

# KEYS: lease. ARGV: token, lease ms. Returns 1 if the lease was the token's, and is extended.
RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: token.
END: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisReadingStore:
    """Readings and leases in Redis, shared by every process on every machine using it.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL (redis-py's forms).
        client: a ``redis.asyncio.Redis`` or ``RedisCluster`` of the caller's instead
            of ``url`` (never closed here).
        clock: seconds to use instead of the server's clock (for tests).
        lease: seconds a process may read an entry before another process may: a
            process that dies while reading holds the others up this long at most.

    Raises:
        ImportError: redis-py is not installed (``pip install 'stability-user[redis]'``).
        ValueError: a URL redis-py cannot use (its password never shown).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | Any | None = None,
        clock: Clock | None = None,
        lease: float = 5.0,
    ) -> None:
        """Remember where Redis is; connections open on first use, in the running loop."""
        import_redis(_WHAT)
        self.lease = check_seconds("lease", lease)
        self._clock = clock
        self._link = RedisLink(url, client, what=_WHAT, clock=clock or time.monotonic)
        self._ending: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        """Where the readings are kept, the password hidden."""
        return f"<RedisReadingStore {self.where}>"

    @property
    def where(self) -> str:
        """The Redis URL without its password (or the client's repr)."""
        return self._link.where

    @property
    def breaker(self) -> Any:
        """The health of the link to Redis."""
        return self._link.breaker

    def _keys(self, key_id: str, name: str) -> list[str]:
        base = f"stability-user:{{{key_id}}}"
        return [f"{base}:read:{name}", f"{base}:lease:{name}"]

    def _now_ms(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    async def begin(
        self, key_id: str, name: str, *, max_age: float, lease: float, token: str
    ) -> Begun:
        """The stored reading if fresh enough, else the lease if nobody holds it."""
        keys = self._keys(key_id, name)

        def give_back(answer: Any) -> None:
            if answer[2]:  # granted after its caller left: nobody will read
                self._end_later(keys[1], token)

        try:
            body, age, granted, corrupt = await self._link.run(
                BEGIN,
                keys,
                [self._now_ms(), int(max_age * 1000), max(1, int(lease * 1000)), token, _SKEW_MS],
                abandoned=give_back,
            )
        except asyncio.CancelledError:
            # The caller left before the answer came: a lease it may have been granted
            # ends (ending one never granted changes nothing).
            self._end_later(keys[1], token)
            raise
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        age_ms = int(age)
        return Begun(
            body or None,
            None if age_ms < 0 else age_ms / 1000,
            bool(granted),
            bool(corrupt),
        )

    def _end_later(self, lease_key: str, token: str) -> None:
        async def end() -> None:
            with contextlib.suppress(Outage):
                await self._link.run(END, [lease_key], [token])

        task = asyncio.ensure_future(end())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def put(self, key_id: str, name: str, body: str, *, keep: float, token: str) -> None:
        """Store ``body`` as answered now, for ``keep`` seconds, and end ``token``'s lease."""
        await self._link.run(
            PUT, self._keys(key_id, name), [self._now_ms(), body, max(1, int(keep * 1000)), token]
        )

    async def renew(self, key_id: str, name: str, token: str, *, lease: float) -> bool:
        """Extend ``token``'s lease to ``lease`` seconds from now; ``False`` if it is not held."""
        lease_key = self._keys(key_id, name)[1]
        return bool(await self._link.run(RENEW, [lease_key], [token, max(1, int(lease * 1000))]))

    async def end(self, key_id: str, name: str, token: str) -> None:
        """End ``token``'s lease without a reading."""
        await self._link.run(END, self._keys(key_id, name)[1:], [token])

    async def aclose(self) -> None:
        """Close the connections this store opened, once the leases being ended are."""
        await self._link.breaker.settle()
        if self._ending:
            await asyncio.wait(set(self._ending), timeout=1.0)
        await self._link.aclose()
