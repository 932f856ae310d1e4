"""The read cache: single flight, ``max_age``, stale-while-revalidate and stale-if-error.

Parts: ``_policy`` (:class:`CachePolicy`, what it is asked to do), ``_reader``
(the cache of a session: entries, flights, stale answers), ``_shared`` (taking
turns with a fleet through a shared store), ``_store`` (what a shared store does),
``_local`` and ``_redis`` (the machine-wide and fleet-wide stores), ``_open`` (a
store from a name or URL).
"""

from ._policy import CachePolicy

__all__ = ["CachePolicy"]
