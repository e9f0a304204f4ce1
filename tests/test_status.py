"""mcp.formation.status (scripts/status) and GET /api/services/status, over real supervisors and real /proc."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mcp.formation.facts import cpu_percent
from mcp.formation.status import all_ok, build_rows, format_table, gather_rows, human_bytes, human_duration, sample_now
from tests.support import ROOT, free_port, http, wait_for

TOY = ROOT / "tests" / "fixtures" / "toy_service.py"
FAST = ["--min-uptime", "2", "--health-timeout", "10", "--health-interval", "1", "--fast-health-interval", "0.25",
        "--backoff-initial", "0.05", "--backoff-max", "0.2", "--stop-timeout", "2"]


@pytest.fixture
def supervisors(tmp_path):
    """Start ``python -m mcp.ops.supervisor`` around a toy, publishing into tmp_path/.run; all stopped afterwards."""
    procs = []
    run_dir = tmp_path / ".run"  # where the API of the env fixture (MCP_PROJECT_ROOT=tmp_path) looks

    def start(name, toy_args=(), port=None, command=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
        options = ["--port", str(port)] if port else []
        cmd = [sys.executable, "-m", "mcp.ops.supervisor", "--name", name, "--run-dir", str(run_dir),
               "--log-dir", str(tmp_path / "logs"), *FAST, *options, "--",
               *(command or [sys.executable, str(TOY), *map(str, toy_args)])]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return run_dir

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(6)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rows_by_name(run_dir, **kw):
    return {r["name"]: r for r in asyncio.run(gather_rows(run_dir, **kw))}


def wait_rows(run_dir, predicate, what, **kw):
    return wait_for(lambda: (rows := rows_by_name(run_dir, cpu_sample=0, **kw)) and predicate(rows) and rows,
                    20, interval=0.1, what=what)


# ------------------------------------------------------------------------------------------------
# Units


def test_human_units():
    assert human_bytes(None) == "-" and human_bytes(512) == "512 B"
    assert human_bytes(12_900_000) == "12.3 MB" and human_bytes(3 << 30) == "3.0 GB"
    assert human_duration(None) == "-" and human_duration(0) == "0s" and human_duration(42.9) == "42s"
    assert human_duration(303) == "5m 3s" and human_duration(7500) == "2h 5m"
    assert human_duration(3 * 86400 + 4 * 3600 + 5) == "3d 4h"


def test_cpu_is_sampled_and_memory_is_summed_over_the_childs_process_group():
    # A busy parent and a sleeping child in one new session, as the supervisor starts a child.
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
            "end = time.time() + 30\nwhile time.time() < end: pass")
    busy = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        wait_for(lambda: len([p for p in os.listdir("/proc") if p.isdigit() and _pgrp(p) == busy.pid]) == 2, 10,
                 what="both group members")
        before = sample_now([busy.pid, 999_999_999])
        time.sleep(0.5)
        after = sample_now([busy.pid])
        assert set(before) == {busy.pid}  # a group without members has no figures at all
        cpu = cpu_percent(before[busy.pid], after[busy.pid])
        assert 50 < cpu < 150, cpu  # one core spinning
        assert cpu_percent(None, after[busy.pid]) > 10  # lifetime average, no waiting
        own_rss = _vmrss(busy.pid)
        assert after[busy.pid].rss_bytes > own_rss > 0  # the sleeping child counts too
    finally:
        os.killpg(busy.pid, 9)
        busy.wait()


def _pgrp(pid):
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rfind(")") + 2:].split()[2])


def _vmrss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_rows_table_and_verdict_from_states():
    now = time.time()
    states = [
        {"name": "main-api", "pid": 10, "child_pid": None, "status": "errored", "health": "unknown", "restarts": 5,
         "started_at": now - 100, "port": 5000, "reason": "port 5000 is already in use by pid 77", "stale": False},
        {"name": "mcp-figma", "pid": 11, "child_pid": 12, "status": "running", "health": "healthy", "restarts": 1,
         "started_at": now - 303.5, "port": 49280, "stale": False, "health_url": "http://127.0.0.1:49280/health"},
    ]
    rows = build_rows(states, {}, None, now)
    assert rows[1]["uptime"] == 303.5 and rows[1]["pid"] == 12 and rows[1]["cpu"] is None
    assert rows[0]["uptime"] is None and not all_ok(rows) and not all_ok([]) and all_ok(rows[1:])
    table = format_table(rows)
    lines = table.splitlines()
    assert [c.strip() for c in lines[1].strip("│").split("│")] == [
        "process", "pid", "status", "health", "restarts", "uptime", "cpu", "memory", "port"]
    assert [c.strip() for c in lines[4].strip("│").split("│")] == [
        "mcp-figma", "12", "running", "healthy", "1", "5m 3s", "-", "-", "49280"]
    assert lines[-1] == "main-api: port 5000 is already in use by pid 77"


# ------------------------------------------------------------------------------------------------
# Real supervisors


def test_rows_follow_real_supervisors_and_a_live_check_overrides_the_stored_health(supervisors):
    port = free_port()
    run_dir = supervisors("toy", ["--port", port, "--hang-after", "4"], port=port)
    supervisors("crasher", ["--crash-at-start"])
    rows = wait_rows(run_dir, lambda r: r.get("toy", {}).get("health") == "healthy"
                     and r.get("crasher", {}).get("status") == "errored", "toy healthy, crasher errored")
    toy = rows_by_name(run_dir)["toy"]  # with the default 0.2 s CPU sample
    assert toy["status"] == "running" and toy["port"] == port and toy["pid"] and toy["memory"] > 1_000_000
    assert toy["cpu"] is not None and toy["uptime"] is not None and toy["health_source"] == "supervisor"
    assert rows["crasher"]["restarts"] == 5 and rows["crasher"]["pid"] is None

    # Once the toy stops answering, a live check says so before the supervisor's next verdict is due.
    time.sleep(max(0.0, 4.5 - toy["uptime"]))
    live = rows_by_name(run_dir, cpu_sample=0, live_health=True, timeout=0.5)
    assert (live["toy"]["health"], live["toy"]["health_source"]) == ("unhealthy", "live")
    assert live["crasher"]["health_source"] == "supervisor"  # no child to ask


def test_scripts_status_prints_a_table_json_and_the_exit_code(supervisors, tmp_path):
    port = free_port()
    run_dir = supervisors("toy", ["--port", port], port=port)
    wait_rows(run_dir, lambda r: r.get("toy", {}).get("health") == "healthy", "toy healthy")
    script = str(ROOT / "scripts" / "status")
    table = subprocess.run([script, "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "│ toy " in table.stdout and "running" in table.stdout and " MB" in table.stdout
    as_json = subprocess.run([script, "--json", "--live", "--run-dir", str(run_dir)], capture_output=True, text=True,
                             timeout=60)
    assert as_json.returncode == 0
    body = json.loads(as_json.stdout)
    assert body["ok"] is True and body["processes"][0]["health_source"] == "live"
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert "0 if every process is running and healthy, 1 otherwise" in helped.stdout
    empty = subprocess.run([script, "--run-dir", str(tmp_path / "nothing")], capture_output=True, text=True,
                           timeout=60)
    assert empty.returncode == 1 and "no processes are running" in empty.stdout


def test_api_services_status_reports_processes_and_catalog_live(supervisors, admin, figma_service):
    port = free_port()
    run_dir = supervisors("toy", ["--port", port], port=port)
    supervisors("crasher", ["--crash-at-start"])
    wait_rows(run_dir, lambda r: r.get("toy", {}).get("health") == "healthy"
              and r.get("crasher", {}).get("status") == "errored", "toy healthy, crasher errored")
    assert admin("GET", "/api/services/status", token=None).status == 401

    resp = admin("GET", "/api/services/status")
    assert resp.status == 200, resp.body
    body = resp.json
    processes = {p["name"]: p for p in body["processes"]}
    assert processes["toy"]["health"] == "healthy" and processes["toy"]["health_source"] == "live"
    assert processes["toy"]["memory"] > 0 and processes["toy"]["port"] == port
    assert processes["crasher"]["status"] == "errored" and processes["crasher"]["restarts"] == 5
    assert body["ok"] is False
    services = {s["name"]: s for s in body["services"]}
    assert {"figma"} <= set(services)
    assert services["figma"]["health"]["status"] in ("healthy", "unhealthy", "unreachable")

    # The same rows as scripts/status, from the same state files.
    cli = rows_by_name(run_dir, cpu_sample=0)
    assert {n: (r["status"], r["pid"], r["restarts"]) for n, r in cli.items()} == {
        n: (r["status"], r["pid"], r["restarts"]) for n, r in processes.items()}


def test_api_services_status_does_not_hold_up_other_requests(supervisors, admin):
    port = free_port()
    # A child that stops answering: its live check takes the whole timeout.
    run_dir = supervisors("hung", ["--port", port, "--hang-after", "0.5"], port=port)
    wait_rows(run_dir, lambda r: r.get("hung", {}).get("status") == "running", "hung running")
    time.sleep(0.6)
    slow = {}
    thread = threading.Thread(target=lambda: slow.update(r=admin("GET", "/api/services/status")))
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert http("GET", admin.url + "/health").status == 200
    assert time.monotonic() - started < 0.5  # answered while the status request waits on the hung child
    thread.join(10)
    hung = {p["name"]: p for p in slow["r"].json["processes"]}["hung"]
    assert hung["health"] == "unhealthy" and hung["health_source"] == "live"


def test_the_restarts_column_tells_the_operators_restarts_apart():
    from mcp.formation.status import restarts_cell

    assert restarts_cell({"restarts": 2}) == "2"
    assert restarts_cell({"restarts": 0, "operator_restarts": 3}) == "0 +3 op"
