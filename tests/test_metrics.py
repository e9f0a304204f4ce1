"""/metrics through prometheus-client: pages a Prometheus scraper accepts, exact counters, bounded labels,
and one page for several worker processes of a service (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp.config import ConfigError
from mcp.server.metrics import Metrics
from tests.conftest import ROOT
from tests.support import call_tool as call
from tests.support import failed, http, ok, wait_for

SERVICE_TYPES = {
    "mcp_http_requests": "counter",
    "mcp_http_request_duration_seconds": "histogram",
    "mcp_tool_calls": "counter",
    "mcp_tool_call_duration_seconds": "histogram",
    "mcp_upstream_errors": "counter",
    "mcp_process_uptime_seconds": "gauge",
    "mcp_usage_records_pending": "gauge",
    "mcp_usage_records_dropped": "gauge",
    "mcp_connections_open": "gauge",
    "mcp_connections_evicted": "gauge",
    "mcp_request_bodies_aborted": "gauge",
}


def parse(text: str) -> dict[str, tuple[str, list]]:
    """Family name -> (type, samples); raises on anything a Prometheus scraper would refuse."""
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def page(url: str) -> dict[str, tuple[str, list]]:
    resp = http("GET", url + "/metrics")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(resp.body.decode())


def value(families: dict[str, tuple[str, list]], sample: str, **labels: str) -> float:
    """The one sample named ``sample`` whose labels include ``labels`` (0 when there is none)."""
    found = [s.value for _, samples in families.values() for s in samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, found
    return found[0] if found else 0.0


def test_a_service_page_parses_with_its_names_labels_and_types(admin, slack_service, slack):
    bot = admin.create_instance(service="slack", credentials={"access_token": "xoxb-1111-alpha"})["instance_id"]
    ok(call(slack_service, bot, "list_channels"))
    slack.fail(r"/api/users\.profile\.get$", 200, {"ok": False, "error": "team_added_to_org"})
    assert failed(call(slack_service, bot, "get_user_profile", {"user": "U00000001"}))["code"] == "team_added_to_org"
    slack.fail(r"/api/users\.profile\.get$", 200, {"ok": False, "error": "user_not_found"})
    failed(call(slack_service, bot, "get_user_profile", {"user": "U00000001"}))
    families = page(slack_service.url)
    for name, kind in SERVICE_TYPES.items():
        assert families[name][0] == kind, (name, families.get(name))
    assert value(families, "mcp_tool_calls_total", process="slack", tool="list_channels", outcome="ok") == 1
    assert value(families, "mcp_tool_call_duration_seconds_count", process="slack", tool="get_user_profile") == 2
    assert value(families, "mcp_http_requests_total", process="slack", handler="ToolCallHandler", method="POST",
                 status="200") == 3
    # Slack's free-form error is not a label value: an unknown code is counted as "other", a known one as itself.
    errors = {s.labels["code"]: s.value for s in families["mcp_upstream_errors"][1]}
    assert errors == {"other": 1, "user_not_found": 1}
    assert all(s.labels["process"] == "slack" for _, samples in families.values() for s in samples)
    assert bot not in http("GET", slack_service.url + "/metrics").body.decode()


def test_the_api_page_parses(admin, api):
    iid = admin.create_instance()["instance_id"]
    admin("GET", f"/api/instances/{iid}")
    families = page(api.url)
    assert families["mcp_http_requests"][0] == "counter" and families["mcp_process_uptime_seconds"][0] == "gauge"
    assert value(families, "mcp_http_requests_total", process="api", handler="InstanceResourceHandler", method="GET",
                 status="200") == 1
    assert families["mcp_connections_open"][0] == "gauge" and "mcp_tool_calls" not in families


def test_a_counter_past_a_million_is_exact():
    metrics = Metrics("figma")
    for _ in range(1_234_567):
        metrics.request("ToolCallHandler", "POST", 200, 0.002)
    families = parse(metrics.render().decode())
    assert value(families, "mcp_http_requests_total", handler="ToolCallHandler") == 1_234_567
    assert value(families, "mcp_http_request_duration_seconds_count", handler="ToolCallHandler") == 1_234_567


def test_a_label_value_with_a_newline_quote_or_backslash_is_escaped():
    metrics = Metrics("figma")
    odd = 'Odd"Handler\\\nmcp_fake_total 1e9'
    metrics.request(odd, "GET", 200, 0.01)
    metrics.request("HealthHandler", "GET", 200, 0.01)
    text = metrics.render().decode()
    families = parse(text)  # the scraper accepts the whole page
    assert value(families, "mcp_http_requests_total", handler=odd) == 1
    assert value(families, "mcp_http_requests_total", handler="HealthHandler") == 1
    assert "mcp_fake" not in families


def test_an_unknown_upstream_code_is_counted_as_other():
    from services.slack import SERVICE as SLACK

    metrics = Metrics("slack", upstream_codes=SLACK.upstream_error_codes)
    for code in ("team_added_to_org", "A code\nwith a newline", "x" * 500, "channel_not_found", "timeout"):
        metrics.tool_call("post_message", "error", 0.1, code, "slack")
    families = parse(metrics.render().decode())
    errors = {(s.labels["upstream"], s.labels["code"]): s.value for s in families["mcp_upstream_errors"][1]}
    assert errors == {("slack", "other"): 3, ("slack", "channel_not_found"): 1, ("slack", "timeout"): 1}
    figma = Metrics("figma")  # a process of another service knows only its own and the common codes
    figma.tool_call("get_me", "error", 0.1, "channel_not_found", "figma")
    families = parse(figma.render().decode())
    assert {s.labels["code"] for s in families["mcp_upstream_errors"][1]} == {"other"}


def _codes_raised(path: Path) -> set[str]:
    """String codes a module gives UpstreamError: ``code="x"`` in the call, or ``code = "x"`` before it."""
    codes: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "UpstreamError":
            codes |= {kw.value.value for kw in node.keywords
                      if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)}
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (zip(target.elts, node.value.elts, strict=False)
                         if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                         else [(target, node.value)])
                codes |= {v.value for t, v in pairs if isinstance(t, ast.Name) and t.id == "code"
                          and isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value}
    return codes


@pytest.mark.parametrize("upstream", ["figma", "github", "slack"])
def test_every_code_a_service_raises_is_a_known_label(upstream):
    import importlib

    from mcp.server import upstream as shared
    from mcp.server.metrics import upstream_code_label

    known = importlib.import_module(f"services.{upstream}").SERVICE.upstream_error_codes

    codes = _codes_raised(ROOT / "services" / upstream / "api.py") | _codes_raised(ROOT / "mcp/server/upstream.py")
    codes |= {code for code, _ in shared._STATUS_HINTS.values()}
    if upstream == "slack":
        from services.slack.api import _ERRORS

        codes |= set(_ERRORS) | _codes_raised(ROOT / "services/slack/tools.py")
    assert len(codes) > 8
    assert {code for code in codes if upstream_code_label(code, known) == "other"} == set()


def test_a_multiprocess_directory_must_be_in_the_environment_at_start(tmp_path):
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics("figma", str(tmp_path))


def test_several_workers_of_a_service_show_one_page(spawn, tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    workers = [spawn("services.figma", "FIGMA_PORT", {"PROMETHEUS_MULTIPROC_DIR": str(shared)}) for _ in range(2)]
    health = {"process": "figma", "handler": "HealthHandler", "method": "GET", "status": "200"}

    def healths(worker) -> float:
        return value(page(worker.url), "mcp_http_requests_total", **health)

    # Each worker was asked for /health until it answered; a count lands just after its answer is sent.
    before = wait_for(lambda: (n := healths(workers[0])) >= 2 and n, 15, what="both workers' health checks")
    for worker, times in zip(workers, (3, 4), strict=True):
        for _ in range(times):
            assert http("GET", worker.url + "/health").status == 200
    # Whichever worker is scraped, the page is the sum over both.
    for worker in workers:
        wait_for(lambda worker=worker: healths(worker) == before + 7, 15, what="the sum over both workers")
    families = page(workers[1].url)
    for name in ("mcp_process_uptime_seconds", "mcp_usage_records_dropped", "mcp_connections_open"):
        [sample] = families[name][1]  # aggregated: one series, no pid label
        assert sample.labels == {"process": "figma"}, sample
    assert value(families, "mcp_connections_open") >= 1

    # A worker that stops cleanly leaves its counts in the sum and takes its live gauges out of it.
    pid = workers[0].proc.pid
    assert workers[0].stop() == 0
    left = sorted(os.listdir(shared))
    assert f"counter_{pid}.db" in left and f"gauge_livesum_{pid}.db" not in left, left
    assert healths(workers[1]) >= before + 7
