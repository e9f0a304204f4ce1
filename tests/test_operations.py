"""The formation as operators run it: real honcho, real supervisors, the real Figma service, scripts/status."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest

from mcp.formation.facts import pid_alive, port_free
from tests.fixtures.formation import Formation, supervise_line
from tests.support import ROOT, free_port, wait_for

TOY = ROOT / "tests" / "fixtures" / "toy_service.py"
# Small timings so the whole file takes seconds; the health timeout stays generous for a slow machine.
FAST = ("--max-restarts 5 --min-uptime 2 --backoff-initial 0.1 --backoff-max 0.5 --health-timeout 15 "
        "--health-interval 1 --fast-health-interval 0.5 --stop-timeout 2")


@pytest.fixture
def formation(env, tmp_path):
    """Start a formation from ``{name: (command, port)}``; everything it started is gone afterwards."""
    started: list[Formation] = []
    run_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    base = {k: v for k, v in env.items() if not k.startswith("SUPERVISOR_") and k not in ("MCP_RUN_DIR", "MCP_LOG_DIR")}

    def start(processes: dict[str, tuple[str, int | None]], options: dict[str, str] | None = None,
              extra_env: dict[str, str] | None = None) -> Formation:
        procfile = tmp_path / "Procfile"
        procfile.write_text("".join(
            supervise_line(name, run_dir, log_dir, f"{FAST} {(options or {}).get(name, '')}", command, port) + "\n"
            for name, (command, port) in processes.items()))
        f = Formation(procfile, {**base, **(extra_env or {})}, run_dir)
        started.append(f)
        return f

    yield start
    for f in started:
        f.cleanup(tmp_path)


def toy(*args: object) -> str:
    return " ".join([sys.executable, str(TOY), *map(str, args)])


FIGMA = f"{sys.executable} -m services.figma"


def test_a_process_crashing_at_start_is_errored_after_5_restarts_while_the_others_stay_healthy(formation):
    toy_port, figma_port = free_port(), free_port()
    f = formation({"toy": (toy("--port", toy_port), toy_port), "crasher": (toy("--crash-at-start"), None),
                   "mcp-figma": (FIGMA, figma_port)}, extra_env={"FIGMA_PORT": str(figma_port)})
    crasher = f.wait("crasher", lambda s: s["status"] == "errored", "errored")
    assert crasher["restarts"] == 5 and "gave up after 5 restarts" in crasher["reason"]
    f.healthy("toy")
    f.healthy("mcp-figma")
    time.sleep(1.5)  # nothing more happens: no sixth restart, and honcho keeps the others running
    states = f.states()
    assert states["crasher"]["restarts"] == 5 and states["crasher"]["status"] == "errored"
    assert f.proc.poll() is None
    assert f.output().count("[supervisor] started pid") >= 8  # 6 crasher runs + toy + figma, seen through honcho

    code, rows = f.status("--live")
    assert code == 1  # not everything is healthy
    assert rows["crasher"]["status"] == "errored" and rows["crasher"]["restarts"] == 5
    assert rows["crasher"]["pid"] is None and "gave up after 5 restarts" in rows["crasher"]["reason"]
    for name, port in (("toy", toy_port), ("mcp-figma", figma_port)):
        row = rows[name]
        assert (row["status"], row["health"], row["health_source"]) == ("running", "healthy", "live"), row
        assert row["pid"] == states[name]["child_pid"] and row["restarts"] == 0 and row["port"] == port
        assert row["memory"] > 1_000_000 and row["cpu"] >= 0 and row["uptime"] >= 1


def test_kill_9_of_a_service_child_brings_it_back_and_stopping_leaves_nothing(formation, tmp_path):
    toy_port, figma_port = free_port(), free_port()
    f = formation({"mcp-figma": (FIGMA, figma_port), "chatty": (toy("--port", toy_port, "--spam", 400), toy_port)},
                  options={"chatty": "--log-max-bytes 4000 --log-backups 2"},
                  extra_env={"FIGMA_PORT": str(figma_port)})
    first = f.healthy("mcp-figma")["child_pid"]
    f.healthy("chatty")
    code, rows = f.status()
    assert code == 0 and {r["status"] for r in rows.values()} == {"running"}

    os.kill(first, signal.SIGKILL)
    again = f.wait("mcp-figma", lambda s: s["restarts"] == 1 and s["health"] == "healthy"
                   and s["child_pid"] not in (None, first), "a healthy replacement child")
    assert again["last_exit"]["signal"] == "SIGKILL" and again["status"] == "running"
    code, rows = f.status()
    assert code == 0
    assert (rows["mcp-figma"]["pid"], rows["mcp-figma"]["restarts"]) == (again["child_pid"], 1)

    logs = tmp_path / "logs"
    wait_for(lambda: "spam 399 " in (logs / "chatty-out.log").read_text(), 10, what="the last spam line")
    names = {p.name for p in logs.iterdir()}
    assert {"mcp-figma-out.log", "mcp-figma-error.log", "chatty-out.log", "chatty-error.log",
            "chatty-out.log.1", "chatty-out.log.2"} <= names
    assert "chatty-out.log.3" not in names
    assert "listening on http://127.0.0.1" in (logs / "mcp-figma-out.log").read_text()
    assert "started pid" in (logs / "mcp-figma-error.log").read_text()

    pids = {p for s in f.states().values() for p in (s["pid"], s["child_pid"])}
    started = time.monotonic()
    f.terminate(10)
    assert time.monotonic() - started < 10
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10, what="every supervisor and child to exit")
    wait_for(lambda: port_free(toy_port) and port_free(figma_port), 10, what="the ports to be free")
    code, rows = f.status()
    assert code == 1 and {r["status"] for r in rows.values()} == {"stopped"}
    assert all(r["pid"] is None for r in rows.values())


def test_a_port_held_by_another_process_is_reported_once_and_not_retried(formation):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        f = formation({"mcp-figma": (FIGMA, port)}, extra_env={"FIGMA_PORT": str(port)})
        state = f.wait("mcp-figma", lambda s: s["status"] == "errored", "errored")
        message = f"port {port} is already in use by pid {os.getpid()} ({os.path.basename(sys.orig_argv[0])})"
        assert state["reason"] == message and state["restarts"] == 0
        time.sleep(1.5)
        assert f.states()["mcp-figma"]["restarts"] == 0 and f.proc.poll() is None
        assert f.output().count("[supervisor] started pid") == 0
        assert message in f.output()
        code, rows = f.status()
        assert code == 1
        assert rows["mcp-figma"]["status"] == "errored" and rows["mcp-figma"]["reason"] == message
        assert rows["mcp-figma"]["restarts"] == 0 and rows["mcp-figma"]["pid"] is None

