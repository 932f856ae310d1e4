"""A Flask backend: one sync StabilitySession shared by every thread of the server.

    pip install -e '.[examples]'
    STABILITY_API_KEY=sk-... python examples/flask_app.py    # then GET :5000/credits
    python examples/flask_app.py                            # on the bundled emulator
    PORT=9000 python examples/flask_app.py                  # on another port

It serves with waitress (a threaded WSGI server, 8 threads) on 127.0.0.1, port
``$PORT`` (default 5000). ``GET /credits[?organization=org-...]`` and
``GET /account`` answer JSON. Every request's thread calls the one session: one
connection pool, one rate limiter, one event loop in a thread of the session's own.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from typing import Any

from flask import Flask, request
from waitress.server import create_server

from stability_user import (
    APITimeoutError,
    AuthenticationError,
    CachePolicy,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    StabilityError,
)
from stability_user.sync import StabilitySession
from stability_user.testing import StabilityEmulator

# A page view cannot wait out a 60-second lockout, nor ten seconds of rate limit:
# the whole call, waits included, ends within 10 s, well inside the server's own
# timeouts; a wait for the rate limit longer than 2 s answers 503 at once instead.
RETRY = RetryPolicy(deadline=10.0, max_retry_after=2.0)
# Page views asking one key's balance share one reading per second (the service
# allows a key 150 requests per 10 s): a reading up to 6 s old is answered at once
# while one refresh runs, and one up to a minute old stands in for an outage.
CACHE = CachePolicy(max_age=1.0, stale_while_revalidate=5.0, stale_if_error=60.0)


def http_answer(error: Exception) -> tuple[int, str, dict[str, str]]:
    """The status, message and headers to answer a failed call with.

    A 401 from the Stability API means *this service's* key is wrong: not the
    caller's fault, and not a crash either (502). A 429 becomes a 503 with
    ``Retry-After``, so the caller backs off.
    """
    if isinstance(error, ValueError):
        return 400, str(error), {}
    if isinstance(error, PermissionDeniedError):
        return 403, "this service's key has no access to that organization", {}
    if isinstance(error, RateLimitError):
        retry_after = error.retry_after if error.retry_after is not None else 60.0
        return (
            503,
            "credit checks are rate limited; try again later",
            {"Retry-After": str(max(1, math.ceil(retry_after)))},
        )
    if isinstance(error, AuthenticationError):
        return 502, "the Stability API rejected this service's key", {}
    if isinstance(error, APITimeoutError):
        return 504, "the Stability API did not answer in time", {}
    if isinstance(error, StabilityError):
        return 502, "the Stability API failed; try again later", {}
    raise error


def create_app(session: StabilitySession) -> Flask:
    """The application: two routes on ``session``, the library's errors as answers."""
    app = Flask(__name__)

    @app.errorhandler(StabilityError)
    @app.errorhandler(ValueError)
    def library_error(error: Exception) -> tuple[dict[str, str], int, dict[str, str]]:
        status, message, headers = http_answer(error)
        return {"error": message}, status, headers

    @app.get("/credits")
    def credits() -> dict[str, float]:
        """The balance of the service's key, or of ``?organization=``."""
        balance = session.balance(organization=request.args.get("organization"))
        return {"credits": balance.credits}

    @app.get("/account")
    def account() -> dict[str, Any]:
        """The account the service's key belongs to."""
        found = session.account()
        return {
            "id": found.id,
            "email": found.email,
            "organizations": [org.id for org in found.organizations],
        }

    return app


def demo_session() -> StabilitySession:
    """No key: a session on the bundled emulator, served from a thread of its own."""
    loop = asyncio.new_event_loop()
    emulator = StabilityEmulator()
    loop.run_until_complete(emulator.start())
    key = emulator.add_account(email="demo@example.com", credits=42.0)
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return StabilitySession(key, base_url=emulator.base_url, retry=RETRY, cache=CACHE)


def main() -> None:
    """Serve until interrupted, then close the session."""
    if os.environ.get("STABILITY_API_KEY"):
        session = StabilitySession(retry=RETRY, cache=CACHE)
    else:
        session = demo_session()
    port = int(os.environ.get("PORT", "5000"))
    with session:
        server = create_server(create_app(session), host="127.0.0.1", port=port, threads=8)
        print(f"serving on http://127.0.0.1:{port}, Ctrl-C to stop", flush=True)
        server.run()  # until Ctrl-C


if __name__ == "__main__":
    main()
