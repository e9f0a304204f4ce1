"""The supervisors' state files: one JSON document per process under ``<run dir>/state/``, written
atomically by its supervisor and read by ``scripts/status``, the main API and the scripts."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcp.formation.facts import pid_alive, start_ticks


def state_dir(run_dir: Path) -> Path:
    """Where supervisors publish ``<name>.json``."""
    return Path(run_dir) / "state"


class StateFile:
    """Publish a JSON document so readers only ever see a complete old or complete new version."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, data: Mapping[str, Any]) -> None:
        """Write to a temporary file in the same directory, then rename it over the old one.

        The directory is created again if it was removed (an operator's ``rm -rf .run``).
        """
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".tmp")
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes it private; status tools may run as another user
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def read_states(run_dir: Path | str) -> list[dict[str, Any]]:
    """Every supervisor's published state, by name; those whose supervisor died are shown as stale/stopped."""
    states = []
    for path in sorted(state_dir(Path(run_dir)).glob("*.json")):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(state, dict):
            continue
        state["stale"] = False
        if state.get("status") != "stopped" and not supervisor_alive(state):
            state.update(stale=True, status="stopped", child_pid=None, health="unknown")
        states.append(state)
    return states


def supervisor_alive(state: Mapping[str, Any]) -> bool:
    """Whether the process that wrote ``state`` still runs (and is not a later process reusing its pid)."""
    pid = state.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    recorded = state.get("pid_start_ticks")
    current = start_ticks(pid)
    return recorded is None or current is None or recorded == current
