"""Process metrics in the Prometheus text format, with no instance or user ids as label values.

One ``Metrics`` object per process (held by the runtime, never global). Labels are bounded sets:
handler names, HTTP methods and statuses, tool names, outcomes, upstream error codes.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]
S = TypeVar("S")


def _fmt_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = list(labels) + ([extra] if extra else [])
    if not items:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in items)
    return "{" + ",".join(escaped) + "}"


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


class _Cell:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Metrics:
    """Counters and latency histograms for one process; ``render()`` is the /metrics body.

    ``request`` and ``tool_call`` run on every call: they keep their series by their arguments, so a
    call costs two dictionary lookups rather than building and sorting label sets.
    """

    def __init__(self, process: str) -> None:
        self.process = process
        self.started = time.time()
        self._counters: dict[str, dict[Labels, _Cell]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, Histogram]] = defaultdict(dict)
        self._help: dict[str, str] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._request_series: dict[tuple[str, str, int], tuple[_Cell, Histogram]] = {}
        self._tool_series: dict[tuple[str, str], tuple[_Cell, Histogram]] = {}

    def _series(self, kind: dict[str, dict[Labels, S]], make: Callable[[], S], name: str, help_text: str,
                labels: dict[str, str]) -> S:
        """The series of ``name`` with these labels in ``kind``, created on first use."""
        self._help[name] = help_text
        series = kind[name]
        key = tuple(sorted(labels.items()))
        found = series.get(key)
        if found is None:
            found = series[key] = make()
        return found

    def _counter(self, name: str, help_text: str, labels: dict[str, str]) -> _Cell:
        return self._series(self._counters, _Cell, name, help_text, labels)

    def _histogram(self, name: str, help_text: str, labels: dict[str, str]) -> Histogram:
        return self._series(self._histograms, Histogram, name, help_text, labels)

    def inc(self, name: str, help_text: str, amount: float = 1.0, **labels: str) -> None:
        self._counter(name, help_text, labels).value += amount

    def observe(self, name: str, help_text: str, value: float, **labels: str) -> None:
        self._histogram(name, help_text, labels).observe(value)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A value read at scrape time (uptime, buffer sizes)."""
        self._gauges[name] = (help_text, read)

    def request(self, handler: str, method: str, status: int, seconds: float) -> None:
        key = (handler, method, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = (
                self._counter("mcp_http_requests_total", "HTTP requests by handler, method and status",
                              {"handler": handler, "method": method, "status": str(status)}),
                self._histogram("mcp_http_request_duration_seconds", "HTTP request latency", {"handler": handler}))
        series[0].value += 1
        series[1].observe(seconds)

    def tool_call(self, tool: str, outcome: str, seconds: float, upstream_code: str | None = None,
                  upstream: str | None = None) -> None:
        key = (tool, outcome)
        series = self._tool_series.get(key)
        if series is None:
            series = self._tool_series[key] = (
                self._counter("mcp_tool_calls_total", "Tool calls by tool and outcome",
                              {"tool": tool, "outcome": outcome}),
                self._histogram("mcp_tool_call_duration_seconds", "Tool call latency, upstream included",
                                {"tool": tool}))
        series[0].value += 1
        series[1].observe(seconds)
        if upstream_code is not None:
            self.inc("mcp_upstream_errors_total", "Upstream failures by upstream and code",
                     upstream=upstream or "unknown", code=upstream_code)

    def render(self) -> str:
        lines: list[str] = []
        base = (("process", self.process),)
        lines += ["# HELP mcp_process_uptime_seconds Seconds since the process started",
                  "# TYPE mcp_process_uptime_seconds gauge",
                  f"mcp_process_uptime_seconds{_fmt_labels(base)} {time.time() - self.started:.3f}"]
        for name, (help_text, read) in sorted(self._gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{_fmt_labels(base)} {read()}"]
        for name, series in sorted(self._counters.items()):
            lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} counter"]
            lines += [f"{name}{_fmt_labels(base + labels)} {cell.value:g}"
                      for labels, cell in sorted(series.items(), key=lambda item: item[0])]
        for name, series in sorted(self._histograms.items()):
            lines += [f"# HELP {name} {self._help[name]}", f"# TYPE {name} histogram"]
            for labels, hist in sorted(series.items(), key=lambda item: item[0]):
                cumulative = 0
                for bound, count in zip((*hist.buckets, float("inf")), hist.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    lines.append(f"{name}_bucket{_fmt_labels(base + labels, ('le', le))} {cumulative}")
                lines.append(f"{name}_sum{_fmt_labels(base + labels)} {hist.total:.6f}")
                lines.append(f"{name}_count{_fmt_labels(base + labels)} {hist.n}")
        return "\n".join(lines) + "\n"
