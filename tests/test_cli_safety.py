"""The command line against hostile servers, proxies and TLS: no secret is ever printed."""

from __future__ import annotations

import asyncio
import json
import pathlib
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme
from aiohttp import web

from stability_user.testing import StabilityEmulator

from .hostile import HostileServer, json_response
from .processes import no_key_in, run_cli

KEY = "sk-hostile0123456789abcdefghijklmnopqrstuvwxyz012345"


def escaped(text: str) -> str:
    """``text`` the way a JSON encoder that escapes every letter would write it."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


async def test_a_key_echoed_in_an_error_body_never_reaches_the_terminal(
    hostile: HostileServer,
) -> None:
    body = '{"name": "unauthorized", "message": "bad key ' + escaped(KEY) + '\\u001b[2J"}'
    answer = json_response("401 Unauthorized", body, {"x-request-id": "req-42"})
    hostile.script.extend([answer, answer])
    env = {"STABILITY_API_KEY": KEY}
    result = await run_cli("--base-url", hostile.url, "balance", env=env)
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "request id req-42" in result.err
    assert "[redacted]" in result.err
    assert "\x1b" not in result.err
    no_key_in(result, KEY)
    rows = await run_cli(
        "--base-url", hostile.url, "balances", "-", "--format", "json", stdin=f"{KEY},,x\n"
    )
    assert rows.code == 1
    assert "[redacted]" in json.loads(rows.out)["error"]
    no_key_in(rows, KEY)


async def test_proxy_credentials_are_never_printed(hostile: HostileServer) -> None:
    # The proxy (the hostile server) refuses the tunnel; the request never leaves loopback.
    hostile.script.extend([json_response("403 Forbidden", {"secret": "hunter2"})] * 3)
    env = {"STABILITY_API_KEY": KEY}
    proxy = f"http://me:hunter2@127.0.0.1:{hostile.port}"
    result = await run_cli(
        "--base-url", "https://stability.invalid", "--proxy", proxy, "balance", env=env
    )
    assert result.code == 1
    assert hostile.requests[0].startswith(b"CONNECT stability.invalid:443 ")
    assert "hunter2" not in result.out + result.err
    assert result.err.startswith("stability-user: error: ")
    no_key_in(result, KEY)


async def test_the_environment_s_https_proxy_is_used(hostile: HostileServer) -> None:
    hostile.script.append(json_response("403 Forbidden", {}))
    env = {
        "STABILITY_API_KEY": KEY,
        "HTTPS_PROXY": hostile.url,
        "https_proxy": hostile.url,
        "NO_PROXY": "",
        "no_proxy": "",
    }
    result = await run_cli(
        "--max-attempts", "1", "--base-url", "https://stability.invalid", "balance", env=env
    )
    assert result.code == 1
    assert hostile.requests[0].startswith(b"CONNECT stability.invalid:443 ")


async def test_a_redis_password_is_never_printed(live: StabilityEmulator) -> None:
    # Nothing listens on port 1: the store warns, naming where it is, and the call
    # goes on limited in this process.
    result = await run_cli(
        *("--base-url", live.base_url, "--max-attempts", "1"),
        *("--rate-limit-store", "redis://:hunter2@127.0.0.1:1/0?password=hunter2", "balance"),
        env={"STABILITY_API_KEY": live.add_account(credits=7)},
    )
    assert (result.code, result.out) == (0, "7.00 credits\n")
    assert result.err.startswith(
        "stability-user: warning: rate-limit store redis://:***@127.0.0.1:1/0?password=*** "
        "is unavailable (ConnectionError: "
    )
    assert "hunter2" not in result.out + result.err
    wrong = await run_cli(
        "--rate-limit-store", "mongodb://u:hunter2@h", "--emulator", "1", "balance"
    )
    assert wrong.code == 2
    assert wrong.err == (
        "stability-user: error: --rate-limit-store: must be memory, local or a redis:// URL, "
        "got 'mongodb://u:***@h' (see 'stability-user --help')\n"
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--rate-limit-store", "redis://127.0.0.1:notaport"],
            "--rate-limit-store: 'redis://127.0.0.1:notaport' is not a valid URL "
            "(port can't be converted to integer)",
        ),
        (
            ["--rate-limit-store", "redis://:hunter2@[::1"],
            "--rate-limit-store: 'redis://:***@[::1' is not a valid URL (invalid IPv6 URL)",
        ),
        (
            ["--rate-limit-store", "unix://"],
            "--rate-limit-store: 'unix://' names no socket",
        ),
        (
            ["--proxy", "http://me:hunter2@[::1"],
            "--proxy: 'http://me:***@[::1' is not a valid URL (invalid IPv6 URL)",
        ),
        (
            ["--proxy", "socks5://me:hunter2@h"],
            "--proxy: must be an http:// URL, got 'socks5://me:***@h'",
        ),
        (["--proxy", "http://"], "--proxy: 'http://' names no host"),
    ],
)
async def test_a_malformed_url_is_a_usage_error_naming_its_option(
    args: list[str], line: str
) -> None:
    result = await run_cli(*args, "balance", env={"STABILITY_API_KEY": KEY})
    assert (result.code, result.out) == (2, "")
    assert result.err == f"stability-user: error: {line} (see 'stability-user --help')\n"


async def test_a_malformed_url_from_the_environment_names_its_variable() -> None:
    result = await run_cli(
        "balance",
        env={"STABILITY_API_KEY": KEY, "STABILITY_RATE_LIMIT_STORE": "rediss://u:hunter2@h:x"},
    )
    assert (result.code, result.err) == (
        2,
        "stability-user: error: STABILITY_RATE_LIMIT_STORE: 'rediss://u:***@h:x' is not a "
        "valid URL (port can't be converted to integer) (see 'stability-user --help')\n",
    )


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        (
            "notaurl",
            "must be an absolute http(s) URL such as 'https://api.stability.ai', got 'notaurl'",
        ),
        (
            "http://example.com",
            "refusing clear-text http:// to 'example.com': the API key would "
            "travel unencrypted; use https://, or http:// only to a loopback address "
            "(127.0.0.1, ::1, localhost)",
        ),
    ],
)
async def test_a_bad_base_url_names_the_option(base_url: str, problem: str) -> None:
    result = await run_cli("--base-url", base_url, "balance", env={"STABILITY_API_KEY": KEY})
    assert (result.code, result.err) == (
        2,
        f"stability-user: error: --base-url: {problem} (see 'stability-user --help')\n",
    )


async def test_a_timeout_that_is_not_a_number_names_the_option() -> None:
    result = await run_cli("--timeout", "nan", "balance", env={"STABILITY_API_KEY": KEY})
    assert (result.code, result.err) == (
        2,
        "stability-user: error: --timeout: must be a number of seconds > 0, got nan "
        "(see 'stability-user --help')\n",
    )


@pytest.fixture(name="ca_file")
def _ca_file(ca: trustme.CA, tmp_path: pathlib.Path) -> pathlib.Path:
    """The test CA's certificate, as a --ca-bundle file."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(name="https_url")
async def _https_url(ca: trustme.CA) -> AsyncIterator[str]:
    """A minimal user API over TLS on 127.0.0.1, its certificate from the test CA."""

    async def balance(_: web.Request) -> web.Response:
        return web.json_response({"credits": 4.5})

    app = web.Application()
    app.router.add_get("/v1/user/balance", balance)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_ca_bundle_trusts_a_private_ca(
    https_url: str, ca_file: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    env = {"STABILITY_API_KEY": KEY}
    untrusted = await run_cli("--base-url", https_url, "balance", env=env)
    assert untrusted.code == 1
    assert untrusted.err.startswith(
        f"stability-user: error: certificate verification failed for {https_url}: "
    )
    assert untrusted.err.count("\n") == 1
    # The command line's advice, naming its option; not the library's advice to programs.
    assert untrusted.err.endswith(
        ": a TLS-inspecting proxy or a private CA needs its CA certificate: pass --ca-bundle FILE\n"
    )
    assert "ssl=" not in untrusted.err
    trusted = await run_cli(
        "--base-url", https_url, "--ca-bundle", str(ca_file), "balance", env=env
    )
    assert (trusted.code, trusted.out) == (0, "4.50 credits\n")
    from_env = await run_cli(
        "--base-url", https_url, "balance", env={**env, "STABILITY_CA_BUNDLE": str(ca_file)}
    )
    assert (from_env.code, from_env.out) == (0, "4.50 credits\n")
    missing = await run_cli("--ca-bundle", str(tmp_path / "nope.pem"), "balance", env=env)
    assert (missing.code, missing.err) == (
        2,
        f"stability-user: error: --ca-bundle {tmp_path / 'nope.pem'}: no such file or directory\n",
    )
    garbage = tmp_path / "keys.csv"
    garbage.write_text("api_key,label\n")
    bad = await run_cli("--ca-bundle", str(garbage), "balance", env=env)
    assert (bad.code, bad.err) == (
        2,
        f"stability-user: error: --ca-bundle {garbage}: no PEM certificate in it\n",
    )
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    unreadable = await run_cli("--ca-bundle", str(broken), "balance", env=env)
    assert (unreadable.code, unreadable.err) == (
        2,
        f"stability-user: error: --ca-bundle {broken}: a certificate in it is not valid PEM\n",
    )


async def test_a_stalled_server_is_a_timeout_with_advice(hostile: HostileServer) -> None:
    hostile.hold = asyncio.Event()  # never answers
    result = await run_cli(
        "--base-url",
        hostile.url,
        "--timeout",
        "0.2",
        "--max-attempts",
        "1",
        "balance",
        env={"STABILITY_API_KEY": KEY},
    )
    assert result.code == 1
    assert result.err == (
        f"stability-user: error: GET {hostile.url}/v1/user/balance took longer than 0.2 s: "
        "the service did not answer in time: try again, or raise --timeout\n"
    )
