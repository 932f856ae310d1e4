"""Every example, run against the bundled emulator over loopback, as a user would run it."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import pathlib
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis
import uvicorn
from aiohttp.test_utils import TestClient, TestServer
from arq import create_pool
from arq.connections import RedisSettings

from stability_user.testing import EmulatedOrganization, Fault, StabilityEmulator

from .processes import Run, clean_environment, run_program

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
# The examples are imported as `python examples/x.py` would find them.
sys.path.insert(0, str(EXAMPLES))

import aiohttp_app  # noqa: E402
import arq_worker  # noqa: E402
import fastapi_app  # noqa: E402


async def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> Run:
    return await run_program(sys.executable, str(EXAMPLES / name), *args, env=env)


class TestQuickstart:
    async def test_without_a_key_it_runs_on_the_emulator(self) -> None:
        result = await run_example("quickstart.py")
        assert result.code == 0, result.err
        assert result.out.splitlines() == [
            "STABILITY_API_KEY is not set: using the bundled emulator.",
            "demo@example.com (user-1)",
            "  Organization 1 [OWNER] (default): 42.50 credits",
        ]

    async def test_with_a_key(self, live: StabilityEmulator) -> None:
        key = live.add_account(
            email="me@example.com",
            organizations=[
                EmulatedOrganization("org-a", "Alpha", "OWNER", is_default=True, credits=1234.5),
                EmulatedOrganization("org-b", "Beta", credits=2),
            ],
        )
        env = {"STABILITY_API_KEY": key, "STABILITY_API_HOST": live.base_url}
        result = await run_example("quickstart.py", env=env)
        assert result.code == 0, result.err
        assert result.out.splitlines() == [
            "me@example.com (user-1)",
            "  Alpha [OWNER] (default): 1,234.50 credits",
            "  Beta [MEMBER]: 2.00 credits",
        ]

    async def test_a_bad_key_is_one_line(self, live: StabilityEmulator) -> None:
        env = {"STABILITY_API_KEY": "sk-" + "1" * 48, "STABILITY_API_HOST": live.base_url}
        result = await run_example("quickstart.py", env=env)
        assert result.code == 1
        assert result.err.startswith("error: 401 unauthorized")
        assert "1" * 48 not in result.err


class TestBulkBalances:
    async def test_demo(self) -> None:
        result = await run_example("bulk_balances.py")
        assert result.code == 0, result.err
        credits = [n * 7 % 100 for n in range(1, 51)]  # what the demo's accounts hold
        low = sum(c < 25 for c in credits)
        assert (low, sum(credits)) == (14, 2325)
        assert result.out.splitlines()[-1] == "checked 50, failed 0, low 14, total 2,325.00 credits"

    async def test_keys_file_in_the_cli_format(
        self, live: StabilityEmulator, tmp_path: pathlib.Path
    ) -> None:
        rich, poor = live.add_account(credits=500), live.add_account(credits=3)
        broken = f"sk-{'2' * 48}"
        keys = tmp_path / "keys.csv"
        keys.write_text(f"# key,organization,label\n{rich},,rich\n{poor},,poor\n{broken}\n")
        result = await run_example(
            "bulk_balances.py", str(keys), env={"STABILITY_API_HOST": live.base_url}
        )
        assert result.code == 1, result.err  # a check failed
        lines = sorted(result.out.splitlines())
        assert lines[0].startswith("FAILED sk-…2222: 401 unauthorized")  # masked: no label
        assert lines[1] == "LOW    poor: 3.00 credits"
        assert lines[2] == "checked 3, failed 1, low 1, total 503.00 credits"
        for key in (rich, poor, broken):
            assert key not in result.out + result.err

    async def test_a_line_it_cannot_read(self, tmp_path: pathlib.Path) -> None:
        keys = tmp_path / "keys.csv"
        keys.write_text(f"sk-{'3' * 48},org-1,a label,one field too many\n")
        result = await run_example("bulk_balances.py", str(keys))
        assert result.code == 2
        assert result.err == (
            f"error: {keys}:1: expected key[,organization[,label]], got 4 fields\n"
        )
        empty = tmp_path / "empty.csv"
        empty.write_text("# key,organization,label\n\n")
        nothing = await run_example("bulk_balances.py", str(empty))
        assert (nothing.code, nothing.out) == (2, "")
        assert nothing.err == (
            f"error: no targets in {empty}: it holds only blank lines and comments\n"
        )
        missing = await run_example("bulk_balances.py", str(tmp_path / "nope.csv"))
        assert missing.code == 2
        assert (
            missing.err
            == f"error: cannot read {tmp_path / 'nope.csv'}: No such file or directory\n"
        )


# os.environ.get("X"), os.getenv("X") and os.environ["X"] read, not assigned.
ENVIRONMENT_READ = re.compile(
    r"""(?:os\.environ\.get\(|os\.getenv\()\s*["']([A-Z_]+)["']"""
    r"""|os\.environ\[["']([A-Z_]+)["']\](?!\s*=[^=])"""
)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_every_variable_an_example_reads_is_in_its_docstring(path: pathlib.Path) -> None:
    source = path.read_text()
    docstring = ast.get_docstring(ast.parse(source)) or ""
    read = {name for match in ENVIRONMENT_READ.findall(source) for name in match if name}
    if path.name in ("aiohttp_app.py", "fastapi_app.py"):
        assert "PORT" in read  # the pattern finds what it is for
    assert sorted(name for name in read if name not in docstring) == []


@pytest.fixture(name="service_env")
def _service_env(live: StabilityEmulator, monkeypatch: pytest.MonkeyPatch) -> str:
    key = live.add_account(
        email="svc@example.com",
        organizations=[
            EmulatedOrganization("org-a", "A", is_default=True, credits=12.5),
            EmulatedOrganization("org-b", "B", credits=7.0),
        ],
    )
    monkeypatch.setenv("STABILITY_API_KEY", key)
    monkeypatch.setenv("STABILITY_API_HOST", live.base_url)
    return key


async def check_backend(get: object, live: StabilityEmulator, key: str) -> None:
    """The answers both web examples must give, through ``get(path) -> (status, headers, json)``."""
    assert await get("/credits") == (200, None, {"credits": 12.5})  # type: ignore[operator]
    assert await get("/credits?organization=org-b") == (200, None, {"credits": 7.0})  # type: ignore[operator]
    status, _, body = await get("/credits?organization=org-z")  # type: ignore[operator]
    assert status == 403
    live.script(Fault.respond(401), api_key=key)
    status, _, body = await get("/account")  # type: ignore[operator]
    assert status == 502  # the upstream refusing our key is not the caller's fault, nor a crash
    assert key not in str(body)
    status, _, body = await get("/account")  # type: ignore[operator]
    assert (status, body) == (  # a failed read is never cached: this one is sent
        200,
        {"id": "user-1", "email": "svc@example.com", "organizations": ["org-a", "org-b"]},
    )
    status, _, body = await get("/credits?organization=a%0D%0Ab")  # type: ignore[operator]
    assert status == 400
    live.script(Fault.respond(429, retry_after=30), api_key=key)
    status, retry_after, body = await get("/credits?organization=org-c")  # type: ignore[operator]
    assert (status, retry_after) == (503, "30")  # 30 s is past max_retry_after: no waiting
    assert "rate limited" in body["error"]
    # The service locked the key out: the next read knows, and is not even sent...
    sent = len(live.requests)
    status, retry_after, _ = await get("/credits?organization=org-d")  # type: ignore[operator]
    assert status == 503
    assert 0 < int(retry_after) <= 30
    # ...while the balance read before the lockout still answers (the cache's
    # stale_if_error covers a minute of refusals), and nothing more is sent.
    assert await get("/credits") == (200, None, {"credits": 12.5})  # type: ignore[operator]
    assert len(live.requests) == sent


async def test_aiohttp_app(live: StabilityEmulator, service_env: str) -> None:
    async with TestClient(TestServer(aiohttp_app.create_app(), host="127.0.0.1")) as client:

        async def get(path: str) -> tuple[int, str | None, object]:
            response = await client.get(path)
            return response.status, response.headers.get("Retry-After"), await response.json()

        await check_backend(get, live, service_env)


@pytest.mark.parametrize("name", ["aiohttp_app.py", "fastapi_app.py"])
async def test_a_web_example_runs_when_copied_on_its_own(name: str, tmp_path: pathlib.Path) -> None:
    copy = tmp_path / name
    shutil.copy(EXAMPLES / name, copy)
    # Load it as a module of its own, away from the other examples: it must need none of them.
    code = f"import runpy; runpy.run_path({str(copy)!r}, run_name='copied'); print('loaded')"
    result = await run_program(sys.executable, "-I", "-c", code)
    assert (result.code, result.out) == (0, "loaded\n"), result.err


@contextlib.asynccontextmanager
async def served_fastapi() -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(fastapi_app.app, host="127.0.0.1", port=0, log_level="warning")
    )
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:  # uvicorn offers no event to wait on
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_fastapi_app(live: StabilityEmulator, service_env: str) -> None:
    async with served_fastapi() as base, aiohttp.ClientSession() as http:

        async def get(path: str) -> tuple[int, str | None, object]:
            async with http.get(base + path) as response:
                return response.status, response.headers.get("Retry-After"), await response.json()

        await check_backend(get, live, service_env)


async def flush(redis_url: str) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    await pool.flushdb()
    await pool.aclose()


# arq's Worker.close() still calls redis-py's deprecated close(); not ours to fix.
ARQ_DEPRECATED_CLOSE = pytest.mark.filterwarnings(
    "ignore:Call to deprecated close:DeprecationWarning"
)


@ARQ_DEPRECATED_CLOSE
async def test_arq_demo_in_one_process(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    await flush(redis_url)
    results = await arq_worker.demo(accounts=10, below=10.0)
    assert [r["label"] for r in results] == [f"customer-{n}" for n in range(1, 11)]
    assert [r["credits"] for r in results] == [float(n * 3) for n in range(10)]
    assert [r["low"] for r in results] == [n * 3 < 10 for n in range(10)]
    assert all(r["error"] is None for r in results)


async def test_arq_worker_process_and_enqueuer(
    redis_url: str, live: StabilityEmulator, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await flush(redis_url)
    keys = tmp_path / "keys.csv"
    labels = [f"c{n}" for n in range(12)]
    keys.write_text(
        "".join(f"{live.add_account(credits=n)},,{label}\n" for n, label in enumerate(labels))
        + f"sk-{'8' * 48},,revoked\n"  # a key the service does not know
    )
    env = {
        "REDIS_URL": redis_url,
        "STABILITY_KEYS_FILE": str(keys),
        "STABILITY_API_HOST": live.base_url,
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "arq_worker.py"),
        "worker",
        env=clean_environment(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert worker.stdout is not None
    try:
        running = await asyncio.wait_for(worker.stdout.readline(), 30)
        assert (
            running.decode() == f"worker running: jobs from {redis_url}, 13 targets from {keys}\n"
        )
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        results = await asyncio.wait_for(arq_worker.enqueue_and_collect([*labels, "nobody"], 5), 60)
        # The enqueuer as a user runs it: every label of the file, one of them failing.
        enqueued = await asyncio.wait_for(
            run_example("arq_worker.py", "enqueue", "--below", "5", env=env), 60
        )
    finally:
        worker.terminate()  # arq shuts down on SIGTERM, running on_shutdown
        _, err = await worker.communicate()
    assert worker.returncode == 0, err.decode()
    assert enqueued.code == 1, enqueued.err  # as stability-user balances: a check failed
    lines = enqueued.out.splitlines()
    assert lines[0].startswith("LOW    c0: 0.00 credits")
    assert (
        [line for line in lines if line.startswith("FAILED")]
        == [line for line in lines if line.startswith("FAILED revoked: 401 unauthorized")]
        != []
    )
    assert lines[-1] == "checked 13 in jobs, failed 1, low 5"
    assert [(r["label"], r["credits"], r["low"]) for r in results[:-1]] == [
        (label, float(n), n < 5) for n, label in enumerate(labels)
    ]
    assert results[-1] == {
        "label": "nobody",
        "credits": None,
        "low": False,
        "error": "unknown label",
    }
    assert {r.path for r in live.requests} == {"/v1/user/balance"}
    assert len(live.requests) == 12 + 13


async def test_arq_setup_errors_are_one_line(redis_url: str, tmp_path: pathlib.Path) -> None:
    for command in ("worker", "enqueue"):
        result = await run_example("arq_worker.py", command, env={"REDIS_URL": redis_url})
        assert result.code == 2
        assert result.err == (
            "error: set STABILITY_KEYS_FILE to a file of key,organization,label lines "
            "(the stability-user balances format; every target needs a label)\n"
        )
    unlabelled = tmp_path / "keys.csv"
    unlabelled.write_text(f"sk-{'5' * 48},org-1\n")
    env = {"REDIS_URL": redis_url, "STABILITY_KEYS_FILE": str(unlabelled)}
    result = await run_example("arq_worker.py", "worker", env=env)
    assert result.code == 2
    assert (
        result.err
        == f"error: {unlabelled}: sk-…5555 org-1 has no label (jobs name targets by it)\n"
    )


async def test_arq_enqueue_says_when_no_worker_is_running(
    redis_url: str, tmp_path: pathlib.Path
) -> None:
    await flush(redis_url)
    keys = tmp_path / "keys.csv"
    keys.write_text(f"sk-{'6' * 48},,only\n")
    env = {"REDIS_URL": redis_url, "STABILITY_KEYS_FILE": str(keys)}
    result = await run_example("arq_worker.py", "enqueue", "--worker-wait", "0.3", env=env)
    assert result.code == 2
    assert result.err == (
        "error: no worker took a job within 0.3 s: start one with "
        f"'python examples/arq_worker.py worker' (REDIS_URL={redis_url})\n"
    )
    # The job nobody took is gone: a worker started later does not run it, stale.
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        assert await pool.keys("*") == []
    finally:
        await pool.aclose()


async def test_arq_without_redis_is_one_line(tmp_path: pathlib.Path) -> None:
    keys = tmp_path / "keys.csv"
    keys.write_text(f"sk-{'6' * 48},,only\n")
    # Nothing listens on port 1 of loopback.
    env = {"REDIS_URL": "redis://:hunter2@127.0.0.1:1", "STABILITY_KEYS_FILE": str(keys)}
    for command in ("worker", "enqueue", "demo"):
        result = await run_example("arq_worker.py", command, env=env)
        assert (result.code, result.out) == (1, ""), command
        assert result.err == (
            "error: cannot reach Redis at redis://:***@127.0.0.1:1 (ConnectionError): "
            "start Redis, or set REDIS_URL to where it runs\n"
        )


def test_arq_shows_redis_urls_without_their_password() -> None:
    assert arq_worker.shown("redis://user:hunter2@cache:6380/1") == "redis://user:***@cache:6380/1"
    assert arq_worker.shown("redis://:hunter2@cache") == "redis://:***@cache"
    assert arq_worker.shown("redis://cache:6379") == "redis://cache:6379"


async def test_fleet_sweep_as_a_user_runs_it(
    redis_url: str, live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    run = f"example-{uuid.uuid4().hex[:12]}"
    keys = tmp_path / "keys.csv"
    keys.write_text(
        "".join(f"{live.add_account(credits=n)},,c{n}\n" for n in range(30))
        + f"sk-{'8' * 48},,revoked\n"  # a key the service does not know
    )
    env = {
        "REDIS_URL": redis_url,
        "STABILITY_KEYS_FILE": str(keys),
        "STABILITY_API_HOST": live.base_url,
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "arq",
        "fleet_sweep.WorkerSettings",
        cwd=EXAMPLES,
        env=clean_environment(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        enqueued = await asyncio.wait_for(
            run_example("fleet_sweep.py", "enqueue", run, env=env), 60
        )
        status = await run_example("fleet_sweep.py", "status", run, env=env)
        low = await run_example("fleet_sweep.py", "low", run, "5", env=env)
        unknown = await run_example("fleet_sweep.py", "status", "no-such-run", env=env)
    finally:
        worker.terminate()  # arq finishes its jobs and closes
        _, err = await worker.communicate()
        client = redis.Redis.from_url(redis_url)
        for pattern in (f"*{run}*", "*stability-user-fleet*"):
            for key in client.scan_iter(pattern):
                client.delete(key)
        client.close()
    assert worker.returncode == 0, err.decode()
    assert enqueued.code == 0, enqueued.err
    lines = enqueued.out.splitlines()
    assert lines[0] == (
        f"Enqueued(run='{run}', targets=31, chunks=1, enqueued=1, done=0, pending=0)"
    )
    assert lines[-1].startswith(f"run {run}: 31/31 checked (100.0%), ")
    assert lines[-1].endswith("; 1 failed: AuthenticationError 1")
    assert status.out.startswith(f"run {run}: 31/31 checked (100.0%), ")
    assert status.out.endswith("; 1 failed: AuthenticationError 1\n")
    assert sorted(low.out.splitlines()) == [f"LOW c{n}: {n:.2f} credits" for n in range(5)]
    assert (unknown.code, unknown.out) == (1, "")
    assert unknown.err.startswith("error: no run no-such-run in Redis at ")
    assert live.status_counts == {200: 30, 401: 1}
