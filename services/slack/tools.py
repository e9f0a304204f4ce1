"""Slack's MCP tools: what an AI client sees, and how each maps onto the Slack Web API."""

from __future__ import annotations

from typing import Any

from mcp.errors import UpstreamError
from mcp.protocol.schemas import ANY_OBJECT, object_schema, output_schema
from mcp.protocol.tools import Tool
from services.slack.api import UPSTREAM, SlackClient, next_cursor

CHANNEL_TYPES = ("public_channel", "private_channel", "mpim", "im")
DEFAULT_TYPES = ["public_channel", "private_channel"]
DEFAULT_PAGE = 200
DEFAULT_MAX_ITEMS = 200

CHANNEL = {"type": "string", "pattern": r"^[CGD][A-Z0-9]{2,20}$",
           "description": "A conversation id such as C0123ABCDEF (channel), G… (private) or D… (direct message), "
                          "from list_channels; not a #name"}
TS = {"type": "string", "pattern": r"^[0-9]{1,12}\.[0-9]{1,9}$",
      "description": "A message timestamp (its id), such as 1700000000.000100"}
TIME_BOUND = {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,9})?$",
              "description": "A Unix time or message timestamp, such as 1700000000 or 1700000000.000100"}
CURSOR = {"type": "string", "pattern": r"^[A-Za-z0-9+/=_-]{1,1000}$",
          "description": "next_cursor from the previous call, to continue where it stopped"}
USER = {"type": "string", "pattern": r"^[UW][A-Z0-9]{2,20}$",
        "description": "A user id such as U0123ABCDEF (or W… on Enterprise Grid), from list_users"}
TEXT = {"type": "string", "minLength": 1, "maxLength": 40000,
        "description": "The message in Slack mrkdwn (*bold*, _italic_, <@U123> mentions, <https://x|links>)"}
PAGE_SIZE = {"type": "integer", "minimum": 1, "maximum": 1000,
             "description": f"How many to ask Slack for per request (default {DEFAULT_PAGE})"}
MAX_ITEMS = {"type": "integer", "minimum": 1, "maximum": 1000,
             "description": f"How many to return at most, following Slack's cursors (default {DEFAULT_MAX_ITEMS})"}
NEXT_CURSOR = {"type": ["string", "null"], "description": "Pass as cursor to continue; null at the end"}


def channel_summary(c: dict[str, Any]) -> dict[str, Any]:
    """The fields of a conversation object a client needs to pick a channel."""
    topic = c.get("topic") if isinstance(c.get("topic"), dict) else {}
    purpose = c.get("purpose") if isinstance(c.get("purpose"), dict) else {}
    return {
        "id": c.get("id"), "name": c.get("name"), "is_private": bool(c.get("is_private")),
        "is_archived": bool(c.get("is_archived")), "is_member": c.get("is_member"),
        "is_im": bool(c.get("is_im")), "is_mpim": bool(c.get("is_mpim")), "user": c.get("user"),
        "num_members": c.get("num_members"), "topic": topic.get("value") or "",
        "purpose": purpose.get("value") or "", "created": c.get("created"),
    }


def user_summary(m: dict[str, Any]) -> dict[str, Any]:
    """The fields of a user object a client needs to address or mention someone."""
    profile = m.get("profile") if isinstance(m.get("profile"), dict) else {}
    return {
        "id": m.get("id"), "name": m.get("name"), "real_name": m.get("real_name") or profile.get("real_name"),
        "display_name": profile.get("display_name") or "", "title": profile.get("title") or "",
        "email": profile.get("email"), "is_bot": bool(m.get("is_bot")), "is_admin": bool(m.get("is_admin")),
        "deleted": bool(m.get("deleted")), "tz": m.get("tz"), "team_id": m.get("team_id"),
    }


def match_summary(m: dict[str, Any]) -> dict[str, Any]:
    channel = m.get("channel") if isinstance(m.get("channel"), dict) else {}
    return {"channel_id": channel.get("id"), "channel_name": channel.get("name"), "user": m.get("user"),
            "username": m.get("username"), "ts": m.get("ts"), "text": m.get("text"),
            "permalink": m.get("permalink")}


async def list_channels(slack: SlackClient, args: dict[str, Any]) -> dict[str, Any]:
    channels, cursor = await slack.list_channels(
        types=args.get("types") or DEFAULT_TYPES, page_size=args.get("limit", DEFAULT_PAGE),
        max_items=args.get("max_items", DEFAULT_MAX_ITEMS), cursor=args.get("cursor"))
    return {"channels": [channel_summary(c) for c in channels], "count": len(channels), "next_cursor": cursor}


async def get_channel_history(slack: SlackClient, args: dict[str, Any]) -> dict[str, Any]:
    page = await slack.history(args["channel"], limit=args.get("limit", 100), oldest=args.get("oldest"),
                               latest=args.get("latest"), cursor=args.get("cursor"))
    return {"channel": args["channel"], "messages": page.get("messages") or [],
            "has_more": bool(page.get("has_more")), "next_cursor": next_cursor(page)}


async def get_thread_replies(slack: SlackClient, args: dict[str, Any]) -> dict[str, Any]:
    page = await slack.replies(args["channel"], args["thread_ts"], limit=args.get("limit", 100),
                               cursor=args.get("cursor"))
    return {"channel": args["channel"], "thread_ts": args["thread_ts"], "messages": page.get("messages") or [],
            "has_more": bool(page.get("has_more")), "next_cursor": next_cursor(page)}


async def post_message(slack: SlackClient, args: dict[str, Any]) -> dict[str, Any]:
    sent = await slack.post_message(args["channel"], args.get("text"), blocks=args.get("blocks"))
    return {"channel": sent.get("channel"), "ts": sent.get("ts"), "message": sent.get("message")}


async def reply_to_thread(slack: SlackClient, args: dict[str, Any]) -> dict[str, Any]:
    sent = await slack.post_message(args["channel"], args["text"], thread_ts=args["thread_ts"])
    return {"channel": sent.get("channel"), "ts": sent.get("ts"), "thread_ts": args["thread_ts"],
            "message": sent.get("message")}


async def add_reaction(slack: SlackClient, args: dict[str, Any]) -> dict[str, Any]:
    # People write :thumbsup:; Slack wants thumbsup and answers invalid_name otherwise.
    name = args["name"].strip(":")
    await slack.add_reaction(args["channel"], args["timestamp"], name)
    return {"ok": True, "channel": args["channel"], "timestamp": args["timestamp"], "name": name}


async def list_users(slack: SlackClient, args: dict[str, Any]) -> dict[str, Any]:
    members, cursor = await slack.list_users(page_size=args.get("limit", DEFAULT_PAGE),
                                             max_items=args.get("max_items", DEFAULT_MAX_ITEMS),
                                             cursor=args.get("cursor"))
    return {"users": [user_summary(m) for m in members], "count": len(members), "next_cursor": cursor}


async def get_user_profile(slack: SlackClient, args: dict[str, Any]) -> dict[str, Any]:
    page = await slack.user_profile(args["user"])
    return {"user": args["user"], "profile": page.get("profile") or {}}


async def search_messages(slack: SlackClient, args: dict[str, Any]) -> dict[str, Any]:
    if not slack.is_user_token:
        # Slack would answer not_allowed_token_type; saying so here saves a call and says what to do.
        raise UpstreamError(
            UPSTREAM, "search_messages needs a Slack user token (xoxp-…) with the search:read scope; this "
                      "instance has a bot token, which Slack does not accept for search. Replace the instance's "
                      "access_token with a user token to search",
            status=None, code="not_allowed_token_type", details={"needed": "search:read"})
    page = await slack.search_messages(args["query"], count=args.get("count", 20), page=args.get("page", 1))
    found = page.get("messages") if isinstance(page.get("messages"), dict) else {}
    paging = found.get("paging") if isinstance(found.get("paging"), dict) else {}
    matches = found.get("matches") if isinstance(found.get("matches"), list) else []
    return {"query": args["query"], "total": found.get("total", paging.get("total", 0)),
            "page": paging.get("page", args.get("page", 1)), "pages": paging.get("pages", 0),
            "matches": [match_summary(m) for m in matches]}


_CHANNEL_OUT = output_schema({"id": {"type": "string"}, "name": {"type": ["string", "null"]},
                              "is_private": {"type": "boolean"}, "is_archived": {"type": "boolean"},
                              "is_member": {"type": ["boolean", "null"]}, "topic": {"type": "string"},
                              "purpose": {"type": "string"}, "num_members": {"type": ["integer", "null"]}})
_SENT_OUT = output_schema({"channel": {"type": "string"}, "ts": {"type": "string"}, "message": ANY_OBJECT})
_PAGE_OUT = output_schema({"channel": {"type": "string"}, "messages": {"type": "array", "items": ANY_OBJECT},
                           "has_more": {"type": "boolean"}, "next_cursor": NEXT_CURSOR})

TOOLS = [
    Tool("list_channels",
         "Conversations the token can see: public and private channels by default (types adds mpim/im), archived "
         "ones left out. Returns id, name, privacy, membership, topic and purpose per channel. Slack pages may "
         "come back short, so this follows Slack's cursors until max_items are collected or the list ends; pass "
         "next_cursor back as cursor to continue.",
         object_schema({"limit": PAGE_SIZE, "max_items": MAX_ITEMS, "cursor": CURSOR,
                        "types": {"type": "array", "minItems": 1, "maxItems": 4,
                                  "items": {"type": "string", "enum": list(CHANNEL_TYPES)},
                                  "description": "Which kinds of conversation (default public_channel and "
                                                 "private_channel)"}}),
         list_channels,
         output_schema({"channels": {"type": "array", "items": _CHANNEL_OUT}, "count": {"type": "integer"},
                        "next_cursor": NEXT_CURSOR}),
         title="List channels"),
    Tool("get_channel_history",
         "Messages of a channel, newest first, as Slack returns them (text, user, ts, thread_ts, reply_count, "
         "reactions, files). Narrow with oldest/latest; continue with next_cursor while has_more is true. The "
         "app must be a member of the channel.",
         object_schema({"channel": CHANNEL,
                        "limit": {"type": "integer", "minimum": 1, "maximum": 999, "description": "Default 100"},
                        "oldest": {**TIME_BOUND, "description": "Only messages after this time (Unix time or ts)"},
                        "latest": {**TIME_BOUND, "description": "Only messages before this time (Unix time or ts)"},
                        "cursor": CURSOR},
                       ["channel"]),
         get_channel_history, _PAGE_OUT, title="Get channel history"),
    Tool("get_thread_replies",
         "A thread: its parent message followed by the replies, oldest first. thread_ts is the ts of the parent "
         "message (messages with reply_count in get_channel_history).",
         object_schema({"channel": CHANNEL, "thread_ts": TS, "cursor": CURSOR,
                        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Default 100"}},
                       ["channel", "thread_ts"]),
         get_thread_replies, _PAGE_OUT, title="Get thread replies"),
    Tool("post_message",
         "Post a message to a channel as the app (the app must be in the channel, see not_in_channel). Pass "
         "text, Block Kit blocks, or both (then text is the notification fallback). Returns the new message's "
         "ts, which reply_to_thread and add_reaction take.",
         object_schema({"channel": CHANNEL, "text": TEXT,
                        "blocks": {"type": "array", "minItems": 1, "maxItems": 50, "items": ANY_OBJECT,
                                   "description": "Block Kit blocks, e.g. [{\"type\": \"section\", \"text\": "
                                                  "{\"type\": \"mrkdwn\", \"text\": \"*Hi*\"}}]"}},
                       ["channel"], anyOf=[{"required": ["text"]}, {"required": ["blocks"]}]),
         post_message, _SENT_OUT, title="Post message", read_only=False),
    Tool("reply_to_thread",
         "Reply in a thread: thread_ts is the ts of the thread's parent message (not of another reply).",
         object_schema({"channel": CHANNEL, "thread_ts": TS, "text": TEXT}, ["channel", "thread_ts", "text"]),
         reply_to_thread, _SENT_OUT, title="Reply to thread", read_only=False),
    Tool("add_reaction",
         "Add an emoji reaction to a message. name is the emoji name such as thumbsup, white_check_mark or "
         "a custom emoji (surrounding colons are removed); timestamp is the message's ts.",
         object_schema({"channel": CHANNEL, "timestamp": TS,
                        "name": {"type": "string", "pattern": r"^:?[a-z0-9_+-]{1,100}(::skin-tone-[2-6])?:?$",
                                 "description": "Emoji name, e.g. thumbsup or :tada: or thumbsup::skin-tone-3"}},
                       ["channel", "timestamp", "name"]),
         add_reaction, ANY_OBJECT, title="Add reaction", read_only=False),
    Tool("list_users",
         "Members of the workspace (people, bots and deactivated accounts): id, name, real and display name, "
         "title, email (with users:read.email), time zone. Follows Slack's cursors up to max_items; pass "
         "next_cursor back as cursor to continue.",
         object_schema({"limit": PAGE_SIZE, "max_items": MAX_ITEMS, "cursor": CURSOR}),
         list_users,
         output_schema({"users": {"type": "array", "items": ANY_OBJECT}, "count": {"type": "integer"},
                        "next_cursor": NEXT_CURSOR}),
         title="List users"),
    Tool("get_user_profile",
         "A user's profile: real and display name, title, status, email (with users:read.email), phone, images.",
         object_schema({"user": USER}, ["user"]), get_user_profile,
         output_schema({"user": {"type": "string"}, "profile": ANY_OBJECT}), title="Get user profile"),
    Tool("search_messages",
         "Search messages across the workspace with Slack's search syntax (e.g. \"deploy in:#ops from:@ada "
         "after:2024-01-01\"). Needs a user token (xoxp-) with search:read; bot tokens cannot search.",
         object_schema({"query": {"type": "string", "minLength": 1, "maxLength": 1000,
                                  "description": "Slack search query"},
                        "count": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Matches per page "
                                                                                                   "(default 20)"},
                        "page": {"type": "integer", "minimum": 1, "maximum": 100,
                                 "description": "Page number (default 1)"}},
                       ["query"]),
         search_messages,
         output_schema({"query": {"type": "string"}, "total": {"type": "integer"}, "page": {"type": "integer"},
                        "pages": {"type": "integer"}, "matches": {"type": "array", "items": ANY_OBJECT}}),
         title="Search messages"),
]
