"""How the emulator listens: loopback only unless told otherwise."""

from __future__ import annotations

import pytest

from stability_user.testing import RemoteAccessWarning, StabilityEmulator

from .test_emulator import get

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


@pytest.mark.parametrize(
    ("host", "prefix"), [("127.0.0.2", "http://127.0.0.2:"), ("localhost", "")]
)
async def test_serves_on_other_loopback_names(host: str, prefix: str) -> None:
    async with StabilityEmulator(host=host) as emulator:
        key = emulator.add_account(credits=4)
        assert emulator.base_url.startswith(prefix or ("http://127.0.0.1:", "http://[::1]:"))
        assert (await get(emulator.base_url, "/v1/user/balance", key))[2] == {"credits": 4}
