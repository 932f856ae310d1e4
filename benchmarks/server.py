"""A loopback server that answers the two user API endpoints at once, for benchmarks.

Run in its own process so the client's CPU time is the client's alone:
``python benchmarks/server.py`` prints the port it listens on, then serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

ACCOUNT = json.dumps(
    {
        "id": "user-1",
        "email": "bench@example.com",
        "organizations": [
            {"id": "org-1", "name": "Bench", "role": "OWNER", "is_default": True},
            {"id": "org-2", "name": "Other", "role": "MEMBER", "is_default": False},
        ],
        "profile_picture": "https://example.com/p.png",
    }
).encode()
BALANCE = b'{"credits": 1234.5}'


async def account(_: web.Request) -> web.Response:
    return web.Response(body=ACCOUNT, content_type="application/json")


async def balance(_: web.Request) -> web.Response:
    return web.Response(body=BALANCE, content_type="application/json")


async def main() -> None:
    app = web.Application()
    for version in ("v1alpha", "v1"):
        app.router.add_get(f"/{version}/user/account", account)
        app.router.add_get(f"/{version}/user/balance", balance)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
