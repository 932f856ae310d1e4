"""The exporter, scraped by a real Prometheus with this folder's config, rules and dashboard.

    python examples/monitoring/check_with_prometheus.py [--prometheus PATH]
    python examples/monitoring/check_with_prometheus.py --record 120 --save run.json

It starts, on 127.0.0.1 only: the bundled emulator with four demo customers (in
this process), ``stability-user exporter`` on them (a process of its own), and
``prometheus`` with prometheus.yml and alerts.yml of this folder, the config
rewritten for the ports and a 1 s scrape and evaluation interval, the rules as
they are. Through Prometheus' HTTP API it then checks that every customer's
credits are there; that lowering one balance below 100 on the emulator makes
StabilityCreditsLow go pending; and that every query of grafana-dashboard.json
is valid PromQL, the credits panel's returning every customer.

``--record SECONDS`` then spends credits on the emulator for that long (one key
revoked half-way: its checks fail from then on) and saves Prometheus' range
queries to ``--save``, for ``plot_credits.py``. Each step polls Prometheus until a
deadline; nothing waits a fixed time for something to happen. Exit 0 when every
check passed, 1 naming the one that did not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import attrs

from stability_user.testing import Fault, StabilityEmulator

T = TypeVar("T")

HERE = pathlib.Path(__file__).resolve().parent
CUSTOMERS = {"acme": 900.0, "globex": 600.0, "initech": 330.0, "umbrella": 250.0}
SPENDING = {"acme": 2.5, "globex": 1.5, "initech": 2.2, "umbrella": 1.0}  # credits a second
INTERVAL = 1.0  # the exporter's --interval here
THRESHOLD = 100.0  # the StabilityCreditsLow threshold of alerts.yml
DEADLINE = 30.0  # seconds any one step may take before the check fails


class CheckFailedError(AssertionError):
    """A check did not pass; the message says which."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``probe`` until it returns something, or fail after :data:`DEADLINE` seconds."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise CheckFailedError(f"after {DEADLINE:g} s: {what}")
        await asyncio.sleep(0.2)  # the poll's period, not a wait for something to happen


@attrs.define
class Exporter:
    """A running ``stability-user exporter`` process and what it said on stderr."""

    process: asyncio.subprocess.Process
    address: str  # host:port of /metrics
    lines: list[str]
    reader: asyncio.Task[None]

    async def stop(self) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await self.process.wait()
        await self.reader
        return code


def environment() -> dict[str, str]:
    """This environment without STABILITY_*: the exporter gets only what it is given."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}


@contextlib.asynccontextmanager
async def exporter(*args: str) -> AsyncIterator[Exporter]:
    """``stability-user [args] --port 0``, until it says where it serves; stopped at the end."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "stability_user.cli", *args, "--port", "0"),
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=environment(),
    )
    stderr = process.stderr
    if stderr is None:  # pragma: no cover - asked for a pipe above
        raise CheckFailedError("the exporter's stderr is not a pipe")
    first = (await asyncio.wait_for(stderr.readline(), DEADLINE)).decode()
    if "serving http://" not in first:
        rest = (await stderr.read()).decode()
        await process.wait()
        raise CheckFailedError(f"the exporter did not start: {first}{rest}")
    lines = [first.rstrip("\n")]

    async def read() -> None:
        async for line in stderr:
            lines.append(line.decode().rstrip("\n"))

    address = first.split("http://", 1)[1].split("/metrics", 1)[0]
    running = Exporter(process, address, lines, asyncio.ensure_future(read()))
    try:
        yield running
    finally:
        await running.stop()


def prometheus_config(exporter_address: str) -> str:
    """This folder's prometheus.yml for a test: the exporter's address, 1 s intervals."""
    text = (HERE / "prometheus.yml").read_text()
    for old, new in (
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
        ('"127.0.0.1:9464"', f'"{exporter_address}"'),
    ):
        if text.count(old) != 1:
            raise CheckFailedError(f"prometheus.yml should hold {old!r} once")
        text = text.replace(old, new)
    return text


@attrs.define
class Prometheus:
    """A running Prometheus: its API, through one HTTP session."""

    url: str
    http: aiohttp.ClientSession

    async def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/{path}``'s ``data``; an error answer fails the check."""
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body = await response.json()
        if body.get("status") != "success":
            raise CheckFailedError(f"{path} {params}: {body.get('error', body)}")
        return body["data"]

    async def raw(self, promql: str) -> str:
        """An instant query's answer, as Prometheus sent it."""
        async with self.http.get(f"{self.url}/api/v1/query", params={"query": promql}) as answer:
            return await answer.text()

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector."""
        data = await self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result


@contextlib.asynccontextmanager
async def prometheus(
    binary: str, workdir: pathlib.Path, exporter_address: str
) -> AsyncIterator[Prometheus]:
    """Prometheus on a free loopback port with the example config and rules, until ready."""
    (workdir / "prometheus.yml").write_text(prometheus_config(exporter_address))
    shutil.copy(HERE / "alerts.yml", workdir / "alerts.yml")
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool | None:
                if process.returncode is not None:
                    log_text = (workdir / "prometheus.log").read_text()[-2000:]
                    raise CheckFailedError(f"prometheus exited ({process.returncode}): {log_text}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/-/ready") as response:
                        return True if response.status == 200 else None
                return None

            await eventually(ready, f"prometheus is not ready on {url}")
            yield Prometheus(url, http)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


def dashboard_queries() -> list[tuple[str, str]]:
    """Every panel's queries in grafana-dashboard.json: (panel title, PromQL)."""
    dashboard = json.loads((HERE / "grafana-dashboard.json").read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def as_grafana_would(expr: str) -> str:
    """A panel's query with Grafana's variables as Grafana would fill them in."""
    return expr.replace("$__rate_interval", "1m").replace("$__range", "5m")


@attrs.frozen
class Findings:
    """What Prometheus answered: the checks' evidence."""

    credits: dict[str, float]
    pending: dict[str, Any]
    dashboard_queries: int
    sample: str  # one query's answer, as Prometheus sent it
    recording: dict[str, Any] | None = None


async def check(
    emulator: StabilityEmulator,
    keys: dict[str, str],
    binary: str,
    workdir: pathlib.Path,
    *,
    record: float = 0.0,
) -> Findings:
    """The checks of this module's docstring, on ``emulator`` whose ``keys`` are the customers'.

    With ``record``, then a recording of that many seconds of spending (see :func:`spend`).
    """
    targets = workdir / "targets.csv"
    targets.write_text("label,api_key\n" + "".join(f"{n},{k}\n" for n, k in keys.items()))
    args = ("--base-url", emulator.base_url, "--rate-limit-store", "memory")
    async with (
        exporter(*args, "exporter", str(targets), "--interval", f"{INTERVAL:g}") as running,
        prometheus(binary, workdir, running.address) as prom,
    ):
        credits = await every_credit(prom, keys, emulator)
        sample = await prom.raw("stability_credits")
        emulator.set_balance(keys["umbrella"], 42.0)
        pending = await eventually(lambda: low_credit_alert(prom, "umbrella"), "no pending alert")
        if pending["state"] != "pending" or float(pending["value"]) != 42.0:
            raise CheckFailedError(f"StabilityCreditsLow should be pending at 42: {pending}")
        count = 0
        for title, expr in dashboard_queries():
            answer = await prom.query(as_grafana_would(expr))  # an invalid query fails here
            if title == "Credits per target" and len(answer) != len(keys):
                raise CheckFailedError(f"the credits panel shows {len(answer)} series: {answer}")
            count += 1
        recording = await spend(emulator, keys, prom, record) if record else None
        if await running.stop() != 0:
            raise CheckFailedError(f"the exporter did not exit 0 on SIGTERM: {running.lines}")
    return Findings(credits, pending, count, sample, recording)


async def every_credit(
    prom: Prometheus, keys: dict[str, str], emulator: StabilityEmulator
) -> dict[str, float]:
    """Wait until Prometheus has every customer's credits as the emulator has them."""
    expected = {name: emulator.balance(key) for name, key in keys.items()}

    async def probe() -> dict[str, float] | None:
        found = {
            sample["metric"]["target"]: float(sample["value"][1])
            for sample in await prom.query("stability_credits")
        }
        return found if found == expected else None

    return await eventually(probe, f"stability_credits should be {expected}")


async def low_credit_alert(prom: Prometheus, target: str) -> dict[str, Any] | None:
    """The StabilityCreditsLow alert of ``target``, once Prometheus has one."""
    for alert in (await prom.api("alerts"))["alerts"]:
        labels = alert["labels"]
        if labels["alertname"] == "StabilityCreditsLow" and labels.get("target") == target:
            return dict(alert)
    return None


async def spend(
    emulator: StabilityEmulator, keys: dict[str, str], prom: Prometheus, seconds: float
) -> dict[str, Any]:
    """Spend credits for ``seconds``, one key revoked half-way; Prometheus' range queries."""
    for name, key in keys.items():
        emulator.set_balance(key, CUSTOMERS[name])
    await every_credit(prom, keys, emulator)  # the recording starts from the full balances
    start = time.time()
    revoked = False
    while (elapsed := time.time() - start) < seconds:
        for name, key in keys.items():
            emulator.set_balance(key, round(max(0.0, emulator.balance(key) - SPENDING[name]), 2))
        if not revoked and elapsed >= seconds / 2:
            # From now on every check of umbrella fails: its last good value stays, and ages.
            emulator.script(*[Fault.respond(401)] * 100_000, api_key=keys["umbrella"])
            revoked = True
        await asyncio.sleep(1.0)  # the simulation's clock: one second of spending a step
    end = time.time()
    queries = {
        "credits": "stability_credits",
        "age": "time() - stability_last_success_timestamp_seconds",
    }
    series = {
        name: (
            await prom.api("query_range", query=query, start=f"{start}", end=f"{end}", step="1")
        )["result"]
        for name, query in queries.items()
    }
    return {"threshold": THRESHOLD, "interval": INTERVAL, "start": start, "series": series}


async def run(binary: str, record: float) -> Findings:
    """The checks on an emulator of this process with the four customers."""
    async with StabilityEmulator() as emulator:
        keys = {
            name: emulator.add_account(email=f"{name}@example.com", credits=credits)
            for name, credits in CUSTOMERS.items()
        }
        with tempfile.TemporaryDirectory(prefix="stability-prometheus-") as workdir:
            return await check(emulator, keys, binary, pathlib.Path(workdir), record=record)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", help="the prometheus binary (default: the one on PATH)")
    parser.add_argument("--record", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--save", type=pathlib.Path, help="where --record saves its data (JSON)")
    args = parser.parse_args()
    binary = args.prometheus or shutil.which("prometheus")
    if binary is None:
        print("prometheus is not installed (Debian: apt-get install prometheus)", file=sys.stderr)
        return 1
    try:
        findings = asyncio.run(run(binary, args.record))
    except CheckFailedError as failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    print(f"credits in Prometheus: {findings.credits}")
    print(f"alert: {json.dumps(findings.pending)}")
    print(f"dashboard queries valid: {findings.dashboard_queries}")
    print(f"stability_credits: {findings.sample}")
    if args.save is not None and findings.recording is not None:
        args.save.write_text(json.dumps(findings.recording))
        print(f"saved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
