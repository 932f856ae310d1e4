"""The shim in aioresponses_compat.py is needed, applied, and deletable when upstream fixes it."""

import aiohttp
from aioresponses import aioresponses

from . import aioresponses_compat


def test_shim_is_needed_on_this_aiohttp() -> None:
    # When this fails, aioresponses (or aiohttp) no longer needs the shim: delete it.
    assert aioresponses_compat.shim_needed()


async def test_mocked_request_works_through_the_shim() -> None:
    with aioresponses() as mocked:
        mocked.get("https://api.example/x", payload={"credits": 1.5}, status=200)
        async with aiohttp.ClientSession() as session, session.get("https://api.example/x") as resp:
            assert resp.status == 200
            assert await resp.json() == {"credits": 1.5}


def test_install_is_idempotent() -> None:
    assert aioresponses_compat.install() is True
    assert aioresponses_compat.install() is True
