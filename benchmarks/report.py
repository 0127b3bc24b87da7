"""Render a run's JSON as the markdown report (summary table + per-section figures).

``python -m benchmarks.report RESULTS.json`` re-renders ``.md`` and ``.png``
beside the JSON, e.g. after editing the rendering; the figures themselves
only come from a run.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

from . import targets

SECTION_ORDER = ("sequential", "concurrency", "map", "cold_start", "import_hook", "payloads", "peers")


def fmt(value: Optional[float], unit: Optional[str]) -> str:
    """A value in its unit, at a readable precision."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "s":
        if value < 1e-6:
            return f"{value * 1e9:.0f} ns"
        if value < 1e-3:
            return f"{value * 1e6:.1f} µs"
        if value < 1:
            return f"{value * 1e3:.3g} ms"
        return f"{value:.2f} s"
    if unit in ("calls/s", "items/s"):
        return f"{value:,.0f}/s"
    if unit == "MB/s":
        return f"{value:,.0f} MB/s"
    if unit == "x":
        return f"{value:.2f}×"
    return f"{value:.4g}"


def _cell(value: Optional[float], p99: Optional[float], unit: Optional[str]) -> str:
    text = fmt(value, unit)
    if p99 is not None and value is not None:
        text += f" (p99 {fmt(p99, unit)})"
    return text


def _met(row: dict) -> str:
    if row["target"] == "—":
        return "—"
    if row["met"] is None:
        return "n/a"
    return "**yes**" if row["met"] else "**no**"


def summary_table(rows: list) -> str:
    lines = ["| # | what | turbolift | baseline | ratio | target | met? |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if row["status"] != "ok":
            baseline = f"{row['baseline_name']}: {row['status']}"
            ours, ratio = "—", "—"
        else:
            ours = _cell(row["turbolift"], row["turbolift_p99"], row["unit"])
            baseline = row["baseline_name"]
            if row["baseline"] is not None:
                baseline += f": {_cell(row['baseline'], row['baseline_p99'], row['unit'])}"
            known = row["ratio"] is not None and not math.isnan(row["ratio"])
            ratio = f"{row['ratio']:.2f}×" if known else "—"
        lines.append(f"| {row['section']} | {row['what']} | {ours} | {baseline.replace('|', '/')} | "
                     f"{ratio} | {row['target']} | {_met(row)} |")
    return "\n".join(lines)


def _figures_table(figures: dict) -> str:
    lines = ["| figure | median | p99 | n | extra |", "| --- | --- | --- | --- | --- |"]
    for name, figure in figures.items():
        unit = figure.get("unit")
        extra = []
        if "mb_per_s" in figure:
            extra.append(f"{fmt(figure['mb_per_s'], 'MB/s')}")
            for side in ("caller", "server"):
                extra.append(f"peak {side} {figure[f'peak_{side}_bytes'] / 1e6:,.0f} MB "
                             f"({figure[f'peak_{side}_x_payload']:.2f}× payload; "
                             f"{figure[f'rss_before_{side}_bytes'] / 1e6:,.0f} MB before)")
        if figure.get("version"):
            extra.append(f"version {figure['version']}")
        if figure.get("note"):
            extra.append(figure["note"])
        lines.append(f"| `{name}` | {fmt(figure.get('median'), unit)} | {fmt(figure.get('p99'), unit)} | "
                     f"{figure.get('n', '')} | {'; '.join(extra)} |")
    return "\n".join(lines)


def render(results: dict) -> str:
    machine = results.get("machine", {})
    versions = results.get("versions", {})
    rows = results.get("comparisons") or targets.evaluate(results)
    met = [row for row in rows if row["met"] is not None]
    head = [
        "# turbolift benchmarks",
        "",
        f"Mode **{results.get('mode')}**, {results.get('timestamp')}, {results.get('duration_s', 0):.0f} s. "
        f"{machine.get('cpus_usable')} CPUs ({machine.get('cpu')}), "
        f"{(machine.get('memory_total_bytes') or 0) / 2**30:.0f} GiB, load average at start "
        f"{machine.get('load_average_start', machine.get('load_average'))}. "
        f"Python {versions.get('python')}, turbolift {versions.get('turbolift')}, "
        f"grpcio {versions.get('grpcio')}, protobuf {versions.get('protobuf')}, dill {versions.get('dill')}, "
        f"ray {versions.get('ray') or '—'}, dask {versions.get('distributed') or '—'}, "
        + ", ".join(f"{name} {versions.get(name) or '—'}" for name in ("execnet", "rpyc", "Pyro5", "loky"))
        + ".",
        "",
        f"Targets met: {sum(1 for row in met if row['met'])} of {len(met)} measured.",
        "",
    ]
    if results.get("mode") == "quick":
        head += ["> Quick mode proves the suite works; its samples are too few to quote.", ""]
    body = [summary_table(rows), "",
            "Cells are medians with the 99th percentile in brackets (for rates, the rate that 99% "
            "of the repetitions exceeded). The ratio is always turbolift ÷ baseline of the medians: "
            "below 1 is better for times, above 1 for rates. Targets are those of issue 4; *met* is "
            "computed from the figures of this run.", ""]
    for name in SECTION_ORDER:
        section = results.get("sections", {}).get(name)
        if section is None:
            continue
        body.append(f"## {section.get('title', name)}")
        body.append("")
        status = section.get("status")
        if status != "ok":
            body += [f"**{status}**: {section.get('reason', '')}", ""]
            continue
        params = json.dumps(section.get("params", {}))
        body.append(f"Took {section.get('seconds', 0):.1f} s. Parameters: `{params}`")
        body.append("")
        body.append(_figures_table(section.get("figures", {})))
        body.append("")
        for note in section.get("notes", []):
            body.append(f"* {note}")
        if section.get("notes"):
            body.append("")
    return "\n".join(head + body)


def main(argv: list) -> int:
    from . import chart

    path = Path(argv[0])
    results = json.loads(path.read_text())
    results["comparisons"] = targets.evaluate(results)
    path.with_suffix(".md").write_text(render(results))
    chart.draw(results, path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
