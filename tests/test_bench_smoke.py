"""scripts/bench --quick runs end to end and writes JSON of the documented shape.

No timing assertions: the figures depend on the machine. What is checked is that every part ran
(the database, the simulator, the processes, the load) and that the JSON says what BENCHMARKS.md
says it says.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import ROOT

ROWS = ("upstream", "baseline", "full_rest", "baseline_mcp", "full_mcp", "sdk_peer")
FIGURES = ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "requests", "errors", "foreign_cpu", "server_cpu",
           "server_us_per_call")


def test_quick_bench_writes_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([str(ROOT / "scripts" / "bench"), "--quick", "--json-out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "targets:" in proc.stdout

    report = json.loads(out.read_text())
    assert report["schema"] == 1 and report["quick"] is True
    assert report["load"]["connections"] > 0 and report["load"]["instances"] > 0
    assert set(report["results"]) == set(ROWS)
    for name in ("upstream", "baseline", "full_rest", "baseline_mcp"):
        row = report["results"][name]
        assert row["available"] is True, row
        assert all(isinstance(row["saturated"][k], int | float) for k in FIGURES), row["saturated"]
        assert row["saturated"]["requests"] > 0  # the calls went through (a count, not a speed)
    for name in ("full_mcp", "sdk_peer"):  # measured when present, else a visible reason
        row = report["results"][name]
        assert row["available"] is True or row["note"], row
    for row in report["results"].values():
        if row["available"] and row["name"] != "upstream":
            assert isinstance(row["ratio_to_baseline"], float) and isinstance(row["p99_delta_ms"], float)
    assert report["startup"]["all_healthy_s"] > 0
    assert set(report["startup"]["per_process"]) == {"main-api", "mcp-figma", "mcp-github", "mcp-slack"}
    assert report["rss_mb"]["service_loaded"]["mcp-figma"] > 0
    assert [t["instances"] for t in report["lookup"]] == [1000, 10_000]
    assert report["usage"]["rows"] > 0
    assert {t["target"] for t in report["targets"]} >= {"all processes healthy", "uncached lookup flat"}
    assert all(t["met"] in (True, False, None) for t in report["targets"])
