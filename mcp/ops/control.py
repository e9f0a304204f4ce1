"""``scripts/restart`` and ``scripts/reload``: ask supervisors to restart or reload their child, and wait.

The request is a signal to the supervisor, whose pid (and start time, so a reused pid is not signalled) is
in its state file: SIGUSR2 to restart, SIGHUP to reload (see ``mcp.ops.supervisor.supervisor``). The
supervisor publishes the request as ``operation`` in its state file, with a sequence number, and then its
outcome (``done`` or ``failed`` with the reason); this waits for an operation newer than the one published
before the signal. Processes are handled one after the other, so a reload of ``all`` never has more than
one service starting a successor at a time; a process with several workers replaces them one at a time too.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp.formation.state import read_states

SIGNALS = {"restart": signal.SIGUSR2, "reload": signal.SIGHUP}
POLL_INTERVAL_S = 0.1
# A restart waits for the old child's stop (--stop-timeout, 4 s) and the new one's health (--health-timeout,
# 10 s): a minute leaves room for slow machines and longer settings.
DEFAULT_TIMEOUT_S = 60.0

States = Callable[[], Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    message: str


def states_by_name(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {str(state.get("name")): state for state in read_states(run_dir)}


def select(known: Sequence[str], wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the processes to act on, in order; the names asked for that are not known). ``all`` means every one."""
    if "all" in wanted:
        return list(known), []
    unknown = [name for name in wanted if name not in known]
    return [name for name in dict.fromkeys(wanted) if name in known], unknown


def _seq(state: Mapping[str, Any]) -> int:
    operation = state.get("operation")
    seq = operation.get("seq") if isinstance(operation, Mapping) else None
    return seq if isinstance(seq, int) else 0


def operate(kind: str, name: str, states: States, timeout_s: float = DEFAULT_TIMEOUT_S,
            kill: Callable[[int, int], None] = os.kill) -> Outcome:
    """Signal ``name``'s supervisor to ``kind`` (restart or reload) its child and wait for the outcome."""
    state = states().get(name)
    if state is None or state.get("stale") or state.get("status") == "stopped" or not isinstance(state.get("pid"), int):
        return Outcome(name, False, "its supervisor is not running (scripts/start-all-services starts the formation)")
    before, old_child = _seq(state), state.get("child_pid")
    workers = state.get("workers")
    old_children = [w.get("child_pid") for w in workers if isinstance(w, Mapping)] if isinstance(workers, list) else []
    try:
        kill(state["pid"], SIGNALS[kind])
    except OSError as e:
        return Outcome(name, False, f"cannot signal its supervisor (pid {state['pid']}): {e.strerror or e}")
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        time.sleep(POLL_INTERVAL_S)
        state = states().get(name) or {}
        operation = state.get("operation")
        if state.get("stale"):
            return Outcome(name, False, "its supervisor exited")
        if _seq(state) > before and isinstance(operation, Mapping) and operation.get("status") != "pending":
            if len(old_children) > 1:
                return _workers_outcome(name, kind, operation, old_children)
            return _outcome(name, kind, operation, old_child)
    log_hint = state.get("log_error") or "its error log"
    return Outcome(name, False, f"no outcome within {timeout_s:g}s (see {log_hint})")


def _outcome(name: str, kind: str, operation: Mapping[str, Any], old_child: Any) -> Outcome:
    new = operation.get("child_pid")
    if operation.get("status") != "done":
        return Outcome(name, False, f"{kind} failed: {operation.get('reason') or 'no reason given'}")
    done = operation.get("kind")
    if done == "reload" and isinstance(old_child, int):
        return Outcome(name, True, f"reloaded: pid {new} is healthy and serving; pid {old_child} finishes its "
                                   "requests and exits")
    was = f" (was pid {old_child})" if isinstance(old_child, int) else " (was not running)"
    return Outcome(name, True, f"restarted: pid {new} is healthy{was}")


def _pids(pids: Sequence[Any]) -> str:
    return ", ".join("-" if pid is None else str(pid) for pid in pids)


def _workers_outcome(name: str, kind: str, operation: Mapping[str, Any], old: Sequence[Any]) -> Outcome:
    """The outcome for a process with several workers, each replaced in turn."""
    if operation.get("status") != "done":
        return Outcome(name, False, f"{kind} failed: {operation.get('reason') or 'no reason given'}")
    new = operation.get("child_pids") or [operation.get("child_pid")]
    if operation.get("kind") == "reload":
        return Outcome(name, True, f"reloaded {len(new)} workers one at a time: pids {_pids(new)} are healthy and "
                                   f"serving; pids {_pids(old)} finish their requests and exit")
    return Outcome(name, True, f"restarted {len(new)} workers one at a time: pids {_pids(new)} are healthy "
                               f"(were {_pids(old)})")
