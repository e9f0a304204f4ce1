"""The restart loop: start the child, watch it, health-check it, restart it with backoff, publish its state.

Crashes are restarted with exponential backoff; after ``--max-restarts`` consecutive unstable runs, or
when the port is taken, the status becomes ``errored`` and the supervisor idles until it is stopped,
because exiting would make honcho stop every other process. Health (``mcp.formation.health``: HTTP 200
and ``"status": "healthy"``) is checked every ``--health-interval`` seconds, and every
``--fast-health-interval`` seconds shortly after a start or once a check has failed, so a frozen child
(SIGSTOP, a deadlock) is restarted after ``--unhealthy-threshold`` failures in well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, BinaryIO

from mcp.formation.facts import port_free, port_owner, start_ticks
from mcp.formation.health import probe_ok
from mcp.ops.supervisor.child import (
    EXIT_PORT_IN_USE,
    RunResult,
    describe_exit,
    parent_death_prefix,
    signal_group,
    spawn_child,
)
from mcp.ops.supervisor.config import SupervisorConfig
from mcp.ops.supervisor.logfile import LogFile
from mcp.ops.supervisor.output import drain, pump
from mcp.ops.supervisor.policy import gave_up_reason, port_in_use_reason, restart_delay, run_phrase, unstable
from mcp.ops.supervisor.publish import ChildState, Publisher, state_document

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERRORED = 1

# How often the supervisor makes sure its state file still exists (someone may `rm -rf .run`).
STATE_RECHECK_INTERVAL = 2.0
STARTUP_POLL_INTERVAL = 0.25

Spawner = Callable[[Sequence[str]], Awaitable[asyncio.subprocess.Process]]
Prober = Callable[[str, float], Awaitable[bool]]


class Supervisor:
    """Keep one child running: start, watch, health-check, restart with backoff, stop on signal."""

    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        # Collaborators are attributes so tests and embedders can swap them.
        self.clock: Callable[[], float] = time.time
        self.monotonic: Callable[[], float] = time.monotonic
        self.spawn: Spawner = spawn_child
        self.probe: Prober = probe_ok
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.port_free: Callable[[int], bool] = port_free
        self.port_owner: Callable[[int], int | None] = port_owner
        self.stdout: BinaryIO = sys.stdout.buffer
        self.stderr: BinaryIO = sys.stderr.buffer
        self.out_log = LogFile(config.out_log_path, config.log_max_bytes, config.log_backups)
        self.error_log = LogFile(config.error_log_path, config.log_max_bytes, config.log_backups)
        self.publisher = Publisher(config.state_path)
        self.state = ChildState()
        self.pid = os.getpid()
        self.pid_start_ticks = start_ticks(self.pid)
        self.started_at = self.clock()
        self._stop = asyncio.Event()

    # ---- lifecycle

    async def run(self) -> int:
        """Supervise until stopped; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        if not parent_death_prefix():
            log.warning("setpriv (util-linux) not found: a child will outlive this supervisor if it is killed")
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
            conflict = self._port_conflict()
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
                return await self._fail(gave_up_reason(result, self.state.consecutive_unstable, self.config))
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
        pumps = [asyncio.create_task(pump(child.stdout, self.out_log, self.stdout)),
                 asyncio.create_task(pump(child.stderr, self.error_log, self.stderr))]
        try:
            ending = await self._watch(child, started)
        finally:
            await self._terminate(child)
            # Whatever the child left in its group (workers, shells) must not keep the port or the pipes.
            signal_group(child.pid, signal.SIGKILL)
            await drain(pumps)
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
        self.state.consecutive_unstable = self.state.consecutive_unstable + 1 if unstable(result, self.config) else 0
        return restart_delay(self.state.consecutive_unstable, self.config)

    def _announce_restart(self, result: RunResult, delay: float) -> None:
        what = run_phrase(result, "was unhealthy")
        if self.state.consecutive_unstable:
            log.warning("%s, restarting in %.1fs (restart %d of %d)", what, delay,
                        self.state.consecutive_unstable, self.config.max_restarts)
        else:
            log.warning("%s after %.1fs, restarting in %.1fs", what, result.uptime, delay)
        self.state.status = "restarting"
        self.save()

    async def _sleep_unless_stopped(self, delay: float) -> bool:
        """Wait ``delay`` seconds; True if a stop was requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    # ---- ports

    def _port_conflict(self) -> str | None:
        """A reason to refuse starting because something else listens on our port."""
        port = self.config.port
        if port is None or self.port_free(port):
            return None
        return self._port_in_use_reason()

    def _port_in_use_reason(self, child_said_so: bool = False) -> str:
        port = self.config.port
        return port_in_use_reason(port, self.port_owner(port) if port is not None else None, child_said_so)

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

    # ---- state

    def snapshot(self) -> dict[str, Any]:
        """The state file's content."""
        return state_document(self.config, self.state, pid=self.pid, pid_start_ticks=self.pid_start_ticks,
                              supervisor_started_at=self.started_at, now=self.clock())

    def save(self) -> None:
        """Publish the current state (see Publisher for how failures are handled)."""
        self.publisher.save(self.snapshot())

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
            if self.publisher.needs_writing():
                self.save()
