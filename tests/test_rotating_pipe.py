"""python -m mcp.ops.rotating_pipe, which gives honcho's console (logs/honcho.log) the per-process logs' rotation."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from tests.support import ROOT

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d ")


def pipe(path, env_extra, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    return subprocess.Popen([sys.executable, "-m", "mcp.ops.rotating_pipe", str(path), *args], cwd=ROOT,
                            env={**env, **env_extra}, stdin=subprocess.PIPE, stderr=subprocess.PIPE)


def test_input_beyond_the_cap_is_rotated_with_the_supervisors_settings_and_nothing_is_lost(tmp_path):
    log = tmp_path / "honcho.log"
    proc = pipe(log, {"SUPERVISOR_LOG_MAX_BYTES": "2000", "SUPERVISOR_LOG_BACKUPS": "2"})
    # Signals a terminal or a stop would send must not cut the writer off from its log.
    time.sleep(0.5)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        proc.send_signal(sig)
    lines = b"".join(b"12:00:00 mcp-figma.1 | line %d %s\n" % (i, b"x" * 40) for i in range(400))
    _, err = proc.communicate(lines + b"no newline at the end", timeout=30)
    assert proc.returncode == 0, err  # it ends when its input does
    assert sorted(p.name for p in tmp_path.iterdir()) == ["honcho.log", "honcho.log.1", "honcho.log.2"]
    text = ""
    for name in ("honcho.log.2", "honcho.log.1", "honcho.log"):
        part = (tmp_path / name).read_text()
        assert len(part.encode()) <= 2000
        assert all(TIMESTAMP.match(line) for line in part.splitlines())
        text += part
    numbers = [int(m) for m in re.findall(r"\| line (\d+) ", text)]
    assert numbers == list(range(numbers[0], 400))  # the newest lines, in order, none missing
    assert text.endswith("no newline at the end\n")


def test_flags_override_the_environment_and_bad_settings_are_refused(tmp_path):
    proc = pipe(tmp_path / "a.log", {"SUPERVISOR_LOG_MAX_BYTES": "1000000"}, "--max-bytes", "300", "--backups", "1")
    proc.communicate(b"".join(b"line %d\n" % i for i in range(100)), timeout=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log", "a.log.1"]
    bad = pipe(tmp_path / "b.log", {"SUPERVISOR_LOG_BACKUPS": "many"})
    _, err = bad.communicate(b"", timeout=30)
    assert bad.returncode == 2 and b"SUPERVISOR_LOG_BACKUPS must be an integer" in err
