"""A tool policy per instance: validated by the API, enforced by the service on REST and MCP, and a change
reaching every process within a second. A refused call never reaches the upstream."""

from __future__ import annotations

import time

import psycopg
import pytest

from mcp.protocol.tools import ToolRegistry, ToolView
from services.figma import SERVICE as FIGMA
from tests.conftest import start_service
from tests.support import http, wait_for
from tests.test_mcp_endpoint import modern, post, req, result_of, rpc_error

ALL = [t.name for t in FIGMA.tools]
READ_ONLY = [t.name for t in FIGMA.tools if t.read_only]
SHAPES = '{"allow": [tool names]} or {"read_only": true}'


def create(admin, tools, **extra):
    return admin("POST", "/api/instances", {"service": "figma", "user": "ada@example.com",
                                             "credentials": {"api_key": "figd_policy_secret"}, "tools": tools,
                                             **extra})


def listed(service, iid):
    resp = http("GET", f"{service.url}/{iid}/mcp/tools")
    assert resp.status == 200, resp.body
    return [t["name"] for t in resp.json["tools"]]


def rest_call(service, iid, name, arguments=None):
    return http("POST", f"{service.url}/{iid}/mcp/call", {"name": name, "arguments": arguments or {}})


def error_of(resp, status, code):
    assert resp.status == status, resp.body
    err = resp.json["error"]
    assert err["code"] == code, err
    return err


# --- the API: what it accepts, stores and shows -----------------------------------------------


def test_the_catalog_lists_each_service_tools_for_validation(database_url):
    """db/migrate.py records the service's tools in mcp_table: the API validates names against them."""
    with psycopg.connect(database_url) as conn:
        [(tools,)] = conn.execute("SELECT tools FROM mcp_table WHERE name = 'figma'").fetchall()
    assert tools == [{"name": t.name, "read_only": t.read_only} for t in FIGMA.tools]


def test_policies_are_stored_and_shown(admin):
    allow = create(admin, {"allow": ["get_file", "get_me", "get_file"]})
    assert allow.status == 201, allow.body
    assert allow.json["tools"] == {"allow": ["get_file", "get_me"]}  # duplicates dropped, order kept
    iid = allow.json["instance_id"]
    assert admin("GET", f"/api/instances/{iid}").json["tools"] == {"allow": ["get_file", "get_me"]}

    patched = admin("PATCH", f"/api/instances/{iid}", {"tools": {"read_only": True}})
    assert patched.status == 200 and patched.json["tools"] == {"read_only": True}
    [mine] = admin("GET", "/api/users/ada@example.com/instances").json["instances"]
    assert mine["tools"] == {"read_only": True}

    cleared = admin("PATCH", f"/api/instances/{iid}", {"tools": None})
    assert cleared.status == 200 and cleared.json["tools"] is None

    none = create(admin, None)
    assert none.status == 201 and none.json["tools"] is None
    assert admin.create_instance()["tools"] is None  # the field is optional
    empty = create(admin, {"allow": []})  # accepted: allows no tool
    assert empty.status == 201 and empty.json["tools"] == {"allow": []}


BAD_SHAPES = [  # (what, the value, what the message must say)
    ("not an object", "all", SHAPES),
    ("a bare list", ["get_me"], SHAPES),
    ("a number", 3, SHAPES),
    ("an empty object", {}, SHAPES),
    ("both keys", {"allow": ["get_me"], "read_only": True}, SHAPES),
    ("another key", {"deny": ["post_comment"]}, SHAPES),
    ("allow not a list", {"allow": "get_me"}, "list of tool names"),
    ("allow with a non-string", {"allow": ["get_me", 7]}, "list of tool names"),
    ("allow with null", {"allow": None}, "list of tool names"),
    ("read_only false", {"read_only": False}, '"tools": null'),
    ("read_only not a boolean", {"read_only": "yes"}, "can only be true"),
    ("read_only 1", {"read_only": 1}, "can only be true"),
]


@pytest.mark.parametrize("what,tools,says", BAD_SHAPES, ids=[b[0] for b in BAD_SHAPES])
def test_malformed_policies_are_400_saying_what_is_accepted(admin, what, tools, says):
    err = error_of(create(admin, tools), 400, "invalid_tool_policy")
    assert err["field"] == "tools" and says in err["message"], err
    assert "instances" not in admin("GET", "/api/users/ada@example.com/instances").json  # POST made nothing
    iid = admin.create_instance()["instance_id"]
    err = error_of(admin("PATCH", f"/api/instances/{iid}", {"tools": tools}), 400, "invalid_tool_policy")
    assert err["field"] == "tools" and says in err["message"], err
    assert admin("GET", f"/api/instances/{iid}").json["tools"] is None  # unchanged


def test_unknown_tool_names_are_400_naming_them(admin):
    err = error_of(create(admin, {"allow": ["get_me", "delete_file", "no_such"]}), 400, "unknown_tool")
    assert err["field"] == "tools"
    assert "'delete_file'" in err["message"] and "'no_such'" in err["message"]
    assert "'get_me'" not in err["message"].split(";")[0]  # only the unknown ones are named as unknown
    assert "get_file_versions" in err["message"]  # and what is available
    iid = admin.create_instance()["instance_id"]
    err = error_of(admin("PATCH", f"/api/instances/{iid}", {"tools": {"allow": ["get_me", "Get_Me"]}}), 400,
                   "unknown_tool")
    assert "'Get_Me'" in err["message"]
    many = [f"nope_{i}" for i in range(40)]
    err = error_of(create(admin, {"allow": many}), 400, "unknown_tool")
    assert "'nope_9'" in err["message"] and "'nope_10'" not in err["message"] and "30 more" in err["message"]


def test_an_empty_patch_mentions_tools(admin):
    iid = admin.create_instance()["instance_id"]
    err = error_of(admin("PATCH", f"/api/instances/{iid}", {}), 400, "empty_body")
    assert "tools" in err["message"]


# --- REST enforcement -------------------------------------------------------------------------


def test_rest_lists_and_calls_only_allowed_tools(admin, figma_service, figma):
    iid = create(admin, {"allow": ["get_file", "get_me"]}).json["instance_id"]
    assert listed(figma_service, iid) == ["get_me", "get_file"]  # the service's order

    err = error_of(rest_call(figma_service, iid, "post_comment", {"file_key": "abc", "message": "hi"}), 403,
                   "tool_not_allowed")
    assert "post_comment" in err["message"] and "not allowed for this instance" in err["message"]
    assert "get_me, get_file" in err["message"] and err["field"] == "name"
    error_of(rest_call(figma_service, iid, "list_comments", {"file_key": "abc"}), 403, "tool_not_allowed")
    assert figma.recorded() == []  # nothing reached the upstream

    err = error_of(rest_call(figma_service, iid, "no_such_tool"), 404, "unknown_tool")
    assert "post_comment" not in err["message"]  # the available list is what this instance may call
    assert rest_call(figma_service, iid, "get_me").json["isError"] is False
    assert [r.path for r in figma.recorded()] == ["/v1/me"]


def test_read_only_hides_and_refuses_writing_tools(admin, figma_service, figma):
    iid = create(admin, {"read_only": True}).json["instance_id"]
    assert listed(figma_service, iid) == READ_ONLY and "post_comment" not in READ_ONLY
    error_of(rest_call(figma_service, iid, "post_comment", {"file_key": "abc", "message": "hi"}), 403,
             "tool_not_allowed")
    assert figma.recorded() == []


def test_an_empty_allow_list_allows_nothing(admin, figma_service, figma):
    iid = create(admin, {"allow": []}).json["instance_id"]
    assert listed(figma_service, iid) == []
    err = error_of(rest_call(figma_service, iid, "get_me"), 403, "tool_not_allowed")
    assert "allowed: none" in err["message"]
    assert figma.recorded() == []


def test_instances_without_a_policy_are_untouched(admin, figma_service):
    iid = admin.create_instance()["instance_id"]
    create(admin, {"read_only": True})  # another instance's policy changes nothing here
    assert listed(figma_service, iid) == ALL


def test_a_policy_the_service_cannot_read_allows_nothing(admin, figma_service, figma, database_url):
    iid = admin.create_instance()["instance_id"]
    with psycopg.connect(database_url, autocommit=True) as conn:  # written around the API's validation
        conn.execute("UPDATE service_instances SET tool_policy = '{\"allow\": \"get_me\"}' WHERE id = %s", (iid,))
    assert listed(figma_service, iid) == []
    error_of(rest_call(figma_service, iid, "get_me"), 403, "tool_not_allowed")
    assert figma.recorded() == []


# --- MCP enforcement --------------------------------------------------------------------------


def test_mcp_tools_list_in_both_eras_holds_only_allowed_tools(admin, figma_service):
    iid = create(admin, {"allow": ["list_comments", "get_me"]}).json["instance_id"]
    for version in ("2025-03-26", "2025-06-18", "2025-11-25"):
        result = result_of(post(figma_service, iid, req("tools/list"), version=version))
        assert [t["name"] for t in result["tools"]] == ["get_me", "list_comments"] and "nextCursor" not in result
    result = result_of(modern(figma_service, iid, "tools/list"))
    assert [t["name"] for t in result["tools"]] == ["get_me", "list_comments"] and "nextCursor" not in result


def test_mcp_tools_list_pages_over_the_allowed_tools(env, admin):
    server, _ = start_service(FIGMA, {**env, "MCP_PAGE_SIZE": "2"})
    try:
        iid = create(admin, {"read_only": True}).json["instance_id"]
        for send in (lambda p: post(server, iid, req("tools/list", p), version="2025-11-25"),
                     lambda p: modern(server, iid, "tools/list", p)):
            names, cursor, pages = [], None, 0
            while True:
                result = result_of(send({"cursor": cursor} if cursor else {}))
                names += [t["name"] for t in result["tools"]]
                pages += 1
                cursor = result.get("nextCursor")
                if cursor is None:
                    break
            assert names == READ_ONLY and pages == (len(READ_ONLY) + 1) // 2
    finally:
        server.stop()


def test_mcp_tools_call_of_a_disallowed_tool_is_refused_in_both_eras(admin, figma_service, figma):
    iid = create(admin, {"allow": ["get_me"]}).json["instance_id"]
    args = {"name": "post_comment", "arguments": {"file_key": "abc", "message": "hi"}}
    for version in ("2025-11-25", "2025-06-18", "2025-03-26"):
        err = rpc_error(post(figma_service, iid, req("tools/call", args), version=version), 200, -32602)
        assert "post_comment" in err["message"] and "not allowed for this instance" in err["message"]
        assert err["data"] == {"code": "tool_not_allowed"}
    err = rpc_error(modern(figma_service, iid, "tools/call", args), 400, -32602)
    assert err["data"] == {"code": "tool_not_allowed"}
    # An unknown tool stays what it was: invalid params, naming only what this instance may call.
    err = rpc_error(post(figma_service, iid, req("tools/call", {"name": "nope"}), version="2025-11-25"), 200,
                    -32602)
    assert "unknown tool" in err["message"] and "post_comment" not in err["message"]
    assert figma.recorded() == []
    assert result_of(modern(figma_service, iid, "tools/call", {"name": "get_me", "arguments": {}}))["isError"] is False
    assert [r.path for r in figma.recorded()] == ["/v1/me"]


def test_a_batch_runs_the_allowed_calls_and_refuses_the_rest(admin, figma_service, figma):
    iid = create(admin, {"read_only": True}).json["instance_id"]
    batch = [req("tools/call", {"name": "get_me"}, rid=1),
             req("tools/call", {"name": "post_comment", "arguments": {"file_key": "abc", "message": "hi"}}, rid=2),
             req("tools/list", rid=3)]
    resp = post(figma_service, iid, batch)  # no version header: 2025-03-26, which allows batches
    assert resp.status == 200, resp.body
    first, second, third = resp.json
    assert first["id"] == 1 and first["result"]["isError"] is False
    assert second["id"] == 2 and second["error"]["code"] == -32602
    assert second["error"]["data"] == {"code": "tool_not_allowed"}
    assert [t["name"] for t in third["result"]["tools"]] == READ_ONLY
    assert [r.path for r in figma.recorded()] == ["/v1/me"]


# --- a change reaches every process -----------------------------------------------------------


def test_a_policy_change_reaches_every_process_within_a_second(admin, spawn, figma):
    procs = [spawn("services.figma", "FIGMA_PORT", {"INSTANCE_CACHE_TTL": "300"}) for _ in range(2)]
    iid = admin.create_instance()["instance_id"]
    for p in procs:  # both have the instance cached, with no policy
        assert listed(p, iid) == ALL

    def everywhere(names: list[str]) -> bool:
        return all(listed(p, iid) == names for p in procs)

    def refused_everywhere() -> bool:
        return all(rest_call(p, iid, "get_me").status == 403 for p in procs)

    started = time.monotonic()
    assert admin("PATCH", f"/api/instances/{iid}", {"tools": {"allow": ["get_file"]}}).status == 200
    wait_for(lambda: everywhere(["get_file"]), 1.0, what="the allow list in every process")
    wait_for(refused_everywhere, 1.0, what="get_me refused in every process")
    assert figma.recorded("/v1/me") == []

    assert admin("PATCH", f"/api/instances/{iid}", {"tools": {"read_only": True}}).status == 200
    wait_for(lambda: everywhere(READ_ONLY), 1.0, what="read-only in every process")
    assert admin("PATCH", f"/api/instances/{iid}", {"tools": None}).status == 200
    wait_for(lambda: everywhere(ALL), 1.0, what="every tool again in every process")
    assert time.monotonic() - started < 10


# --- the view itself --------------------------------------------------------------------------


def test_views_are_built_once_per_distinct_policy():
    registry = ToolRegistry(FIGMA.tools)
    assert registry.allowing(None) is registry
    view = registry.allowing({"allow": ["get_me", "get_file"]})
    assert isinstance(view, ToolView) and view.names() == ["get_me", "get_file"]
    assert registry.allowing({"allow": ["get_me", "get_file"]}) is view  # equal policy, same view
    assert registry.allowing({"read_only": True}) is registry.allowing({"read_only": True})
    assert registry.allowing({"read_only": True}) is not view
    assert registry.allowing({"allow": ["get_me", "gone_tool"]}).names() == ["get_me"]  # removed tools ignored
    for unreadable in ({}, {"allow": "get_me"}, {"read_only": 1}, {"allow": ["get_me"], "read_only": True}):
        assert registry.allowing(unreadable).names() == []
