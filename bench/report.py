"""The figures of one run: the targets they are held against, the printed table, the JSON file."""

from __future__ import annotations

from typing import Any

THROUGHPUT_RATIO = 0.85
WORKERS_RATIO = 1.3  # 2 workers against 1, on this 2-core machine shared with the load generator and simulator
WORKERS_CPU_MARGIN = 0.10  # the workers' CPU per call within 10% of one worker's: the cores are the limit
PEERS = (("sdk_peer", "MCP SDK peer"), ("fastmcp_peer", "FastMCP peer"), ("ts_peer", "TypeScript SDK peer"))
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
        out += _ahead_of_peers(report, row, label)
    out += _workers(report)
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


def _ahead_of_peers(report: dict[str, Any], row: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """The full path (one worker) against each peer: more calls/s and a lower saturated p99."""
    out = []
    for name, peer_label in PEERS:
        target = f"full path {label} ahead of {peer_label}"
        goal = "throughput > peer and p99 < peer"
        peer = _row(report, name)
        if peer is None:
            out.append(_target(target, goal, "peer not measured", None,
                               (report["results"].get(name) or {}).get("note", "")))
            continue
        sat, other = row["saturated"], peer["saturated"]
        ahead = sat["rps"] / other["rps"] if other["rps"] else float("inf")
        p99 = sat["p99_ms"] - other["p99_ms"]
        out.append(_target(target, goal, f"{ahead:.2f}x peer's throughput, p99 {p99:+.2f} ms",
                           ahead > 1.0 and p99 < 0))
    return out


def _workers(report: dict[str, Any]) -> list[dict[str, Any]]:
    """N workers against one (the full MCP path both): throughput ratio, CPU per call."""
    many, one = _row(report, "workers"), _row(report, "full_mcp")
    if "workers" not in report["results"]:
        return []
    n = report["results"]["workers"].get("workers") or 2
    names = (f"{n} workers throughput", f"{n} workers CPU per call")
    goals = (f">= {WORKERS_RATIO:g}x one worker's", f"within {WORKERS_CPU_MARGIN:.0%} of one worker's")
    if many is None or one is None:
        note = (report["results"]["workers"].get("note") or "") if many is None else "the MCP row was not measured"
        return [_target(t, g, "not measured", None, note) for t, g in zip(names, goals, strict=True)]
    ratio = many.get("ratio_to_one_worker")
    cpu = many.get("cpu_per_call_to_one_worker")
    launcher = f"{many.get('launcher')}"
    out = [_target(names[0], goals[0], f"{ratio:.2f}x" if ratio is not None else "not measured",
                   ratio >= WORKERS_RATIO if ratio is not None else None, launcher)]
    sup = many["saturated"].get("supervisor_us_per_call")
    note = f"supervisor beside them: {sup:,.0f} us/call" if sup is not None else ""
    out.append(_target(names[1], goals[1],
                       f"{cpu:.2f}x ({many['saturated']['server_us_per_call']:,.0f} vs "
                       f"{one['saturated']['server_us_per_call']:,.0f} us/call)" if cpu is not None else "not measured",
                       abs(cpu - 1.0) <= WORKERS_CPU_MARGIN if cpu is not None else None, note))
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
    width = max([34] + [len(row["label"]) for row in report["results"].values() if row.get("available")])
    header = (f"{'':{width}} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs base':>8} {'p99 +ms':>8} "
              f"{'light p50':>10} {'light p99':>10} {'us/call':>8} {'RSS idle':>9} {'RSS load':>9} {'other CPU':>9}")
    lines += ["", header, "-" * len(header)]
    base = _row(report, "baseline")
    for row in report["results"].values():
        if not row.get("available"):
            lines.append(f"{row['label']:{width}} not available: {row.get('note', '')}")
            continue
        sat, light = row["saturated"], row.get("light")
        ratio = delta = None
        if base is not None and row["name"] != "upstream":
            ratio = sat["rps"] / base["saturated"]["rps"] if base["saturated"]["rps"] else None
            delta = sat["p99_ms"] - base["saturated"]["p99_ms"]
        errors = f"  ({sat['errors']} errors)" if sat["errors"] else ""
        light_p50, light_p99 = (light["p50_ms"], light["p99_ms"]) if light else (None, None)
        lines.append(
            f"{row['label']:{width}} {sat['rps']:>9,.0f} {sat['p50_ms']:>8.2f} {sat['p99_ms']:>8.2f} "
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
    sup = rss.get("supervised_idle") or {}
    if sup.get("total") is not None:
        lines.append(f"memory per service with its supervisor (mcp-figma, 1 worker): idle {sup['total']} MB "
                     f"(supervisor {sup['supervisor']} + service {sup['workers']} MB); under load about "
                     f"{rss.get('supervised_loaded_estimate')} MB (the service's peak above + the supervisor)")
    lines += _workers_lines(report)
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


def _workers_lines(report: dict[str, Any]) -> list[str]:
    row = _row(report, "workers")
    if row is None:
        return []
    sat = row["saturated"]
    ratio, cpu = row.get("ratio_to_one_worker"), row.get("cpu_per_call_to_one_worker")
    sup = sat.get("supervisor_us_per_call")
    line = (f"{row['workers']} workers ({row['launcher']}): {_fmt(ratio, '.2f')}x one worker's calls/s, "
            f"CPU per call {_fmt(cpu, '.2f')}x one worker's (summed over the workers)")
    if sup is not None:
        line += f", supervisor {sup:,.0f} us/call beside"
    out = [line]
    if row.get("rss_with_supervisor_loaded_mb") is not None:
        out.append(f"memory with {row['workers']} workers and their supervisor: idle "
                   f"{row.get('rss_with_supervisor_idle_mb')} MB, loaded {row['rss_with_supervisor_loaded_mb']} MB "
                   f"(the workers alone: {row.get('rss_idle_mb')} / {row.get('rss_loaded_mb')} MB)")
    return out
