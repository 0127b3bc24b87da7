"""The benchmark suite works: its quick mode runs and writes complete results.

This never judges speed: it checks that every section ran (the peers may
be skipped with a reason), that every figure is a number, and that the
markdown table and the PNG chart were written.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from conftest import REPO

MEASURED = ("sequential", "concurrency", "map", "payloads", "cold_start", "import_hook")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
                               cwd=REPO, capture_output=True, text=True, timeout=170)
    return completed, out


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(180)
def test_quick_suite_runs_to_completion(quick_run: tuple) -> None:
    completed, _ = quick_run
    assert completed.returncode == 0, completed.stderr[-4000:]


@pytest.mark.timeout(180)
def test_every_section_has_numeric_figures(quick_run: tuple) -> None:
    _, out = quick_run
    results = json.loads((out / "latest.json").read_text())
    assert results["mode"] == "quick"
    assert results["machine"]["cpus"] and results["versions"]["turbolift"]
    sections = results["sections"]
    for name in MEASURED:
        section = sections[name]
        assert section["status"] == "ok", f"{name}: {section.get('reason')}"
        assert section["figures"], name
        for figure_name, figure in section["figures"].items():
            assert figure["n"] >= 1, f"{name}.{figure_name} has no samples"
            assert _is_number(figure["median"]) and _is_number(figure["p99"]), f"{name}.{figure_name}"
    peers = sections["peers"]
    assert peers["status"] in ("ok", "skipped"), peers.get("reason")
    if peers["status"] == "skipped":
        assert peers["reason"]
    assert results["comparisons"], "no summary rows"
    for row in results["comparisons"]:
        assert row["met"] in (True, False, None)


@pytest.mark.timeout(180)
def test_markdown_table_and_chart_are_written(quick_run: tuple) -> None:
    _, out = quick_run
    markdown = (out / "latest.md").read_text()
    assert "| what | turbolift | baseline | ratio | target | met? |" in markdown
    chart = (out / "latest.png").read_bytes()
    assert chart.startswith(b"\x89PNG\r\n\x1a\n") and len(chart) > 10_000
