"""A process's /metrics page, through prometheus-client, with no instance or user ids as label values.

One ``Metrics`` per process, built at start and handed down (the runtime holds it): it owns its
``CollectorRegistry``, and nothing is registered in prometheus-client's default ``REGISTRY``. Every series
carries ``process`` (the service's name). Label values are bounded sets: handler class names, scrubbed HTTP
methods, statuses, tool names, outcomes, and upstream error codes from a known vocabulary (any other code,
such as a new free-form Slack ``error``, is counted as ``other``).

Several worker processes of one service: with ``PROMETHEUS_MULTIPROC_DIR`` in the environment before the
process starts (prometheus-client picks file-backed values when it is imported), every process writes its
series to its own files in that directory, and the page any of them serves is the sum over every process
of the same name that wrote there (``MultiProcessCollector``). Gauges read at scrape time are copied into
the files every ``REFRESH_S`` and at each scrape, and aggregated by their ``multiprocess_mode``: levels
(open connections, records pending) with ``livesum``, counts since start with ``sum``, uptime with
``livemin`` (the youngest live worker). A worker that stops cleanly removes its live-gauge files
(``close``); for one that died, whoever reaps it calls ``forget_process``. Counters and histograms of a
dead worker stay in the sum, as a counter must not go down. The directory is emptied before the formation
starts, as prometheus-client requires.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from mcp.config import ConfigError

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REFRESH_S = 1.0
OTHER = "other"

M = TypeVar("M", bound=MetricWrapperBase)
GaugeMode = Literal["livesum", "sum", "livemin", "livemax", "min", "max"]

# The codes any upstream's failures carry: those of mcp/server/upstream.py and the HTTP-status codes of
# services/*/api.py (tests/test_metrics.py checks that every code a service can raise is known here).
COMMON_UPSTREAM_CODES = frozenset({
    "bad_request", "bad_response", "conflict", "deadline_exceeded", "forbidden", "gone", "not_found",
    "rate_limited", "timeout", "unauthorized", "unreachable", "upstream_error", "upstream_unavailable",
    "validation_failed",
})
def upstream_code_label(code: str, known: frozenset[str] = frozenset()) -> str:
    """The label value for an upstream error code: the code when it is a common one or one of ``known``
    (the service's own vocabulary, ``Service.upstream_error_codes``), else ``other``."""
    if code in COMMON_UPSTREAM_CODES or code in known:
        return code
    return OTHER


def forget_process(pid: int, directory: str) -> None:
    """Drop a dead worker's live gauges from the aggregate (its counters and histograms stay counted)."""
    mark_process_dead(pid, directory)


class _Own:
    """This process's series, as prometheus-client renders them, without the ``_created`` series (which the
    page has never had: a new name for every counter and histogram)."""

    def __init__(self, metrics: list[MetricWrapperBase]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            for family in metric.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                if family.samples:  # a series appears with its first value, as before
                    yield family


class _Aggregate:
    """The series every process named ``process`` wrote to ``directory``."""

    def __init__(self, directory: str, process: str) -> None:
        self._directory = directory
        self._process = process

    def collect(self) -> Iterator[Metric]:
        files = glob.glob(os.path.join(glob.escape(self._directory), "*.db"))
        for family in MultiProcessCollector.merge(files, accumulate=True):
            family.samples = [s for s in family.samples if s.labels.get("process") == self._process]
            if family.samples:
                yield family


class Metrics:
    """Counters, latency histograms and scrape-time gauges of one process; ``render()`` is the /metrics body.

    ``request`` and ``tool_call`` run on every call: the labelled children are kept by their arguments, so
    a call is a dictionary lookup and the children's ``inc``/``observe``.
    """

    def __init__(self, process: str, multiproc_dir: str | None = None,
                 upstream_codes: frozenset[str] = frozenset()) -> None:
        self.process = process
        self._upstream_codes = upstream_codes
        self.multiproc_dir = multiproc_dir
        if multiproc_dir is not None:
            _check_multiprocess(multiproc_dir)
        self.started = time.time()
        self._metrics: list[MetricWrapperBase] = []
        self._gauges: list[tuple[str, Gauge, Callable[[], float]]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Aggregate(multiproc_dir, process) if multiproc_dir else _Own(self._metrics))

        self._http = self._add(Counter("mcp_http_requests_total", "HTTP requests by handler, method and status",
                                       ("process", "handler", "method", "status"), registry=None))
        self._http_latency = self._add(Histogram("mcp_http_request_duration_seconds", "HTTP request latency",
                                                 ("process", "handler"), buckets=LATENCY_BUCKETS, registry=None))
        self._calls = self._add(Counter("mcp_tool_calls_total", "Tool calls by tool and outcome",
                                        ("process", "outcome", "tool"), registry=None))
        self._call_latency = self._add(Histogram("mcp_tool_call_duration_seconds",
                                                 "Tool call latency, upstream included", ("process", "tool"),
                                                 buckets=LATENCY_BUCKETS, registry=None))
        self._upstream_errors = self._add(Counter("mcp_upstream_errors_total", "Upstream failures by upstream and code",
                                                  ("process", "code", "upstream"), registry=None))
        self._requests: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._tools: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._upstream: dict[tuple[str, str], Counter] = {}

        self.gauge("mcp_process_uptime_seconds", "Seconds since the process started",
                   lambda: time.time() - self.started, multiprocess_mode="livemin")
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        if multiproc_dir is not None:
            self._refresher = threading.Thread(target=self._refresh_loop, name="metrics-refresh", daemon=True)
            self._refresher.start()

    def _add(self, metric: M) -> M:
        self._metrics.append(metric)
        return metric

    def gauge(self, name: str, help_text: str, read: Callable[[], float],
              multiprocess_mode: GaugeMode = "livesum") -> None:
        """A value read at scrape time (uptime, buffer sizes). ``multiprocess_mode`` says how the values of
        several workers add up: ``livesum`` for a level, ``sum`` for a count since start."""
        metric = Gauge(name, help_text, ("process",), registry=None, multiprocess_mode=multiprocess_mode)
        child = metric.labels(self.process)
        if self.multiproc_dir is None:
            child.set_function(read)
        else:
            self._gauges.append((name, child, read))
            _set(name, child, read)
        self._add(metric)

    def request(self, handler: str, method: str, status: int, seconds: float) -> None:
        key = (handler, method, status)
        series = self._requests.get(key)
        if series is None:
            series = self._requests[key] = (self._http.labels(self.process, handler, method, str(status)),
                                            self._http_latency.labels(self.process, handler))
        series[0].inc()
        series[1].observe(seconds)

    def tool_call(self, tool: str, outcome: str, seconds: float, upstream_code: str | None = None,
                  upstream: str | None = None) -> None:
        key = (tool, outcome)
        series = self._tools.get(key)
        if series is None:
            series = self._tools[key] = (self._calls.labels(self.process, outcome, tool),
                                         self._call_latency.labels(self.process, tool))
        series[0].inc()
        series[1].observe(seconds)
        if upstream_code is not None:
            upstream = upstream or "unknown"
            # Keyed by the bounded label, not the raw code: a stream of new codes must not grow the cache.
            label_key = (upstream, upstream_code_label(upstream_code, self._upstream_codes))
            counter = self._upstream.get(label_key)
            if counter is None:
                counter = self._upstream[label_key] = self._upstream_errors.labels(self.process, label_key[1],
                                                                                   upstream)
            counter.inc()

    def render(self) -> bytes:
        """The page: this process's series, or with a multiprocess directory every worker's, summed."""
        self._refresh()
        return generate_latest(self.registry)

    def close(self) -> None:
        """Stop copying gauges to the files and take this process's live gauges out of the aggregate."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
            self._refresher = None
        if self.multiproc_dir is not None:
            forget_process(os.getpid(), self.multiproc_dir)

    def _refresh(self) -> None:
        for name, child, read in self._gauges:
            _set(name, child, read)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self._refresh()


def _set(name: str, child: Gauge, read: Callable[[], float]) -> None:
    try:
        child.set(read())
    except Exception:  # a broken reader must not take the page (or the refresher) down
        log.exception("reading %s for /metrics failed", name)


def _check_multiprocess(directory: str) -> None:
    """prometheus-client decides on file-backed values when imported, from the process environment."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") != directory or not getattr(values.ValueClass, "_multiprocess",
                                                                                 False):
        raise ConfigError("PROMETHEUS_MULTIPROC_DIR must be in the process environment when it starts "
                          "(prometheus-client reads it once, when it is imported)")
    if not os.path.isdir(directory):
        raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR {directory!r} is not a directory")

