"""The plumbing every shared store stands on, written once.

A store's name or URL, the machine-wide SQLite file, the fleet-wide Redis, and
the breaker that turns an outage into one bounded delay and one WARNING.

The rate-limit stores (``_ratelimit``) and the read cache's stores (``_cache``)
use these; nothing here knows what the stores keep.
"""

from ._breaker import Breaker, Outage
from ._spec import StoreSpec, parse_store_spec

__all__ = ["Breaker", "Outage", "StoreSpec", "parse_store_spec"]
