"""The Slack service end to end: main API creates instances, the service calls the Slack simulator."""

from __future__ import annotations

import concurrent.futures

import pytest

from tests.simulators.slack import READONLY_SCOPES, encode_cursor, identity, seeded_ts
from tests.support import call_tool as call
from tests.support import failed, http, ok

BOT = "xoxb-1111-alpha"
USER_TOKEN = "xoxp-2222-person"
JSON_UTF8 = "application/json; charset=utf-8"
DEFAULT_LIST_QUERY = {"types": "public_channel,private_channel", "exclude_archived": "true"}


@pytest.fixture
def bot(admin):
    return admin.create_instance(service="slack", credentials={"access_token": BOT})["instance_id"]


def only(sim, method):
    [req] = sim.recorded(rf"^/api/{method.replace('.', '[.]')}$")
    return req


def assert_get(req, token=BOT):
    assert req.method == "GET"
    assert req.header("Authorization") == f"Bearer {token}"
    assert req.body is None


# Tools -----------------------------------------------------------------------------------------------


def test_tools_list_names_and_write_annotations(admin, slack_service, slack, bot):
    resp = http("GET", f"{slack_service.url}/{bot}/mcp/tools")
    tools = {t["name"]: t for t in resp.json["tools"]}
    assert list(tools) == ["list_channels", "get_channel_history", "get_thread_replies", "post_message",
                           "reply_to_thread", "add_reaction", "list_users", "get_user_profile", "search_messages"]
    writes = {n for n, t in tools.items() if not t["annotations"]["readOnlyHint"]}
    assert writes == {"post_message", "reply_to_thread", "add_reaction"}
    for tool in tools.values():
        assert tool["inputSchema"]["additionalProperties"] is False
    assert slack.requests == []


def test_list_channels_follows_short_pages_up_to_max_items_then_continues(admin, slack_service, slack, bot):
    first = ok(call(slack_service, bot, "list_channels"))
    reqs = slack.recorded()
    assert [r.path for r in reqs] == ["/api/conversations.list"] * 2
    for r in reqs:
        assert_get(r)
    # Page 1 covers C1..C200 (8 archived, filtered out by Slack after paging), so only 8 more are asked for.
    assert reqs[0].query == {**DEFAULT_LIST_QUERY, "limit": "200"}
    assert reqs[1].query == {**DEFAULT_LIST_QUERY, "limit": "8", "cursor": encode_cursor("team", "C00000201")}
    assert first["count"] == 200
    ids = [c["id"] for c in first["channels"]]
    assert ids == [f"C{i:08d}" for i in range(1, 209) if i % 25]
    assert first["next_cursor"] == encode_cursor("team", "C00000209")
    assert first["channels"][0] == {
        "id": "C00000001", "name": "general", "is_private": False, "is_archived": False, "is_member": True,
        "is_im": False, "is_mpim": False, "user": None, "num_members": 11, "topic": "Topic of general",
        "purpose": "Purpose of general", "created": 1690000001}
    assert first["channels"][4]["is_private"] is True

    slack.reset()
    rest = ok(call(slack_service, bot, "list_channels", {"cursor": first["next_cursor"]}))
    [req] = slack.recorded()
    assert req.query == {**DEFAULT_LIST_QUERY, "limit": "200", "cursor": first["next_cursor"]}
    assert [c["id"] for c in rest["channels"]] == [f"C{i:08d}" for i in range(209, 251) if i % 25]
    assert rest["next_cursor"] is None


def test_list_channels_types_page_size_and_max_items(admin, slack_service, slack, bot):
    dms = ok(call(slack_service, bot, "list_channels", {"types": ["im", "mpim"], "limit": 150}))
    reqs = slack.recorded()
    assert [r.query for r in reqs] == [
        {"types": "im,mpim", "exclude_archived": "true", "limit": "150"},
        {"types": "im,mpim", "exclude_archived": "true", "limit": "150", "cursor": encode_cursor("team", "C00000151")},
    ]
    assert [(c["id"], c["is_im"], c["is_mpim"], c["user"]) for c in dms["channels"]] == [
        ("D00000001", True, False, "U00000002"), ("G00000001", False, True, None)]
    assert dms["next_cursor"] is None

    slack.reset()
    few = ok(call(slack_service, bot, "list_channels", {"limit": 1000, "max_items": 3}))
    [req] = slack.recorded()
    assert req.query["limit"] == "3"
    assert [c["id"] for c in few["channels"]] == ["C00000001", "C00000002", "C00000003"]
    assert few["next_cursor"] == encode_cursor("team", "C00000004")


def test_list_channels_stops_following_empty_pages_after_a_cap(admin, slack_service, slack, bot):
    result = ok(call(slack_service, bot, "list_channels", {"types": ["im"], "limit": 1, "max_items": 1}))
    assert result["channels"] == []
    assert len(slack.recorded()) == 25
    assert result["next_cursor"] == encode_cursor("team", "C00000026")


def test_get_channel_history_window_and_cursor(admin, slack_service, slack, bot):
    args = {"channel": "C00000001", "limit": 10, "oldest": "1690000000", "latest": "1690001000"}
    page = ok(call(slack_service, bot, "get_channel_history", args))
    req = only(slack, "conversations.history")
    assert_get(req)
    assert req.query == {"channel": "C00000001", "limit": "10", "oldest": "1690000000", "latest": "1690001000"}
    assert [m["ts"] for m in page["messages"]] == [seeded_ts(k) for k in range(16, 6, -1)]
    assert page["messages"][0] == {"type": "message", "user": "U00000001", "text": "message 16 in #general",
                                   "ts": seeded_ts(16), "team": identity(BOT)["team_id"]}
    assert page["has_more"] is True
    assert page["next_cursor"] == encode_cursor("next_ts", seeded_ts(6))
    assert page["channel"] == "C00000001"

    slack.reset()
    rest = ok(call(slack_service, bot, "get_channel_history", {**args, "cursor": page["next_cursor"]}))
    assert only(slack, "conversations.history").query == {
        "channel": "C00000001", "limit": "10", "oldest": "1690000000", "latest": "1690001000",
        "cursor": page["next_cursor"]}
    assert [m["ts"] for m in rest["messages"]] == [seeded_ts(k) for k in range(6, 0, -1)]
    assert rest["has_more"] is False
    assert rest["next_cursor"] is None


def test_get_channel_history_defaults_to_100(admin, slack_service, slack, bot):
    page = ok(call(slack_service, bot, "get_channel_history", {"channel": "C00000002"}))
    assert only(slack, "conversations.history").query == {"channel": "C00000002", "limit": "100"}
    assert len(page["messages"]) == 30
    assert page["messages"][0]["text"] == "deploy 3 finished in #channel-002"


def test_get_thread_replies(admin, slack_service, slack, bot):
    parent = seeded_ts(5)
    page = ok(call(slack_service, bot, "get_thread_replies", {"channel": "C00000003", "thread_ts": parent,
                                                               "limit": 2}))
    req = only(slack, "conversations.replies")
    assert_get(req)
    assert req.query == {"channel": "C00000003", "ts": parent, "limit": "2"}
    assert [m["text"] for m in page["messages"]] == ["message 5 in #channel-003", "reply 1"]
    assert page["messages"][0]["reply_count"] == 3
    assert page["thread_ts"] == parent
    assert page["has_more"] is True
    nxt = page["next_cursor"]
    assert nxt is not None

    slack.reset()
    rest = ok(call(slack_service, bot, "get_thread_replies", {"channel": "C00000003", "thread_ts": parent,
                                                               "cursor": nxt}))
    assert only(slack, "conversations.replies").query == {"channel": "C00000003", "ts": parent, "limit": "100",
                                                          "cursor": nxt}
    assert [m["text"] for m in rest["messages"]] == ["reply 2", "reply 3"]
    assert rest["next_cursor"] is None


def test_post_message_sends_json_with_charset(admin, slack_service, slack, bot):
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Hello* team"}}]
    sent = ok(call(slack_service, bot, "post_message", {"channel": "C00000001", "text": "Hello team",
                                                        "blocks": blocks}))
    req = only(slack, "chat.postMessage")
    assert req.method == "POST"
    assert req.header("Authorization") == f"Bearer {BOT}"
    assert req.header("Content-Type") == JSON_UTF8
    assert req.query == {}
    assert req.body == {"channel": "C00000001", "text": "Hello team", "blocks": blocks}
    who = identity(BOT)
    assert sent == {"channel": "C00000001", "ts": "1700000000.000100", "message": {
        "user": who["user_id"], "type": "message", "ts": "1700000000.000100", "text": "Hello team",
        "team": who["team_id"], "blocks": blocks, "bot_id": who["bot_id"], "app_id": "A0SIMULATOR"}}

    latest = ok(call(slack_service, bot, "get_channel_history", {"channel": "C00000001", "limit": 1}))
    assert latest["messages"][0]["ts"] == "1700000000.000100"


def test_post_message_with_blocks_only_sends_no_text(admin, slack_service, slack, bot):
    blocks = [{"type": "divider"}]
    sent = ok(call(slack_service, bot, "post_message", {"channel": "C00000002", "blocks": blocks}))
    assert only(slack, "chat.postMessage").body == {"channel": "C00000002", "blocks": blocks}
    assert sent["ts"] == "1700000000.000100"


def test_reply_to_thread_posts_with_thread_ts(admin, slack_service, slack, bot):
    parent = seeded_ts(5)
    sent = ok(call(slack_service, bot, "reply_to_thread", {"channel": "C00000001", "thread_ts": parent,
                                                           "text": "On it"}))
    req = only(slack, "chat.postMessage")
    assert req.method == "POST"
    assert req.header("Content-Type") == JSON_UTF8
    assert req.body == {"channel": "C00000001", "text": "On it", "thread_ts": parent}
    assert sent["thread_ts"] == parent
    assert sent["message"]["thread_ts"] == parent
    assert sent["ts"] == "1700000000.000100"

    thread = ok(call(slack_service, bot, "get_thread_replies", {"channel": "C00000001", "thread_ts": parent}))
    assert [m["text"] for m in thread["messages"]][-1] == "On it"


def test_add_reaction_strips_colons_and_reports_already_reacted(admin, slack_service, slack, bot):
    args = {"channel": "C00000001", "timestamp": seeded_ts(3), "name": ":thumbsup:"}
    done = ok(call(slack_service, bot, "add_reaction", args))
    assert done == {"ok": True, "channel": "C00000001", "timestamp": seeded_ts(3), "name": "thumbsup"}
    req = only(slack, "reactions.add")
    assert req.method == "POST"
    assert req.header("Authorization") == f"Bearer {BOT}"
    assert req.header("Content-Type") == JSON_UTF8
    assert req.body == {"channel": "C00000001", "timestamp": seeded_ts(3), "name": "thumbsup"}

    again = failed(call(slack_service, bot, "add_reaction", args))
    assert again["code"] == "already_reacted"
    assert again["upstream"] == "slack"
    assert "already on the message" in again["message"]
    assert len(slack.recorded("reactions")) == 2


def test_add_reaction_unknown_emoji_and_message(admin, slack_service, slack, bot):
    unknown = failed(call(slack_service, bot, "add_reaction", {"channel": "C00000001", "timestamp": seeded_ts(3),
                                                                "name": "no_such_emoji"}))
    assert unknown["code"] == "invalid_name"
    assert "emoji" in unknown["message"]
    missing = failed(call(slack_service, bot, "add_reaction", {"channel": "C00000001",
                                                                "timestamp": "1111111111.000001", "name": "eyes"}))
    assert (missing["code"], missing["status"]) == ("message_not_found", 404)


def test_list_users_pages_with_cursor(admin, slack_service, slack, bot):
    result = ok(call(slack_service, bot, "list_users", {"limit": 100, "max_items": 150}))
    reqs = slack.recorded()
    assert [r.path for r in reqs] == ["/api/users.list"] * 2
    for r in reqs:
        assert_get(r)
    assert [r.query for r in reqs] == [{"limit": "100"},
                                       {"limit": "50", "cursor": encode_cursor("user", "U00000101")}]
    assert result["count"] == 150
    assert result["next_cursor"] == encode_cursor("user", "U00000151")
    team = identity(BOT)["team_id"]
    assert result["users"][0] == {
        "id": "U00000001", "name": "user001", "real_name": "User 001", "display_name": "user001",
        "title": "Engineer", "email": "user001@example.com", "is_bot": False, "is_admin": True, "deleted": False,
        "tz": "Europe/Berlin", "team_id": team}
    bot_user = result["users"][49]
    assert (bot_user["id"], bot_user["is_bot"], bot_user["email"]) == ("U00000050", True, None)

    slack.reset()
    rest = ok(call(slack_service, bot, "list_users", {"cursor": result["next_cursor"]}))
    assert only(slack, "users.list").query == {"limit": "200", "cursor": result["next_cursor"]}
    assert rest["count"] == 100
    assert rest["next_cursor"] is None


def test_get_user_profile(admin, slack_service, slack, bot):
    result = ok(call(slack_service, bot, "get_user_profile", {"user": "U00000007"}))
    req = only(slack, "users.profile.get")
    assert_get(req)
    assert req.query == {"user": "U00000007"}
    assert result["user"] == "U00000007"
    assert result["profile"]["real_name"] == "User 007"
    assert result["profile"]["email"] == "user007@example.com"
    assert result["profile"]["team"] == identity(BOT)["team_id"]

    gone = failed(call(slack_service, bot, "get_user_profile", {"user": "U99999999"}))
    assert (gone["code"], gone["status"]) == ("user_not_found", 404)
    assert "list_users" in gone["message"]


def test_search_messages_with_a_user_token(admin, slack_service, slack):
    person = admin.create_instance(service="slack", credentials={"access_token": USER_TOKEN})["instance_id"]
    result = ok(call(slack_service, person, "search_messages", {"query": "deploy", "count": 10, "page": 2}))
    req = only(slack, "search.messages")
    assert_get(req, USER_TOKEN)
    assert req.query == {"query": "deploy", "count": "10", "page": "2"}
    assert (result["query"], result["total"], result["page"], result["pages"]) == ("deploy", 15, 2, 2)
    assert len(result["matches"]) == 5
    assert result["matches"][0] == {
        "channel_id": "C00000004", "channel_name": "channel-004", "user": "U00000002", "username": "user002",
        "ts": seeded_ts(20), "text": "deploy 2 finished in #channel-004",
        "permalink": f"https://sim.slack.com/archives/C00000004/p{seeded_ts(20).replace('.', '')}"}

    slack.reset()
    ok(call(slack_service, person, "search_messages", {"query": "message 7"}))
    assert only(slack, "search.messages").query == {"query": "message 7", "count": "20", "page": "1"}


def test_search_messages_with_a_bot_token_never_calls_slack(admin, slack_service, slack, bot):
    err = failed(call(slack_service, bot, "search_messages", {"query": "deploy"}))
    assert err["code"] == "not_allowed_token_type"
    assert err["upstream"] == "slack"
    assert err["status"] is None
    assert "xoxp-" in err["message"] and "search:read" in err["message"]
    assert slack.requests == []


# Upstream errors ------------------------------------------------------------------------------------


def test_invalid_token_asks_for_a_new_token(admin, slack_service, slack):
    inst = admin.create_instance(service="slack", credentials={"access_token": "xoxb-bad-token"})["instance_id"]
    err = failed(call(slack_service, inst, "list_channels"))
    assert (err["code"], err["status"], err["upstream"]) == ("invalid_auth", 401, "slack")
    assert "replace this instance's access_token" in err["message"]
    assert err["retry_after_s"] is None
    assert "xoxb-bad-token" not in err["message"]
    assert len(slack.recorded()) == 1


def test_missing_scope_names_needed_and_provided(admin, slack_service, slack):
    inst = admin.create_instance(service="slack", credentials={"access_token": "xoxb-readonly-1"})["instance_id"]
    err = failed(call(slack_service, inst, "post_message", {"channel": "C00000001", "text": "hi"}))
    assert (err["code"], err["status"]) == ("missing_scope", 403)
    assert (err["needed"], err["provided"]) == ("chat:write", READONLY_SCOPES)
    assert "needed chat:write" in err["message"] and READONLY_SCOPES in err["message"]
    assert "reinstall" in err["message"]
    err = failed(call(slack_service, inst, "add_reaction", {"channel": "C00000001", "timestamp": seeded_ts(1),
                                                             "name": "eyes"}))
    assert err["needed"] == "reactions:write"


@pytest.mark.parametrize(("channel", "code", "status", "hint"), [
    ("C0MISSING", "channel_not_found", 404, "list_channels"),
    ("C00000004", "not_in_channel", 403, "/invite"),
    ("C00000025", "is_archived", 409, "archived"),
])
def test_channel_errors_on_post(admin, slack_service, slack, bot, channel, code, status, hint):
    err = failed(call(slack_service, bot, "post_message", {"channel": channel, "text": "hi"}))
    assert (err["code"], err["status"]) == (code, status)
    assert hint in err["message"]


def test_channel_not_found_on_history(admin, slack_service, slack, bot):
    err = failed(call(slack_service, bot, "get_channel_history", {"channel": "C0MISSING"}))
    assert (err["code"], err["status"]) == ("channel_not_found", 404)
    assert only(slack, "conversations.history").query == {"channel": "C0MISSING", "limit": "100"}


def test_invalid_blocks_carries_slacks_explanation(admin, slack_service, slack, bot):
    err = failed(call(slack_service, bot, "post_message", {"channel": "C00000001", "blocks": [{"text": "x"}]}))
    assert err["code"] == "invalid_blocks"
    assert "Slack said: [ERROR] missing required field: type" in err["message"]


def test_invalid_cursor(admin, slack_service, slack, bot):
    err = failed(call(slack_service, bot, "list_channels", {"cursor": "bm9wZTpub3Bl"}))
    assert (err["code"], err["status"]) == ("invalid_cursor", 400)
    assert "without a cursor" in err["message"]


def test_http_429_with_retry_after(admin, slack_service, slack, bot):
    slack.fail(r"/api/conversations\.history$", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "7"})
    err = failed(call(slack_service, bot, "get_channel_history", {"channel": "C00000001"}))
    assert err == {"upstream": "slack", "status": 429, "code": "ratelimited", "retry_after_s": 7,
                   "message": "Slack rate limit reached for this method; retry after 7 s"}


def test_http_5xx_without_json(admin, slack_service, slack, bot):
    slack.fail(r"/api/users\.list$", 503, "<html>Service Unavailable</html>")
    err = failed(call(slack_service, bot, "list_users"))
    assert (err["code"], err["status"]) == ("upstream_unavailable", 503)
    assert "try again later" in err["message"]


def test_unknown_error_code_passes_through(admin, slack_service, slack, bot):
    slack.fail(r"/api/users\.profile\.get$", 200, {"ok": False, "error": "team_added_to_org"})
    err = failed(call(slack_service, bot, "get_user_profile", {"user": "U00000001"}))
    assert (err["code"], err["status"]) == ("team_added_to_org", 400)
    assert "team_added_to_org" in err["message"]


def test_common_error_codes_read_as_instructions(admin, slack_service, slack, bot):
    cases = {
        "not_authed": "access_token", "account_inactive": "reinstall", "token_revoked": "revoked",
        "msg_too_long": "shorten", "no_text": "pass text", "too_many_attachments": "send fewer",
        "thread_not_found": "parent message", "restricted_action": "admin", "fatal_error": "try again later",
    }
    for code, hint in cases.items():
        slack.fail(r"/api/chat\.postMessage$", 200, {"ok": False, "error": code})
        err = failed(call(slack_service, bot, "post_message", {"channel": "C00000001", "text": "hi"}))
        assert err["code"] == code
        assert hint in err["message"], (code, err["message"])
    slack.fail(r"/api/chat\.postMessage$", 200, {"ok": False, "error": "ratelimited"})
    err = failed(call(slack_service, bot, "post_message", {"channel": "C00000001", "text": "hi"}))
    assert (err["code"], err["status"], err["retry_after_s"]) == ("ratelimited", 429, None)


def test_non_json_success_is_a_bad_response(admin, slack_service, slack, bot):
    slack.fail(r"/api/users\.list$", 200, "not json")
    err = failed(call(slack_service, bot, "list_users"))
    assert (err["code"], err["status"]) == ("bad_response", 502)


# Direct endpoint -------------------------------------------------------------------------------------


def test_channels_endpoint(admin, slack_service, slack, bot):
    resp = http("GET", f"{slack_service.url}/{bot}/api/channels?limit=5")
    assert resp.status == 200, resp.body
    assert [c["id"] for c in resp.json["channels"]] == [f"C{i:08d}" for i in range(1, 6)]
    assert resp.json["channels"][0]["name"] == "general"
    assert resp.json["next_cursor"] == encode_cursor("team", "C00000006")
    req = only(slack, "conversations.list")
    assert_get(req)
    assert req.query == {**DEFAULT_LIST_QUERY, "limit": "5"}

    slack.reset()
    resp = http("GET", f"{slack_service.url}/{bot}/api/channels?cursor={resp.json['next_cursor']}")
    assert resp.status == 200
    assert resp.json["channels"][0]["id"] == "C00000006"
    assert slack.recorded()[0].query == {**DEFAULT_LIST_QUERY, "limit": "200",
                                         "cursor": encode_cursor("team", "C00000006")}


def test_channels_endpoint_upstream_404_is_404(admin, slack_service, slack, bot):
    slack.fail(r"/api/conversations\.list$", 404, {"ok": False, "error": "unknown_method"})
    resp = http("GET", f"{slack_service.url}/{bot}/api/channels")
    assert resp.status == 404
    err = resp.json["error"]
    assert err["code"] == "upstream_not_found"
    assert err["upstream"]["code"] == "unknown_method"
    assert "SLACK_API_URL" in err["message"]


def test_channels_endpoint_upstream_errors(admin, slack_service, slack, bot):
    slack.fail(r"/api/conversations\.list$", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "30"})
    resp = http("GET", f"{slack_service.url}/{bot}/api/channels")
    assert resp.status == 429
    assert resp.headers["retry-after"] == "30"
    slack.fail(r"/api/conversations\.list$", 200, {"ok": False, "error": "invalid_auth"})
    resp = http("GET", f"{slack_service.url}/{bot}/api/channels")
    assert resp.status == 502
    assert resp.json["error"]["code"] == "upstream_invalid_auth"


def test_channels_endpoint_rejects_bad_query(admin, slack_service, slack, bot):
    cases = [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"), ("limit=-5", "limit"),
             ("limit=%C2%B2", "limit"), ("cursor=a%3Fb", "cursor"), ("cursor=..%2F..", "cursor")]
    for query, field in cases:
        resp = http("GET", f"{slack_service.url}/{bot}/api/channels?{query}")
        assert resp.status == 400, query
        assert resp.json["error"]["field"] == field, query
    assert slack.requests == []


# Argument validation -------------------------------------------------------------------------------


def test_bad_arguments_never_reach_slack(admin, slack_service, slack, bot):
    ts = seeded_ts(1)
    cases = [
        ("get_channel_history", {"channel": "../C00000001"}, "channel"),
        ("get_channel_history", {"channel": "general"}, "channel"),
        ("get_channel_history", {"channel": "C00000001?x=1"}, "channel"),
        ("get_channel_history", {"channel": "C00000001", "limit": 1000}, "limit"),
        ("get_channel_history", {"channel": "C00000001", "oldest": "yesterday"}, "oldest"),
        ("get_channel_history", {}, "channel"),
        ("get_thread_replies", {"channel": "C00000001", "thread_ts": "123"}, "thread_ts"),
        ("post_message", {"channel": "C00000001"}, "text"),
        ("post_message", {"channel": "C00000001", "text": ""}, "text"),
        ("post_message", {"channel": "C00000001", "text": "x" * 40001}, "text"),
        ("post_message", {"channel": "C00000001", "text": "hi", "as_user": True}, "as_user"),
        ("post_message", {"channel": "C00000001", "blocks": []}, "blocks"),
        ("reply_to_thread", {"channel": "C00000001", "thread_ts": "1.x", "text": "hi"}, "thread_ts"),
        ("add_reaction", {"channel": "C00000001", "timestamp": ts, "name": "thumbs up"}, "name"),
        ("add_reaction", {"channel": "C00000001", "timestamp": ts, "name": "../eyes"}, "name"),
        ("add_reaction", {"channel": "C00000001", "timestamp": "now", "name": "eyes"}, "timestamp"),
        ("list_channels", {"limit": 0}, "limit"),
        ("list_channels", {"max_items": 1001}, "max_items"),
        ("list_channels", {"types": ["public"]}, "types[0]"),
        ("list_channels", {"cursor": "a b"}, "cursor"),
        ("list_users", {"limit": "100"}, "limit"),
        ("get_user_profile", {"user": "../U00000001"}, "user"),
        ("get_user_profile", {"user": "C00000001"}, "user"),
        ("search_messages", {"query": ""}, "query"),
        ("search_messages", {"query": "x", "count": 101}, "count"),
    ]
    for name, args, field in cases:
        err = failed(call(slack_service, bot, name, args))
        assert err["code"] == "invalid_arguments", (name, args)
        assert err["field"] == field, (name, args, err)
        assert field in err["message"]
    assert slack.requests == []


# Isolation -------------------------------------------------------------------------------------------


def test_concurrent_calls_of_two_instances_never_cross_tokens(admin, slack_service, slack):
    tokens = {"a": "xoxb-token-a", "b": "xoxp-token-b"}
    inst = {k: admin.create_instance(service="slack", user=f"{k}@example.com",
                                     credentials={"access_token": t})["instance_id"] for k, t in tokens.items()}
    slack.delay = 0.005

    def job(i: int) -> tuple[str, str, dict]:
        who = "ab"[i % 2]
        if i % 4 < 2:
            return who, "profile", call(slack_service, inst[who], "get_user_profile", {"user": "U00000001"})
        return who, "post", call(slack_service, inst[who], "post_message", {"channel": "C00000001", "text": f"#{i}"})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(job, range(80)))
    for who, kind, result in results:
        data = ok(result)
        me = identity(tokens[who])
        if kind == "profile":
            assert data["profile"]["team"] == me["team_id"]
        else:
            assert (data["message"]["team"], data["message"]["user"]) == (me["team_id"], me["user_id"])
    seen = [r.header("Authorization") for r in slack.recorded()]
    assert len(seen) == 80
    assert sorted(set(seen)) == ["Bearer xoxb-token-a", "Bearer xoxp-token-b"]
    assert seen.count("Bearer xoxb-token-a") == 40
