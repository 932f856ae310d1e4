"""arq and redis-py as a sweep uses them, imported in one place that names the extra they need."""

from __future__ import annotations

try:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.constants import job_key_prefix, result_key_prefix
    from arq.worker import Retry, func
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "stability_user.fleet needs arq and redis-py: pip install 'stability-user[fleet]'"
    ) from exc

__all__ = [
    "RedisError",
    "RedisSettings",
    "Retry",
    "create_pool",
    "func",
    "job_key_prefix",
    "result_key_prefix",
]
