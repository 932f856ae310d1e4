"""``stability-user exporter``: a real process against the emulator, scraped over HTTP."""

from __future__ import annotations

import pathlib
import re
import signal
import sys
from collections.abc import Callable

import aiohttp
import attrs
from prometheus_client.parser import text_string_to_metric_families

from stability_user import __version__
from stability_user.testing import EmulatedOrganization, Fault, StabilityEmulator

from .processes import no_key_in, run_cli, run_program

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "examples" / "monitoring"))

from check_with_prometheus import eventually, exporter


@attrs.frozen
class Scrape:
    """One scrape of /metrics: the text, and its samples parsed by prometheus-client."""

    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def of(self, name: str, target: str, organization: str = "", **labels: str) -> float | None:
        """A target's sample."""
        return self.get(name, target=target, organization=organization, **labels)

    def count(self, name: str, target: str | None = None, **labels: str) -> float:
        """A counter's sample, 0 while it has none."""
        if target is not None:
            labels = {"target": target, "organization": "", **labels}
        return self.get(name, **labels) or 0.0


async def scrape(address: str) -> Scrape:
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return Scrape(text, samples)


async def until(address: str, ready: Callable[[Scrape], bool], what: str) -> Scrape:
    """Scrape until ``ready`` says the metrics are there (or fail after the deadline)."""

    async def probe() -> Scrape | None:
        found = await scrape(address)
        return found if ready(found) else None

    return await eventually(probe, what)


FAILURE_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  check failed: \\x1b\[31mflaky on line 2: "
    r"503 service_unavailable: "
    r"injected fault \(request id [0-9a-f]+\): the service failed: try again later"
)


def targets_file(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "targets.csv"
    path.write_text(text)
    return str(path)


async def test_every_target_s_credits_and_no_key_anywhere(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    alpha = live.add_account(credits=12.5)
    beta = live.add_account(
        organizations=[
            EmulatedOrganization("org-x", "X", is_default=True, credits=1),
            EmulatedOrganization("org-y", "Y", credits=250),
        ]
    )
    path = targets_file(tmp_path, f"{alpha},,alpha\n{beta},org-y\n{beta},org-x,beta x\n")
    args = ("--base-url", live.base_url, "--rate-limit-store", "memory")
    async with exporter(*args, "exporter", path, "--interval", "0.3") as running:
        assert running.address.startswith("127.0.0.1:")  # loopback unless --host says otherwise
        masked = f"sk-…{beta[-4:]}"  # a target without a label: its masked key
        series = (("alpha", ""), (masked, "org-y"), ("beta x", "org-x"))
        found = await until(
            running.address,
            lambda s: all(s.of("stability_credits", *names) is not None for names in series),
            "every target's credits",
        )
        assert [found.of("stability_credits", *names) for names in series] == [12.5, 250, 1]
        assert [found.of("stability_check_success", *names) for names in series] == [1, 1, 1]
        stamp = found.of("stability_last_success_timestamp_seconds", masked, "org-y")
        assert stamp is not None
        assert stamp > 1.7e9
        assert found.get("stability_check_interval_seconds") == 0.3
        assert found.get("stability_targets") == 3
        assert found.get("stability_exporter_build_info", version=__version__) == 1
        assert found.get("stability_http_responses_total", code="429") == 0
        assert found.count("stability_http_responses_total", code="200") >= 3
        assert found.count("stability_check_duration_seconds_count") >= 3
        assert "_created" not in found.text
        assert "process_resident_memory_bytes" in found.text
        for key in (alpha, beta, alpha[3:], beta[3:]):
            assert key not in found.text
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{running.address}/") as landing:
                assert "href='/metrics'" in await landing.text()
            async with http.get(f"http://{running.address}/nothing") as missing:
                assert missing.status == 404
        assert await running.stop() == 0
    assert running.lines == [
        f"stability-user: exporter: serving http://{running.address}/metrics; "
        "checking 3 targets every 0.3 s, one every 0.1 s"
    ]


async def test_a_failing_target_keeps_its_last_good_value_and_its_time(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    good = live.add_account(credits=40)
    flaky = live.add_account(credits=7.25)
    label = "\x1b[31mflaky"  # a label that would colour a terminal
    path = targets_file(tmp_path, f"{good},,good\n{flaky},,{label}\n")
    args = ("--base-url", live.base_url, "--rate-limit-store", "memory", "--max-attempts", "1")

    def failures(scrape: Scrape) -> float:
        return scrape.count("stability_check_failures_total", label, error="ServerError")

    async with exporter(*args, "exporter", path, "--interval", "0.2") as running:
        first = await until(
            running.address,
            lambda s: s.of("stability_credits", label) == 7.25,
            "the flaky target's first reading",
        )
        live.script(*[503] * 1000, api_key=flaky)
        failing = await until(running.address, lambda s: failures(s) >= 1, "a failed check")
        stamp = failing.of("stability_last_success_timestamp_seconds", label)
        assert stamp is not None
        assert stamp >= (first.of("stability_last_success_timestamp_seconds", label) or 0)
        live.set_balance(flaky, 1)  # not seen: its checks fail
        later = await until(running.address, lambda s: failures(s) >= 3, "three failed checks")
        assert later.of("stability_credits", label) == 7.25
        assert later.of("stability_last_success_timestamp_seconds", label) == stamp
        assert later.of("stability_check_success", label) == 0
        assert later.of("stability_check_success", "good") == 1  # the other goes on
        assert later.count("stability_http_responses_total", code="503") >= 3
        live.clear_faults()
        await until(
            running.address, lambda s: s.of("stability_credits", label) == 1, "the recovery"
        )
        assert await running.stop() == 0
    failed = running.lines[1:]
    assert len(failed) >= 3
    for line in failed:
        # One line a failure: the time, the target (control characters escaped), the error.
        assert FAILURE_LINE.fullmatch(line), line
    for line in running.lines:
        assert flaky not in line
        assert good not in line


async def test_rate_limit_waits_and_429s_are_counted(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    key = live.add_account(
        organizations=[
            EmulatedOrganization("org-a", "A", is_default=True, credits=3),
            EmulatedOrganization("org-b", "B", credits=4),
        ]
    )
    # One key for both targets, one request per 0.5 s: the second check of each pair waits.
    path = targets_file(tmp_path, f"{key},org-a,a\n{key},org-b,b\n")
    live.script(Fault.respond(429, retry_after=0.2), api_key=key)
    args = ("--base-url", live.base_url, "--rate-limit-store", "memory", "--rate-limit", "1/0.5")
    async with exporter(*args, "exporter", path, "--interval", "0.2") as running:
        found = await until(
            running.address,
            lambda s: (
                s.of("stability_credits", "a", "org-a") == 3
                and s.of("stability_credits", "b", "org-b") == 4
                and s.count("stability_rate_limit_waits_total", reason="rate limit") >= 1
            ),
            "both targets and a rate-limit wait",
        )
        assert found.get("stability_http_responses_total", code="429") == 1
        assert found.get("stability_rate_limit_waits_total", reason="lockout") == 1
        lockout = found.get("stability_rate_limit_wait_seconds_total", reason="lockout")
        assert lockout is not None
        assert 0 < lockout <= 0.2
        assert found.count("stability_rate_limit_wait_seconds_total", reason="rate limit") > 0
        assert await running.stop() == 0


async def test_sigint_stops_it_cleanly_too(live: StabilityEmulator, tmp_path: pathlib.Path) -> None:
    key = live.add_account(credits=5)
    path = targets_file(tmp_path, f"{key}\n")
    async with exporter("--base-url", live.base_url, "exporter", path) as running:
        await until(running.address, lambda s: s.get("stability_targets") == 1, "the metrics")
        running.process.send_signal(signal.SIGINT)
        assert await running.process.wait() == 0
    assert len(running.lines) == 1  # the serving line: no "interrupted", no traceback


async def test_the_offline_demo() -> None:
    async with exporter("--emulator", "3", "exporter", "--interval", "0.3") as running:
        found = await until(
            running.address,
            lambda s: all(s.of("stability_credits", f"demo-{n}") is not None for n in (1, 2, 3)),
            "the demo accounts' credits",
        )
        assert found.of("stability_credits", "demo-2") == 75.5
        assert found.get("stability_targets") == 3


async def test_usage_errors(tmp_path: pathlib.Path) -> None:
    key = "sk-" + "a" * 48
    other = "sk-" + "b" * 44 + "aaaa"  # the same last four characters: the same masked key
    no_file = await run_cli("exporter")
    assert no_file.code == 2
    assert "give a TARGETS_FILE" in no_file.err
    empty = await run_cli("exporter", targets_file(tmp_path, "# nothing\n\n"))
    assert (empty.code, empty.err) == (
        2,
        f"stability-user: error: no targets in {tmp_path / 'targets.csv'}: "
        "it holds only blank lines and comments\n",
    )
    bad = await run_cli("exporter", targets_file(tmp_path, f"{key}\n{key},a,b,c\n"))
    assert bad.code == 2
    assert bad.err.startswith(f"stability-user: error: {tmp_path / 'targets.csv'}:2: expected")
    same = await run_cli("exporter", targets_file(tmp_path, f"{key}\n{other}\n"))
    assert (same.code, same.err) == (
        2,
        f"stability-user: error: {tmp_path / 'targets.csv'}: targets 1 and 2 would both be "
        "reported as target='sk-…aaaa', organization='': give each its own label\n",
    )
    missing = await run_cli("exporter", str(tmp_path / "nope.csv"))
    assert (missing.code, missing.err) == (
        2,
        f"stability-user: error: cannot read {tmp_path / 'nope.csv'}: no such file or directory\n",
    )
    unsafe = await run_cli(
        "--base-url", "http://example.com", "exporter", targets_file(tmp_path, f"{key}\n")
    )
    assert unsafe.code == 2
    assert unsafe.err.startswith("stability-user: error: --base-url: refusing clear-text http://")
    for result in (bad, same, unsafe):
        no_key_in(result, key, other)


async def test_a_label_holding_a_key_is_redacted(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    one, two = live.add_account(credits=1), live.add_account(credits=2)
    # Columns swapped by mistake: the second key is the first target's label.
    path = targets_file(tmp_path, f"{one},,{two}\n{two},,customer {one} two\n")
    async with exporter(
        "--base-url", live.base_url, "exporter", path, "--interval", "0.2"
    ) as running:
        found = await until(
            running.address,
            lambda s: s.of("stability_credits", "customer [redacted] two") == 2,
            "the second target",
        )
        assert found.of("stability_credits", "[redacted]") == 1
        assert one not in found.text
        assert two not in found.text


async def test_an_address_it_cannot_listen_on_is_one_line_and_exit_1(
    tmp_path: pathlib.Path,
) -> None:
    path = targets_file(tmp_path, "sk-" + "a" * 48 + "\n")
    async with exporter("--emulator", "1", "exporter", "--interval", "60") as running:
        port = int(running.address.rsplit(":", 1)[1])
        taken = await run_cli("--key-file", path, "exporter", path, "--port", str(port))
    assert (taken.code, taken.err) == (
        1,
        f"stability-user: error: cannot listen on 127.0.0.1:{port}: address already in use\n",
    )


async def test_without_the_extra_it_says_what_to_install(tmp_path: pathlib.Path) -> None:
    path = targets_file(tmp_path, "sk-" + "a" * 48 + "\n")
    hidden = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from stability_user.cli import main\n"
        f"main(['exporter', {path!r}])\n"
    )
    result = await run_program(sys.executable, "-c", hidden)
    assert (result.code, result.err) == (
        1,  # as for the cli extra: nothing the command line could have said otherwise
        "stability-user: error: the exporter needs prometheus-client 0.24 or later: "
        "pip install 'stability-user[exporter]'\n",
    )
    # The other commands never need it.
    help_text = await run_program(
        sys.executable, "-c", hidden.replace(f"['exporter', {path!r}]", "['--help']")
    )
    assert help_text.code == 0
    assert "exporter" in help_text.out


async def test_a_rejected_key_points_to_its_line_of_the_targets_file(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    good = live.add_account(credits=1)
    path = targets_file(tmp_path, f"# keys\n{good},,good\nsk-short\n")
    args = ("--base-url", live.base_url, "--rate-limit-store", "memory", "--max-attempts", "1")
    async with exporter(*args, "exporter", path, "--interval", "0.2") as running:
        await until(
            running.address,
            lambda s: (
                s.count("stability_check_failures_total", "…", error="AuthenticationError") >= 1
            ),
            "the short key's failed check",
        )
        assert await running.stop() == 0
    failed = running.lines[1]
    assert " check failed: … on line 3: 401 unauthorized" in failed
    assert failed.endswith(f": check the key on line 3 of {path}")
    assert "STABILITY_API_KEY" not in failed
    assert "--key-file" not in failed


async def test_help_says_the_targets_file_is_optional_with_the_emulator() -> None:
    result = await run_cli("exporter", "--help")
    assert result.code == 0
    assert result.out.startswith("Usage: stability-user exporter [OPTIONS] [TARGETS_FILE]\n")
    text = " ".join(result.out.split())
    assert "With --emulator N it may be left out" in text
    assert "Exit 1 when it cannot listen or the extra is not installed" in text
    assert "not STABILITY_API_KEY nor --key-file" in text
    no_file = await run_cli("exporter")
    assert (no_file.code, no_file.err) == (
        2,
        "stability-user: error: give a TARGETS_FILE (the format of 'balances'), or --emulator N "
        "for demo accounts (see 'stability-user exporter --help')\n",
    )


async def test_sighup_reloads_the_targets_file(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    one, two, three = (live.add_account(credits=n) for n in (1, 2, 3))
    other = live.add_account(credits=22)
    path = targets_file(tmp_path, f"{one},,one\n{two},,two\n")
    args = ("--base-url", live.base_url, "--rate-limit-store", "memory")
    async with exporter(*args, "exporter", path, "--interval", "0.2") as running:
        await until(
            running.address,
            lambda s: (
                s.of("stability_credits", "one") == 1 and s.of("stability_credits", "two") == 2
            ),
            "the first targets",
        )
        # One removed, one changed (another key, the same label), one added.
        targets_file(tmp_path, f"{other},,two\n{three},,three\n")
        running.process.send_signal(signal.SIGHUP)
        found = await until(
            running.address,
            lambda s: (
                s.of("stability_credits", "three") == 3
                and s.of("stability_credits", "two") == 22
                and s.of("stability_credits", "one") is None
            ),
            "the reloaded targets",
        )
        assert found.get("stability_targets") == 2
        assert found.of("stability_check_success", "one") is None  # all of its series went
        # A file that cannot be read keeps the targets it had.
        targets_file(tmp_path, f"{one},a,b,c\n")
        running.process.send_signal(signal.SIGHUP)

        async def said_so() -> str | None:
            return next((line for line in running.lines if "reload failed" in line), None)

        failed = await eventually(said_so, "the failed reload's line")
        after = await scrape(running.address)
        assert after.get("stability_targets") == 2
        assert after.of("stability_credits", "three") == 3
        assert await running.stop() == 0
    assert failed.endswith(
        f"  reload failed: {path}:1: expected key[,organization[,label]], got 4 fields: "
        "still checking the 2 targets read before"
    )
    reloaded = [line for line in running.lines if "reloaded" in line]
    assert len(reloaded) == 1
    assert reloaded[0].endswith(
        f"  reloaded {path}: 2 targets (1 added, 1 removed, 1 changed), "
        "checked from the next interval on"
    )
    assert [line for line in running.lines if "reload" in line] == [reloaded[0], failed]
    for line in running.lines:
        assert one not in line
        assert other not in line


async def test_sighup_without_a_targets_file_says_there_is_nothing_to_reload() -> None:
    async with exporter("--emulator", "1", "exporter", "--interval", "60") as running:
        running.process.send_signal(signal.SIGHUP)

        async def said_so() -> str | None:
            return next((line for line in running.lines if "reload" in line), None)

        line = await eventually(said_so, "a line about the reload")
        assert await running.stop() == 0  # still running: SIGHUP did not stop it
    assert line.endswith("  nothing to reload: the targets are the demo accounts of --emulator")
