"""How the emulator listens: loopback only unless told otherwise, HTTP or HTTPS."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
import trustme

from stability_user.testing import RemoteAccessWarning, StabilityEmulator

from .wire import get

# Never bound here: these tests check that the emulator refuses it, or warns before it would.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


@pytest.mark.parametrize(
    "host", [ALL_INTERFACES, "::", "", "192.0.2.7", "example.com", "::ffff:1.2.3.4"]
)
def test_hosts_beyond_loopback_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="not a loopback address") as refused:
        StabilityEmulator(host=host)
    assert "clear-text HTTP" in str(refused.value)
    assert "allow_remote=True" in str(refused.value)


def test_allow_remote_warns_that_keys_and_http_are_exposed() -> None:
    with pytest.warns(RemoteAccessWarning, match="demo keys and its clear-text HTTP") as caught:
        emulator = StabilityEmulator(host=ALL_INTERFACES, allow_remote=True)
    assert emulator.host == ALL_INTERFACES
    assert caught[0].filename == __file__  # points at the caller, not the emulator


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_hosts_need_no_permission(host: str, recwarn: pytest.WarningsRecorder) -> None:
    StabilityEmulator(host=host)
    assert len(recwarn) == 0


@pytest.fixture(name="server_context", scope="module")
def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(context)
    return context


class TestHTTPS:
    async def test_a_client_trusting_the_ca_gets_answers(
        self, ca: trustme.CA, server_context: ssl.SSLContext
    ) -> None:
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        async with StabilityEmulator(ssl_context=server_context) as emulator:
            key = emulator.add_account(credits=6)
            assert emulator.base_url.startswith("https://127.0.0.1:")
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    emulator.base_url + "/v1/user/balance",
                    headers={"Authorization": key},
                    ssl=client_context,
                ) as resp,
            ):
                assert (resp.status, await resp.json()) == (200, {"credits": 6})
            assert emulator.requests[0].status == 200

    async def test_a_default_client_context_refuses_the_certificate(
        self, server_context: ssl.SSLContext
    ) -> None:
        async with StabilityEmulator(ssl_context=server_context) as emulator:
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.ClientConnectorCertificateError) as refused:
                    await http.get(emulator.base_url + "/v1/user/balance", ssl=True)
            error = refused.value.certificate_error
            assert isinstance(error, ssl.SSLCertVerificationError)
            assert error.verify_code == 20  # unable to get local issuer certificate
            assert emulator.request_count == 0

    async def test_plain_http_gets_no_answer(self, server_context: ssl.SSLContext) -> None:
        async with StabilityEmulator(ssl_context=server_context) as emulator:
            plain = emulator.base_url.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                await get(plain, "/v1/user/balance")
            assert emulator.request_count == 0

    def test_tls_still_needs_loopback_and_warns_only_of_the_keys(
        self, server_context: ssl.SSLContext
    ) -> None:
        with pytest.warns(RemoteAccessWarning) as caught:
            StabilityEmulator(host=ALL_INTERFACES, allow_remote=True, ssl_context=server_context)
        assert "demo keys are exposed" in str(caught[0].message)
        assert "clear-text" not in str(caught[0].message)
