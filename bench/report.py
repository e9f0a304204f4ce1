"""The figures of one run: the targets they are held against, the printed table, the JSON file."""

from __future__ import annotations

from typing import Any

THROUGHPUT_RATIO = 0.85
P99_MARGIN_MS = 2.0
STARTUP_S = 3.0
RSS_MB = 60.0
LOOKUP_FLAT_RATIO = 1.25  # "flat": the 100k lookup's p50 within 25% of the 1k one's (or 0.05 ms, for noise)
LOOKUP_NOISE_MS = 0.05


def _row(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    row = report["results"].get(name)
    return row if row and row.get("available") else None


def _target(name: str, goal: str, value: str, met: bool | None, note: str = "") -> dict[str, Any]:
    return {"target": name, "goal": goal, "value": value, "met": met, "note": note}


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, with where this run stands (met None: could not be measured)."""
    out: list[dict[str, Any]] = []
    base = _row(report, "baseline")
    peer = _row(report, "sdk_peer")
    for name, label in (("full_rest", "REST"), ("full_mcp", "MCP")):
        row = _row(report, name)
        if row is None or base is None:
            out.append(_target(f"full path {label} throughput", ">= 85% of baseline", "not measured", None,
                               (report["results"].get(name) or {}).get("note", "")))
            continue
        ratio = row["saturated"]["rps"] / base["saturated"]["rps"] if base["saturated"]["rps"] else 0.0
        shaped = _row(report, "baseline_mcp") if name == "full_mcp" else None
        shaped_note = ""
        if shaped is not None and shaped["saturated"]["rps"]:
            shaped_note = (f"vs the baseline given the same MCP-shaped request: "
                           f"{row['saturated']['rps'] / shaped['saturated']['rps']:.0%}")
        out.append(_target(f"full path {label} throughput", ">= 85% of baseline", f"{ratio:.0%}",
                           ratio >= THROUGHPUT_RATIO, shaped_note))
        delta = row["saturated"]["p99_ms"] - base["saturated"]["p99_ms"]
        light = row["light"]["p99_ms"] - base["light"]["p99_ms"] if row.get("light") and base.get("light") else None
        note = f"at 1 connection: {light:+.2f} ms" if light is not None else ""
        out.append(_target(f"full path {label} p99", "<= baseline + 2 ms", f"{delta:+.2f} ms (saturated)",
                           delta <= P99_MARGIN_MS, note))
        if peer is None:
            out.append(_target(f"full path {label} ahead of SDK peer", "throughput > peer", "peer not measured",
                               None, (report["results"].get("sdk_peer") or {}).get("note", "")))
        else:
            ahead = row["saturated"]["rps"] / peer["saturated"]["rps"] if peer["saturated"]["rps"] else 0.0
            out.append(_target(f"full path {label} ahead of SDK peer", "throughput > peer", f"{ahead:.2f}x peer",
                               ahead > 1.0))
    startup = report["startup"]
    out.append(_target("all processes healthy", f"<= {STARTUP_S:g} s after start (warm database)",
                       f"{startup['all_healthy_s']:.2f} s", startup["all_healthy_s"] <= STARTUP_S))
    rss = report["rss_mb"]
    worst = max(((p, v) for p, v in rss["service_loaded"].items() if v is not None), key=lambda pv: pv[1],
                default=(None, None))
    out.append(_target("service process RSS under load", f"< {RSS_MB:g} MB each",
                       f"{worst[1]} MB ({worst[0]})" if worst[0] else "not measured",
                       worst[1] < RSS_MB if worst[1] is not None else None))
    lookups = report["lookup"]
    if len(lookups) >= 2:
        small, large = lookups[0], lookups[-1]
        ratio = large["p50_ms"] / small["p50_ms"] if small["p50_ms"] else 0.0
        flat = ratio <= LOOKUP_FLAT_RATIO or large["p50_ms"] - small["p50_ms"] <= LOOKUP_NOISE_MS
        out.append(_target("uncached lookup flat", f"{small['instances']:,} -> {large['instances']:,} instances",
                           f"p50 {small['p50_ms']:.3f} -> {large['p50_ms']:.3f} ms ({ratio:.2f}x)", flat))
    return out


def _fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "-".rjust(len(format(0.0, spec)))
    return format(value, spec)


def table(report: dict[str, Any]) -> str:
    """The human-readable summary scripts/bench prints."""
    lines: list[str] = []
    load = report["load"]
    lines.append(f"revision: {report['revision']}; {report['generated_at']}")
    lines.append(f"load: {load['generator']}, {load['connections']} connections, {load['duration_s']:g} s "
                 f"(after {load['warmup_s']:g} s warm-up), full path over {load['instances']:,} instances; "
                 f"latency at light load: {load['light_connections']} connection(s), {load['light_duration_s']:g} s")
    lines.append(f"cpus: {report['machine']['cpus']} ({report['machine']['pinning']}); "
                 f"{load['rounds']} interleaved round(s) per row, the median by throughput shown; "
                 "'us/call': CPU time the server under test spent per answered call (saturated); "
                 "'other CPU': CPUs used by processes outside the bench during the run")
    header = (f"{'':34} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs base':>8} {'p99 +ms':>8} "
              f"{'light p50':>10} {'light p99':>10} {'us/call':>8} {'RSS idle':>9} {'RSS load':>9} {'other CPU':>9}")
    lines += ["", header, "-" * len(header)]
    base = _row(report, "baseline")
    for row in report["results"].values():
        if not row.get("available"):
            lines.append(f"{row['label']:34} not available: {row.get('note', '')}")
            continue
        sat, light = row["saturated"], row.get("light")
        ratio = delta = None
        if base is not None and row["name"] != "upstream":
            ratio = sat["rps"] / base["saturated"]["rps"] if base["saturated"]["rps"] else None
            delta = sat["p99_ms"] - base["saturated"]["p99_ms"]
        errors = f"  ({sat['errors']} errors)" if sat["errors"] else ""
        light_p50, light_p99 = (light["p50_ms"], light["p99_ms"]) if light else (None, None)
        lines.append(
            f"{row['label']:34} {sat['rps']:>9,.0f} {sat['p50_ms']:>8.2f} {sat['p99_ms']:>8.2f} "
            f"{_fmt(ratio, '>8.0%')} {_fmt(delta, '>+8.2f')} "
            f"{_fmt(light_p50, '>10.2f')} {_fmt(light_p99, '>10.2f')} {_fmt(sat.get('server_us_per_call'), '>8,.0f')} "
            f"{_fmt(row.get('rss_idle_mb'), '>9.1f')} {_fmt(row.get('rss_loaded_mb'), '>9.1f')} "
            f"{sat.get('foreign_cpu', 0.0):>9.2f}{errors}")
    startup = report["startup"]
    lines += ["", f"start to all healthy: {startup['all_healthy_s']:.2f} s ("
              + ", ".join(f"{k} {v:.2f} s" for k, v in startup["per_process"].items()) + ")"]
    rss = report["rss_mb"]
    lines.append("RSS idle: " + ", ".join(f"{k} {v} MB" for k, v in rss["service_idle"].items())
                 + "; loaded: " + ", ".join(f"{k} {v} MB" for k, v in rss["service_loaded"].items()))
    for look in report["lookup"]:
        lines.append(f"uncached instance lookup, {look['instances']:>7,} instances: mean {look['mean_ms']:.3f} ms, "
                     f"p50 {look['p50_ms']:.3f} ms, p99 {look['p99_ms']:.3f} ms ({look['lookups']} lookups; "
                     f"other CPU {look.get('foreign_cpu', 0.0):.2f})")
    usage = report.get("usage")
    if usage:
        lines.append(f"usage rows written during the full-path runs: {usage['rows']:,} "
                     f"(calls answered, warm-up included: {usage['calls']:,})")
    lines += ["", "targets:"]
    for t in report["targets"]:
        mark = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        note = f"  [{t['note']}]" if t["note"] else ""
        lines.append(f"  {mark:8} {t['target']}: {t['value']} (goal {t['goal']}){note}")
    return "\n".join(lines)
