"""The supervisor's published state: what it knows about each worker (child), and the state file readers see.

The document's keys are the state file format that ``mcp.formation.state.read_states``, ``scripts/status``
and the main API read; they do not change without those. The top-level keys describe the process as a whole
(with one worker, exactly that worker); ``workers`` holds one entry per worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp.formation.state import StateFile
from mcp.ops.supervisor.config import SupervisorConfig

log = logging.getLogger(__name__)

STATUSES = ("starting", "running", "restarting", "errored", "stopped")
HEALTHS = ("unknown", "healthy", "unhealthy")


@dataclass
class ChildState:
    """What is published about one worker (its successive children)."""

    status: str = "starting"
    health: str = "unknown"
    child_pid: int | None = None
    restarts: int = 0
    consecutive_unstable: int = 0
    started_at: float | None = None
    last_exit: dict[str, Any] | None = None
    reason: str | None = None
    last_health_at: float | None = None
    # Restarts and reloads an operator asked for (scripts/restart, scripts/reload); ``restarts`` counts only
    # the supervisor's own (crashes, hangs).
    operator_restarts: int = 0
    starts: int = field(default=0, repr=False)


class Publisher:
    """Write the state file; a failure (a full disk, a removed folder) must not take the supervisor down.

    A failure is logged when it first happens (and when it changes), not at every attempt, so a lasting
    one cannot flood the log; success afterwards is logged once too.
    """

    def __init__(self, path: Path) -> None:
        self.file = StateFile(path)
        self.error: str | None = None  # the last failure to publish, so it is logged once

    @property
    def path(self) -> Path:
        return self.file.path

    def save(self, document: Mapping[str, Any]) -> None:
        try:
            self.file.write(document)
        except OSError as e:
            error = f"{type(e).__name__}: {e.strerror or e}"
            if error != self.error:
                log.warning("cannot write %s: %s", self.path, error)
            self.error = error
            return
        if self.error is not None:
            log.info("state file %s written again", self.path)
            self.error = None

    def needs_writing(self) -> bool:
        """True after a failed write, or once the file (or its folder) was removed; logs the removal."""
        if self.error is not None:
            return True
        if not self.path.exists():
            log.info("state file %s was removed; writing it again", self.path)
            return True
        return False


# Worst first: the process as a whole shows the least settled state of its workers.
_STATUS_ORDER = ("errored", "restarting", "starting", "running", "stopped")


def worker_document(index: int, s: ChildState) -> dict[str, Any]:
    """One worker's entry in ``workers``."""
    return {
        "index": index,
        "child_pid": s.child_pid,
        "status": s.status,
        "health": s.health,
        "restarts": s.restarts,
        "operator_restarts": s.operator_restarts,
        "consecutive_unstable": s.consecutive_unstable,
        "started_at": s.started_at,
        "last_exit": s.last_exit,
        "reason": s.reason,
        "last_health_at": s.last_health_at,
    }


def overall(workers: Sequence[ChildState]) -> dict[str, Any]:
    """The top-level fields: the one worker's own, or with several a summary (the least settled status,
    healthy only when every worker is, restarts summed, the latest exit, each errored worker's reason)."""
    if len(workers) == 1:
        return {k: v for k, v in worker_document(0, workers[0]).items() if k != "index"}
    statuses = {w.status for w in workers}
    status = next(s for s in _STATUS_ORDER if s in statuses)
    healths = {w.health for w in workers}
    health = "healthy" if healths == {"healthy"} else "unhealthy" if "unhealthy" in healths else "unknown"
    pids = [w.child_pid for w in workers if w.child_pid is not None]
    started = [w.started_at for w in workers if w.child_pid is not None and w.started_at is not None]
    exits = [w.last_exit for w in workers if w.last_exit]
    checks = [w.last_health_at for w in workers if w.last_health_at is not None]
    reasons = [f"worker {i}: {w.reason}" for i, w in enumerate(workers) if w.reason]
    return {
        "child_pid": pids[0] if pids else None,
        "status": status,
        "health": health,
        "restarts": sum(w.restarts for w in workers),
        "operator_restarts": sum(w.operator_restarts for w in workers),
        "consecutive_unstable": max(w.consecutive_unstable for w in workers),
        "started_at": min(started) if started else None,
        "last_exit": max(exits, key=lambda e: e.get("at") or 0) if exits else None,
        "reason": "; ".join(reasons) or None,
        "last_health_at": min(checks) if checks else None,
    }


def state_document(config: SupervisorConfig, workers: Sequence[ChildState], operation: dict[str, Any] | None, *,
                   pid: int, pid_start_ticks: int | None, supervisor_started_at: float, now: float) -> dict[str, Any]:
    """The state file's content."""
    return {
        "name": config.name,
        "pid": pid,
        "pid_start_ticks": pid_start_ticks,
        **overall(workers),
        "operation": operation,
        "supervisor_started_at": supervisor_started_at,
        "port": config.port,
        "health_url": config.health_url,
        "log_out": str(config.out_log_path),
        "log_error": str(config.error_log_path),
        "command": list(config.command),
        "worker_count": len(workers),
        "workers": [worker_document(i, w) for i, w in enumerate(workers)],
        "updated_at": now,
    }
