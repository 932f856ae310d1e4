"""The emulator as an HTTP server: HEAD, 405 with Allow, and a request id on every answer."""

from __future__ import annotations

import aiohttp
import pytest

from stability_user.testing import Fault, StabilityEmulator

from .wire import call, get

RESOURCES = [
    f"/{version}/user/{endpoint}"
    for version in ("v1", "v1alpha")
    for endpoint in ("account", "balance")
]


@pytest.mark.parametrize("path", [*RESOURCES, "/v1/user/nothing", "/"])
@pytest.mark.parametrize("authorized", [True, False])
async def test_head_answers_like_get_without_a_body(
    emulator: StabilityEmulator, path: str, authorized: bool
) -> None:
    key = emulator.add_account(credits=2.5) if authorized else None
    got_status, got_headers, got_body = await call("GET", emulator.base_url, path, key)
    status, headers, body = await call("HEAD", emulator.base_url, path, key)
    assert status == got_status
    assert body == b""
    assert got_body != b""
    for name in ("Content-Length", "Content-Type"):
        assert headers[name] == got_headers[name], name
    assert headers["x-request-id"] != got_headers["x-request-id"]  # a fresh one each time
    assert [r.method for r in emulator.requests] == ["GET", "HEAD"]


@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_get_405_with_allow(
    emulator: StabilityEmulator, path: str, method: str
) -> None:
    key = emulator.add_account()
    status, headers, body = await call(method, emulator.base_url, path, key)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert body["name"] == "method_not_allowed"
    assert body["id"] == headers["x-request-id"]
    shape = {"id", "name", "message"}
    if path.startswith("/v1alpha/"):
        shape |= {"temporary", "timeout", "fault"}
    assert set(body) == shape
    assert emulator.requests[-1].status == 405


async def test_unknown_paths_stay_404_whatever_the_method(emulator: StabilityEmulator) -> None:
    for method in ("GET", "POST", "DELETE"):
        status, headers, body = await call(method, emulator.base_url, "/v1/user/balances")
        assert (status, body["name"]) == (404, "not_found")
        assert "Allow" not in headers


async def test_405_comes_before_authentication(emulator: StabilityEmulator) -> None:
    assert (await call("POST", emulator.base_url, "/v1/user/balance"))[0] == 405


async def test_every_answer_carries_a_fresh_request_id(emulator: StabilityEmulator) -> None:
    key = emulator.add_account()
    emulator.script(Fault.respond(503), Fault.html(502), Fault.malformed_json(), Fault.stall(0))
    answers = [await get(emulator.base_url, "/v1/user/balance", key) for _ in range(4)]
    answers.append(await get(emulator.base_url, "/v1/user/balance", key))  # normal
    answers.append(await get(emulator.base_url, "/v1/user/balance"))  # 401
    answers.append(await call("HEAD", emulator.base_url, "/v1alpha/user/account", key))
    ids = [headers["x-request-id"] for _, headers, _ in answers]
    assert [status for status, _, _ in answers] == [503, 502, 200, 200, 200, 401, 200]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # 128 random bits in hex
    assert [r.request_id for r in emulator.requests] == ids
    for _, headers, body in (answers[0], answers[5]):
        assert body["id"] == headers["x-request-id"]


async def test_a_reset_answer_sends_its_request_id_before_breaking(
    emulator: StabilityEmulator,
) -> None:
    key = emulator.add_account()
    emulator.script(Fault.reset())
    async with (
        aiohttp.ClientSession() as http,
        http.get(emulator.base_url + "/v1/user/balance", headers={"Authorization": key}) as resp,
    ):
        assert resp.headers["x-request-id"] == emulator.requests[0].request_id
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert emulator.requests[0].status is None
