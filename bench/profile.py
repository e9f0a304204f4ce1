"""Sampling the service under load with py-spy, and the top entries of what it saw.

py-spy is not a project dependency: ``.venv/bin/pip install py-spy`` (or any py-spy on PATH). It
samples from outside the process (``--nonblocking``: the service is never paused), so the profiled
run's throughput is close to, but not the same as, the measured one; the bench never reports it
as a benchmark figure. The raw output (collapsed stacks, one function per frame) is kept next to
the JSON for flame graph tools.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, duration_s: float, output: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s))), "--rate", str(rate),
            "--format", "raw", "--function", "--nonblocking", "--output", str(output)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def short_file(path: str) -> str:
    """A frame's file without the virtualenv or checkout prefix: ``tornado/web.py``, ``mcp/tenancy/instances.py``."""
    for marker in ("/site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        if marker in path:
            return path.split(marker, 1)[1]
    for top in ("/mcp/", "/services/", "/bench/", "/db/"):
        if top in path:
            return top.strip("/") + "/" + path.rsplit(top, 1)[1]
    return path


def frame_name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    return f"{m['func']} ({short_file(m['file'])})"


def frame_module(frame: str) -> str:
    m = _FRAME.match(frame)
    return short_file(m["file"]) if m else frame


@dataclass(frozen=True)
class Entry:
    name: str
    samples: int
    percent: float


@dataclass(frozen=True)
class ProfileSummary:
    samples: int
    self_top: list[Entry]
    inclusive_top: list[Entry]
    platform_inclusive: list[Entry]  # the platform's own functions (mcp/, services/), with what they call
    module_self: list[Entry]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(raw: Path, top: int = 25) -> ProfileSummary:
    """Self time (the leaf frame), inclusive time (anywhere on the stack) and self time per file."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf[frame_name(frames[-1])] += count
        modules[frame_module(frames[-1])] += count
        for name in {frame_name(f) for f in frames}:
            inclusive[name] += count

    def entries(counter: Counter[str]) -> list[Entry]:
        return [Entry(n, c, round(100.0 * c / total, 1)) for n, c in counter.most_common(top)] if total else []

    own = Counter({n: c for n, c in inclusive.items() if _is_platform(n)})
    return ProfileSummary(total, entries(leaf), entries(inclusive), entries(own), entries(modules))


def _is_platform(name: str) -> bool:
    """A request-path function of ours (not the process's entry point, which is on every stack)."""
    return ("(mcp/" in name or "(services/" in name) and not name.startswith(("run (", "<module> (", "_main ("))
