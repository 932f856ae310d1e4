"""Client-side rate limiting per API key: the limit, the limiter, and the stores of its state.

The service allows 150 requests per 10 seconds per key and, past that, answers
429 and locks the key out for 60 seconds, for every program using it. The
:class:`RateLimiter` keeps a session's requests under the limit and remembers the
lockout; its state lives in a store, which decides how widely it is shared: this
event loop (:class:`MemoryRateLimitStore`), this machine (:class:`LocalRateLimitStore`)
or a fleet (:class:`RedisRateLimitStore`). A key's state is named by the service
and the key (``key_id_of``), so one service's lockout never reaches another's.

The invariant every store keeps: a slot is taken when a request is about to be
sent (its connection already in hand) and held until ``window`` seconds after its
response was read. Whatever the interleaving and however long requests wait or
are in flight, the service, counting arrivals in any window of ``window``
seconds, never sees more than ``requests`` of them: every request arriving in a
window ``[t, t + window)`` was sent before ``t + window`` and completed at or after
``t``, so all of them held their slots at once, at the moment the last of them
was sent. A slot of a process that died in flight is freed ``lease + window``
seconds after it was taken; the lease starts when the request is sent, so no wait
before sending (for a connection, in a middleware) can outlast it.

Parts: ``_limit`` (the numbers and the answers), ``_store`` (the protocol),
``_limiter`` (the limiter), ``_memory``, ``_local`` and ``_redis`` (the stores),
``_open`` (a store from a name or URL).
"""

from ._limit import (
    LEASE_MARGIN,
    MAX_LEASE,
    MAX_LOCKOUT,
    RateLimit,
    RateLimitWait,
    Wait,
    held_for,
)
from ._limiter import RateLimiter, Slot
from ._memory import MemoryRateLimitStore
from ._store import ImmediateStore, RateLimitStore

__all__ = [
    "LEASE_MARGIN",
    "MAX_LEASE",
    "MAX_LOCKOUT",
    "ImmediateStore",
    "MemoryRateLimitStore",
    "RateLimit",
    "RateLimitStore",
    "RateLimitWait",
    "RateLimiter",
    "Slot",
    "Wait",
    "held_for",
]
