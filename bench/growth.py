"""How cost grows with size: the latest bench result per scale (bench/results/*.json), side by side.

python -m bench.growth          (or: make bench-growth)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bench.pipeline import RESULTS
from runner import serving
from runner.output import show


def latest_per_scale(results: Path) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(results.glob("pipeline-*.json")):  # names sort by time within a scale
        result = json.loads(path.read_text())
        if "steps" in result and isinstance(result["steps"][0], dict):
            found[int(result["orders"])] = result
    return dict(sorted(found.items()))


def growth_table(found: dict[int, dict[str, Any]]) -> serving.Table:
    scales = list(found)
    steps = [s["step"] for s in found[scales[-1]]["steps"]]
    rows = []
    for step in steps:
        seconds = [next((s["seconds"] for s in found[n]["steps"] if s["step"] == step), None) for n in scales]
        rss = [next((s["peak_rss_mb"] for s in found[n]["steps"] if s["step"] == step), None) for n in scales]
        ratio = seconds[-1] / seconds[0] if seconds[0] and seconds[-1] and len(scales) > 1 else None
        rows.append((step, *seconds, round(ratio, 1) if ratio else None, *rss))
    size = f"x{scales[-1] / scales[0]:g} orders" if len(scales) > 1 else "—"
    return serving.Table(
        "Seconds (and peak RSS MB) by number of orders",
        ["step", *(f"{n:,} s" for n in scales), f"time growth ({size})", *(f"{n:,} MB" for n in scales)],
        rows,
    )


@click.command()
@click.option("--results", default=str(RESULTS), show_default=True, type=click.Path(file_okay=False))
def main(results: str) -> None:
    found = latest_per_scale(Path(results))
    if not found:
        raise click.ClickException(f"no bench results in {results}: run `make bench SCALE=<orders>` first")
    show(growth_table(found))


if __name__ == "__main__":
    main()
