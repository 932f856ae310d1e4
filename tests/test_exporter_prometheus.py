"""examples/monitoring with the real thing: Debian's prometheus and promtool on loopback.

Skipped where they are not installed, except in CI (``CI`` set), where that fails.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from stability_user.testing import StabilityEmulator

from .servers import installed

MONITORING = pathlib.Path(__file__).parent.parent / "examples" / "monitoring"
sys.path.insert(0, str(MONITORING))

import check_with_prometheus as example  # noqa: E402


def binary(name: str) -> str:
    """Where ``name`` (of Debian's prometheus) is; skips, or fails in CI, without it."""
    return installed(name, "prometheus")


def promtool(*args: str) -> str:
    done = subprocess.run(
        [binary("promtool"), *args], cwd=MONITORING, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_rules_and_the_config_pass_promtool() -> None:
    assert "SUCCESS: 4 rules found" in promtool("check", "rules", "alerts.yml")
    assert "is valid prometheus config file syntax" in promtool("check", "config", "prometheus.yml")


def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    # Low for 5 minutes; no good check for 3 intervals; failing checks; the exporter down.
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_the_dashboard_plots_credits_per_target_staleness_and_failures() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(panels)
    credits = panels["Credits per target"]["targets"][0]
    assert (credits["expr"], credits["legendFormat"]) == (
        "stability_credits",
        "{{target}} {{organization}}",
    )
    queries = " ".join(expr for _, expr in example.dashboard_queries())
    for metric in (
        "stability_last_success_timestamp_seconds",
        "stability_check_success",
        "stability_check_failures_total",
        "stability_rate_limit_wait_seconds_total",
        'stability_http_responses_total{code="429"}',
        "stability_check_duration_seconds_bucket",
    ):
        assert metric in queries
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


async def test_prometheus_scrapes_the_exporter_and_the_low_credit_alert_goes_pending(
    live: StabilityEmulator, tmp_path: pathlib.Path
) -> None:
    prometheus = binary("prometheus")
    keys = {
        name: live.add_account(email=f"{name}@example.com", credits=credits)
        for name, credits in example.CUSTOMERS.items()
    }
    findings = await example.check(live, keys, prometheus, tmp_path)
    assert findings.credits == example.CUSTOMERS
    assert findings.pending["state"] == "pending"
    assert float(findings.pending["value"]) == 42.0
    labels = findings.pending["labels"]
    assert (labels["alertname"], labels["target"], labels["severity"]) == (
        "StabilityCreditsLow",
        "umbrella",
        "warning",
    )
    assert "organization" not in labels  # the key's default organization: an empty label
    assert findings.pending["annotations"]["summary"] == "umbrella has 42 credits left"
    assert findings.dashboard_queries == len(example.dashboard_queries())
    answer = json.loads(findings.sample)
    assert answer["status"] == "success"
    assert {r["metric"]["target"] for r in answer["data"]["result"]} == set(keys)
    for key in keys.values():
        assert key not in findings.sample


def test_the_script_fails_without_prometheus(tmp_path: pathlib.Path) -> None:
    # Without prometheus the script says so and exits 1: CI must not pass it by accident.
    done = subprocess.run(
        [sys.executable, str(MONITORING / "check_with_prometheus.py")],
        env={**os.environ, "PATH": str(tmp_path)},  # a PATH without prometheus
        capture_output=True,
        text=True,
        check=False,
        timeout=50,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "prometheus is not installed (Debian: apt-get install prometheus)\n"
