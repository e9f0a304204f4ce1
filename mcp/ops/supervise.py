"""Supervise one Procfile process: restart it on crashes, health-check it, log its output, publish its state.

Usage (one line per Procfile entry)::

    python -m mcp.ops.supervise --name mcp-figma --port 49280 -- python -m services.figma

The child runs in its own process group, tied to the supervisor with PR_SET_PDEATHSIG so it never
outlives it. Its stdout/stderr lines are echoed (honcho shows them) and appended, timestamped, to
``<log-dir>/<name>-out.log`` and ``<log-dir>/<name>-error.log`` with size-based rotation. Crashes are
restarted with exponential backoff; after ``--max-restarts`` consecutive unstable runs, or when the
port is taken, the status becomes ``errored`` and the supervisor idles until it is stopped, because
exiting would make honcho stop every other process. Health is checked every ``--health-interval``
seconds, and every ``--fast-health-interval`` seconds shortly after a start or once a check has failed,
so a frozen child (SIGSTOP, a deadlock) is restarted after ``--unhealthy-threshold`` failures in well
under a minute. The state is published atomically as JSON in ``<run-dir>/state/<name>.json`` and
written again within seconds if that file or its folder is removed; ``read_states`` reads those files
back for status tools.

Exit codes: 0 after SIGTERM/SIGINT, 1 when errored with ``--fail-fast``, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shlex
import signal
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from mcp.formation.health import http_get_ok
from mcp.formation.state import StateFile, process_start_ticks, state_dir
from mcp.paths import PROJECT_ROOT

log = logging.getLogger(__name__)


# Mirrors mcp.server.serve.EXIT_PORT_IN_USE; not imported so the supervisor does not load Tornado or service code.
EXIT_PORT_IN_USE = 98
EXIT_OK = 0
EXIT_ERRORED = 1
EXIT_USAGE = 2

HEALTH_REQUEST_TIMEOUT = 2.0
# How often the supervisor makes sure its state file still exists (someone may `rm -rf .run`).
STATE_RECHECK_INTERVAL = 2.0
STARTUP_POLL_INTERVAL = 0.25
PUMP_DRAIN_TIMEOUT = 1.0
# A child printing without newlines must not make us buffer without bound.
MAX_LINE_BYTES = 64 * 1024
PR_SET_PDEATHSIG = 1

STATUSES = ("starting", "running", "restarting", "errored", "stopped")
HEALTHS = ("unknown", "healthy", "unhealthy")

Spawner = Callable[[Sequence[str]], Awaitable[asyncio.subprocess.Process]]
Prober = Callable[[str, float], Awaitable[bool]]


class ConfigError(ValueError):
    """An option or its environment variable is malformed; the message names it."""


# --------------------------------------------------------------------------------------------------
# Configuration


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
        values = {opt.dest: _resolve(opt, args[opt.dest], env) for opt in _OPTIONS}
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
            raise ConfigError("--name is required and may only contain letters, digits, '.', '_' and '-'")
        if not self.command:
            raise ConfigError("no command given; put it after '--'")
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigError(f"--port must be between 1 and 65535, got {self.port}")
        if self.health_url is not None:
            url = urllib.parse.urlsplit(self.health_url)
            _require(url.scheme in ("http", "https") and bool(url.hostname),
                     f"--health-url must be an http(s) URL with a host, got {self.health_url!r}")
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


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    """Options only: the command after '--' is split off before argparse sees it."""
    parser = argparse.ArgumentParser(
        prog="python -m mcp.ops.supervise",
        description="Run a command, restart it when it crashes, health-check it and log its output.",
        epilog="Usage: python -m mcp.ops.supervise --name NAME [options] -- COMMAND [ARGS...]",
        allow_abbrev=False,
    )
    for opt in _OPTIONS:
        if opt.kind is bool:
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
        raise ConfigError(f"{source} must be a boolean, got {raw!r}")
    try:
        return opt.kind(raw)
    except ValueError:
        what = "an integer" if opt.kind is int else "a number"
        raise ConfigError(f"{source} must be {what}, got {raw!r}") from None


# --------------------------------------------------------------------------------------------------
# Log files


class LogFile:
    """Append timestamped raw lines to a file, rotating it to ``.1``, ``.2``... when it grows too big."""

    def __init__(self, path: Path, max_bytes: int, backups: int,
                 now: Callable[[], datetime] = lambda: datetime.now().astimezone()) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.now = now
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except FileNotFoundError:  # the folder was removed (an operator's rm -rf logs): make it again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def reopen_if_removed(self) -> bool:
        """Start a new file if ours was deleted or renamed away, so lines do not go to an unreachable inode."""
        try:
            ours, named = os.fstat(self._fd), os.stat(self.path)
            if (ours.st_dev, ours.st_ino) == (named.st_dev, named.st_ino):
                return False
        except OSError:
            pass
        self.close()
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        return True

    def write_line(self, text: str) -> None:
        """Write one line prefixed with an ISO-8601 timestamp, rotating first if it would not fit."""
        stamp = self.now().isoformat(timespec="milliseconds")
        data = f"{stamp} {text}\n".encode("utf-8", "replace")
        # An empty file takes any line, so a line longer than max_bytes cannot rotate forever.
        if self._size > 0 and self._size + len(data) > self.max_bytes:
            self.rotate()
        os.write(self._fd, data)
        self._size += len(data)

    def rotate(self) -> None:
        """Shift ``x.log`` -> ``x.log.1`` -> ... keeping ``backups`` old files; start an empty ``x.log``."""
        os.close(self._fd)
        for stale in self._backups_beyond(self.backups):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        if self.backups > 0:
            for index in range(self.backups, 0, -1):
                source = self.path if index == 1 else self._backup(index - 1)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(source, self._backup(index))
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _backups_beyond(self, keep: int) -> list[Path]:
        """Backups left by an earlier run configured to keep more of them."""
        found = []
        for candidate in self.path.parent.glob(f"{glob_escape(self.path.name)}.*"):
            suffix = candidate.name[len(self.path.name) + 1:]
            if suffix.isdigit() and int(suffix) > keep:
                found.append(candidate)
        return found

    def close(self) -> None:
        """Release the file descriptor; later writes are a bug."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


def glob_escape(name: str) -> str:
    """Make a file name safe to use literally in a glob pattern."""
    return re.sub(r"([*?\[])", r"[\1]", name)


class LogFileHandler(logging.Handler):
    """Route the supervisor's own log records into the child's error log."""

    def __init__(self, logfile: LogFile) -> None:
        super().__init__()
        self.logfile = logfile

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.logfile.write_line(self.format(record))
        except Exception:
            self.handleError(record)


# --------------------------------------------------------------------------------------------------
# State files


# --------------------------------------------------------------------------------------------------
# Ports and health


def port_owner(port: int) -> int | None:
    """The pid of a process holding a TCP socket listening on ``port``, or None if it cannot be found."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return None
    owners = [pid for pid in _pids() if targets & _socket_links(pid)]
    # Forked servers share the socket; the lowest pid is usually the parent.
    return min(owners) if owners else None


def _listening_inodes(port: int) -> set[str]:
    """Inodes of LISTEN sockets on ``port`` from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A is TCP_LISTEN
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
                inodes.add(fields[9])
    return inodes


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _socket_links(pid: int) -> set[str]:
    """What the process's file descriptors point to; empty when we may not look."""
    base = f"/proc/{pid}/fd"
    links = set()
    try:
        fds = os.listdir(base)
    except OSError:
        return links
    for fd in fds:
        with contextlib.suppress(OSError):
            links.add(os.readlink(f"{base}/{fd}"))
    return links


async def port_in_use(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:  # refused, unreachable, or TimeoutError
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# --------------------------------------------------------------------------------------------------
# Child processes


def _parent_death_hook() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGKILL the child when the supervisor dies; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # If the supervisor died between fork and prctl, the signal will never come: leave now.
        if os.getppid() != parent:
            os._exit(1)

    return hook


async def spawn_child(command: Sequence[str]) -> asyncio.subprocess.Process:
    """Start ``command`` in its own session with piped output, bound to our lifetime.

    Must be called from the main thread: PDEATHSIG fires when the *thread* that forked exits.
    """
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_parent_death_hook(),
    )


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError as e:
        log.warning("cannot send %s to process group %d: %s", sig.name, pgid, e)
        return False
    return True


def describe_exit(returncode: int) -> tuple[int | None, str | None, str]:
    """(exit code, signal name, phrase) for a subprocess return code; negative means killed by a signal."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return None, name, f"killed by {name}"
    return returncode, None, f"exited with code {returncode}"


@dataclass(frozen=True)
class RunResult:
    """How one run of the child ended: ``exited`` by itself, ``stopped`` on request, or killed as ``hung``."""

    ending: str
    returncode: int
    uptime: float


# --------------------------------------------------------------------------------------------------
# The supervisor


@dataclass
class _State:
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
    starts: int = field(default=0, repr=False)


class Supervisor:
    """Keep one child running: start, watch, health-check, restart with backoff, stop on signal."""

    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        # Collaborators are attributes so tests and embedders can swap them.
        self.clock: Callable[[], float] = time.time
        self.monotonic: Callable[[], float] = time.monotonic
        self.spawn: Spawner = spawn_child
        self.probe: Prober = http_get_ok
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.port_in_use: Callable[[int], Awaitable[bool]] = port_in_use
        self.port_owner: Callable[[int], int | None] = port_owner
        self.stdout: BinaryIO = sys.stdout.buffer
        self.stderr: BinaryIO = sys.stderr.buffer
        self.out_log = LogFile(config.out_log_path, config.log_max_bytes, config.log_backups)
        self.error_log = LogFile(config.error_log_path, config.log_max_bytes, config.log_backups)
        self.state_file = StateFile(config.state_path)
        self.state = _State()
        self.pid = os.getpid()
        self.pid_start_ticks = process_start_ticks(self.pid)
        self.started_at = self.clock()
        self._stop = asyncio.Event()
        self._save_error: str | None = None  # the last failure to publish, so it is logged once

    # ---- lifecycle

    async def run(self) -> int:
        """Supervise until stopped; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        keeper = asyncio.create_task(self._keep_state_published())
        try:
            return await self._supervise()
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def request_stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal handler: begin stopping once; repeated signals are only noted."""
        if self._stop.is_set():
            log.info("received %s while stopping; already on it", signal.Signals(sig).name)
            return
        log.info("received %s, stopping", signal.Signals(sig).name)
        self._stop.set()

    def close(self) -> None:
        """Release the log files once the loop has ended."""
        self.out_log.close()
        self.error_log.close()

    async def _supervise(self) -> int:
        self.save()
        while not self._stop.is_set():
            conflict = await self._port_conflict()
            if conflict:
                return await self._fail(conflict)
            try:
                result = await self._run_once()
            except OSError as e:
                # A missing or non-executable command will not fix itself by retrying.
                return await self._fail(f"cannot start {shlex.join(self.config.command)}: {e}")
            if self._stop.is_set() or result.ending == "stopped":
                break
            if result.ending == "exited" and result.returncode == EXIT_PORT_IN_USE:
                return await self._fail(self._port_in_use_reason(child_said_so=True))
            delay = self._account(result)
            if delay is None:
                return await self._fail(self._gave_up_reason(result))
            self._announce_restart(result, delay)
            if await self._sleep_unless_stopped(delay):
                break
        return self._stopped()

    async def _fail(self, reason: str) -> int:
        """Enter ``errored``: exit with --fail-fast, otherwise idle until stopped so honcho keeps the rest."""
        self.state.status, self.state.reason = "errored", reason
        self.state.child_pid, self.state.health = None, "unknown"
        self.save()
        log.error("errored: %s", reason)
        if self.config.fail_fast:
            log.error("exiting with code %d (--fail-fast)", EXIT_ERRORED)
            return EXIT_ERRORED
        log.error("not restarting; idle until stopped")
        await self._stop.wait()
        return self._stopped()

    def _stopped(self) -> int:
        self.state.status, self.state.child_pid, self.state.health = "stopped", None, "unknown"
        self.save()
        log.info("stopped")
        return EXIT_OK

    # ---- one run of the child

    async def _run_once(self) -> RunResult:
        """Start the child, watch it until it exits, is stopped, or is judged hung; reap it and its group."""
        self.state.status, self.state.health = "starting", "unknown"
        child = await self.spawn(self.config.command)
        started = self.monotonic()
        if self.state.starts > 0:
            self.state.restarts += 1
        self.state.starts += 1
        self.state.child_pid, self.state.started_at = child.pid, self.clock()
        if self.config.health_url is None:
            self.state.status = "running"
        log.info("started pid %d: %s", child.pid, shlex.join(self.config.command))
        self.save()
        pumps = [asyncio.create_task(self._pump(child.stdout, self.out_log, self.stdout)),
                 asyncio.create_task(self._pump(child.stderr, self.error_log, self.stderr))]
        try:
            ending = await self._watch(child, started)
        finally:
            await self._terminate(child)
            # Whatever the child left in its group (workers, shells) must not keep the port or the pipes.
            signal_group(child.pid, signal.SIGKILL)
            await self._drain(pumps)
        assert child.returncode is not None
        result = RunResult(ending, child.returncode, self.monotonic() - started)
        self._record_exit(result)
        return result

    async def _watch(self, child: asyncio.subprocess.Process, started: float) -> str:
        """Wait for the first of: the child exiting, a stop request, the health monitor calling it hung."""
        exited = asyncio.ensure_future(child.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        hung = asyncio.ensure_future(self.monitor_health(started))
        waiters = (exited, stopping, hung)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if hung.done():
                hung.result()  # re-raise a bug in the monitor rather than calling it a hang
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if self._stop.is_set():
            return "stopped"
        if child.returncode is not None:
            return "exited"
        log.warning("pid %d failed %d health checks in a row; restarting it", child.pid,
                    self.config.unhealthy_threshold)
        return "hung"

    async def _terminate(self, child: asyncio.subprocess.Process) -> None:
        """SIGTERM the child's group once, then SIGKILL it if it is still there after --stop-timeout."""
        if child.returncode is not None:
            return
        log.info("sending SIGTERM to process group %d", child.pid)
        signal_group(child.pid, signal.SIGTERM)
        # A stopped (SIGSTOP) group only acts on SIGTERM once continued; to a running one SIGCONT is a no-op.
        signal_group(child.pid, signal.SIGCONT)
        try:
            await asyncio.wait_for(child.wait(), self.config.stop_timeout)
        except TimeoutError:
            log.warning("pid %d still running %.1fs after SIGTERM; sending SIGKILL", child.pid,
                        self.config.stop_timeout)
            signal_group(child.pid, signal.SIGKILL)
            await child.wait()

    def _record_exit(self, result: RunResult) -> None:
        code, sig, phrase = describe_exit(result.returncode)
        reason = {"stopped": "stop requested", "hung": "unhealthy"}.get(result.ending, phrase)
        self.state.last_exit = {"code": code, "signal": sig, "reason": reason, "at": self.clock()}
        self.state.child_pid, self.state.health = None, "unknown"
        self.save()

    # ---- restart policy

    def _account(self, result: RunResult) -> float | None:
        """Count an unstable run; the restart delay, or None once the cap of consecutive unstable runs is hit."""
        unstable = result.ending == "hung" or result.uptime < self.config.min_uptime
        self.state.consecutive_unstable = self.state.consecutive_unstable + 1 if unstable else 0
        if self.state.consecutive_unstable > self.config.max_restarts:
            return None
        exponent = max(self.state.consecutive_unstable - 1, 0)
        return min(self.config.backoff_max, self.config.backoff_initial * 2 ** exponent)

    def _announce_restart(self, result: RunResult, delay: float) -> None:
        _, _, phrase = describe_exit(result.returncode)
        what = "was unhealthy" if result.ending == "hung" else phrase
        if self.state.consecutive_unstable:
            log.warning("%s, restarting in %.1fs (restart %d of %d)", what, delay,
                        self.state.consecutive_unstable, self.config.max_restarts)
        else:
            log.warning("%s after %.1fs, restarting in %.1fs", what, result.uptime, delay)
        self.state.status = "restarting"
        self.save()

    def _gave_up_reason(self, result: RunResult) -> str:
        _, _, phrase = describe_exit(result.returncode)
        last = "unhealthy" if result.ending == "hung" else phrase
        return (f"{self.state.consecutive_unstable} unstable runs in a row (each shorter than "
                f"{self.config.min_uptime:g}s or unhealthy), gave up after {self.config.max_restarts} "
                f"restarts; last run {last}")

    async def _sleep_unless_stopped(self, delay: float) -> bool:
        """Wait ``delay`` seconds; True if a stop was requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    # ---- ports

    async def _port_conflict(self) -> str | None:
        """A reason to refuse starting because something else listens on our port."""
        port = self.config.port
        if port is None or not await self.port_in_use(port):
            return None
        return self._port_in_use_reason()

    def _port_in_use_reason(self, child_said_so: bool = False) -> str:
        port = self.config.port
        said = f"child exited with code {EXIT_PORT_IN_USE}"
        if port is None:
            return f"{said} (address already in use)"
        owner = self.port_owner(port)
        by = f"pid {owner}" if owner is not None else "another process"
        return f"port {port} is already in use by {by}" + (f" ({said})" if child_said_so else "")

    # ---- health

    async def monitor_health(self, started: float) -> None:
        """Keep ``health`` current while the child runs; returns only once the child is judged hung."""
        url = self.config.health_url
        if url is None:
            await asyncio.get_running_loop().create_future()  # nothing to watch: wait to be cancelled
            return
        failures = 0 if await self._await_first_health(url, started) else 1
        self.state.status = "running"
        self.save()
        while failures < self.config.unhealthy_threshold:
            await self.sleep(self.health_delay(started, failures))
            ok = await self.probe(url, self.config.health_request_timeout)
            self._record_health(ok)
            failures = 0 if ok else failures + 1

    async def _await_first_health(self, url: str, started: float) -> bool:
        """Poll until the new child answers or --health-timeout passes; a booting child is not yet unhealthy."""
        deadline = started + self.config.health_timeout
        while True:
            remaining = deadline - self.monotonic()
            ok = await self.probe(url, max(0.05, min(self.config.health_request_timeout, remaining)))
            remaining = deadline - self.monotonic()
            if ok or remaining <= 0:
                self._record_health(ok)
                if ok:
                    log.info("healthy after %.1fs", self.monotonic() - started)
                else:
                    log.warning("no healthy answer from %s within %gs", url, self.config.health_timeout)
                return ok
            await self.sleep(min(STARTUP_POLL_INTERVAL, remaining))

    def health_delay(self, started: float, failures: int) -> float:
        """Seconds until the next check: short right after a (re)start, when failures are likeliest, and
        after a failed check, so a frozen child is confirmed and replaced quickly; otherwise the steady interval.
        """
        if failures > 0 or self.monotonic() - started < self.config.fast_health_window:
            return min(self.config.fast_health_interval, self.config.health_interval)
        return self.config.health_interval

    def _record_health(self, ok: bool) -> None:
        health = "healthy" if ok else "unhealthy"
        if health != self.state.health and self.state.health != "unknown":
            level = logging.INFO if ok else logging.WARNING
            log.log(level, "health changed from %s to %s", self.state.health, health)
        self.state.health, self.state.last_health_at = health, self.clock()
        self.save()

    # ---- output

    async def _pump(self, stream: asyncio.StreamReader | None, logfile: LogFile, echo: BinaryIO) -> None:
        """Copy a child pipe line by line into its log file and to our own output, until EOF."""
        if stream is None:
            return
        pending = b""
        while chunk := await stream.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > MAX_LINE_BYTES:
                lines.append(pending)
                pending = b""
            self._emit(lines, logfile, echo)
        if pending:
            self._emit([pending], logfile, echo)

    def _emit(self, lines: list[bytes], logfile: LogFile, echo: BinaryIO) -> None:
        # Failures are swallowed: a pump that dies would leave the child blocked on a full pipe.
        for line in lines:
            try:
                logfile.write_line(line.rstrip(b"\r").decode("utf-8", "replace"))
            except OSError as e:
                log.debug("cannot write %s: %s", logfile.path, e)
        with contextlib.suppress(OSError, ValueError):
            echo.write(b"".join(line + b"\n" for line in lines))
            echo.flush()

    async def _drain(self, pumps: list[asyncio.Task[None]]) -> None:
        """Let the pumps reach EOF, but not forever: an escaped grandchild may hold the pipes."""
        _, pending = await asyncio.wait(pumps, timeout=PUMP_DRAIN_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    # ---- state

    def snapshot(self) -> dict[str, Any]:
        """The state file's content."""
        s = self.state
        return {
            "name": self.config.name,
            "pid": self.pid,
            "pid_start_ticks": self.pid_start_ticks,
            "child_pid": s.child_pid,
            "status": s.status,
            "health": s.health,
            "restarts": s.restarts,
            "consecutive_unstable": s.consecutive_unstable,
            "started_at": s.started_at,
            "supervisor_started_at": self.started_at,
            "last_exit": s.last_exit,
            "reason": s.reason,
            "port": self.config.port,
            "health_url": self.config.health_url,
            "last_health_at": s.last_health_at,
            "log_out": str(self.config.out_log_path),
            "log_error": str(self.config.error_log_path),
            "command": list(self.config.command),
            "updated_at": self.clock(),
        }

    def save(self) -> None:
        """Publish the current state; a full disk must not take the supervisor down.

        A failure is logged when it first happens (and when it changes), not at every attempt, so a
        lasting one cannot flood the log; success afterwards is logged once too.
        """
        try:
            self.state_file.write(self.snapshot())
        except OSError as e:
            error = f"{type(e).__name__}: {e.strerror or e}"
            if error != self._save_error:
                log.warning("cannot write %s: %s", self.state_file.path, error)
            self._save_error = error
            return
        if self._save_error is not None:
            log.info("state file %s written again", self.state_file.path)
            self._save_error = None

    async def _keep_state_published(self) -> None:
        """Write the state again soon after its file (or the whole run folder) is removed or a write failed;
        likewise start new log files when they (or the log folder) are removed."""
        while True:
            await self.sleep(STATE_RECHECK_INTERVAL)
            for logfile in (self.out_log, self.error_log):
                try:
                    if logfile.reopen_if_removed():
                        log.info("log file %s was removed; writing a new one", logfile.path)
                except OSError as e:
                    log.debug("cannot reopen %s: %s", logfile.path, e)
            if self._save_error is None and not self.state_file.path.exists():
                log.info("state file %s was removed; writing it again", self.state_file.path)
                self.save()
            elif self._save_error is not None:
                self.save()


# --------------------------------------------------------------------------------------------------
# Entry point


def configure_logging(error_log: LogFile) -> None:
    """Send the supervisor's own messages to stderr (honcho shows them) and into the error log."""
    formatter = logging.Formatter("[supervisor] %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr), LogFileHandler(error_log)]
    for handler in handlers:
        handler.setFormatter(formatter)
    log.handlers[:] = handlers
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: Sequence[str]) -> int:
    """Parse the command line, supervise until stopped, and return the exit code."""
    try:
        config = SupervisorConfig.from_argv(argv, os.environ)
    except ConfigError as e:
        print(f"python -m mcp.ops.supervise: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # argparse: --help or a usage error
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    supervisor = Supervisor(config)
    configure_logging(supervisor.error_log)
    try:
        return asyncio.run(supervisor.run())
    finally:
        supervisor.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
