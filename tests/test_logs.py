"""scripts/logs as an operator runs it, over log files written the way the supervisor writes them (LogFile)."""

from __future__ import annotations

import os
import pty
import queue
import select
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mcp.ops.supervisor.logfile import LogFile
from tests.support import ROOT, wait_for

SCRIPT = str(ROOT / "scripts" / "logs")
NAMES = ("main-api", "mcp-figma", "mcp-github", "mcp-slack")  # the Procfile's, in its order
T0 = datetime(2026, 12, 1, 15, 50, 0, tzinfo=timezone(timedelta(hours=1)))
ESC = "\x1b["


@pytest.fixture
def root(tmp_path):
    """A folder whose logs/ the script reads (MCP_LOG_DIR); the process names are the real Procfile's."""
    (tmp_path / "logs").mkdir()
    return tmp_path


def script_env(root, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "MCP_RUN_DIR")}
    return {**env, "MCP_LOG_DIR": str(root / "logs"), **extra}


def write(root, name, stream, *entries, max_bytes=10_000_000, backups=5):
    """Append ``(seconds after T0, text)`` entries to logs/<name>-<stream>.log through the supervisor's LogFile."""
    for seconds, text in entries:
        log = LogFile(root / "logs" / f"{name}-{stream}.log", max_bytes, backups,
                      now=lambda s=seconds: T0 + timedelta(seconds=s))
        log.write_line(text)
        log.close()


def stamp(seconds):
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def logs(root, *args, **extra_env):
    return subprocess.run([SCRIPT, *args], env=script_env(root, **extra_env), capture_output=True, text=True,
                          timeout=60)


def in_pty(root, *args, **extra_env):
    """Run scripts/logs with its stdout on a terminal; (exit code, everything it printed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([SCRIPT, *args], env=script_env(root, **extra_env), stdin=slave, stdout=slave,
                            stderr=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        poller = select.poll()  # not select(): descriptors may be past 1024 in a long test run
        poller.register(master, select.POLLIN)
        if not poller.poll(30_000):
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(30), out.decode()


def test_last_n_records_of_each_file_interleaved_by_time_with_continuations_kept(root):
    write(root, "mcp-figma", "out", (1, "figma one"), (3, "figma three"), (5, "figma five"))
    # A multi-line message (the supervisor's own log records with a traceback are written this way).
    write(root, "mcp-figma", "error", (2, "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError"))
    write(root, "main-api", "out", (0, "api zero"), (4, "api four"), (6, "api six"))

    done = logs(root, "-n", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"mcp-figma  err | {stamp(2)} Traceback (most recent call last):",
        "mcp-figma  err |   File \"x.py\", line 1",
        "mcp-figma  err | ValueError",
        f"mcp-figma  out | {stamp(3)} figma three",
        f"main-api   out | {stamp(4)} api four",
        f"mcp-figma  out | {stamp(5)} figma five",
        f"main-api   out | {stamp(6)} api six",
    ]
    assert ESC not in done.stdout  # not a terminal: no colour

    errors = logs(root, "--errors")
    assert [line.split(" | ")[0] for line in errors.stdout.splitlines()] == ["mcp-figma  err"] * 3

    named = logs(root, "main-api", "-n", "1")
    assert named.stdout.splitlines() == [f"main-api out | {stamp(6)} api six"]


def test_default_is_fifteen_records_and_a_fresh_log_is_topped_up_from_its_rotated_file(root):
    write(root, "mcp-slack", "out", *((i, f"slack {i}") for i in range(40)))
    done = logs(root)
    assert [line.split()[-1] for line in done.stdout.splitlines()] == [str(i) for i in range(25, 40)]

    # Rotated a moment ago: x.log holds two lines, x.log.1 the rest.
    log_path = root / "logs" / "mcp-slack-out.log"
    log_path.rename(log_path.with_name("mcp-slack-out.log.1"))
    write(root, "mcp-slack", "out", (40, "slack 40"), (41, "slack 41"))
    done = logs(root, "mcp-slack", "-n", "5")
    assert [line.split()[-1] for line in done.stdout.splitlines()] == ["37", "38", "39", "40", "41"]


def test_unknown_name_is_an_error_listing_the_known_ones(root):
    write(root, "toy", "out", (0, "a process the Procfile does not list, but with logs"))
    done = logs(root, "mcp-figma", "nope")
    assert done.returncode == 2 and done.stdout == ""
    assert "unknown process 'nope'" in done.stderr
    assert "known: main-api, mcp-figma, mcp-github, mcp-slack, toy" in done.stderr
    assert logs(root, "toy").stdout.endswith("a process the Procfile does not list, but with logs\n")


def test_colour_on_a_terminal_unless_no_color(root):
    write(root, "main-api", "out", (0, "api"))
    write(root, "mcp-figma", "error", (1, "figma failed"))
    code, coloured = in_pty(root)
    assert code == 0
    lines = coloured.splitlines()
    # Each process in its own colour (from its place in the Procfile), the error stream's label in red.
    assert lines[0].startswith(f"{ESC}36mmain-api   out{ESC}36m |{ESC}0m ") and lines[0].endswith(" api")
    assert lines[1].startswith(f"{ESC}33mmcp-figma  {ESC}31merr{ESC}33m |{ESC}0m ")
    code, plain = in_pty(root, NO_COLOR="1")
    assert code == 0 and ESC not in plain and plain.splitlines()[1].startswith("mcp-figma  err | ")
    assert ESC in logs(root, "--color", "always").stdout


class Lines:
    """The output of a running process, line by line, as it comes."""

    def __init__(self, proc):
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self.queue.put(line.rstrip("\n"))

    def until(self, predicate, timeout=30):
        end = time.monotonic() + timeout
        while not predicate(self.seen):
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; output so far: {self.seen[-20:]}")
            try:
                self.seen.append(self.queue.get(timeout=left))
            except queue.Empty:
                pass
        return self.seen


def test_follow_reads_across_rotations_without_losing_or_repeating_a_line(root):
    # About seven lines per file; enough backups that a follower descheduled for a while loses nothing.
    small = {"max_bytes": 300, "backups": 20}
    write(root, "mcp-figma", "out", *((i, f"before {i}") for i in range(3)), **small)
    proc = subprocess.Popen([SCRIPT, "mcp-figma", "mcp-github", "-f", "-n", "2"], env=script_env(root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = Lines(proc)
        out.until(lambda seen: len(seen) >= 2)
        assert [line.split()[-1] for line in out.seen] == ["1", "2"]

        logfile = LogFile(root / "logs" / "mcp-figma-out.log", small["max_bytes"], small["backups"])
        logfile.write_line("live 0")
        out.until(lambda seen: seen[-1].endswith("live 0"))  # printed while the command keeps running
        written = ["live 0"]
        # Slowly (several rotations seen one at a time), then in bursts (two or three rotations between
        # two reads of the follower, which then reads the rotated files it slept through).
        for i in range(1, 25):
            logfile.write_line(f"live {i}")
            written.append(f"live {i}")
            time.sleep(0.05)
        for burst in range(3):
            for i in range(20):
                logfile.write_line(f"burst {burst}.{i}")
                written.append(f"burst {burst}.{i}")
            time.sleep(0.6)
        logfile.close()
        # A process whose log did not exist when following began: read from its first line.
        write(root, "mcp-github", "error", (100, "github appeared"))

        out.until(lambda seen: any(line.endswith("github appeared") for line in seen)
                  and any(line.endswith("burst 2.19") for line in seen))
        assert len(list((root / "logs").glob("mcp-figma-out.log.*"))) >= 8  # it did rotate, many times
        figma = [line.split(" | ", 1)[1].split(" ", 1)[1] for line in out.seen[2:] if line.startswith("mcp-figma")]
        assert figma == written
        assert out.seen[-1].startswith("mcp-github err | ")
    finally:
        proc.terminate()
        proc.wait(10)


def test_follow_starts_at_the_end_and_is_stopped_by_ctrl_c(root):
    write(root, "main-api", "out", (0, "old line"))
    # SIGINT as at a terminal: a suite started in the background of a non-interactive shell passes it on ignored.
    proc = subprocess.Popen([SCRIPT, "main-api", "-f", "-n", "0"], env=script_env(root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = Lines(proc)
    # Nothing printed yet, so wait until the follower has its starting offset (the file is open).
    target = str((root / "logs" / "main-api-out.log").resolve())
    wait_for(lambda: any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == target
                         for pid in _tree(proc.pid) for fd in _fds(pid)), 30, what="the log file opened")
    write(root, "main-api", "out", (1, "new line"))
    assert out.until(lambda seen: len(seen) >= 1) == [f"main-api out | {stamp(1)} new line"]
    proc.send_signal(2)
    assert proc.wait(10) == 130
    assert "Traceback" not in proc.stderr.read()


def _tree(pid):
    """``pid`` and its descendants (the script execs Python, but be safe)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _fds(pid):
    try:
        return os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
