"""Plot a recorded run: credits per target, and the age of each target's last good check.

    python examples/monitoring/check_with_prometheus.py --record 120 --save run.json
    python examples/monitoring/plot_credits.py run.json --output docs/_static/exporter-credits.png

The data are Prometheus' range queries of the exporter's metrics from that run
(``stability_credits`` and ``time() - stability_last_success_timestamp_seconds``).
Needs matplotlib, which no extra of the project installs: ``pip install matplotlib``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
from typing import Any


def curves(
    result: list[dict[str, Any]], start: float
) -> dict[str, tuple[list[float], list[float]]]:
    """Each series of a range query as (seconds since ``start``, values), by target."""
    return {
        series["metric"]["target"]: (
            [float(t) - start for t, _ in series["values"]],
            [float(v) for _, v in series["values"]],
        )
        for series in result
    }


def plot(run: dict[str, Any], output: pathlib.Path) -> None:
    """Draw the two panels of ``run`` into ``output`` (PNG)."""
    # Imported by name: matplotlib is optional, and the type checks run without it.
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")

    start, threshold, interval = run["start"], run["threshold"], run["interval"]
    credits = curves(run["series"]["credits"], start)
    ages = curves(run["series"]["age"], start)
    figure, (top, bottom) = pyplot.subplots(
        2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    colors = dict(zip(sorted(credits), pyplot.get_cmap("tab10").colors, strict=False))
    for target in sorted(credits):
        seconds, values = credits[target]
        top.plot(seconds, values, label=target, color=colors[target], linewidth=2)
    top.axhline(threshold, color="crimson", linestyle="--", linewidth=1.2)
    top.text(0, threshold, f" StabilityCreditsLow: below {threshold:g}", color="crimson",
             va="bottom", fontsize=9)  # fmt: skip
    top.set_ylabel("credits (stability_credits)")
    top.set_ylim(bottom=0)
    top.legend(loc="upper right", ncols=len(credits), fontsize=9)
    top.set_title("stability-user exporter, scraped by Prometheus: credits per target", fontsize=12)
    top.grid(alpha=0.3)
    for target in sorted(ages):
        seconds, values = ages[target]
        bottom.plot(seconds, values, color=colors.get(target, "grey"), linewidth=1.6)
    stale = 3 * interval
    for target, (_, values) in sorted(ages.items()):
        if values and values[-1] > stale and target in credits:
            # A target whose checks fail: its line is flat at the last good value.
            x, y = credits[target][0][-1], credits[target][1][-1]
            top.annotate(
                f"{target}: checks failing,\nlast good value kept",
                xy=(x, y),
                xytext=(x - 0.3 * x, y + 0.12 * top.get_ylim()[1]),
                arrowprops={"arrowstyle": "->", "color": colors[target]},
                color=colors[target],
                fontsize=9,
            )
    bottom.axhline(stale, color="darkorange", linestyle="--", linewidth=1.2)
    bottom.text(0, stale, f" StabilityCreditsStale: no good check for {stale:g} s",
                color="darkorange", va="bottom", fontsize=9)  # fmt: skip
    bottom.set_ylabel("seconds since the\nlast good check")
    bottom.set_xlabel(
        f"seconds into the run (bundled emulator; exporter --interval {interval:g} s; "
        "one key revoked half-way: its credits stay, and age)"
    )
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=pathlib.Path, help="the JSON that --record --save wrote")
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("credits.png"))
    args = parser.parse_args()
    plot(json.loads(args.run.read_text()), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
