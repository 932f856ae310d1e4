"""The Lua scripts of the Redis rate-limit store: each step one atomic script.

Times are milliseconds. ``now`` is ``ARGV[1]`` when the store has a clock of its
own (tests), else the server's (one clock for the whole fleet). A key's state is
two sorted sets (slots in flight by lease end, completed slots by when they free)
and a lockout value; every Redis key expires when its last entry does. Stored
state is checked on every read: a value of the wrong type, a lockout that is not
a finite number or is further ahead than the longest one, a completed slot
freeing later than a window from now, or a slot in flight freeing later than the
longest lease and a window from now is dropped and reported (``corrupt``), never
waited for. No stored value can make a script fail: a key's expiry is capped.
"""

from __future__ import annotations

from typing import Final

from .._backends._redis import SERVER_NOW_MS

__all__ = ["ACQUIRE", "LOCK", "RELEASE"]

_NOW: Final = (
    SERVER_NOW_MS
    + """
local corrupt = 0
local function kind(key, wanted)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= wanted then
    redis.call('DEL', key)
    corrupt = 1
  end
end
-- A score of inf or 1e300 (state that cannot be, dropped by the key's next acquire)
-- must not make PEXPIRE fail the script, and with it the give-backs it carries.
local function expire_with_last(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    local ttl = math.ceil(tonumber(last[2]) - now) + 1
    if not (ttl < 1e12) then ttl = 1e12 end
    redis.call('PEXPIRE', key, ttl)
  end
end
"""
)
# Give back completed slots: KEYS[first..] pairs (in flight, completed), ARGV[at..]
# triples (token, ms since the response was read, ms a completed slot is held).
_RELEASES: Final = """
local function release(first, at, count)
  for i = 0, count - 1 do
    local flying, done = KEYS[first + 2 * i], KEYS[first + 2 * i + 1]
    local token = ARGV[at + 3 * i]
    local read_at = now - tonumber(ARGV[at + 3 * i + 1])
    kind(flying, 'zset')
    kind(done, 'zset')
    local lease_end = tonumber(redis.call('ZSCORE', flying, token) or '-1')
    -- A slot whose lease ran out before its response was read was handed on already.
    if lease_end > read_at then
      redis.call('ZREM', flying, token)
      local frees = read_at + tonumber(ARGV[at + 3 * i + 2])
      if frees > now then
        redis.call('ZADD', done, frees, token)
        expire_with_last(done)
      end
    end
  end
end
"""

ACQUIRE: Final = (
    _NOW
    + _RELEASES
    + """
-- KEYS: in flight, completed, lockout, then pairs given back.
-- ARGV: now, requests, held ms, lease ms, token, longest lockout ms, skew ms,
--       count given back, longest lease ms, then their triples.
-- Returns {1, 0, 0, corrupt} with the slot taken, else {0, wait ms, 1 if locked out, corrupt}.
release(4, 10, tonumber(ARGV[8]))
local held = tonumber(ARGV[3])
local skew = tonumber(ARGV[7])
kind(KEYS[1], 'zset')
kind(KEYS[2], 'zset')
kind(KEYS[3], 'string')
local raw = redis.call('GET', KEYS[3])
local locked = tonumber(raw or '0')
local longest = now + tonumber(ARGV[6]) + skew
-- Not a number, NaN, -inf or +inf, or further ahead than the longest lockout.
if raw and (not locked or locked ~= locked or locked == -math.huge or locked > longest) then
  redis.call('DEL', KEYS[3])
  corrupt = 1
  locked = 0
end
if locked > now then
  return {0, locked - now, 1, corrupt}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local beyond_lease = '(' .. (now + tonumber(ARGV[9]) + held + skew)
if redis.call('ZREMRANGEBYSCORE', KEYS[1], beyond_lease, '+inf') > 0 then
  corrupt = 1
end
if redis.call('ZREMRANGEBYSCORE', KEYS[2], '(' .. (now + held + skew), '+inf') > 0 then
  corrupt = 1
end
local count = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if count < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]) + held, ARGV[5])
  expire_with_last(KEYS[1])
  return {1, 0, 0, corrupt}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then
  return {0, tonumber(first[2]) - now, 0, corrupt}
end
return {0, held, 0, corrupt}
"""
)

RELEASE: Final = (
    _NOW
    + _RELEASES
    + """
-- KEYS: pairs given back. ARGV: now, count, then their triples.
release(1, 3, tonumber(ARGV[2]))
return corrupt
"""
)

LOCK: Final = (
    _NOW
    + """
-- KEYS: lockout. ARGV: now, seconds in ms, longest lockout ms.
-- Returns 1 when the key was not locked.
kind(KEYS[1], 'string')
local locked = tonumber(redis.call('GET', KEYS[1]) or '0')
if not locked or locked ~= locked or locked > now + tonumber(ARGV[3]) then
  locked = 0
end
local untl = math.max(locked, now + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], untl, 'PX', math.ceil(untl - now) + 1)
if locked > now then return 0 end
return 1
"""
)
