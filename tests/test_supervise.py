"""python -m mcp.ops.supervisor, driven as a real subprocess around tests/fixtures/toy_service.py."""

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from mcp.formation.facts import port_owner
from mcp.formation.state import read_states
from mcp.ops.supervisor.config import SupervisorConfig
from mcp.ops.supervisor.logfile import LogFile
from mcp.ops.supervisor.supervisor import Supervisor, process_name
from mcp.server.serve import bind

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "tests" / "fixtures" / "toy_service.py"
DEADLINE = 15.0
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d ")
STATE_KEYS = {
    "name", "pid", "child_pid", "status", "health", "restarts", "consecutive_unstable", "started_at",
    "supervisor_started_at", "last_exit", "reason", "port", "health_url", "last_health_at", "log_out",
    "log_error", "updated_at", "operator_restarts", "operation",
}
# Small timings so each test takes seconds; the health timeout stays generous for a slow machine.
FAST = [
    "--min-uptime", "2", "--health-timeout", "5", "--health-interval", "1", "--fast-health-interval", "0.25",
    "--fast-health-window", "60", "--unhealthy-threshold", "2", "--stop-timeout", "2",
    "--backoff-initial", "0.05", "--backoff-max", "0.2",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid):
    """Exists and is not a zombie (a killed orphan may wait a while for init to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def wait_for(predicate, what, timeout=DEADLINE, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Supervised:
    """One supervisor subprocess with its own log and run directories."""

    def __init__(self, tmp_path, name):
        self.name = name
        self.log_dir = tmp_path / "logs"
        self.run_dir = tmp_path / "run"
        self.stdout_path = tmp_path / f"{name}.stdout"
        self.stderr_path = tmp_path / f"{name}.stderr"
        self.proc = None
        self.children = set()

    @property
    def state_path(self):
        return self.run_dir / "state" / f"{self.name}.json"

    @property
    def out_log(self):
        return self.log_dir / f"{self.name}-out.log"

    @property
    def error_log(self):
        return self.log_dir / f"{self.name}-error.log"

    def start(self, toy_args=(), options=(), command=None, fast=True):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SUPERVISOR_") and k not in ("MCP_LOG_DIR", "MCP_RUN_DIR")}
        cmd = [sys.executable, "-m", "mcp.ops.supervisor", "--name", self.name, "--log-dir", str(self.log_dir),
               "--run-dir", str(self.run_dir), *(FAST if fast else ()), *options, "--",
               *(command or [sys.executable, str(TOY), *toy_args])]
        # Files, not pipes: an unread pipe would block the supervisor once full.
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
        return self

    def state(self):
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        if state.get("child_pid"):
            self.children.add(state["child_pid"])
        return state

    def wait_state(self, predicate, what, timeout=DEADLINE):
        def check():
            state = self.state()
            return state if state is not None and predicate(state) else None

        try:
            return wait_for(check, what, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\nstate: {self.state()}\nerror log:\n{self.errors()[-3000:]}") from None

    def errors(self):
        return self.error_log.read_text() if self.error_log.exists() else ""

    def healthy(self):
        return self.wait_state(lambda s: s["status"] == "running" and s["health"] == "healthy", "healthy")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(6)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.children:
            # Only toys we started; a reused pid belongs to someone else.
            with contextlib.suppress(OSError):
                if b"toy_service.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def supervise(tmp_path):
    started = []

    def start(name, toy_args=(), options=(), command=None, fast=True):
        sup = Supervised(tmp_path, name).start(toy_args, options, command, fast)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.cleanup()


def count_starts(sup):
    return sup.errors().count("[supervisor] started pid")


# ------------------------------------------------------------------------------------------------
# In-process units: configuration, log rotation, port owner, stale states


def test_config_flags_env_defaults_and_derived_health_url(tmp_path):
    env = {"SUPERVISOR_MAX_RESTARTS": "7", "SUPERVISOR_MIN_UPTIME": "1.5", "MCP_RUN_DIR": str(tmp_path),
           "SUPERVISOR_FAIL_FAST": "yes"}
    config = SupervisorConfig.from_argv(
        ["--name", "mcp-figma", "--port", "49280", "--min-uptime", "3", "--", "python", "-m", "services.figma"],
        env)
    assert config.command == ("python", "-m", "services.figma")
    assert config.health_url == "http://127.0.0.1:49280/health"
    assert (config.max_restarts, config.min_uptime, config.fail_fast) == (7, 3.0, True)  # flag beats env
    assert config.run_dir == tmp_path and config.log_dir == ROOT / "logs"
    assert config.stop_timeout < 5  # below honcho's SIGKILL
    assert config.state_path == tmp_path / "state" / "mcp-figma.json"


def test_log_file_rotates_and_keeps_only_the_configured_backups(tmp_path):
    path = tmp_path / "x-out.log"
    logfile = LogFile(path, max_bytes=200, backups=2)
    for i in range(50):
        logfile.write_line(f"line {i:02d} " + "y" * 20)
    logfile.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-out.log", "x-out.log.1", "x-out.log.2"]
    numbers = []
    for name in ("x-out.log.2", "x-out.log.1", "x-out.log"):
        text = (tmp_path / name).read_text()
        assert len(text.encode()) <= 200
        for line in text.splitlines():
            assert TIMESTAMP.match(line), line
            numbers.append(int(line.split()[2]))
    assert numbers == list(range(numbers[0], 50))  # oldest backup first, nothing lost between files


def test_port_owner_finds_the_listening_process():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_owner(s.getsockname()[1]) == os.getpid()
    assert port_owner(free_port()) is None


def test_read_states_marks_a_dead_supervisor_stopped_and_stale(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    for name, pid in (("dead", gone.pid), ("live", os.getpid())):
        (state_dir / f"{name}.json").write_text(json.dumps(
            {"name": name, "pid": pid, "status": "running", "health": "healthy", "child_pid": 1}))
    (state_dir / "junk.json").write_text("{not json")
    states = {s["name"]: s for s in read_states(tmp_path)}
    assert set(states) == {"dead", "live"}
    assert states["dead"]["status"] == "stopped" and states["dead"]["stale"] is True
    assert states["dead"]["child_pid"] is None
    assert states["live"]["status"] == "running" and states["live"]["stale"] is False


# ------------------------------------------------------------------------------------------------
# The supervisor as a real process


def test_crash_at_start_restarts_exactly_max_then_stays_errored_until_sigterm(supervise):
    sup = supervise("crasher", ["--crash-at-start"], ["--max-restarts", "5"])
    state = sup.wait_state(lambda s: s["status"] == "errored", "errored")
    assert state["restarts"] == 5 and state["consecutive_unstable"] == 6
    assert "gave up after 5 restarts" in state["reason"]
    assert state["last_exit"]["code"] == 1 and state["child_pid"] is None
    time.sleep(1.0)  # no further starts, and the supervisor idles instead of exiting
    assert count_starts(sup) == 6
    assert sup.state()["restarts"] == 5
    assert sup.proc.poll() is None
    assert "errored:" in sup.errors() and "restarting in" in sup.errors()
    sup.signal(signal.SIGTERM)
    assert sup.proc.wait(5) == 0
    assert sup.state()["status"] == "stopped"


def test_sigusr2_gives_an_errored_process_a_fresh_cap_and_is_not_counted_as_a_crash(supervise):
    sup = supervise("recap", ["--crash-at-start"], ["--max-restarts", "2"])
    state = sup.wait_state(lambda s: s["status"] == "errored", "errored")
    assert state["restarts"] == 2 and count_starts(sup) == 3
    sup.signal(signal.SIGUSR2)  # scripts/restart: the whole cap again, then errored again
    state = sup.wait_state(lambda s: s["status"] == "errored" and count_starts(sup) == 6, "errored again")
    assert state["restarts"] == 4 and state["operator_restarts"] == 1 and state["consecutive_unstable"] == 3
    # Without a health URL there is nothing to wait for: the restart is done once the child is started.
    assert state["operation"]["kind"] == "restart" and state["operation"]["status"] == "done"
    assert sup.proc.poll() is None


def test_sigusr2_restarts_a_healthy_child_without_counting_a_crash(supervise):
    port = free_port()
    sup = supervise("opsrestart", ["--port", str(port)], ["--port", str(port)])
    first = sup.healthy()
    sup.signal(signal.SIGUSR2)
    state = sup.wait_state(lambda s: (s.get("operation") or {}).get("status") == "done", "the restart to finish")
    assert state["child_pid"] not in (None, first["child_pid"])
    assert state["operation"]["child_pid"] == state["child_pid"]
    assert state["restarts"] == 0 and state["operator_restarts"] == 1 and state["pid"] == first["pid"]
    assert state["last_exit"]["reason"] == "restart requested"
    assert not alive(first["child_pid"])


def test_a_port_shared_by_one_of_our_own_servers_is_still_refused_for_a_fresh_start(supervise):
    """Our servers listen with SO_REUSEPORT (for reloads), so a second one could join the port; the check
    before a start binds without it and refuses a port held by anyone, ours included."""
    port = free_port()
    held = bind(port, "127.0.0.1")
    try:
        sup = supervise("ourport", ["--port", str(port)], ["--port", str(port)])
        state = sup.wait_state(lambda s: s["status"] == "errored", "errored")
        assert state["reason"] == f"port {port} is already in use by pid {os.getpid()} ({process_name(os.getpid())})"
        assert count_starts(sup) == 0
    finally:
        for sock in held:
            sock.close()


def test_fail_fast_exits_1_once_errored(supervise):
    sup = supervise("failfast", ["--crash-at-start"], ["--max-restarts", "1", "--fail-fast"])
    assert sup.proc.wait(DEADLINE) == 1
    state = sup.state()
    assert state["status"] == "errored" and state["restarts"] == 1
    assert count_starts(sup) == 2


def test_stable_runs_reset_the_unstable_count(supervise):
    sup = supervise("stable", ["--crash-after", "0.8"], ["--min-uptime", "0.5", "--max-restarts", "1"])
    state = sup.wait_state(lambda s: s["restarts"] >= 3, "three restarts")
    assert state["status"] != "errored" and state["consecutive_unstable"] == 0
    assert "errored" not in sup.errors()


def test_child_killed_with_sigkill_is_restarted_and_healthy_again(supervise):
    port = free_port()
    sup = supervise("killed", ["--port", str(port)], ["--port", str(port)])
    first = sup.healthy()
    assert first["health_url"] == f"http://127.0.0.1:{port}/health" and first["restarts"] == 0
    os.kill(first["child_pid"], signal.SIGKILL)
    state = sup.wait_state(
        lambda s: s["restarts"] == 1 and s["health"] == "healthy" and s["child_pid"] not in (None, first["child_pid"]),
        "a healthy replacement child")
    assert state["status"] == "running"
    assert state["last_exit"]["signal"] == "SIGKILL"
    assert not alive(first["child_pid"])


def test_port_held_by_another_socket_errors_without_a_restart_loop(supervise):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        sup = supervise("porttaken", ["--port", str(port)], ["--port", str(port)])
        state = sup.wait_state(lambda s: s["status"] == "errored", "errored")
        assert state["reason"] == f"port {port} is already in use by pid {os.getpid()} ({process_name(os.getpid())})"
        time.sleep(1.5)
        state = sup.state()
        assert state["status"] == "errored" and state["restarts"] == 0 and state["child_pid"] is None
        assert count_starts(sup) == 0
        assert sup.proc.poll() is None


def test_child_exit_98_is_port_in_use_and_not_retried(supervise):
    sup = supervise("exit98", ["--crash-at-start", "--exit-code", "98"])
    state = sup.wait_state(lambda s: s["status"] == "errored", "errored")
    assert "code 98" in state["reason"] and "in use" in state["reason"]
    time.sleep(1.0)
    assert sup.state()["restarts"] == 0
    assert count_starts(sup) == 1
    assert sup.proc.poll() is None


def test_missing_command_errors_without_retry(supervise, tmp_path):
    sup = supervise("nocmd", command=[str(tmp_path / "no-such-program")])
    state = sup.wait_state(lambda s: s["status"] == "errored", "errored")
    assert state["reason"].startswith("cannot start") and state["restarts"] == 0
    assert sup.proc.poll() is None


def test_hung_health_check_gets_the_child_killed_and_restarted(supervise):
    port = free_port()
    # The health timeout also caps each request, so a hung check costs one second here.
    sup = supervise("hung", ["--port", str(port), "--hang-after", "1.5"],
                    ["--port", str(port), "--health-timeout", "1", "--unhealthy-threshold", "2"])
    first = sup.healthy()
    sup.wait_state(lambda s: s["health"] == "unhealthy", "a failed health check")
    state = sup.wait_state(lambda s: s["restarts"] >= 1, "a restart of the hung child")
    assert state["last_exit"]["reason"] == "unhealthy"
    assert state["last_exit"]["code"] == 0  # it was asked to stop with SIGTERM, and did
    assert state["consecutive_unstable"] >= 1
    assert "failed 2 health checks in a row" in sup.errors()
    assert not alive(first["child_pid"])


def test_sigterm_stops_the_child_and_exits_0_within_5s(supervise):
    port = free_port()
    sup = supervise("term", ["--port", str(port)], ["--port", str(port)])
    child = sup.healthy()["child_pid"]
    started = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.proc.wait(5) == 0
    assert time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    state = sup.state()
    assert state["status"] == "stopped" and state["child_pid"] is None
    assert state["last_exit"] == {"code": 0, "signal": None, "reason": "stop requested",
                                  "at": state["last_exit"]["at"]}
    assert "toy got SIGTERM" in sup.out_log.read_text()


def test_stop_escalates_to_sigkill_and_ignores_repeated_signals(supervise):
    port = free_port()
    sup = supervise("stubborn", ["--port", str(port), "--ignore-sigterm"], ["--port", str(port), "--stop-timeout", "1"])
    child = sup.healthy()["child_pid"]
    started = time.monotonic()
    sup.signal(signal.SIGTERM)
    time.sleep(0.2)
    sup.signal(signal.SIGINT)
    sup.signal(signal.SIGTERM)
    assert sup.proc.wait(5) == 0
    assert time.monotonic() - started < 5
    assert not alive(child)
    assert sup.state()["last_exit"]["signal"] == "SIGKILL"
    errors = sup.errors()
    assert errors.count("sending SIGTERM to process group") == 1
    assert errors.count("while stopping") == 2
    assert "Traceback" not in sup.stderr_path.read_text()


def test_sigkill_of_the_supervisor_takes_the_child_down(supervise):
    port = free_port()
    sup = supervise("orphan", ["--port", str(port)], ["--port", str(port)])
    child = sup.healthy()["child_pid"]
    sup.proc.kill()
    sup.proc.wait(5)
    wait_for(lambda: not alive(child), "PDEATHSIG to kill the child", timeout=5)
    [state] = read_states(sup.run_dir)
    assert state["stale"] is True and state["status"] == "stopped"


def test_logs_are_named_timestamped_echoed_and_rotated(supervise):
    port = free_port()
    sup = supervise("chatty", ["--port", str(port), "--spam", "300"],
                    ["--port", str(port), "--log-max-bytes", "4000", "--log-backups", "2"])
    sup.healthy()
    wait_for(lambda: "spam 299 " in sup.out_log.read_text(), "the last spam line in the current log")
    assert sorted(p.name for p in sup.log_dir.glob("chatty-out.log*")) == [
        "chatty-out.log", "chatty-out.log.1", "chatty-out.log.2"]
    numbers = []
    for path in (sup.log_dir / "chatty-out.log.2", sup.log_dir / "chatty-out.log.1", sup.out_log):
        assert path.stat().st_size <= 4000
        for line in path.read_text().splitlines():
            assert TIMESTAMP.match(line), line
            if " spam " in line:
                numbers.append(int(line.split()[2]))
    assert numbers == list(range(numbers[0], 300))
    errors = sup.errors()
    assert all(TIMESTAMP.match(line) for line in errors.splitlines())
    assert "[supervisor] started pid" in errors and "toy stderr hello" in errors
    assert len(list(sup.log_dir.glob("chatty-error.log*"))) <= 3
    # honcho still sees the child's output, untouched, on the supervisor's own streams
    assert "toy started pid" in sup.stdout_path.read_text()
    stderr = sup.stderr_path.read_text()
    assert "toy stderr hello" in stderr and "[supervisor] started pid" in stderr
    state = sup.state()
    assert state["log_out"] == str(sup.out_log) and state["log_error"] == str(sup.error_log)


def test_state_file_is_valid_json_at_every_moment(supervise):
    sup = supervise("flappy", ["--crash-after", "0.2"], ["--max-restarts", "3"])
    reads, statuses = 0, set()
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            text = sup.state_path.read_text()
        except FileNotFoundError:
            continue
        state = json.loads(text)  # a torn write would fail here
        assert set(state) >= STATE_KEYS
        reads += 1
        statuses.add(state["status"])
        if state["status"] == "errored":
            break
    assert statuses >= {"running", "restarting", "errored"}, statuses
    assert reads > 20
    assert state["pid"] == sup.proc.pid and state["restarts"] == 3
    [listed] = read_states(sup.run_dir)
    assert listed["status"] == "errored" and listed["stale"] is False
    sup.signal(signal.SIGTERM)
    assert sup.proc.wait(5) == 0
    assert read_states(sup.run_dir)[0]["status"] == "stopped"


# ------------------------------------------------------------------------------------------------
# A frozen child, and a removed run folder


class FrozenClock:
    """Fake time for Supervisor.monitor_health: sleeping advances it; a probe of a frozen child takes its timeout."""

    def __init__(self, frozen_at):
        self.now = 0.0
        self.frozen_at = frozen_at
        self.probes = []  # (time the probe started, healthy?)

    def monotonic(self):
        return self.now

    async def sleep(self, seconds):
        self.now += seconds

    async def probe(self, url, timeout):
        healthy = self.now < self.frozen_at
        self.probes.append((self.now, healthy))
        if not healthy:
            self.now += timeout  # nobody answers a stopped process: the request waits its whole timeout
        return healthy


def test_after_a_failed_check_the_next_ones_come_fast_so_a_frozen_child_is_caught_in_time(tmp_path):
    config = SupervisorConfig.from_argv(["--name", "frozen", "--port", "1", "--log-dir", str(tmp_path),
                                         "--run-dir", str(tmp_path), "--", "true"], {})
    sup = Supervisor(config)
    clock = FrozenClock(frozen_at=200.0)  # long after the fast window that follows a start
    sup.monotonic, sup.sleep, sup.probe = clock.monotonic, clock.sleep, clock.probe
    try:
        asyncio.run(sup.monitor_health(started=0.0))  # returns once it calls the child hung
    finally:
        sup.close()
    failed = [at for at, healthy in clock.probes if not healthy]
    assert len(failed) == config.unhealthy_threshold == 3
    gaps = [b - a for a, b in pairwise(failed)]
    assert gaps == [config.health_request_timeout + config.fast_health_interval] * 2
    # Frozen until judged hung, with the defaults: under 30 s, which leaves the stop (SIGKILL after
    # --stop-timeout at worst), the backoff and the new child's start inside the 45 s.
    detected = clock.now - clock.frozen_at
    assert detected <= 30, detected
    assert detected + config.stop_timeout + config.backoff_initial < 40
    healthy_gaps = [b - a for (a, ok_a), (b, ok_b) in pairwise(clock.probes) if ok_a and ok_b]
    assert max(healthy_gaps) == config.health_interval  # a healthy child is not checked more often than needed


def test_a_sigstopped_child_is_restarted_within_45s_with_the_default_health_schedule(supervise):
    port = free_port()
    # Only the fast window after a start is closed, so the steady schedule applies at once. A longer stop
    # timeout keeps a loaded machine from turning a slow graceful exit into a SIGKILL (checked below).
    sup = supervise("frozen", ["--port", str(port)],
                    ["--port", str(port), "--fast-health-window", "0", "--stop-timeout", "10"], fast=False)
    first = sup.healthy()
    os.kill(first["child_pid"], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        state = sup.wait_state(lambda s: s["child_pid"] not in (None, first["child_pid"]) and s["health"] == "healthy",
                               "a healthy replacement for the frozen child", timeout=45)
    finally:
        with contextlib.suppress(OSError):
            os.kill(first["child_pid"], signal.SIGCONT)
    assert time.monotonic() - stopped < 45
    assert state["restarts"] == 1 and state["last_exit"]["reason"] == "unhealthy"
    # SIGCONT after SIGTERM let the frozen child run its SIGTERM handler instead of waiting for SIGKILL
    assert state["last_exit"]["code"] == 0, (state["last_exit"], sup.errors()[-3000:])
    assert "failed 3 health checks in a row" in sup.errors()
    assert not alive(first["child_pid"])


def test_a_removed_run_folder_is_written_again_within_seconds_and_failures_are_logged_once(supervise):
    port = free_port()
    sup = supervise("gone", ["--port", str(port)], ["--port", str(port)])
    sup.healthy()
    shutil.rmtree(sup.run_dir)
    state = sup.wait_state(lambda s: s["status"] == "running", "the state file again", timeout=10)
    assert state["pid"] == sup.proc.pid and state["child_pid"] is not None
    assert [s["name"] for s in read_states(sup.run_dir)] == ["gone"]

    # A run "folder" that cannot be created: every save fails, but the log says it once, then once recovered.
    shutil.rmtree(sup.run_dir)
    sup.run_dir.write_text("not a folder")
    time.sleep(5)  # health checks every second, and the state is retried every two seconds
    sup.run_dir.unlink()
    sup.wait_state(lambda s: s["status"] == "running", "the state file after the failure", timeout=10)
    errors = sup.errors()
    assert errors.count("cannot write") == 1, errors
    assert errors.count("written again") == 1
    assert errors.count("was removed; writing it again") <= 1  # unless a health check's save came first

    # The same for the log folder: new files, not lines written into deleted ones.
    shutil.rmtree(sup.log_dir)
    wait_for(lambda: "gone-error.log was removed; writing a new one" in sup.errors(), "a new error log", timeout=10)
    os.kill(sup.state()["child_pid"], signal.SIGKILL)
    sup.wait_state(lambda s: s["restarts"] == 1 and s["health"] == "healthy", "a restart")
    assert "toy started pid" in sup.out_log.read_text()
