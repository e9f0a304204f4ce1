"""scripts/bench --quick runs end to end and writes JSON of the documented shape.

No timing assertions: the figures depend on the machine. What is checked is that every part ran
(the database, the simulator, the processes, the load) and that the JSON says what BENCHMARKS.md
says it says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import wrk
from bench.loadspec import LoadSpec, Target
from bench.measure import generate
from bench.procs import ProcGroup, clean_env, free_port
from tests.support import ROOT

ROWS = ("upstream", "baseline", "full_rest", "baseline_mcp", "full_mcp", "workers", "sdk_peer", "fastmcp_peer",
        "ts_peer")
PEERS = ("sdk_peer", "fastmcp_peer", "ts_peer")
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
    for name in ("full_mcp", "workers", *PEERS):  # measured when present, else a visible reason
        row = report["results"][name]
        assert row["available"] is True or row["note"], row
    workers = report["results"]["workers"]
    if workers["available"]:
        assert workers["workers"] == 2 and workers["launcher"], workers
        assert isinstance(workers["ratio_to_one_worker"], float), workers
        assert isinstance(workers["cpu_per_call_to_one_worker"], float), workers
        assert workers["saturated"]["errors"] == 0 and workers["saturated"]["requests"] > 0, workers
    for name in PEERS:  # a peer that ran answered every call with the tool's result (the body is checked)
        row = report["results"][name]
        if row["available"]:
            assert row["saturated"]["requests"] > 0 and row["saturated"]["errors"] == 0, row
    for row in report["results"].values():
        if row["available"] and row["name"] != "upstream":
            assert isinstance(row["ratio_to_baseline"], float) and isinstance(row["p99_delta_ms"], float)
    assert report["startup"]["all_healthy_s"] > 0
    assert set(report["startup"]["per_process"]) == {"main-api", "mcp-figma", "mcp-github", "mcp-slack"}
    assert report["rss_mb"]["service_loaded"]["mcp-figma"] > 0
    supervised = report["rss_mb"]["supervised_idle"]  # the service as the Procfile runs it
    assert supervised["supervisor"] > 0 and supervised["workers"] > 0
    assert supervised["total"] == round(supervised["supervisor"] + supervised["workers"], 1)
    assert [t["instances"] for t in report["lookup"]] == [1000, 10_000]
    assert report["usage"]["rows"] > 0
    assert {t["target"] for t in report["targets"]} >= {
        "all processes healthy", "uncached lookup flat", "2 workers throughput", "2 workers CPU per call",
        "full path MCP ahead of FastMCP peer", "full path MCP ahead of TypeScript SDK peer"}
    assert all(t["met"] in (True, False, None) for t in report["targets"])


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcGroup]:
    group = ProcGroup(tmp_path)
    yield group
    group.stop_all()


def _baseline(procs: ProcGroup, upstream: str) -> int:
    port = free_port()
    proc = procs.start(f"baseline-{port}", [sys.executable, "-m", "bench.baseline", "--port", str(port),
                                            "--upstream", upstream], clean_env(), port=port, cwd=ROOT)
    proc.wait_healthy()
    return port


@pytest.mark.parametrize("loadgen", ["wrk", "asyncio"])
def test_body_check_counts_failed_tool_results(loadgen: str, procs: ProcGroup, tmp_path: Path) -> None:
    """A server answering 200 with ``"isError": true`` is a failed row, under either load generator.

    The baseline's upstream is a closed port, so each call comes back as a tool error with status 200:
    only the body check can see it. The same server with a live upstream is the control.
    """
    if loadgen == "wrk" and not wrk.available():
        pytest.skip("wrk is not installed (apt-get install wrk)")
    sim_port = free_port()
    sim = procs.start("upstream-sim", [sys.executable, "-m", "bench.upstream_sim", "--port", str(sim_port)],
                      clean_env(), port=sim_port, cwd=ROOT)
    sim.wait_healthy()
    good_port, bad_port = _baseline(procs, sim.url), _baseline(procs, f"http://127.0.0.1:{free_port()}")
    body = json.dumps({"name": "get_me", "arguments": {}})

    def load(port: int) -> dict:
        spec = LoadSpec(host="127.0.0.1", port=port, method="POST", targets=[Target("/mcp/call")], body=body,
                        headers={"Content-Type": "application/json"}, connections=2, duration_s=1.0,
                        warmup_s=0.0)
        return generate(spec, tmp_path, None, use_wrk=loadgen == "wrk").as_dict()

    good = load(good_port)
    assert good["requests"] > 0 and good["errors"] == 0, good
    bad = load(bad_port)
    assert bad["requests"] == 0 and bad["rps"] == 0, bad
    assert bad["error_detail"].get("bad_body", 0) > 0 and bad["errors"] >= bad["error_detail"]["bad_body"], bad
