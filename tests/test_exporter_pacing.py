"""The exporter's schedule and series names, in process: a fake clock, no waiting."""

from __future__ import annotations

import pytest

from stability_user import Balance, BalanceResult, BalanceTarget, RateLimit, ServerError
from stability_user.cli._context import Settings
from stability_user.cli._exporter_checks import Checker, Series
from stability_user.cli._exporter_metrics import ExporterMetrics, series_labels
from stability_user.cli._failures import UsageFailure

from .fakes import FakeClock

KEYS = [f"sk-{n:048d}" for n in range(4)]
SETTINGS = Settings(
    key_file=None,
    base_url=None,
    api_version="v1",
    timeout=30.0,
    max_attempts=3,
    rate_limit=RateLimit(),
    rate_limit_store="memory",
    proxy=None,
    ssl_context=None,
    emulator=None,
    debug=False,
)


def series(*keys: str, prefix: str = "t") -> list[Series]:
    targets = [BalanceTarget(api_key=key, label=f"{prefix}{n}") for n, key in enumerate(keys)]
    labels = series_labels(targets, "targets.csv")
    return [
        Series(t, pair, line) for line, (t, pair) in enumerate(zip(targets, labels, strict=True), 1)
    ]


def checker(clock: FakeClock, interval: float = 8.0) -> Checker:
    return Checker(
        series(*KEYS),
        ExporterMetrics(interval=interval),
        interval=interval,
        settings=SETTINGS,
        source="targets.csv",
        clock=clock,
        sleep=clock.sleep,
    )


class Schedule:
    """Takes targets from the checker's paced stream as balances() would, noting when."""

    def __init__(self, clock: FakeClock, check: Checker) -> None:
        self.clock, self.check = clock, check
        self.stream = check.paced()
        self.taken = 0

    async def take(self, *, finish: bool = True) -> tuple[str | None, float]:
        target = await anext(self.stream)
        index, self.taken = self.taken, self.taken + 1
        if finish:  # its result comes back before the next target is due
            self.check.record(BalanceResult(target, index, balance=Balance(5.0)))
        return target.label, self.clock() - 1000.0


async def test_targets_are_spread_evenly_over_each_interval(clock: FakeClock) -> None:
    schedule = Schedule(clock, checker(clock))
    taken = [await schedule.take() for _ in range(8)]
    assert taken == [
        ("t0", 0.0), ("t1", 2.0), ("t2", 4.0), ("t3", 6.0),
        ("t0", 8.0), ("t1", 10.0), ("t2", 12.0), ("t3", 14.0),
    ]  # fmt: skip


async def test_a_check_still_running_is_not_started_again(clock: FakeClock) -> None:
    check = checker(clock)
    schedule = Schedule(clock, check)
    await schedule.take()
    stuck = await schedule.take(finish=False)  # t1's check hangs
    taken = [await schedule.take() for _ in range(5)]
    assert stuck == ("t1", 2.0)
    assert taken == [("t2", 4.0), ("t3", 6.0), ("t0", 8.0), ("t2", 12.0), ("t3", 14.0)]
    check.record(BalanceResult(BalanceTarget(api_key=KEYS[1]), 1, error=ServerError(503)))
    assert [await schedule.take() for _ in range(2)] == [("t0", 16.0), ("t1", 18.0)]


async def test_falling_behind_catches_up_within_an_interval_else_starts_afresh(
    clock: FakeClock,
) -> None:
    schedule = Schedule(clock, checker(clock))
    assert [await schedule.take() for _ in range(4)][-1] == ("t3", 6.0)
    clock.advance(6.0)  # t0 and t1 of the next round are overdue: they go at once
    assert [await schedule.take() for _ in range(4)] == [
        ("t0", 12.0), ("t1", 12.0), ("t2", 12.0), ("t3", 14.0),
    ]  # fmt: skip
    clock.advance(20.0)  # more than a whole interval behind: no burst, a new schedule
    assert [await schedule.take() for _ in range(3)] == [("t0", 34.0), ("t1", 36.0), ("t2", 38.0)]


def test_series_are_named_by_label_else_masked_key_and_never_show_a_key() -> None:
    one, two = KEYS[0], KEYS[1]
    targets = [
        BalanceTarget(api_key=one, label="acme"),
        BalanceTarget(api_key=one, organization="org-7"),
        BalanceTarget(api_key=two, label=f"oops {one}", organization=f"org {two}"),
        BalanceTarget(organization="org-9"),
    ]
    assert series_labels(targets, "f") == [
        ("acme", ""),
        (f"sk-…{one[-4:]}", "org-7"),
        ("oops [redacted]", "org [redacted]"),
        ("(session key)", "org-9"),
    ]


def test_a_key_of_no_target_in_a_label_is_masked_too() -> None:
    stranger = "sk-" + "s" * 44 + "wxyz"
    targets = [BalanceTarget(api_key=KEYS[0], label=f"see {stranger}")]
    assert series_labels(targets, "f") == [("see sk-…wxyz", "")]


def test_two_targets_in_one_series_are_refused() -> None:
    targets = [
        BalanceTarget(api_key=KEYS[0], label="a"),
        BalanceTarget(api_key=KEYS[1]),
        BalanceTarget(api_key=KEYS[2], label="a"),
    ]
    with pytest.raises(UsageFailure) as refused:
        series_labels(targets, "keys.csv")
    assert refused.value.message == (
        "keys.csv: targets 1 and 3 would both be reported as target='a', organization='': "
        "give each its own label"
    )
    assert refused.value.exit_code == 2


def credits_of(check: Checker, target: str) -> float | None:
    labels = {"target": target, "organization": ""}
    return check.metrics.registry.get_sample_value("stability_credits", labels)


async def test_a_reload_takes_effect_at_the_next_interval(clock: FakeClock) -> None:
    check = checker(clock)
    schedule = Schedule(clock, check)
    assert [await schedule.take() for _ in range(3)] == [("t0", 0.0), ("t1", 2.0), ("t2", 4.0)]
    late = await schedule.take(finish=False)  # t3's check is still running at the reload
    # t0 stays (a new key: changed), t1 to t3 go, n1 comes.
    reloaded = [
        Series(BalanceTarget(api_key=KEYS[3], label="t0"), ("t0", ""), 1),
        Series(BalanceTarget(api_key=KEYS[1], label="n1"), ("n1", ""), 7),
    ]
    check.replace(reloaded)
    assert credits_of(check, "t1") == 5.0  # until the interval ends, nothing changes
    assert [await schedule.take() for _ in range(3)] == [("t0", 8.0), ("n1", 12.0), ("t0", 16.0)]
    assert late == ("t3", 6.0)
    check.record(BalanceResult(BalanceTarget(api_key=KEYS[3]), 3, balance=Balance(9.0)))
    assert [credits_of(check, name) for name in ("t0", "t1", "t2", "t3", "n1")] == [
        5.0,
        None,
        None,
        None,  # its result came after the reload removed it: no series is made again
        5.0,
    ]
    assert check.metrics.registry.get_sample_value("stability_targets") == 2


async def test_a_removed_target_s_failure_series_go_too(clock: FakeClock) -> None:
    check = checker(clock)
    stream = check.paced()
    first = await anext(stream)
    check.record(BalanceResult(first, 0, error=ServerError(503)))
    labels = {"target": "t0", "organization": "", "error": "ServerError"}
    assert check.metrics.registry.get_sample_value("stability_check_failures_total", labels) == 1
    check.replace(series(*KEYS[1:], prefix="t"))  # labels t0..t2 again: t3 goes
    check.replace(series(*KEYS[1:], prefix="u"))  # a second reload before the round ends wins
    for _ in range(4):
        await anext(stream)
    assert check.metrics.registry.get_sample_value("stability_check_failures_total", labels) is None
    assert check.metrics.registry.get_sample_value("stability_targets") == 3
