"""The workers' shared metrics folder (prometheus-client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR).

With several workers every one writes its series to files named after its pid in one folder, and the
``/metrics`` page any of them serves sums them all (``mcp.server.metrics``). prometheus-client requires the
folder to be empty when the first process starts, so the supervisor empties it when it starts. A worker that
stops cleanly takes its live gauges out of the sum itself; one that was killed cannot, so after each worker's
exit the supervisor marks every pid whose live-gauge files remain but which no longer runs as dead
(``prometheus_client.multiprocess.mark_process_dead``): open connections and pending records then count only
live workers. Counters and histograms of dead workers stay in the sum, as a counter must not go down.

prometheus-client is imported only here and only with several workers, so a one-worker supervisor stays small.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# gauge_livesum_4242.db, gauge_livemin_4242.db, ...: the files mark_process_dead removes.
_LIVE_GAUGE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def prepare(directory: Path) -> None:
    """An empty folder (only this user may read it: label values are bounded, but it is ours)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)


def forget_dead(directory: Path, alive: Callable[[int], bool]) -> list[int]:
    """Mark every pid with live-gauge files that no longer runs as dead; the pids marked."""
    from prometheus_client.multiprocess import mark_process_dead

    try:
        names = os.listdir(directory)
    except OSError as e:
        log.debug("cannot list %s: %s", directory, e)
        return []
    pids = sorted({int(m[1]) for name in names if (m := _LIVE_GAUGE.fullmatch(name))})
    dead = [pid for pid in pids if not alive(pid)]
    for pid in dead:
        try:
            mark_process_dead(pid, str(directory))
        except OSError as e:
            log.debug("cannot remove the live gauges of pid %d: %s", pid, e)
    return dead
