"""The supervisor's published state: what it knows about its child, and the state file readers see.

The document's keys are the state file format that ``mcp.formation.state.read_states``, ``scripts/status``
and the main API read; they do not change without those.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
    """The mutable part of what is published in the state file."""

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
    # The last operator request and its outcome: seq, kind, status (pending/done/failed), reason, child_pid.
    operation: dict[str, Any] | None = None
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


def state_document(config: SupervisorConfig, s: ChildState, *, pid: int, pid_start_ticks: int | None,
                   supervisor_started_at: float, now: float) -> dict[str, Any]:
    """The state file's content."""
    return {
        "name": config.name,
        "pid": pid,
        "pid_start_ticks": pid_start_ticks,
        "child_pid": s.child_pid,
        "status": s.status,
        "health": s.health,
        "restarts": s.restarts,
        "operator_restarts": s.operator_restarts,
        "operation": s.operation,
        "consecutive_unstable": s.consecutive_unstable,
        "started_at": s.started_at,
        "supervisor_started_at": supervisor_started_at,
        "last_exit": s.last_exit,
        "reason": s.reason,
        "port": config.port,
        "health_url": config.health_url,
        "last_health_at": s.last_health_at,
        "log_out": str(config.out_log_path),
        "log_error": str(config.error_log_path),
        "command": list(config.command),
        "updated_at": now,
    }
