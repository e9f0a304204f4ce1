"""The restart policy: which runs count as unstable, how long to wait before the next start, when to give up,
and how the reasons read. Pure functions of the configuration and the run, so the loop stays a loop."""

from __future__ import annotations

from mcp.ops.supervisor.child import EXIT_PORT_IN_USE, RunResult, describe_exit
from mcp.ops.supervisor.config import SupervisorConfig


def unstable(result: RunResult, config: SupervisorConfig) -> bool:
    """A run judged hung, or shorter than --min-uptime."""
    return result.ending == "hung" or result.uptime < config.min_uptime


def restart_delay(consecutive_unstable: int, config: SupervisorConfig) -> float | None:
    """Exponential backoff from --backoff-initial up to --backoff-max; None past --max-restarts."""
    if consecutive_unstable > config.max_restarts:
        return None
    exponent = max(consecutive_unstable - 1, 0)
    return min(config.backoff_max, config.backoff_initial * 2 ** exponent)


def run_phrase(result: RunResult, hung: str) -> str:
    """How the run ended, for the log and the state file; ``hung`` is the words for a hung run."""
    return hung if result.ending == "hung" else describe_exit(result.returncode)[2]


def gave_up_reason(result: RunResult, consecutive_unstable: int, config: SupervisorConfig) -> str:
    return (f"{consecutive_unstable} unstable runs in a row (each shorter than {config.min_uptime:g}s or "
            f"unhealthy), gave up after {config.max_restarts} restarts; last run {run_phrase(result, 'unhealthy')}")


def port_in_use_reason(port: int | None, owner: int | None, child_said_so: bool = False,
                       owner_name: str | None = None) -> str:
    """"port 49280 is already in use by pid 4242 (nc)", with what is known of the owner."""
    said = f"child exited with code {EXIT_PORT_IN_USE}"
    if port is None:
        return f"{said} (address already in use)"
    by = "another process" if owner is None else f"pid {owner}" + (f" ({owner_name})" if owner_name else "")
    return f"port {port} is already in use by {by}" + (f" ({said})" if child_said_so else "")
