"""Several workers per service (``--workers``): one port, each worker restarted alone, reloads without a failed
request, /metrics summed over the workers, usage from every worker written, a status row per worker.

Real processes: honcho runs the supervisor, which runs the real Figma service twice on one port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from db.migrate import MigrationError, check_procfile, procfile_line
from mcp.formation.facts import pid_alive, port_free
from mcp.formation.status import format_table
from mcp.ops.supervisor.config import SupervisorConfig, SupervisorConfigError
from mcp.ops.supervisor.publish import ChildState, overall
from tests.fixtures.formation import Formation, supervise_line
from tests.support import ROOT, call_tool, free_port, http, ok, wait_for
from tests.test_ports import figma
from tests.test_restart_reload import Load

NAME = "mcp-figma"
FAST = ("--max-restarts 5 --min-uptime 2 --backoff-initial 0.1 --backoff-max 0.5 --health-timeout 20 "
        "--health-interval 1 --fast-health-interval 0.5 --stop-timeout 3")


class Workers:
    """A formation of one line: the Figma service under the supervisor, FIGMA_WORKERS=2."""

    def __init__(self, formation: Formation, port: int, run_dir: Path) -> None:
        self.f, self.port, self.run_dir = formation, port, run_dir
        self.url = f"http://127.0.0.1:{port}"

    def state(self) -> dict[str, Any]:
        return self.f.states()[NAME]

    def ready(self, timeout: float = 60) -> dict[str, Any]:
        """Wait until every worker runs and its supervisor found it healthy."""
        return self.f.wait(NAME, lambda s: s["status"] == "running" and len(s["workers"]) == 2 and all(
            w["status"] == "running" and w["health"] == "healthy" and w["child_pid"] for w in s["workers"]),
            "both workers healthy", timeout)

    def pids(self) -> list[int]:
        return [w["child_pid"] for w in self.state()["workers"]]

    def answering_pid(self) -> int:
        """The pid in a /health answer, on a new connection (so the kernel picks a listener afresh)."""
        resp = http("GET", self.url + "/health", timeout=10)
        assert resp.status == 200, resp.body
        return resp.json["pid"]

    def ops(self, *args: str) -> tuple[int, str]:
        """``python -m mcp.ops`` (what scripts/restart and scripts/reload run) against this formation."""
        done = subprocess.run([sys.executable, "-m", "mcp.ops", *args], cwd=ROOT, capture_output=True, text=True,
                              env={**self.f.env, "MCP_RUN_DIR": str(self.run_dir)}, timeout=180)
        return done.returncode, done.stdout + done.stderr


@pytest.fixture
def workers(env, tmp_path):
    # <MCP_PROJECT_ROOT>/.run, where the main API (the ``admin`` fixture) reads the supervisors' states too.
    run_dir, log_dir = tmp_path / ".run", tmp_path / "logs"
    port = free_port()
    base = {k: v for k, v in env.items() if not k.startswith("SUPERVISOR_") and k not in ("MCP_RUN_DIR", "MCP_LOG_DIR")}
    procfile = tmp_path / "Procfile"
    # No --workers on the line: the supervisor reads FIGMA_WORKERS, as it does for a line without the flag.
    procfile.write_text(supervise_line(NAME, run_dir, log_dir, FAST, f"{sys.executable} -m services.figma", port)
                        + "\n")
    f = Formation(procfile, {**base, "FIGMA_PORT": str(port), "FIGMA_WORKERS": "2",
                             # the tests' few instances call far faster than a tenant may
                             "RATE_LIMIT_PER_MINUTE": "10000000", "RATE_LIMIT_BURST": "1000000"}, run_dir)
    w = Workers(f, port, run_dir)
    try:
        yield w
    finally:
        f.cleanup(tmp_path)


def tool_calls_counted(url: str) -> float:
    """mcp_tool_calls_total summed over its series, from one scrape of /metrics."""
    text = http("GET", url + "/metrics", timeout=10).body.decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "mcp_tool_calls_total")


def usage_rows(database_url: str, instance_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM usage WHERE instance_id = %s", (instance_id,)).fetchone()[0]


# --- configuration -------------------------------------------------------------------------------------------


def test_workers_come_from_the_flag_else_the_process_variable_else_one(tmp_path):
    def workers(argv: list[str], environ: dict[str, str], name: str = NAME) -> int:
        return SupervisorConfig.from_argv(["--name", name, "--run-dir", str(tmp_path), *argv, "--", "true"],
                                          environ).workers

    assert workers([], {}) == 1
    assert workers([], {"FIGMA_WORKERS": "3"}) == 3
    assert workers([], {"FIGMA_WORKERS": ""}) == 1
    assert workers(["--workers", "2"], {"FIGMA_WORKERS": "3"}) == 2
    assert workers(["--workers", "auto"], {}) == len(os.sched_getaffinity(0))
    assert workers([], {"API_WORKERS": "2"}, name="main-api") == 2
    assert workers([], {"FIGMA_WORKERS": "4"}, name="main-api") == 1
    for bad in ("0", "two", "-1", "100000"):
        with pytest.raises(SupervisorConfigError, match="FIGMA_WORKERS"):
            workers([], {"FIGMA_WORKERS": bad})
    with pytest.raises(SupervisorConfigError, match="--workers"):
        workers(["--workers", "0"], {})


def test_migrate_suggests_a_workers_variable_and_refuses_a_bad_count(tmp_path):
    line = procfile_line(figma())
    assert "--workers ${FIGMA_WORKERS:-1} " in line
    procfile = tmp_path / "Procfile"
    procfile.write_text(line + "\n")
    check_procfile([figma()], procfile, {})
    check_procfile([figma()], procfile, {"FIGMA_WORKERS": "auto"})
    with pytest.raises(MigrationError, match="'mcp-figma'.*must be"):
        check_procfile([figma()], procfile, {"FIGMA_WORKERS": "many"})
    # The project's own Procfiles spell it the same way.
    for name in ("Procfile", "Procfile.dev"):
        assert "--workers ${FIGMA_WORKERS:-1} " in (ROOT / name).read_text()


def test_the_state_of_several_workers_sums_them_and_the_table_shows_each():
    one = ChildState(status="running", health="healthy", child_pid=11, restarts=1, started_at=100.0)
    two = ChildState(status="restarting", health="unknown", child_pid=None, restarts=2, reason=None)
    assert overall([one])["child_pid"] == 11 and overall([one])["restarts"] == 1
    both = overall([one, two])
    assert (both["status"], both["health"], both["restarts"], both["child_pid"]) == ("restarting", "unknown", 3, 11)
    worker = {"pid": 11, "status": "running", "health": "healthy", "restarts": 1, "operator_restarts": 0,
              "uptime": 5.0, "cpu": 1.5, "memory": 40 << 20}
    row = {"name": NAME, "pid": 11, "status": "running", "health": "healthy", "restarts": 2, "operator_restarts": 0,
           "uptime": 5.0, "cpu": 3.0, "memory": 80 << 20, "port": 49280, "stale": False,
           "workers": [{**worker, "index": 0}, {**worker, "index": 1, "pid": 12}]}
    table = format_table([row])
    assert re.search(r"│ mcp-figma\s+│ -\s+│ running │ healthy │ 2 ", table), table
    assert re.search(r"│ +├ worker 0\s+│ 11\s+│ running │ healthy │ 1 .*│ 1\.5%\s+│ 40\.0 MB", table), table
    assert re.search(r"│ +└ worker 1\s+│ 12 ", table), table
    assert "80.0 MB" in table


# --- real processes ------------------------------------------------------------------------------------------


def test_two_workers_serve_one_port_and_status_shows_each(workers, admin):
    state = workers.ready()
    pids = {w["child_pid"] for w in state["workers"]}
    assert len(pids) == 2 and state["worker_count"] == 2
    # Each /health on a new connection lands on either worker; over many, both answer.
    seen = {workers.answering_pid() for _ in range(200)}
    assert seen == pids

    code, rows = workers.f.status()
    assert code == 0, rows
    row = rows[NAME]
    assert {w["pid"] for w in row["workers"]} == pids
    for w in row["workers"]:
        assert (w["status"], w["health"], w["restarts"]) == ("running", "healthy", 0), w
        assert w["memory"] > 1_000_000 and w["cpu"] >= 0 and w["uptime"] >= 0
    assert row["memory"] == sum(w["memory"] for w in row["workers"])
    # GET /api/services/status has the same rows.
    resp = admin("GET", "/api/services/status")
    assert resp.status == 200, resp.body
    [process] = [p for p in resp.json["processes"] if p["name"] == NAME]
    assert {w["pid"] for w in process["workers"]} == pids and process["health"] == "healthy"

    table = subprocess.run([str(ROOT / "scripts" / "status"), "--run-dir", str(workers.run_dir)], env=workers.f.env,
                           capture_output=True, text=True, timeout=60).stdout
    for i, pid in enumerate(sorted(pids, key=[w["child_pid"] for w in state["workers"]].index)):
        assert re.search(rf"[├└] worker {i}\s+│ {pid} ", table), table
    watch = subprocess.run([str(ROOT / "scripts" / "status"), "--watch", "--count", "1", "--run-dir",
                            str(workers.run_dir)], env=workers.f.env, capture_output=True, text=True, timeout=60)
    assert watch.returncode == 0 and "└ worker 1" in watch.stdout, watch.stdout + watch.stderr

    # Stopping the formation (honcho's SIGTERM) stops every worker and frees the port.
    workers.f.terminate(15)
    wait_for(lambda: not any(pid_alive(p) for p in pids), 15, what="both workers to exit")
    wait_for(lambda: port_free(workers.port), 10, what="the port to be free")
    assert workers.state()["status"] == "stopped"


def test_a_killed_worker_is_restarted_alone_while_the_other_keeps_serving(workers):
    state = workers.ready()
    killed, other = (w["child_pid"] for w in state["workers"])
    answers: list[tuple[float, int | None]] = []  # (when sent, pid that answered or None for a failure)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                answers.append((sent, workers.answering_pid()))
            except (OSError, AssertionError):
                answers.append((sent, None))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(answers) > 50, 30, what="the load to get going")
        os.kill(killed, signal.SIGKILL)
        # Reaped by the supervisor, so every thread of it has exited and its listener is closed (its main thread
        # alone may show as a zombie earlier): from here every new connection reaches a live worker.
        workers.f.wait(NAME, lambda s: s["workers"][0]["child_pid"] != killed, "the killed worker reaped", 10)
        dead_at = time.monotonic()
        back = workers.f.wait(NAME, lambda s: s["workers"][0]["child_pid"] not in (None, killed)
                              and s["workers"][0]["health"] == "healthy", "worker 0 replaced and healthy", 60)
        replaced_at = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    after = [(at, pid) for at, pid in answers if at >= dead_at]
    assert after and all(pid is not None for _, pid in after), [a for a in after if a[1] is None][:5]
    # While worker 0 was being restarted, worker 1 answered.
    assert any(pid == other for at, pid in after if at < replaced_at)
    w0, w1 = back["workers"]
    assert w0["restarts"] == 1 and w0["last_exit"]["signal"] == "SIGKILL"
    assert w1["restarts"] == 0 and w1["child_pid"] == other and w1["last_exit"] is None
    assert back["restarts"] == 1 and back["status"] == "running"


def test_a_frozen_worker_is_found_by_its_own_health_checks_and_replaced_alone(workers):
    """The healthy sibling answers most probes; only answers naming the frozen worker's pid would count for it."""
    state = workers.ready()
    frozen, other = (w["child_pid"] for w in state["workers"])
    os.kill(frozen, signal.SIGSTOP)
    try:
        back = workers.f.wait(NAME, lambda s: s["workers"][0]["child_pid"] not in (None, frozen)
                              and s["workers"][0]["health"] == "healthy", "the frozen worker replaced", 90)
    finally:
        if pid_alive(frozen):
            os.kill(frozen, signal.SIGCONT)
    w0, w1 = back["workers"]
    assert w0["restarts"] == 1 and w0["last_exit"]["reason"] == "unhealthy", w0
    assert (w1["child_pid"], w1["restarts"]) == (other, 0)


def test_reload_replaces_the_workers_one_at_a_time_with_no_failed_request(workers, admin):
    before = workers.ready()
    old = [w["child_pid"] for w in before["workers"]]
    iid = admin.create_instance(user="reload@example.com")["instance_id"]
    load = Load({NAME: workers.url}, {NAME: iid}, "")
    code, out = load.across(lambda: workers.ops("reload", NAME))
    assert code == 0, out
    state = workers.state()
    new = [w["child_pid"] for w in state["workers"]]
    assert not set(new) & set(old) and None not in new, (old, new)
    assert f"reloaded 2 workers one at a time: pids {new[0]}, {new[1]} are healthy" in out, out
    assert state["operation"]["status"] == "done" and state["operation"]["child_pids"] == new
    assert [(w["restarts"], w["operator_restarts"]) for w in state["workers"]] == [(0, 1), (0, 1)]
    for pid in old:
        wait_for(lambda pid=pid: not pid_alive(pid), 15, what=f"replaced pid {pid} to exit")
    # After the reload the port is shared again: both new workers take new connections.
    assert {workers.answering_pid() for _ in range(200)} == set(new)

    code, out = workers.ops("restart", NAME)
    assert code == 0, out
    state = workers.ready()
    again = [w["child_pid"] for w in state["workers"]]
    assert not set(again) & set(new) and f"restarted 2 workers one at a time: pids {again[0]}, {again[1]}" in out
    assert [(w["restarts"], w["operator_restarts"]) for w in state["workers"]] == [(0, 2), (0, 2)]


def test_metrics_sum_over_the_workers_and_usage_from_each_is_written(workers, admin, database_url, tmp_path):
    state = workers.ready()
    pids = [w["child_pid"] for w in state["workers"]]
    iid = admin.create_instance(user="metrics@example.com")["instance_id"]
    calls = 60
    for _ in range(calls):  # urllib: a new connection each, spread over both workers
        ok(call_tool(workers, iid, "get_me"))
    # Every scrape, whichever worker answers it, reports all of them ...
    for _ in range(20):
        assert tool_calls_counted(workers.url) == calls
    # ... though both workers counted some (each writes its own files).
    metrics_dir = workers.run_dir / "metrics" / NAME
    for pid in pids:
        assert (metrics_dir / f"counter_{pid}.db").exists(), sorted(os.listdir(metrics_dir))

    # Every worker spools its own usage records, and all of them reach the database.
    spools = {int(p.name.split("-")[1]) for p in (tmp_path / ".data" / "usage-spool").glob("figma-*.spool")}
    assert set(pids) <= spools, (pids, spools)
    wait_for(lambda: usage_rows(database_url, iid) == calls, 30, what=f"{calls} usage rows")

    # A killed worker's counters stay in the sum; its live gauges leave it (marked dead by the supervisor).
    os.kill(pids[0], signal.SIGKILL)
    workers.f.wait(NAME, lambda s: s["workers"][0]["child_pid"] not in (None, pids[0])
                   and s["workers"][0]["health"] == "healthy", "worker 0 replaced", 60)
    wait_for(lambda: not list(metrics_dir.glob(f"gauge_live*_{pids[0]}.db")), 10, what="dead worker's gauges gone")
    assert list(metrics_dir.glob(f"counter_{pids[0]}.db"))
    for _ in range(10):
        assert tool_calls_counted(workers.url) == calls
    time.sleep(1.5)
    assert usage_rows(database_url, iid) == calls  # nothing counted twice by the worker that adopted nothing
