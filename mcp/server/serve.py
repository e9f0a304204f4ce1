"""Run a Tornado application until SIGTERM/SIGINT, then shut down cleanly within a deadline.

Shutdown order: stop accepting, wait for in-flight requests (bounded), close connections, then
run the owner's cleanup (flush usage, close the pool and the HTTP session). Exit code 0. A port
already in use exits with code 98 (EADDRINUSE) and a message saying so, so supervisors need not
guess.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable

import tornado.netutil
import tornado.web

from mcp.server.base import InFlight
from mcp.server.connections import ConnectionStats, GuardedHTTPServer, raise_descriptor_limit
from mcp.server.scrub import MalformedRequestFilter

log = logging.getLogger(__name__)

EXIT_PORT_IN_USE = 98
EXIT_CONFIG = 78  # EX_CONFIG
GC_YOUNG_THRESHOLD = 10_000
# Linux socket options (asm-generic/socket.h) and the classic BPF "return constant" instruction.
SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
BPF_RET_K = 0x06
# After handing over, how long the old process keeps accepting what the kernel queued for it before:
# handshakes already under way finish within a round trip.
HANDOVER_GRACE_S = 0.25
# At shutdown, how long an idle keep-alive connection may take to send its next request (answered, then
# closed) before it is closed: a busy client sends within moments, and closing under a quiet one is the
# same race every idle timeout has.
KEEPALIVE_GRACE_S = 1.0


class PortInUse(OSError):
    pass


def configure_logging(level: str = "INFO") -> None:
    """INFO and below to stdout, WARNING and above to stderr (the supervisor's out/error logs)."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(fmt)
    out.addFilter(lambda r: r.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.setLevel(logging.WARNING)
    # Every request logs an access line: skip the per-record caller, thread and process lookups
    # that no format here uses.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.handlers[:] = [out, err]
    root.setLevel(level)
    # psycopg_pool logs every reconnection attempt at INFO; the 503s already say the database is down.
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
    # Tornado quotes the header, Host or query value it refused to parse: keep only the kind of fault.
    general = logging.getLogger("tornado.general")
    if not any(isinstance(f, MalformedRequestFilter) for f in general.filters):
        general.addFilter(MalformedRequestFilter())


def bind(port: int, host: str) -> list:
    """Listening sockets for ``host:port`` with SO_REUSEPORT, so that a reload's new process listens beside
    the old one (scripts/reload) and the kernel shares new connections between them.

    Linux lets a socket join a port only if every socket already there set SO_REUSEPORT and belongs to the
    same user: anyone else's listener (or one bound without it, like the formation's port check) still
    makes this fail with EADDRINUSE, so "port in use" is reported as before.
    """
    try:
        sockets = tornado.netutil.bind_sockets(port, host, reuse_port=True)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} is already in use on {host}") from None
        raise
    for sock in sockets:
        # A predecessor that steered new connections away from itself (hand_over) left its program on the
        # port's group; remove it so connections are shared again until this process hands over in turn.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
    return sockets


def hand_over(sockets: list, successor: int = 1) -> bool:
    """Send the port's new connections to the other listener of its SO_REUSEPORT group (a reload's new
    process), so that closing ours drops none from our accept queue; False where the kernel cannot.

    The group lists its listeners in the order they joined, and one that leaves is replaced by the last:
    with ``successor`` workers on the port (1 by default) they hold indexes 0 to successor - 1 and a reload's
    new process joins last, at index ``successor``. A classic BPF program returning that index picks it; with
    no listener there (a plain stop, or the program left behind once the old listener is gone) the kernel
    falls back to its hash over the listeners.
    """
    # struct sock_fprog points at the filter; array.buffer_info() is the standard library's way to the
    # address of a buffer (the kernel copies the program during setsockopt, so it need not outlive it).
    program = array.array("B", struct.pack("HBBI", BPF_RET_K, 0, 0, successor))
    fprog = struct.pack("HL", 1, program.buffer_info()[0])
    steered = False
    for sock in sockets:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
            steered = True
        except OSError as e:
            log.debug("cannot steer new connections to the next process: %s", e)
    return steered


async def serve(
    app: tornado.web.Application,
    *,
    host: str,
    port: int,
    inflight: InFlight,
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    shutdown_timeout_s: float = 3.5,
    max_body_size: int = 16 << 20,
    stop_event: asyncio.Event | None = None,
    handle_signals: bool = True,
    body_timeout_s: float = 20.0,
    idle_timeout_s: float = 75.0,
    max_connections: int = 0,
    stats: ConnectionStats | None = None,
    workers: int = 1,
) -> None:
    """Serve until a signal (or ``stop_event``); raises PortInUse if the port is taken.

    ``max_body_size`` is only the connection-level hard cap; handlers refuse bodies over the
    application's ``max_body_bytes`` with a JSON 413 before reading them. A body not complete
    ``body_timeout_s`` after its headers closes the connection, and so does waiting
    ``idle_timeout_s`` for a request head (keep it longer than nginx keeps idle upstream connections,
    60 s, so that nginx and not the service closes them). ``max_connections`` caps open
    connections (0: derived from the descriptor limit, see mcp.server.connections); ``stats`` receives the
    server's connection counters; ``workers`` is how many processes share the port (``hand_over``).
    """
    raise_descriptor_limit()
    sockets = bind(port, host)
    # No xheaders: the client nginx names in X-Real-IP is read only where per-client limits need it
    # (mcp.server.forwarded.client_address); Tornado's xheaders costs a getaddrinfo() call on every request.
    server = GuardedHTTPServer(app, max_body_size=max_body_size, idle_timeout_s=idle_timeout_s,
                               body_timeout_s=body_timeout_s, max_connections=max_connections)
    if stats is not None:
        server.stats = stats
    server.add_sockets(sockets)
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    if on_start is not None:
        await on_start()
    # Everything allocated so far (modules, the app, the runtime) lives as long as the process: move
    # it out of the collector's sight, so a full collection scans only what requests created since
    # (scanning it all costs milliseconds per collection; BENCHMARKS.md). Garbage first, or it is kept
    # forever.
    gc.collect()
    gc.freeze()
    # A young collection runs when live new container objects outnumber the threshold. 64 requests
    # in flight hold more than the default 700, which would run it hundreds of times a second,
    # promoting objects that are about to die anyway. At 10,000 it runs a few times a minute;
    # cyclic garbage waits a little longer to be freed.
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
    log.info("listening on http://%s:%d", host, port)
    await stop.wait()
    started = time.monotonic()
    log.info("shutting down: %d request(s) in flight", inflight.count)
    # Every answer from now on says "Connection: close" and ends its connection, so no client reuses a
    # connection this process is about to close (a request sent on it would meet a reset). An idle
    # keep-alive connection is served once more that way rather than closed under its client.
    server.conn_params.no_keep_alive = True
    # Under a reload a new process shares the port: stop the kernel queueing new connections for us, and
    # accept what it already queued before closing the listener (closing it would reset those).
    if hand_over(sockets, workers):
        await asyncio.sleep(HANDOVER_GRACE_S)
    server.stop()
    # Leave a second of the budget for cleanup after requests finish.
    deadline = started + max(0.5, shutdown_timeout_s - 1.0)
    # Keep-alive connections still open get their next request answered (with "Connection: close"); those
    # that stay quiet for KEEPALIVE_GRACE_S with nothing in flight are closed below.
    quiet_since: float | None = None
    while time.monotonic() < deadline and (inflight.count > 0 or server.stats.open > 0):
        if inflight.count:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= KEEPALIVE_GRACE_S:
            break
        await asyncio.sleep(0.02)
    if inflight.count:
        log.warning("%d request(s) still running at the shutdown deadline", inflight.count)
    try:
        await asyncio.wait_for(server.close_all_connections(), 0.5)
    except TimeoutError:
        pass
    if on_stop is not None:
        await on_stop()
    for sig in signals:
        loop.remove_signal_handler(sig)
    log.info("stopped in %.2fs", time.monotonic() - started)
