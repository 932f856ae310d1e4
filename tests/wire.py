"""Talking to a server the way a test needs to: one request on a fresh connection, raw bytes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from multidict import CIMultiDict


async def call(
    method: str, base_url: str, path: str, key: str | None = None, **headers: str
) -> tuple[int, CIMultiDict[str], Any]:
    """One request on a fresh connection: status, headers, and the body parsed if it is JSON."""
    if key is not None:
        headers["Authorization"] = key
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base_url + path, headers=headers) as resp,
    ):
        raw = await resp.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        return resp.status, CIMultiDict(resp.headers), body


async def get(
    base_url: str, path: str, key: str | None = None, **headers: str
) -> tuple[int, CIMultiDict[str], Any]:
    """``call`` with GET."""
    return await call("GET", base_url, path, key, **headers)


def malformed_requests(key: str) -> dict[str, bytes]:
    """Requests aiohttp's parser rejects, each carrying ``key`` where the parser quotes it."""
    head = b"GET /v1/user/balance HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    raw = key.encode()
    return {
        "plain key, bad byte in the value": head + b"Authorization: " + raw + b"\x01\r\n\r\n",
        "Bearer key, bad byte in the value": head
        + b"Authorization: Bearer "
        + raw
        + b"\x7f\r\n\r\n",
        "key in a broken request line": b"GET /v1/user/balance?" + raw + b" junk HTTP/1.1\r\n\r\n",
        "Bearer key in a header line too long": head
        + b"Authorization: Bearer "
        + raw
        + b"x" * 9000
        + b"\r\n\r\n",
        "plain key as a header name": head + raw + b" : x\r\n\r\n",
    }


async def send_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
