"""Requests/s and errors/s of a process, from two readings of its ``/metrics`` (``mcp_http_requests_total``).

Requests are every HTTP request the process answered except those of its ``/metrics`` handler, so a
screen (or a Prometheus server) scraping it does not count itself. Errors are the answers with a 5xx
status: the process or its upstream failed. 4xx answers (an unknown instance, a body too large, a
client's bad JSON) are the client's mistake and not counted as errors here; the per-status counts stay in
``/metrics`` for whoever wants them.

A counter lower than at the previous reading means the process restarted: the new counter counts from
zero, so its whole value is the increase (as Prometheus's ``rate`` treats a reset).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

REQUESTS_SAMPLE = "mcp_http_requests_total"
SCRAPE_HANDLER = "MetricsHandler"
# /metrics of a busy service with every tool and status seen is tens of KiB; more is not ours.
MAX_METRICS_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Counts:
    """One reading of a process's request counters."""

    requests: float
    errors: float
    at: float  # time.monotonic() when the answer arrived


@dataclass(frozen=True)
class Rates:
    requests: float
    errors: float


def count_requests(text: str) -> tuple[float, float]:
    """(requests, 5xx answers) in a Prometheus text exposition, the scrapes of /metrics left out."""
    requests = errors = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != REQUESTS_SAMPLE or sample.labels.get("handler") == SCRAPE_HANDLER:
                continue
            requests += sample.value
            if sample.labels.get("status", "").startswith("5"):
                errors += sample.value
    return requests, errors


# Loopback only: an http_proxy in the operator's environment must not be asked for it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout: float) -> str:
    with _OPENER.open(url, timeout=timeout) as response:
        return response.read(MAX_METRICS_BYTES).decode("utf-8", "replace")


async def read_counts(url: str, timeout: float) -> Counts | None:
    """One reading of ``url`` (a ``/metrics``), or None when it does not answer or is not ours."""
    try:
        text = await asyncio.wait_for(asyncio.to_thread(_get, url, timeout), timeout + 1)
        requests, errors = count_requests(text)
    except (OSError, ValueError, TimeoutError, urllib.error.URLError) as e:
        log.debug("no metrics from %s: %s", url, e)
        return None
    return Counts(requests, errors, time.monotonic())


def rates(before: Counts | None, after: Counts | None) -> Rates | None:
    """Per-second rates between two readings; None without both (the first frame, a silent process)."""
    if before is None or after is None or after.at <= before.at:
        return None
    seconds = after.at - before.at
    requests = after.requests - before.requests if after.requests >= before.requests else after.requests
    errors = after.errors - before.errors if after.errors >= before.errors else after.errors
    return Rates(requests / seconds, errors / seconds)
