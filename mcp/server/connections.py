"""The HTTP server every process runs: Tornado's, bounded for the open internet.

What it adds to ``tornado.httpserver.HTTPServer``:

- **A cap on open connections** below the descriptor limit (``MAX_CONNECTIONS``; by default the
  soft ``RLIMIT_NOFILE`` less a reserve for the database pool, upstream sockets and log files).
  At the cap the oldest connection that is only waiting for its client (request headers or body
  not yet sent) is closed to make room, so a flood of idle or slow connections cannot lock out
  new clients or the supervisor's ``/health`` probe; when every open connection is busy serving,
  the newcomer gets a canned 503 and is closed. A request being served is never cut off.
- **Accept errors without a busy loop**: when ``accept()`` fails for want of descriptors or memory
  the listening socket is left alone for a moment (the kernel keeps the backlog) and the condition
  is logged once a minute with a count, not once per attempt with a traceback.
- **JSON answers to malformed HTTP**: headers over the size limit get ``431`` and broken framing
  (Content-Length with Transfer-Encoding, two lengths, a negative one, bad chunks) gets ``400``,
  each with the platform's JSON error body, where Tornado would close silently or send a bare
  status line.
- **Timeouts without a timer per request**: a connection still receiving a request body
  ``body_timeout_s`` after the body began, or waiting for a request head (idle keep-alive, slow
  headers) ``idle_timeout_s`` after it began to, is closed by a sweep that runs once a second
  (Tornado's own ``body_timeout``, ``idle_connection_timeout`` and head timeout arm and cancel a timer
  on every request; the head timeout is switched off).
- **Lingering close**: whenever the server closes a connection (its client may still be sending: an
  answer given before the body was read, a refusal), it stops writing, then reads and discards for a
  bounded time before closing, so the client receives the answer instead of a reset.
"""

from __future__ import annotations

import errno
import json
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import tornado.httpserver
import tornado.iostream
from tornado.ioloop import IOLoop, PeriodicCallback

log = logging.getLogger(__name__)

# Descriptors kept back from the cap: database pool, upstream connections (aiohttp's limit is 200),
# log files, the listening sockets, lingering closes, and some slack.
FD_RESERVE = 400
MIN_CONNECTIONS = 16
# How long accepting pauses after running out of descriptors (the backlog waits in the kernel).
ACCEPT_PAUSE_S = 0.25
ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
LOG_EVERY_S = 60.0
# Lingering close: at most this many sockets, each for at most this long and this many bytes.
LINGER_MAX = 128
LINGER_S = 5.0
LINGER_BYTES = 64 << 20
_ACCEPT_BATCH = 128
SWEEP_EVERY_S = 1.0


def _answer(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n")
    return head.encode() + body


# What Tornado writes for any malformed request (HTTPInputError), byte for byte.
TORNADO_BARE_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"
BAD_REQUEST = _answer(400, "Bad Request", "bad_request",
                      "the request is not valid HTTP/1.1 (check Content-Length, Transfer-Encoding and chunk framing)")
HEADERS_TOO_LARGE = _answer(431, "Request Header Fields Too Large", "headers_too_large",
                            "the request line and headers are too large")
OVERLOADED = _answer(503, "Service Unavailable", "overloaded",
                     "the server has too many open connections; retry shortly")


def default_max_connections(reserve: int = FD_RESERVE) -> int:
    """The soft descriptor limit less ``reserve`` (a quarter of a small limit; never below MIN_CONNECTIONS)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(MIN_CONNECTIONS, soft - min(reserve, soft // 4))


def raise_descriptor_limit() -> None:
    """Lift the soft descriptor limit to the hard one, as servers usually do at start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class RateLimitedLog:
    """One log line per ``every_s`` for a recurring condition, with how often it happened meanwhile."""

    def __init__(self, logger: logging.Logger, every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every_s = every_s
        self.clock = clock
        self._last = -every_s
        self._suppressed = 0

    def warning(self, message: str, *args: Any) -> None:
        now = self.clock()
        if now - self._last < self.every_s:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self.logger.warning(message + more, *args)
        self._last = now
        self._suppressed = 0


_METRICS = (
    ("mcp_connections_open", "Client connections open now", "open"),
    ("mcp_connections_evicted", "Idle connections closed to admit new ones at the cap (since start)", "evicted"),
    ("mcp_connections_refused", "Connections refused at the cap while all were busy (since start)", "refused"),
    ("mcp_connections_accept_errors", "accept() failures for want of descriptors (since start)", "accept_errors"),
    ("mcp_connections_lingering", "Closed connections still draining what their client sends", "lingering"),
    ("mcp_requests_malformed", "Requests answered 400/431 for malformed HTTP (since start)", "malformed"),
    ("mcp_request_body_timeouts", "Connections closed because a body did not arrive in time (since start)",
     "body_timeouts"),
    ("mcp_request_bodies_aborted", "Bodies whose client closed the connection before the end (since start)",
     "bodies_aborted"),
)


class ConnectionStats:
    """Counters a process's metrics read."""

    def __init__(self) -> None:
        self.open = 0
        self.evicted = 0
        self.refused = 0
        self.accept_errors = 0
        self.malformed = 0
        self.lingering = 0
        self.body_timeouts = 0
        self.bodies_aborted = 0

    def register(self, metrics: Any) -> None:
        """Show the counters on a process's /metrics (``metrics.gauge``: read at scrape time). With several
        workers, the levels (open, lingering) add up over live workers, the counts since start over all."""
        for name, help_text, attr in _METRICS:
            mode = "livesum" if attr in ("open", "lingering") else "sum"
            metrics.gauge(name, help_text, lambda attr=attr: getattr(self, attr), multiprocess_mode=mode)


class _ClientStream(tornado.iostream.IOStream):
    """One client connection: JSON answers to malformed HTTP, and a lingering close."""

    def __init__(self, sock: socket.socket, server: GuardedHTTPServer, **kw: Any) -> None:
        super().__init__(sock, **kw)
        self._server = server
        self.started = False  # a request has begun to be read: before that the connection is idle
        self.head_since = time.monotonic()  # when it began to wait for the current request head
        self.body_since: float | None = None  # when the current request's body began to be read
        self.body_timed_out = False
        self._nodelay = False

    def set_nodelay(self, value: bool) -> None:
        # Tornado turns Nagle's algorithm off to write each answer and back on after it: two setsockopt calls
        # (and a socket-family enum conversion each) per request. Answers are written whole, so it is turned
        # off once, for the connection's life.
        if not self._nodelay:
            self._nodelay = True
            super().set_nodelay(True)

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> Any:  # type: ignore[override]
        # Tornado reads each request head with this call, and every body with the two below.
        self.started = True
        self.head_since = time.monotonic()
        self.body_since = None
        return super().read_until_regex(regex, max_bytes)

    def read_bytes(self, num_bytes: int, partial: bool = False) -> Any:  # type: ignore[override]
        if self.body_since is None:
            self.body_since = time.monotonic()
        return super().read_bytes(num_bytes, partial)

    def read_until(self, delimiter: bytes, max_bytes: int | None = None) -> Any:  # type: ignore[override]
        if self.body_since is None:  # a chunked body's first chunk-size line
            self.body_since = time.monotonic()
        return super().read_until(delimiter, max_bytes)

    def idle(self) -> bool:
        """Waiting on its client (not yet read from, or reading a request head or body), not serving."""
        return not self.closed() and (not self.started or self.reading()) and not self.writing()

    def write(self, data: bytes | memoryview) -> Any:  # type: ignore[override]
        if len(data) == len(TORNADO_BARE_400) and data == TORNADO_BARE_400:
            self._server.stats.malformed += 1
            data = BAD_REQUEST
        return super().write(data)

    def close(self, exc_info: Any = False) -> None:
        if not self.closed():
            error = exc_info[1] if isinstance(exc_info, tuple) else exc_info
            if isinstance(error, tornado.iostream.UnsatisfiableReadError):
                # The request head outgrew max_header_size; the stream is closing on its own.
                self._server.stats.malformed += 1
                _send_now(self.socket, HEADERS_TOO_LARGE)
            # The client may still be sending (an answer given before its body was read, a refusal):
            # whenever the server closes, it lingers, so the client reads the answer, not a reset.
            self._server.linger(self.socket)
        super().close(exc_info)


def _send_now(sock: socket.socket, data: bytes) -> None:
    """Best effort, never blocking: a small answer fits in the socket's send buffer."""
    try:
        sock.send(data, socket.MSG_DONTWAIT)
    except OSError:
        pass


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer with a connection cap, quiet accept errors, JSON framing errors and
    lingering closes (see the module docstring). ``max_connections``: 0 for the default."""

    def initialize(self, *args: Any, max_connections: int = 0, body_timeout_s: float = 20.0,  # type: ignore[override]
                   idle_timeout_s: float = 60.0, **kw: Any) -> None:
        super().initialize(*args, **kw)
        # Tornado waits for each request head under a timer of its own (idle_connection_timeout, else an hour),
        # armed and cancelled per request; the sweep below bounds that wait with idle_timeout_s instead.
        self.conn_params.header_timeout = None
        self.max_connections = max_connections or default_max_connections()
        self.body_timeout_s = body_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._sweeper: PeriodicCallback | None = None
        self.stats = ConnectionStats()
        self._streams: dict[_ClientStream, None] = {}  # open connections, oldest first
        self._accept_log = RateLimitedLog(log)
        self._cap_log = RateLimitedLog(log)
        self._paused: set[int] = set()

    # --- accepting ------------------------------------------------------------------------------

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._watch(sock)
        if self._sweeper is None:
            self._sweeper = PeriodicCallback(self._close_stalled, SWEEP_EVERY_S * 1000)
            self._sweeper.start()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        super().stop()

    async def close_all_connections(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        await super().close_all_connections()

    def _close_stalled(self) -> None:
        """Close connections whose client keeps the server waiting past a bound (once a second)."""
        now = time.monotonic()
        body_limit, idle_limit = self.body_timeout_s, self.idle_timeout_s
        for stream in list(self._streams):
            since = stream.body_since
            if since is None:
                # Waiting for a request head, or serving one (then not reading: left alone).
                if now - stream.head_since >= idle_limit and (stream.reading() or not stream.started):
                    stream.close()
            elif now - since >= body_limit and stream.reading():
                stream.body_timed_out = True
                self.stats.body_timeouts += 1
                stream.close()

    def _watch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        loop = IOLoop.current()
        loop.add_handler(sock, lambda _fd, _events: self._accept(sock), IOLoop.READ)
        self._handlers[fd] = lambda: self._unwatch(sock)

    def _unwatch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd in self._paused:
            self._paused.discard(fd)
        else:
            IOLoop.current().remove_handler(sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno not in ACCEPT_ERRNOS:
                    raise
                self.stats.accept_errors += 1
                self._accept_log.warning("cannot accept connections: %s (%d open); pausing accepts for %.2fs",
                                         e.strerror or e, len(self._streams), ACCEPT_PAUSE_S)
                self._pause(sock)
                return
            self._admit(conn, address)

    def _pause(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd in self._paused or fd not in self._sockets:
            return
        loop = IOLoop.current()
        loop.remove_handler(sock)
        self._paused.add(fd)

        def resume() -> None:
            if fd in self._paused and fd in self._sockets:
                self._paused.discard(fd)
                loop.add_handler(sock, lambda _fd, _events: self._accept(sock), IOLoop.READ)

        loop.call_later(ACCEPT_PAUSE_S, resume)

    def _admit(self, conn: socket.socket, address: Any) -> None:
        if len(self._streams) >= self.max_connections and not self._evict_one():
            self.stats.refused += 1
            self._cap_log.warning("%d connections open (the cap): refusing new ones while all are busy",
                                  len(self._streams))
            conn.setblocking(False)
            _send_now(conn, OVERLOADED)
            conn.close()
            return
        conn.setblocking(False)
        stream = _ClientStream(conn, self, max_buffer_size=self.max_buffer_size,
                               read_chunk_size=self.read_chunk_size)
        self._streams[stream] = None
        self.stats.open = len(self._streams)
        self.handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        """The connection's serving loop has ended (Tornado calls this for every connection)."""
        self._streams.pop(getattr(server_conn, "stream", None), None)  # type: ignore[arg-type]
        self.stats.open = len(self._streams)
        super().on_close(server_conn)

    def _evict_one(self) -> bool:
        """Close the oldest connection that is waiting on its client; False if every one is busy."""
        for stream in self._streams:
            if stream.idle():
                self.stats.evicted += 1
                self._cap_log.warning("%d connections open (the cap): closing the oldest idle ones to admit new",
                                      len(self._streams))
                self._streams.pop(stream, None)
                tornado.iostream.IOStream.close(stream)  # no lingering: it is making room
                return True
        return False

    # --- lingering close ------------------------------------------------------------------------

    def linger(self, sock: socket.socket) -> None:
        """Keep ``sock``'s connection open a little after its stream closes: stop sending (FIN after
        what was written) and discard what the client still sends, so it reads our answer."""
        if self.stats.lingering >= LINGER_MAX:
            return
        try:
            dup = sock.dup()
            dup.setblocking(False)
            dup.shutdown(socket.SHUT_WR)
        except OSError:
            return
        self.stats.lingering += 1
        loop = IOLoop.current()
        state = {"left": LINGER_BYTES, "done": False}

        def finish() -> None:
            if state["done"]:
                return
            state["done"] = True
            try:
                loop.remove_handler(dup)
            except (KeyError, ValueError):
                pass
            dup.close()
            self.stats.lingering -= 1

        def drain(_fd: Any, _events: int) -> None:
            try:
                while state["left"] > 0:
                    chunk = dup.recv(65536)
                    if not chunk:
                        break
                    state["left"] -= len(chunk)
            except BlockingIOError:
                return
            except OSError:
                pass
            finish()

        loop.add_handler(dup, drain, IOLoop.READ)
        loop.call_later(LINGER_S, finish)
