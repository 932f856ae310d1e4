"""Every JSON the command line prints is strict JSON: never NaN nor Infinity."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stability_user.testing import StabilityEmulator

from .hostile import HostileServer, json_response
from .processes import run_cli

HUGE = 1.7e308  # finite, but two of them add up to more than any float (1.8e308 is not)


def strict(text: str) -> Any:
    """``text`` parsed as JSON that RFC 8259 allows: NaN and Infinity are refused."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


async def test_a_total_too_large_for_a_number_is_null_and_says_so(live: StabilityEmulator) -> None:
    one, two = live.add_account(credits=HUGE), live.add_account(credits=HUGE)
    stdin = f"{one},,one\n{two},,two\n"
    args = ("--base-url", live.base_url, "balances", "-", "--ordered")
    as_json = await run_cli(*args, "--format", "json", "--summary", "json", stdin=stdin)
    assert as_json.code == 0, as_json.err
    rows = [strict(line) for line in as_json.out.splitlines()]
    assert [row["credits"] for row in rows] == [HUGE, HUGE]
    summary = strict(as_json.err)
    assert summary["total_credits"] is None
    assert summary["total_credits_overflow"] is True
    assert summary["checked"] == 2
    text = await run_cli(*args, stdin=stdin)
    assert text.code == 0
    assert text.err == "checked 2, failed 0, total credits too large to add up (over 1.8e+308)\n"
    assert "inf" not in text.err


async def test_a_finite_total_says_it_did_not_overflow(live: StabilityEmulator) -> None:
    key = live.add_account(credits=2.5)
    result = await run_cli(
        "--base-url", live.base_url, "balances", "-", "--summary", "json", stdin=f"{key}\n"
    )
    summary = strict(result.err)
    assert (summary["total_credits"], summary["total_credits_overflow"]) == (2.5, False)


@pytest.mark.parametrize("credits", ["Infinity", "-Infinity", "NaN", "1e999", "1.8e308"])
async def test_a_non_finite_balance_fails_its_row_and_the_json_stays_strict(
    hostile: HostileServer, credits: str
) -> None:
    body = '{"credits": ' + credits + "}"
    hostile.script.extend([json_response("200 OK", body)] * 2)
    key = "sk-" + "n" * 48
    rows = await run_cli(
        *("--base-url", hostile.url, "--rate-limit-store", "memory", "--max-attempts", "1"),
        *("balances", "-", "--format", "json", "--summary", "json"),
        stdin=f"{key},,far\n",
    )
    assert rows.code == 1
    row = strict(rows.out)
    assert (row["ok"], row["credits"], row["error_type"]) == (
        False,
        None,
        "ResponseValidationError",
    )
    assert strict(rows.err)["failed"] == 1
    one = await run_cli(
        *("--base-url", hostile.url, "--rate-limit-store", "memory", "--max-attempts", "1"),
        *("balance", "--json"),
        env={"STABILITY_API_KEY": key},
    )
    assert (one.code, one.out) == (1, "")
    assert one.err.startswith("stability-user: error: ")
