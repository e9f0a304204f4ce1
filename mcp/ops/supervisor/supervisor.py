"""The restart loop: start the child, watch it, health-check it, restart it with backoff, publish its state.

With ``--workers N`` there are N children ("workers"), each in its own restart loop (its own backoff, crash cap
and health checks) and all listening on the port (SO_REUSEPORT). A worker's health check must reach that worker:
with several, a probe lands on any of them and an answer only counts when it names the worker's pid (each check
opens a few connections at once, which the kernel spreads over the listeners).

Crashes are restarted with exponential backoff; after ``--max-restarts`` consecutive unstable runs, or
when the port is taken, the status becomes ``errored`` and the supervisor idles until it is stopped or an
operator restarts it, because exiting would make honcho stop every other process. Health
(``mcp.formation.health``: HTTP 200 and ``"status": "healthy"``) is checked every ``--health-interval``
seconds, and every ``--fast-health-interval`` seconds shortly after a start or once a check has failed, so
a frozen child (SIGSTOP, a deadlock) is restarted after ``--unhealthy-threshold`` failures in well under a
minute.

Operators (``scripts/restart``, ``scripts/reload``) signal the supervisor, whose pid is in its state file:

- SIGUSR2, **restart**: stop the child (SIGTERM, then SIGKILL after ``--stop-timeout``) and start a new one
  at once. It is not a crash: it counts in ``operator_restarts``, not ``restarts``, and the crash cap
  starts over (an ``errored`` process is started again with a fresh cap).
- SIGHUP, **reload**: start a new child while the old one keeps serving (both listen on the port with
  SO_REUSEPORT), wait until the new one itself answers ``/health`` (its answer names its pid), then
  SIGTERM the old one, which finishes its in-flight requests. If the new child does not become healthy
  within ``--health-timeout`` it is stopped and the old one keeps serving.

With several workers an operator's request is carried out one worker at a time: a reload starts the next
worker's successor only once the previous one serves and the process it replaced has exited (and stops at
the first that fails, the others keep serving); a restart goes through all of them. Each child is told
``MCP_WORKERS`` (the handover of a reload steers new connections to the successor, which joins the port
last) and, with several workers, ``PROMETHEUS_MULTIPROC_DIR`` (``metricsdir``), so that ``/metrics`` sums
over the workers.

Each request's outcome is published in the state file's ``operation`` (``seq``, ``kind``, ``status``:
pending, done or failed, ``reason``), which the scripts wait for. Requests arriving while one is still
pending are merged into one (a restart wins over a reload).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from mcp.formation.facts import cmdline, pid_alive, port_free, port_owner, start_ticks
from mcp.formation.health import Health, probe, probe_ok
from mcp.ops.supervisor import metricsdir
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
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
OPERATION_SIGNALS = {signal.SIGUSR2: "restart", signal.SIGHUP: "reload"}
# With several workers, the connections one health check of a worker opens at once, per worker: the kernel
# spreads them over the listeners, so a healthy worker is missed by all of them about once in e^4 (2%) checks,
# and judged hung only after --unhealthy-threshold such misses in a row.
PROBES_PER_WORKER = 4

Spawner = Callable[..., Awaitable[asyncio.subprocess.Process]]
Prober = Callable[[str, float], Awaitable[bool]]
HealthProber = Callable[[str, float], Awaitable[Health]]


@dataclass
class Running:
    """One started child: the process, the tasks copying its output, when it started (monotonic clock)."""

    process: asyncio.subprocess.Process
    pumps: list[asyncio.Task[None]]
    started: float

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Slot:
    """One worker: its published state, and an operator's request for it with the future of its outcome
    (None when done, else why it failed)."""

    index: int
    tag: str  # "worker 2: " in messages when there are several, else ""
    state: ChildState = field(default_factory=ChildState)
    request: asyncio.Event = field(default_factory=asyncio.Event)
    requested: str | None = None
    operator_start: bool = False  # the next start was asked for by an operator
    outcome: asyncio.Future[str | None] | None = None

    def take_request(self) -> str | None:
        kind, self.requested = self.requested, None
        self.request.clear()
        return kind

    def settle(self, ok: bool, reason: str | None = None) -> None:
        """Report the outcome of the request under way for this worker, if any."""
        if self.outcome is not None and not self.outcome.done() and self.requested is None:
            self.outcome.set_result(None if ok else reason or "failed")


def process_name(pid: int) -> str | None:
    """The program a process runs (``nc``, ``python3``), for messages; None when it cannot be seen."""
    argv = cmdline(pid)
    return os.path.basename(argv[0]) if argv and argv[0] else None


def in_group(pid: int, pgid: int) -> bool:
    """Whether ``pid`` is ``pgid`` or a member of its process group (the child and what it started)."""
    if pid == pgid:
        return True
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False


class Supervisor:
    """Keep the workers running: start, watch, health-check, restart with backoff, stop on signal."""

    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        # Collaborators are attributes so tests and embedders can swap them.
        self.clock: Callable[[], float] = time.time
        self.monotonic: Callable[[], float] = time.monotonic
        self.spawn: Spawner = spawn_child
        self.probe: Prober = probe_ok
        self.probe_health: HealthProber = probe
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.port_free: Callable[[int], bool] = port_free
        self.port_owner: Callable[[int], int | None] = port_owner
        self.process_name: Callable[[int], str | None] = process_name
        self.stdout: BinaryIO = sys.stdout.buffer
        self.stderr: BinaryIO = sys.stderr.buffer
        self.out_log = LogFile(config.out_log_path, config.log_max_bytes, config.log_backups)
        self.error_log = LogFile(config.error_log_path, config.log_max_bytes, config.log_backups)
        self.publisher = Publisher(config.state_path)
        several = config.workers > 1
        self.slots = [Slot(i, f"worker {i}: " if several else "") for i in range(config.workers)]
        # The last operator request and its outcome: seq, kind, status (pending/done/failed), reason, child_pid.
        self.operation: dict[str, Any] | None = None
        self.pid = os.getpid()
        self.pid_start_ticks = start_ticks(self.pid)
        self.started_at = self.clock()
        self._stop = asyncio.Event()
        self._request = asyncio.Event()
        self._requested: str | None = None  # an operator's request not yet acted on
        self._retiring: set[asyncio.Task[None]] = set()  # children replaced by a reload, finishing
        self._running: dict[int, Running] = {}  # the current child of each worker, by slot index

    @property
    def state(self) -> ChildState:
        """The first worker's state (the only one's, by default)."""
        return self.slots[0].state

    @property
    def child_env(self) -> dict[str, str]:
        """What every child is told on top of our environment."""
        env = {"MCP_WORKERS": str(self.config.workers)}
        if self.config.workers > 1:
            env[metricsdir.VARIABLE] = str(self.config.metrics_dir)
        return env

    # ---- lifecycle

    async def run(self) -> int:
        """Supervise until stopped; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.request_stop, sig)
        for sig, kind in OPERATION_SIGNALS.items():
            loop.add_signal_handler(sig, self.request_operation, kind)
        if not parent_death_prefix():
            log.warning("setpriv (util-linux) not found: a child will outlive this supervisor if it is killed")
        keeper = asyncio.create_task(self._keep_state_published())
        try:
            return await self._supervise()
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, *self._retiring, return_exceptions=True)
            for sig in (*STOP_SIGNALS, *OPERATION_SIGNALS):
                loop.remove_signal_handler(sig)

    def request_stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Signal handler: begin stopping once; repeated signals are only noted."""
        if self._stop.is_set():
            log.info("received %s while stopping; already on it", signal.Signals(sig).name)
            return
        log.info("received %s, stopping", signal.Signals(sig).name)
        self._stop.set()

    def request_operation(self, kind: str) -> None:
        """Signal handler: an operator asks for a ``restart`` or a ``reload``; published as a pending operation."""
        if self._stop.is_set():
            log.info("%s requested while stopping; ignored", kind)
            return
        if self._requested == "restart":
            kind = "restart"
        seq = int((self.operation or {}).get("seq", 0)) + 1
        self.operation = {"seq": seq, "kind": kind, "status": "pending", "reason": None,
                          "requested_at": self.clock(), "finished_at": None, "child_pid": None}
        self._requested = kind
        self._request.set()
        log.info("%s requested by an operator", kind)
        self.save()

    def close(self) -> None:
        """Release the log files once the loop has ended."""
        self.out_log.close()
        self.error_log.close()

    async def _supervise(self) -> int:
        self.save()
        if self.config.workers > 1:
            try:
                metricsdir.prepare(self.config.metrics_dir)
            except OSError as e:
                log.warning("cannot prepare %s for the workers' metrics: %s", self.config.metrics_dir, e)
        workers = [asyncio.create_task(self._supervise_slot(slot)) for slot in self.slots]
        operator = asyncio.create_task(self._operate())
        code = EXIT_OK
        try:
            for finished in asyncio.as_completed(workers):
                if await finished == EXIT_ERRORED:
                    code = EXIT_ERRORED
                    self._stop.set()  # --fail-fast: one errored worker takes the process down
        finally:
            for task in (*workers, operator):
                task.cancel()
            await asyncio.gather(*workers, operator, return_exceptions=True)
        if code == EXIT_ERRORED:
            # The errored worker's state stays published as the reason for the exit.
            self._stopped(keep_errored=True)
            return code
        self._stopped()
        return code

    async def _supervise_slot(self, slot: Slot) -> int:
        """One worker's restart loop, until a stop (EXIT_OK) or, with --fail-fast, once errored (EXIT_ERRORED)."""
        while not self._stop.is_set():
            reason = self._port_conflict() or await self._run_and_wait(slot)
            if reason is None:
                continue
            code = await self._fail(slot, reason)
            if code is not None:
                return code
        return EXIT_OK

    async def _run_and_wait(self, slot: Slot) -> str | None:
        """Run the child once, then wait out the restart delay; why it must not be restarted, or None."""
        try:
            result = await self._run_once(slot)
        except OSError as e:
            # A missing or non-executable command will not fix itself by retrying.
            return f"cannot start {shlex.join(self.config.command)}: {e}"
        if self._stop.is_set() or result.ending == "stopped":
            return None
        if result.ending == "restart":
            self._fresh_start(slot)
            return None
        if result.ending == "exited" and result.returncode == EXIT_PORT_IN_USE:
            return self._port_in_use_reason(child_said_so=True)
        delay = self._account(slot, result)
        if delay is None:
            return gave_up_reason(result, slot.state.consecutive_unstable, self.config)
        self._announce_restart(slot, result, delay)
        await self._wait(slot, delay)
        if slot.take_request() is not None:
            self._fresh_start(slot)
        return None

    async def _fail(self, slot: Slot, reason: str) -> int | None:
        """Enter ``errored``: exit with --fail-fast, otherwise idle (so honcho keeps the rest) until stopped
        (the exit code) or restarted by an operator (None: start again)."""
        state = slot.state
        state.status, state.reason = "errored", reason
        state.child_pid, state.health = None, "unknown"
        self.save()
        log.error("%serrored: %s", slot.tag, reason)
        slot.settle(False, reason)
        if self.config.fail_fast:
            log.error("exiting with code %d (--fail-fast)", EXIT_ERRORED)
            return EXIT_ERRORED
        log.error("%snot restarting; idle until stopped or restarted (scripts/restart %s)", slot.tag,
                  self.config.name)
        await self._wait(slot)
        if self._stop.is_set():
            return EXIT_OK
        log.info("%s%s requested while errored: starting again with a fresh restart cap", slot.tag,
                 slot.take_request())
        self._fresh_start(slot)
        return None

    def _stopped(self, keep_errored: bool = False) -> None:
        for slot in self.slots:
            if not (keep_errored and slot.state.status == "errored"):
                slot.state.status, slot.state.child_pid, slot.state.health = "stopped", None, "unknown"
            slot.settle(False, "the supervisor stopped")
        self._settle(["the supervisor stopped"])
        self.save()
        if not keep_errored:
            log.info("stopped")

    async def _wait(self, slot: Slot, timeout: float | None = None) -> None:
        """Until a stop, an operator's request for this worker, or ``timeout`` seconds, whichever comes first."""
        waiters = (asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(slot.request.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    # ---- operators' requests

    def _take_request(self) -> str | None:
        kind, self._requested = self._requested, None
        self._request.clear()
        return kind

    def _fresh_start(self, slot: Slot) -> None:
        """An operator asked for this start: it is not a crash, and the crash cap starts over."""
        slot.state.consecutive_unstable = 0
        slot.state.reason = None
        slot.operator_start = True

    async def _operate(self) -> None:
        """Carry out operators' requests, one worker at a time; requests that arrive meanwhile are merged."""
        while True:
            await self._request.wait()
            failures: list[str] = []
            while (kind := self._take_request()) is not None:
                failures = await self._operate_round(kind)
            self._settle(failures)

    async def _operate_round(self, kind: str) -> list[str]:
        """``kind`` for each worker in turn; why it failed, per worker (a reload stops at the first failure)."""
        failures = []
        for slot in self.slots:
            if self._stop.is_set():
                return [*failures, "a stop was requested"]
            why = await self._ask(slot, kind)
            if kind == "reload" and self._retiring:
                # The replaced process steers new connections to its successor until it has closed its listener;
                # the next successor joining the port meanwhile would undo that (mcp.server.serve.hand_over).
                await asyncio.wait(set(self._retiring))
            if why is not None:
                failures.append(slot.tag + why)
                if kind == "reload":
                    break
        return failures

    async def _ask(self, slot: Slot, kind: str) -> str | None:
        """Hand ``kind`` to one worker's loop and wait for its outcome (or a stop)."""
        slot.outcome = asyncio.get_running_loop().create_future()
        slot.requested = kind
        slot.request.set()
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((slot.outcome, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        outcome, slot.outcome = slot.outcome, None
        return outcome.result() if outcome.done() else "a stop was requested"

    def _settle(self, failures: list[str]) -> None:
        """Publish the outcome of the operation under way, if any (a newer request still waiting keeps it open)."""
        operation = self.operation
        if operation is None or operation.get("status") != "pending" or self._requested is not None:
            return
        ok = not failures
        reason = None if ok else "; ".join(failures)
        pids = [slot.state.child_pid for slot in self.slots]
        operation.update(status="done" if ok else "failed", reason=reason, finished_at=self.clock(),
                         child_pid=self.state.child_pid)
        if len(pids) > 1:
            operation["child_pids"] = pids
        if ok:
            log.info("%s done: pid %s", operation["kind"], ", ".join(map(str, pids)))
        else:
            log.warning("%s failed: %s", operation["kind"], reason)
        self.save()

    # ---- one run of the child

    async def _run_once(self, slot: Slot) -> RunResult:
        """Start the child, watch it until it exits, is stopped, restarted or judged hung (a reload swaps in
        its successor and goes on watching); reap it and its group."""
        current = await self._start(slot)
        first = True
        try:
            while (ending := await self._watch(slot, current, first)) == "reload":
                current, first = await self._reload(slot, current), False
                self._running[slot.index] = current
        finally:
            await self._end(current)
            self._running.pop(slot.index, None)
            self._forget_dead_metrics()
        assert current.process.returncode is not None
        result = RunResult(ending, current.process.returncode, self.monotonic() - current.started)
        self._record_exit(slot, result, current.pid)
        return result

    async def _spawn(self) -> Running:
        child = await self.spawn(self.config.command, self.child_env)
        pumps = [asyncio.create_task(pump(child.stdout, self.out_log, self.stdout)),
                 asyncio.create_task(pump(child.stderr, self.error_log, self.stderr))]
        return Running(child, pumps, self.monotonic())

    async def _start(self, slot: Slot) -> Running:
        state = slot.state
        state.status, state.health = "starting", "unknown"
        running = await self._spawn()
        self._running[slot.index] = running
        if state.starts > 0:
            if slot.operator_start:
                state.operator_restarts += 1
            else:
                state.restarts += 1
        slot.operator_start = False
        state.starts += 1
        state.child_pid, state.started_at = running.pid, self.clock()
        log.info("%sstarted pid %d: %s", slot.tag, running.pid, shlex.join(self.config.command))
        if self.config.health_url is None:
            state.status = "running"
            slot.settle(True)
        self.save()
        return running

    async def _end(self, running: Running) -> None:
        await self._terminate(running.process)
        # Whatever the child left in its group (workers, shells) must not keep the port or the pipes.
        signal_group(running.pid, signal.SIGKILL)
        await drain(running.pumps)

    def _forget_dead_metrics(self) -> None:
        """Take the live gauges of workers that died without cleaning up out of the metrics' sum."""
        if self.config.workers > 1:
            metricsdir.forget_dead(self.config.metrics_dir, pid_alive)

    async def _watch(self, slot: Slot, current: Running, first: bool = True) -> str:
        """Wait for the first of: the child exiting, a stop request, an operator's request (``restart`` or
        ``reload``), the health monitor calling it hung."""
        child = current.process
        exited = asyncio.ensure_future(child.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        asked = asyncio.ensure_future(slot.request.wait())
        hung = asyncio.ensure_future(self.monitor_health(current.started, first, slot))
        waiters = (exited, stopping, asked, hung)
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
        if slot.request.is_set():
            return slot.take_request() or "restart"
        log.warning("%spid %d failed %d health checks in a row; restarting it", slot.tag, child.pid,
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

    def _record_exit(self, slot: Slot, result: RunResult, pid: int) -> None:
        code, sig, phrase = describe_exit(result.returncode)
        reason = {"stopped": "stop requested", "hung": "unhealthy",
                  "restart": "restart requested"}.get(result.ending, phrase)
        slot.state.last_exit = {"code": code, "signal": sig, "reason": reason, "at": self.clock()}
        slot.state.child_pid, slot.state.health = None, "unknown"
        if result.ending in ("exited", "hung"):
            # A restart's new child that died before it answered /health: the operation failed.
            slot.settle(False, f"pid {pid} {run_phrase(result, 'was unhealthy')}")
        self.save()

    # ---- reload

    async def _reload(self, slot: Slot, old: Running) -> Running:
        """Start a successor beside ``old``; once it answers /health itself, SIGTERM ``old`` (it finishes its
        requests in the background) and return the successor; otherwise stop it and return ``old``."""
        url = self.config.health_url
        if url is None:
            return self._reload_failed(slot, old, "a reload needs --port or --health-url to check the new process; "
                                                  "use restart")
        log.info("%sreload: starting a new process beside pid %d", slot.tag, old.pid)
        try:
            new = await self._spawn()
        except OSError as e:
            return self._reload_failed(slot, old, f"cannot start {shlex.join(self.config.command)}: {e}")
        log.info("%sreload: started pid %d", slot.tag, new.pid)
        why = await self._await_successor(new, url)
        if why is not None:
            await self._end(new)
            self._forget_dead_metrics()
            return self._reload_failed(slot, old, why)
        self._retire(old)
        state = slot.state
        state.starts += 1
        state.operator_restarts += 1
        state.child_pid, state.started_at, state.status = new.pid, self.clock(), "running"
        self._record_health(slot, True)
        log.info("%sreload: pid %d answers /health and serves; pid %d finishes its requests and exits",
                 slot.tag, new.pid, old.pid)
        slot.settle(True)
        return new

    def _reload_failed(self, slot: Slot, old: Running, why: str) -> Running:
        slot.settle(False, f"{why}; pid {old.pid} keeps serving")
        return old

    async def _await_successor(self, new: Running, url: str) -> str | None:
        """Poll ``url`` until the answer comes from ``new`` (its pid, or one of its group, in the /health body);
        why not, once it exits, a stop is requested or --health-timeout passes.

        All the workers and the new process listen on the port and each connection goes to one of them, so
        an answer only counts when it names the new process; every probe is a new connection, so the new one
        is reached soon.
        """
        deadline = new.started + self.config.health_timeout
        last = "no answer"
        while True:
            if self._stop.is_set():
                return "a stop was requested"
            if new.process.returncode is not None:
                ended = describe_exit(new.process.returncode)[2]
                return f"the new process (pid {new.pid}) {ended} before it was healthy"
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                return (f"the new process (pid {new.pid}) did not answer {url} as healthy within "
                        f"{self.config.health_timeout:g}s (last: {last})")
            health = await self.probe_health(url, max(0.05, min(self.config.health_request_timeout, remaining)))
            answered = (health.body or {}).get("pid")
            if health.healthy and isinstance(answered, int) and in_group(answered, new.pid):
                log.info("reload: pid %d healthy after %.1fs", new.pid, self.monotonic() - new.started)
                return None
            if not health.healthy:
                last = health.reason or "unhealthy"
            elif not isinstance(answered, int):
                last = "the /health answer does not name its pid"
            await self.sleep(min(STARTUP_POLL_INTERVAL, max(0.0, remaining)))

    def _retire(self, old: Running) -> None:
        """SIGTERM a replaced child (it finishes its in-flight requests) and reap it in the background."""
        async def retire() -> None:
            await self._end(old)
            self._forget_dead_metrics()
            assert old.process.returncode is not None
            log.info("replaced pid %d %s", old.pid, describe_exit(old.process.returncode)[2])

        task = asyncio.create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # ---- restart policy

    def _account(self, slot: Slot, result: RunResult) -> float | None:
        """Count an unstable run; the restart delay, or None once the cap of consecutive unstable runs is hit."""
        state = slot.state
        state.consecutive_unstable = state.consecutive_unstable + 1 if unstable(result, self.config) else 0
        return restart_delay(state.consecutive_unstable, self.config)

    def _announce_restart(self, slot: Slot, result: RunResult, delay: float) -> None:
        what = run_phrase(result, "was unhealthy")
        if slot.state.consecutive_unstable:
            log.warning("%s%s, restarting in %.1fs (restart %d of %d)", slot.tag, what, delay,
                        slot.state.consecutive_unstable, self.config.max_restarts)
        else:
            log.warning("%s%s after %.1fs, restarting in %.1fs", slot.tag, what, result.uptime, delay)
        slot.state.status = "restarting"
        self.save()

    # ---- ports

    def _port_conflict(self) -> str | None:
        """A reason to refuse starting because something else listens on our port. While another worker of
        ours runs the port is ours (shared), so only a start with none running checks it."""
        port = self.config.port
        if port is None or self._running or self.port_free(port):
            return None
        return self._port_in_use_reason()

    def _port_in_use_reason(self, child_said_so: bool = False) -> str:
        port = self.config.port
        owner = self.port_owner(port) if port is not None else None
        name = self.process_name(owner) if owner is not None else None
        return port_in_use_reason(port, owner, child_said_so, name)

    # ---- health

    async def monitor_health(self, started: float, first: bool = True, slot: Slot | None = None) -> None:
        """Keep a worker's ``health`` current while its child runs; returns only once the child is judged hung.

        ``first``: the child is new and has yet to answer (after a reload the successor already has).
        """
        slot = slot or self.slots[0]
        url = self.config.health_url
        if url is None:
            await asyncio.get_running_loop().create_future()  # nothing to watch: wait to be cancelled
            return
        failures = 0
        if first:
            failures = 0 if await self._await_first_health(slot, url, started) else 1
            slot.state.status = "running"
            self.save()
            slot.settle(failures == 0, None if failures == 0 else
                        f"pid {slot.state.child_pid} did not answer {url} as healthy within "
                        f"{self.config.health_timeout:g}s")
        while failures < self.config.unhealthy_threshold:
            await self.sleep(self.health_delay(started, failures))
            ok = await self._probe_worker(slot, url, self.config.health_request_timeout)
            self._record_health(slot, ok)
            failures = 0 if ok else failures + 1

    async def _probe_worker(self, slot: Slot, url: str, timeout: float) -> bool:
        """One health check of this worker. Alone on the port, any healthy answer is its own; with siblings,
        a few connections at once (spread over the listeners by the kernel), healthy when one answer names it.
        A program whose /health names no pid cannot be checked worker by worker: any healthy answer counts."""
        if self.config.workers == 1:
            return await self.probe(url, timeout)
        pid = slot.state.child_pid
        if pid is None:
            return False
        answers = await asyncio.gather(*(self.probe_health(url, timeout)
                                         for _ in range(PROBES_PER_WORKER * self.config.workers)))
        for health in answers:
            named = (health.body or {}).get("pid")
            if health.healthy and (not isinstance(named, int) or in_group(named, pid)):
                return True
        return False

    async def _await_first_health(self, slot: Slot, url: str, started: float) -> bool:
        """Poll until the new child answers or --health-timeout passes; a booting child is not yet unhealthy."""
        deadline = started + self.config.health_timeout
        while True:
            remaining = deadline - self.monotonic()
            ok = await self._probe_worker(slot, url, max(0.05, min(self.config.health_request_timeout, remaining)))
            remaining = deadline - self.monotonic()
            if ok or remaining <= 0:
                self._record_health(slot, ok)
                if ok:
                    log.info("%shealthy after %.1fs", slot.tag, self.monotonic() - started)
                else:
                    log.warning("%sno healthy answer from %s within %gs", slot.tag, url, self.config.health_timeout)
                return ok
            await self.sleep(min(STARTUP_POLL_INTERVAL, remaining))

    def health_delay(self, started: float, failures: int) -> float:
        """Seconds until the next check: short right after a (re)start, when failures are likeliest, and
        after a failed check, so a frozen child is confirmed and replaced quickly; otherwise the steady interval.
        """
        if failures > 0 or self.monotonic() - started < self.config.fast_health_window:
            return min(self.config.fast_health_interval, self.config.health_interval)
        return self.config.health_interval

    def _record_health(self, slot: Slot, ok: bool) -> None:
        health = "healthy" if ok else "unhealthy"
        state = slot.state
        if health != state.health and state.health != "unknown":
            level = logging.INFO if ok else logging.WARNING
            log.log(level, "%shealth changed from %s to %s", slot.tag, state.health, health)
        state.health, state.last_health_at = health, self.clock()
        self.save()

    # ---- state

    def snapshot(self) -> dict[str, Any]:
        """The state file's content."""
        return state_document(self.config, [slot.state for slot in self.slots], self.operation, pid=self.pid,
                              pid_start_ticks=self.pid_start_ticks, supervisor_started_at=self.started_at,
                              now=self.clock())

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
