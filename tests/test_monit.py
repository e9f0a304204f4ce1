"""scripts/status --watch (mcp.ops.monit): request rates from /metrics, frames without a terminal, and the
curses screen in a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from mcp.formation.state import read_states
from mcp.ops.scrape import Counts, count_requests, rates
from mcp.server.metrics import Metrics
from tests.support import ROOT, free_port, http, wait_for

SCRIPT = str(ROOT / "scripts" / "status")
FAST = ["--min-uptime", "2", "--health-timeout", "30", "--health-interval", "1", "--fast-health-interval", "0.25",
        "--stop-timeout", "2"]


# ------------------------------------------------------------------------------------------------
# Rates


def test_requests_and_5xx_errors_are_counted_from_a_real_exposition_without_the_scrapes():
    metrics = Metrics("mcp-figma")
    for status in (200, 200, 404, 502, 500):
        metrics.request("ToolCallHandler", "POST", status, 0.01)
    for _ in range(7):
        metrics.request("MetricsHandler", "GET", 200, 0.001)  # scrapes, ours included: not traffic
    try:
        assert count_requests(metrics.render().decode()) == (5, 2)
    finally:
        metrics.close()


def test_rates_between_readings_and_after_a_counter_reset():
    assert rates(None, Counts(10, 1, 5.0)) is None  # the first frame
    pace = rates(Counts(10, 1, 5.0), Counts(30, 2, 7.0))
    assert (pace.requests, pace.errors) == (10, 0.5)
    reset = rates(Counts(1000, 10, 5.0), Counts(8, 0, 7.0))  # restarted in between: it counted from zero
    assert (reset.requests, reset.errors) == (4, 0)


# ------------------------------------------------------------------------------------------------
# A real supervised service


@pytest.fixture
def figma_formation(env, tmp_path):
    """The Figma service under its supervisor, publishing into tmp_path/.run; stopped afterwards."""
    port = free_port()
    run_dir = tmp_path / ".run"
    proc_env = {k: v for k, v in env.items() if not k.startswith("SUPERVISOR_")}
    proc_env["FIGMA_PORT"] = str(port)
    proc = subprocess.Popen([sys.executable, "-m", "mcp.ops.supervisor", "--name", "mcp-figma", "--port", str(port),
                             "--run-dir", str(run_dir), "--log-dir", str(tmp_path / "logs"), *FAST, "--",
                             sys.executable, "-m", "services.figma"], cwd=ROOT, env=proc_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(s.get("health") == "healthy" for s in read_states(run_dir)), 60, interval=0.2,
                 what="mcp-figma healthy under its supervisor")
        yield run_dir, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Traffic:
    """Requests to a service from a thread until stopped."""

    def __init__(self, url):
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.thread.start()

    def _run(self, url):
        while not self.stop.is_set():
            http("GET", url + "/health", timeout=5)
            http("GET", url + "/no/such/path", timeout=5)  # a 404 counts as a request, not as an error
            self.sent += 2
            time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def frames(text):
    """The frames of --watch output: each a dict of process name -> its table cells."""
    out = []
    for chunk in text.strip("\n").split("\n\n"):
        rows = {}
        for line in chunk.splitlines():
            if line.startswith("│") and not line.startswith("│ process"):
                cells = [c.strip() for c in line.strip("│").split("│")]
                rows[cells[0]] = cells
        out.append((chunk.splitlines()[0], rows))
    return out


def test_watch_without_a_terminal_prints_frames_with_request_rates(figma_formation):
    run_dir, url = figma_formation
    with Traffic(url) as traffic:
        wait_for(lambda: traffic.sent > 10, 30, what="some traffic")
        done = subprocess.run([SCRIPT, "--watch", "--count", "2", "--run-dir", str(run_dir)], capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (title1, first), (title2, second) = frames(done.stdout)
    assert title1.startswith("scripts/status --watch ") and title1.endswith("every 1s")
    header = next(line for line in done.stdout.splitlines() if line.startswith("│ process"))
    assert [c.strip() for c in header.strip("│").split("│")][-2:] == ["req/s", "err/s"]
    assert first["mcp-figma"][2:4] == ["running", "healthy"]
    assert first["mcp-figma"][-2:] == ["-", "-"]  # no earlier reading
    assert float(second["mcp-figma"][-2]) > 0 and float(second["mcp-figma"][-1]) == 0
    assert second["mcp-figma"][6].endswith("%") and second["mcp-figma"][7].endswith("MB")


# ------------------------------------------------------------------------------------------------
# The curses screen in a pseudo-terminal


class Terminal:
    """scripts/status --watch with a pseudo-terminal as its controlling terminal (120x40, TERM=xterm)."""

    def __init__(self, *args, lang="C.UTF-8"):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.modes = termios.tcgetattr(self.slave)
        env = {**os.environ, "TERM": "xterm", "LANG": lang, "LC_ALL": lang}
        self.proc = subprocess.Popen([SCRIPT, "--watch", *args], env=env, stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, start_new_session=True, preexec_fn=_take_terminal)
        self.output = b""

    def read_until(self, needle, timeout=60):
        end = time.monotonic() + timeout
        while needle not in self.output:
            left = end - time.monotonic()
            assert left > 0, f"timed out waiting for {needle!r}; got {self.output[-2000:]!r}"
            self._read(min(left, 0.5))
        return self.output

    def wait(self, timeout=30):
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            self._read(0.1)
        self._read(0.1)
        return self.proc.wait(1)

    def _read(self, timeout):
        # poll, not select: earlier tests in the same process may have pushed descriptors past 1024.
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        if poller.poll(timeout * 1000):
            try:
                self.output += os.read(self.master, 65536)
            except OSError:  # the child has gone and closed its side
                pass

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def _take_terminal():
    # The child leads a new session; make stdin (the pty) its controlling terminal, so Ctrl-C there is SIGINT.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    # As at a terminal: a suite started in the background of a non-interactive shell passes SIGINT on ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# A terminal whose locale is plain ASCII (ssh without LANG) gets ASCII borders instead of unprintable ones.
@pytest.mark.parametrize(("lang", "border"), [("C.UTF-8", "│ process".encode()), ("C", b"| process")])
def test_screen_shows_the_table_q_leaves_and_the_terminal_is_restored(figma_formation, lang, border):
    run_dir, _ = figma_formation
    term = Terminal("--run-dir", str(run_dir), "--interval", "0.5", lang=lang)
    try:
        term.read_until(b"q to quit")
        term.read_until(b"mcp-figma")
        term.read_until(b"req/s")
        term.read_until(border)
        assert b"\x1b[?1049h" in term.output  # the alternate screen, like top and pm2 monit
        os.write(term.master, b"q")
        assert term.wait() == 0
        assert b"\x1b[?1049l" in term.output.split(b"\x1b[?1049h")[-1]  # and back to the shell's screen
        assert termios.tcgetattr(term.slave) == term.modes  # echo and line editing are back
    finally:
        term.close()


def test_ctrl_c_leaves_the_screen_with_status_0(tmp_path):
    term = Terminal("--run-dir", str(tmp_path / "nothing"))
    try:
        term.read_until(b"no processes are running")
        os.write(term.master, b"\x03")
        assert term.wait() == 0
        assert b"Traceback" not in term.output
        assert termios.tcgetattr(term.slave) == term.modes
    finally:
        term.close()
