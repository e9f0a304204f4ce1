"""The supervisor's configuration: every option with its flag, environment variable and default, read once.

Each option is a flag (``--max-restarts``), else its environment variable (``SUPERVISOR_MAX_RESTARTS``),
else its default; a malformed value is a SupervisorConfigError naming the flag or the variable.
"""

from __future__ import annotations

import argparse
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp.formation.state import state_dir
from mcp.paths import PROJECT_ROOT

PROG = "python -m mcp.ops.supervisor"
# Per-request limit of a health check; never longer than the whole startup allowance (--health-timeout).
HEALTH_REQUEST_TIMEOUT = 2.0
# More workers than this on one port is a typo, not a plan.
MAX_WORKERS = 256


class SupervisorConfigError(ValueError):
    """An option or its environment variable is malformed; the message names it."""



@dataclass(frozen=True)
class _Option:
    """One command-line option, its environment variable and its default."""

    flag: str
    kind: type
    default: Any
    env: str
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


_OPTIONS: tuple[_Option, ...] = (
    _Option("--name", str, None, "SUPERVISOR_NAME", "process name; names the log and state files"),
    _Option("--port", int, None, "SUPERVISOR_PORT", "port the child listens on (checked before each start)"),
    _Option("--workers", str, None, "", "worker processes sharing the port: a number or 'auto' (one per core); "
            "env <NAME>_WORKERS, NAME from --name without mcp-/main- (FIGMA_WORKERS for mcp-figma)"),
    _Option("--health-url", str, None, "SUPERVISOR_HEALTH_URL",
            "GET this URL for health (default http://127.0.0.1:<port>/health)"),
    _Option("--max-restarts", int, 5, "SUPERVISOR_MAX_RESTARTS", "consecutive unstable restarts before errored"),
    _Option("--min-uptime", float, 10.0, "SUPERVISOR_MIN_UPTIME", "seconds a run must last to count as stable"),
    _Option("--health-timeout", float, 10.0, "SUPERVISOR_HEALTH_TIMEOUT",
            "seconds a new child has to answer its health URL"),
    _Option("--health-interval", float, 10.0, "SUPERVISOR_HEALTH_INTERVAL", "seconds between health checks"),
    _Option("--fast-health-interval", float, 5.0, "SUPERVISOR_FAST_HEALTH_INTERVAL",
            "seconds between health checks shortly after a start and after a failed check"),
    _Option("--fast-health-window", float, 60.0, "SUPERVISOR_FAST_HEALTH_WINDOW",
            "how long after a start the fast interval applies"),
    _Option("--unhealthy-threshold", int, 3, "SUPERVISOR_UNHEALTHY_THRESHOLD",
            "consecutive failed checks after which the child is killed and restarted"),
    _Option("--stop-timeout", float, 4.0, "SUPERVISOR_STOP_TIMEOUT",
            "seconds between SIGTERM and SIGKILL (keep below honcho's 5)"),
    _Option("--log-dir", Path, None, "MCP_LOG_DIR", "directory of the log files (default <root>/logs)"),
    _Option("--run-dir", Path, None, "MCP_RUN_DIR", "directory of state/<name>.json (default <root>/.run)"),
    _Option("--log-max-bytes", int, 10 * 1024 * 1024, "SUPERVISOR_LOG_MAX_BYTES", "rotate a log at this size"),
    _Option("--log-backups", int, 5, "SUPERVISOR_LOG_BACKUPS", "rotated files kept per log"),
    _Option("--backoff-initial", float, 0.5, "SUPERVISOR_BACKOFF_INITIAL", "first restart delay in seconds"),
    _Option("--backoff-max", float, 15.0, "SUPERVISOR_BACKOFF_MAX", "longest restart delay in seconds"),
    _Option("--fail-fast", bool, False, "SUPERVISOR_FAIL_FAST", "exit 1 instead of idling when errored"),
)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SupervisorConfig:
    """Everything the supervisor needs, read once from argv and the environment."""

    name: str
    command: tuple[str, ...]
    log_dir: Path
    run_dir: Path
    port: int | None = None
    health_url: str | None = None
    max_restarts: int = 5
    min_uptime: float = 10.0
    health_timeout: float = 10.0
    health_interval: float = 10.0
    fast_health_interval: float = 5.0
    fast_health_window: float = 60.0
    unhealthy_threshold: int = 3
    stop_timeout: float = 4.0
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 15.0
    fail_fast: bool = False
    workers: int = 1

    @property
    def metrics_dir(self) -> Path:
        """The workers' shared PROMETHEUS_MULTIPROC_DIR, emptied when the supervisor starts (several workers)."""
        return self.run_dir / "metrics" / self.name

    @property
    def out_log_path(self) -> Path:
        return self.log_dir / f"{self.name}-out.log"

    @property
    def error_log_path(self) -> Path:
        return self.log_dir / f"{self.name}-error.log"

    @property
    def state_path(self) -> Path:
        return state_dir(self.run_dir) / f"{self.name}.json"

    @property
    def health_request_timeout(self) -> float:
        """Per-request limit; never longer than the whole startup allowance."""
        return min(HEALTH_REQUEST_TIMEOUT, self.health_timeout)

    @classmethod
    def from_argv(cls, argv: Sequence[str], env: Mapping[str, str]) -> SupervisorConfig:
        """Parse ``[options] -- command...``; options fall back to environment variables, then defaults."""
        argv = list(argv)
        if "--" in argv:
            split = argv.index("--")
            options, command = argv[:split], argv[split + 1:]
        else:
            options, command = argv, []
        args = vars(_parser().parse_args(options))
        values = {opt.dest: _resolve(opt, args[opt.dest], env) for opt in _OPTIONS if opt.dest != "workers"}
        values["workers"] = _workers(args["workers"], values["name"], env)
        if values["health_url"] is None and values["port"] is not None:
            values["health_url"] = f"http://127.0.0.1:{values['port']}/health"
        # The scripts export MCP_PROJECT_ROOT; scripts/status and the main API look there too.
        root = Path(env.get("MCP_PROJECT_ROOT") or PROJECT_ROOT)
        values["log_dir"] = Path(values["log_dir"] or root / "logs").absolute()
        values["run_dir"] = Path(values["run_dir"] or root / ".run").absolute()
        config = cls(command=tuple(command), **values)
        config.validate()
        return config

    def validate(self) -> None:
        """Reject values the loop cannot work with, naming the option."""
        if not self.name or not _NAME_RE.fullmatch(self.name):
            raise SupervisorConfigError("--name is required and may only contain letters, digits, '.', '_' and '-'")
        if not self.command:
            raise SupervisorConfigError("no command given; put it after '--'")
        if self.port is not None and not 0 < self.port < 65536:
            raise SupervisorConfigError(f"--port must be between 1 and 65535, got {self.port}")
        if self.health_url is not None:
            url = urllib.parse.urlsplit(self.health_url)
            _require(url.scheme in ("http", "https") and bool(url.hostname),
                     f"--health-url must be an http(s) URL with a host, got {self.health_url!r}")
        _require(1 <= self.workers <= MAX_WORKERS, f"--workers must be between 1 and {MAX_WORKERS}")
        _require(self.max_restarts >= 0, "--max-restarts must not be negative")
        _require(self.unhealthy_threshold >= 1, "--unhealthy-threshold must be at least 1")
        _require(self.log_max_bytes >= 1, "--log-max-bytes must be positive")
        _require(self.log_backups >= 0, "--log-backups must not be negative")
        _require(min(self.min_uptime, self.fast_health_window, self.backoff_initial) >= 0,
                 "durations must not be negative")
        _require(min(self.health_timeout, self.health_interval, self.fast_health_interval, self.stop_timeout) > 0,
                 "--health-timeout, --health-interval, --fast-health-interval and --stop-timeout must be positive")
        _require(self.backoff_max >= self.backoff_initial, "--backoff-max must be at least --backoff-initial")


def log_rotation(env: Mapping[str, str]) -> tuple[int, int]:
    """(max bytes, backups) from SUPERVISOR_LOG_MAX_BYTES / SUPERVISOR_LOG_BACKUPS, for other logs to match."""
    by_dest = {opt.dest: opt for opt in _OPTIONS}
    max_bytes = _resolve(by_dest["log_max_bytes"], None, env)
    backups = _resolve(by_dest["log_backups"], None, env)
    _require(max_bytes >= 1, "SUPERVISOR_LOG_MAX_BYTES must be positive")
    _require(backups >= 0, "SUPERVISOR_LOG_BACKUPS must not be negative")
    return max_bytes, backups


def workers_env(name: str | None) -> str:
    """The variable that sets a process's worker count: ``mcp-figma`` -> ``FIGMA_WORKERS``, ``main-api`` ->
    ``API_WORKERS`` (the same stem as its ``<NAME>_PORT``)."""
    stem = (name or "").removeprefix("mcp-").removeprefix("main-")
    return re.sub(r"[^A-Za-z0-9]", "_", stem).upper() + "_WORKERS"


def parse_workers(raw: str, source: str) -> int:
    """A worker count: a positive integer, or ``auto`` for the cores this process may run on."""
    if raw.strip().lower() == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    try:
        count = int(raw)
    except ValueError:
        raise SupervisorConfigError(f"{source} must be a number of workers or 'auto', got {raw!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise SupervisorConfigError(f"{source} must be between 1 and {MAX_WORKERS}, got {count}")
    return count


def _workers(given: str | None, name: str | None, env: Mapping[str, str]) -> int:
    """--workers, else ``<NAME>_WORKERS``, else 1."""
    if given is not None:
        return parse_workers(given, "--workers")
    variable = workers_env(name)
    if env.get(variable, "") != "":
        return parse_workers(env[variable], variable)
    return 1


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SupervisorConfigError(message)


def _parser() -> argparse.ArgumentParser:
    """Options only: the command after '--' is split off before argparse sees it."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a command, restart it when it crashes, health-check it and log its output.",
        epilog=f"Usage: {PROG} --name NAME [options] -- COMMAND [ARGS...]",
        allow_abbrev=False,
    )
    for opt in _OPTIONS:
        if opt.dest == "workers":
            parser.add_argument(opt.flag, type=str, default=None, metavar="N", help=f"{opt.help} (default 1)")
        elif opt.kind is bool:
            parser.add_argument(opt.flag, action="store_const", const=True, default=None,
                                help=f"{opt.help} (env {opt.env})")
        else:
            parser.add_argument(opt.flag, type=str, default=None, metavar=opt.dest.upper(),
                                help=f"{opt.help} (env {opt.env}, default {opt.default})")
    return parser


def _resolve(opt: _Option, given: Any, env: Mapping[str, str]) -> Any:
    """The flag if given, else its environment variable, else the default; converted to the option's type."""
    if given is not None:
        raw, source = given, opt.flag
    elif env.get(opt.env, "") != "":
        raw, source = env[opt.env], opt.env
    else:
        return opt.default
    if opt.kind is bool:
        if raw is True or str(raw).lower() in _TRUE:
            return True
        if str(raw).lower() in _FALSE:
            return False
        raise SupervisorConfigError(f"{source} must be a boolean, got {raw!r}")
    try:
        return opt.kind(raw)
    except ValueError:
        what = "an integer" if opt.kind is int else "a number"
        raise SupervisorConfigError(f"{source} must be {what}, got {raw!r}") from None
