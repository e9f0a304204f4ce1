"""A local Slack Web API: ``/api/<method>`` over GET or POST, Slack's auth, envelopes and error codes.

Like Slack, every failure but a rate limit or an unknown method is HTTP 200 with
``{"ok": false, "error": "<code>"}``. Tokens: none -> ``not_authed``; ``xox?-bad…`` or anything not
shaped like a Slack token -> ``invalid_auth``; ``xoxb-readonly…`` lacks chat:write and reactions:write
(``missing_scope`` with ``needed``/``provided``). Each token sees its own workspace: team and user ids
derived from the token appear in channels (context_team_id), users (team_id), profiles (team) and
posted messages, so a test can tell whose token was used.

The workspace: 250 channels C00000001..C00000250 (every 5th private, every 25th archived, the app a
member of all but every 4th) plus an IM (D00000001) and a group DM (G00000001), listed in that order
with archived and unwanted types filtered out of each page *after* paging, so pages come back short
as Slack's do; 250 users U00000001..U00000250; 30 messages per channel (message 5 has a thread of 3
replies, every 10th mentions "deploy"). C0MISSING (or any unknown id) is ``channel_not_found``.
Use ``fail()`` for HTTP 429 with Retry-After, 5xx, or any other ``ok: false`` body.

OAuth (a bot install with token rotation): ``/oauth/v2/authorize`` redirects back with a code as a user who
clicks "Allow"; ``oauth.v2.access`` (form POST, client credentials in the form or HTTP Basic) exchanges it
for ``xoxe.xoxb-…`` plus a ``xoxe-1-…`` refresh token that expires in 12 hours, and refreshes with
``grant_type=refresh_token``, rotating the single-use refresh token. Failures are HTTP 200 ``ok: false``
(``invalid_code``, ``bad_redirect_uri``, ``invalid_refresh_token``, ``invalid_client_id``,
``bad_client_secret`` ...). An issued token belongs to a workspace named after its account; expired it
answers ``token_expired``, revoked ``token_revoked``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.simulators.base import Simulator
from tests.simulators.oauth import OAuthMixin, ProviderRules, client_credentials, form_of

N_CHANNELS = 250
N_USERS = 250
N_MESSAGES = 30
THREAD_PARENT = 5
THREAD_REPLIES = 3
FIRST_POSTED_TS = 1700000000_000100  # chat.postMessage's first ts: 1700000000.000100
READONLY_SCOPES = "channels:read,groups:read,channels:history,users:read"
EMOJI = {"thumbsup", "+1", "-1", "white_check_mark", "eyes", "tada", "heart", "rocket", "pray", "joy"}
_TOKEN = re.compile(r"^xox[abpe]-[A-Za-z0-9-]+$")
_TS = re.compile(r"^\d+(\.\d+)?$")

Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[web.Response]]


def identity(token: str, account: str | None = None) -> dict[str, Any]:
    """The workspace and user a token belongs to (an OAuth grant's: the workspace named after its account)."""
    digest = hashlib.sha256((account or token).encode()).hexdigest()[:8].upper()
    return {"team_id": f"T{digest}", "user_id": f"U{digest}", "bot_id": f"B{digest}",
            "team": account or f"Workspace {digest}", "is_bot": account is not None or token.startswith("xoxb-")}


# With token rotation Slack's tokens live 12 hours; refresh tokens do not expire but are single-use.
SLACK_RULES = ProviderRules(access_prefix="xoxe.xoxb-1-", refresh_prefix="xoxe-1-", default_access_lifetime_s=43200,
                            default_refresh_lifetime_s=None, rotate_refresh=True, refresh_kills_old_access=False)
APP_ID = "A0SIMULATOR"


def ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def error(code: str, status: int = 200, **fields: Any) -> web.Response:
    return web.json_response({"ok": False, "error": code, **fields}, status=status)


def encode_cursor(prefix: str, value: str) -> str:
    return base64.b64encode(f"{prefix}:{value}".encode()).decode()


def decode_cursor(prefix: str, cursor: str) -> str | None:
    try:
        text = base64.b64decode(cursor, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    head, _, value = text.partition(":")
    return value if head == prefix and value else None


def channel_ids() -> list[str]:
    return [f"C{i:08d}" for i in range(1, N_CHANNELS + 1)] + ["D00000001", "G00000001"]


def channel(cid: str, team_id: str) -> dict[str, Any] | None:
    """The conversation object Slack returns for an id, or None if the workspace has no such one."""
    if cid == "D00000001":
        return {"id": cid, "created": 1690000000, "is_archived": False, "is_im": True, "is_org_shared": False,
                "context_team_id": team_id, "updated": 1690000000, "user": "U00000002", "is_user_deleted": False,
                "priority": 0}
    if cid == "G00000001":
        return {"id": cid, "name": "mpdm-ada--bob--cy-1", "is_channel": False, "is_group": True, "is_im": False,
                "is_mpim": True, "is_private": True, "created": 1690000000, "is_archived": False,
                "is_general": False, "context_team_id": team_id, "is_member": True,
                "topic": {"value": "Group messaging", "creator": "U00000001", "last_set": 1690000000},
                "purpose": {"value": "Group messaging with: @ada @bob @cy", "creator": "U00000001",
                            "last_set": 1690000000}, "num_members": 3}
    m = re.fullmatch(r"C(\d{8})", cid)
    if not m or not 1 <= int(m.group(1)) <= N_CHANNELS:
        return None
    i = int(m.group(1))
    name = "general" if i == 1 else f"channel-{i:03d}"
    return {
        "id": cid, "name": name, "is_channel": True, "is_group": False, "is_im": False, "is_mpim": False,
        "is_private": i % 5 == 0, "created": 1690000000 + i, "is_archived": i % 25 == 0, "is_general": i == 1,
        "unlinked": 0, "name_normalized": name, "is_shared": False, "is_org_shared": False,
        "is_pending_ext_shared": False, "pending_shared": [], "context_team_id": team_id, "updated": 1690000000,
        "parent_conversation": None, "creator": "U00000001", "is_ext_shared": False, "shared_team_ids": [team_id],
        "pending_connected_team_ids": [], "is_member": i % 4 != 0,
        "topic": {"value": f"Topic of {name}", "creator": "U00000001", "last_set": 1690000000},
        "purpose": {"value": f"Purpose of {name}", "creator": "U00000001", "last_set": 1690000000},
        "previous_names": [], "num_members": 10 + i,
    }


def channel_kind(c: dict[str, Any]) -> str:
    if c.get("is_im"):
        return "im"
    if c.get("is_mpim"):
        return "mpim"
    return "private_channel" if c.get("is_private") else "public_channel"


def seeded_ts(k: int) -> str:
    return f"{1690000000 + k * 60}.{k:06d}"


def reply_ts(j: int) -> str:
    return f"{1690000000 + THREAD_PARENT * 60 + j}.{j:06d}"


def message_text(k: int, name: str) -> str:
    return f"deploy {k // 10} finished in #{name}" if k % 10 == 0 else f"message {k} in #{name}"


def seeded_messages(c: dict[str, Any], team_id: str) -> list[dict[str, Any]]:
    """A conversation's seeded history, oldest first."""
    name = c.get("name") or c["id"]
    out = []
    for k in range(1, N_MESSAGES + 1):
        msg: dict[str, Any] = {"type": "message", "user": f"U{(k - 1) % 3 + 1:08d}", "text": message_text(k, name),
                               "ts": seeded_ts(k), "team": team_id}
        if k == THREAD_PARENT:
            msg.update(thread_ts=msg["ts"], reply_count=THREAD_REPLIES, reply_users_count=2,
                       latest_reply=reply_ts(THREAD_REPLIES), reply_users=["U00000002", "U00000003"],
                       is_locked=False, subscribed=False)
        out.append(msg)
    return out


def seeded_replies(parent: dict[str, Any], team_id: str) -> list[dict[str, Any]]:
    return [{"type": "message", "user": f"U{j % 2 + 2:08d}", "text": f"reply {j}", "ts": reply_ts(j),
             "thread_ts": parent["ts"], "parent_user_id": parent["user"], "team": team_id}
            for j in range(1, THREAD_REPLIES + 1)]


def user(i: int, team_id: str) -> dict[str, Any]:
    name = f"user{i:03d}"
    real = f"User {i:03d}"
    is_bot = i % 50 == 0
    return {
        "id": f"U{i:08d}", "team_id": team_id, "name": name, "deleted": i % 40 == 0, "color": "9f69e7",
        "real_name": real, "tz": "Europe/Berlin", "tz_label": "Central European Time", "tz_offset": 3600,
        "profile": profile(name, real, team_id, is_bot), "is_admin": i == 1, "is_owner": i == 1,
        "is_primary_owner": i == 1, "is_restricted": False, "is_ultra_restricted": False, "is_bot": is_bot,
        "is_app_user": False, "updated": 1690000000, "is_email_confirmed": not is_bot,
        "who_can_share_contact_card": "EVERYONE",
    }


def profile(name: str, real: str, team_id: str, is_bot: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = {
        "title": "Engineer", "phone": "", "skype": "", "real_name": real, "real_name_normalized": real,
        "display_name": name, "display_name_normalized": name, "fields": None, "status_text": "",
        "status_emoji": "", "status_emoji_display_info": [], "status_expiration": 0, "avatar_hash": "g0123456789a",
        "first_name": real.split()[0], "last_name": real.split()[-1], "team": team_id,
        "image_24": f"https://secure.gravatar.com/avatar/{name}.jpg?s=24",
        "image_72": f"https://secure.gravatar.com/avatar/{name}.jpg?s=72",
    }
    if not is_bot:
        p["email"] = f"{name}@example.com"
    return p


def user_index(uid: str) -> int | None:
    m = re.fullmatch(r"U(\d{8})", uid)
    if m and 1 <= int(m.group(1)) <= N_USERS:
        return int(m.group(1))
    return None


def _int_arg(args: dict[str, Any], name: str, default: int, maximum: int) -> int | None:
    """Slack's integer arguments: absent -> default; not a number -> None (the caller answers)."""
    value = args.get(name)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return max(0, min(n, maximum))


def _ts_key(ts: str) -> tuple[int, int]:
    whole, _, frac = ts.partition(".")
    return int(whole), int((frac or "0").ljust(6, "0")[:6])


class SlackSimulator(OAuthMixin, Simulator):
    oauth_rules = SLACK_RULES
    oauth_env_prefix = "SLACK"
    authorize_path = "/oauth/v2/authorize"
    token_path = "/api/oauth.v2.access"
    default_scope = "channels:read,channels:history,chat:write"

    def __init__(self) -> None:
        super().__init__(name="slack")
        self._oauth_init()
        self._state_reset()
        self._methods: dict[str, Handler] = {
            "conversations.list": self.conversations_list,
            "conversations.history": self.conversations_history,
            "conversations.replies": self.conversations_replies,
            "chat.postMessage": self.chat_post_message,
            "reactions.add": self.reactions_add,
            "users.list": self.users_list,
            "users.profile.get": self.users_profile_get,
            "search.messages": self.search_messages,
            "auth.test": self.auth_test,
        }

    def _state_reset(self) -> None:
        self.posted: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.thread_posts: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.reactions: set[tuple[str, str, str, str, str]] = set()
        self._next_ts = FIRST_POSTED_TS

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._state_reset()

    @property
    def api_url(self) -> str:
        """What SLACK_API_URL is set to: Slack's methods live under /api/."""
        return f"{self.url}/api"

    def routes(self, app: web.Application) -> None:
        app.router.add_get(self.authorize_path, self.oauth_authorize)
        app.router.add_route("*", "/api/{method}", self.dispatch)

    # The envelope: method lookup, argument parsing, auth -----------------------------------------

    async def dispatch(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        if name == "oauth.v2.access":
            return await self.oauth_v2_access(request)
        handler = self._methods.get(name)
        if handler is None:
            return error("unknown_method", status=404, req_method=name)
        args: dict[str, Any] = dict(request.query)
        warning = None
        if request.method == "POST":
            ctype = request.headers.get("Content-Type", "")
            raw = await request.read()
            if ctype.startswith("application/json"):
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    return error("invalid_json")
                if not isinstance(body, dict):
                    return error("json_not_object")
                args.update(body)
                if "charset" not in ctype:
                    warning = "missing_charset"
            elif ctype.startswith("application/x-www-form-urlencoded"):
                args.update(parse_qsl(raw.decode("utf-8", "replace")))
            elif raw:
                return error("invalid_form_data")
        elif request.method != "GET":
            return error("invalid_post_type")
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else args.pop("token", None)
        if not token:
            return error("not_authed")
        status, grant = self._oauth.check_access(token)
        if status == "expired":
            return error("token_expired")
        if status == "revoked":
            return error("token_revoked")
        if grant is None and (not _TOKEN.match(token) or token[5:].startswith("bad")):
            return error("invalid_auth")
        who = {**identity(token, grant.account if grant else None), "token": token}
        resp = await handler(who, args)
        if warning and resp.status == 200 and resp.body is not None:
            data = json.loads(resp.body)  # type: ignore[arg-type]
            data["warning"] = warning
            data.setdefault("response_metadata", {})["warnings"] = [warning]
            return web.json_response(data)
        return resp

    # OAuth ----------------------------------------------------------------------------------------------

    async def oauth_authorize(self, request: web.Request) -> web.Response:
        def missing(name: str) -> web.Response:
            # Slack shows an error page ("Something went wrong when authorizing this app") instead.
            return web.Response(status=400, content_type="text/html",
                                text=f"<html><body>Something went wrong: invalid {name}</body></html>")
        return await self._authorize(request, missing, {"error": "access_denied"})

    def _requested_scope(self, request: web.Request) -> str:
        return request.query.get("scope") or self.default_scope

    def _install(self, account: str, scope: str, tokens: dict[str, Any]) -> dict[str, Any]:
        """oauth.v2.access's answer for a bot install with token rotation."""
        who = identity("", account)
        return {"app_id": APP_ID, "authed_user": {"id": f"U{who['team_id'][1:]}"}, "scope": scope,
                "token_type": "bot", "access_token": tokens["access_token"], "bot_user_id": f"U0BOT{who['bot_id'][1:]}",
                "refresh_token": tokens["refresh_token"], "expires_in": tokens["expires_in"],
                "team": {"id": who["team_id"], "name": account}, "enterprise": None, "is_enterprise_install": False}

    async def oauth_v2_access(self, request: web.Request) -> web.Response:
        args = await form_of(request)
        grant_type = args.get("grant_type") or "authorization_code"
        credential = args.get("refresh_token" if grant_type == "refresh_token" else "code", "")
        oauth = self._oauth

        def fail(code: str, account: str | None = None) -> web.Response:
            oauth.record_locked(grant_type, credential, code, account)
            return error(code)

        with self._lock:
            injected = oauth.take_failure_locked()
            if injected is not None:
                oauth.record_locked(grant_type, credential, f"http_{injected}")
                return web.Response(status=injected, text="Service Unavailable", content_type="text/plain")
            client_id, secret = client_credentials(request, args)
            if client_id != oauth.client_id:
                return fail("invalid_client_id")
            if secret != oauth.client_secret:
                return fail("bad_client_secret")
            if grant_type == "refresh_token":
                reason, grant, tokens = oauth.use_refresh_locked(credential)
                if grant is None or reason != "ok":
                    return fail("invalid_refresh_token", grant.account if grant else None)
                account, scope = grant.account, grant.scope
            elif grant_type == "authorization_code":
                reason, code, tokens = oauth.exchange_code_locked(credential, args.get("redirect_uri"),
                                                                  args.get("code_verifier"), client_id)
                if reason == "redirect_uri":
                    return fail("bad_redirect_uri")
                if code is None:
                    return fail("invalid_code")
                account, scope = code.account, code.scope
            else:
                return fail("invalid_grant_type")
        return ok(**self._install(account, scope, tokens))

    def _visible_channel(self, who: dict[str, Any], args: dict[str, Any]) -> dict[str, Any] | web.Response:
        c = channel(str(args.get("channel") or ""), who["team_id"])
        if c is None:
            return error("channel_not_found")
        if c.get("is_member") is False:
            return error("not_in_channel")
        return c

    def _history(self, c: dict[str, Any], team_id: str) -> list[dict[str, Any]]:
        with self._lock:
            posted = list(self.posted.get((team_id, c["id"]), []))
        return seeded_messages(c, team_id) + posted

    # Methods ----------------------------------------------------------------------------------------

    async def auth_test(self, who: dict[str, Any], args: dict[str, Any]) -> web.Response:
        out = {"url": "https://sim.slack.com/", "team": who["team"], "user": "app" if who["is_bot"] else "person",
               "team_id": who["team_id"], "user_id": who["user_id"], "is_enterprise_install": False}
        if who["is_bot"]:
            out["bot_id"] = who["bot_id"]
        return ok(**out)

    async def conversations_list(self, who: dict[str, Any], args: dict[str, Any]) -> web.Response:
        limit = _int_arg(args, "limit", 100, 1000)
        if limit is None:
            return error("invalid_limit")
        types = set(str(args.get("types") or "public_channel").split(","))
        if not types <= {"public_channel", "private_channel", "mpim", "im"}:
            return error("invalid_types")
        exclude_archived = str(args.get("exclude_archived", "false")).lower() in ("true", "1")
        ids = channel_ids()
        start = 0
        if args.get("cursor"):
            after = decode_cursor("team", str(args["cursor"]))
            if after not in ids:
                return error("invalid_cursor")
            start = ids.index(after)
        window = ids[start:start + (limit or 100)]
        rest = ids[start + len(window):]
        page = []
        for cid in window:
            c = channel(cid, who["team_id"])
            assert c is not None
            if channel_kind(c) in types and not (exclude_archived and c["is_archived"]):
                page.append(c)
        return ok(channels=page, response_metadata={"next_cursor": encode_cursor("team", rest[0]) if rest else ""})

    async def conversations_history(self, who: dict[str, Any], args: dict[str, Any]) -> web.Response:
        c = self._visible_channel(who, args)
        if isinstance(c, web.Response):
            return c
        limit = _int_arg(args, "limit", 100, 999)
        if limit is None:
            return error("invalid_limit")
        oldest, latest = str(args.get("oldest") or "0"), args.get("latest")
        if not _TS.match(oldest):
            return error("invalid_ts_oldest")
        if latest is not None and not _TS.match(str(latest)):
            return error("invalid_ts_latest")
        inclusive = str(args.get("inclusive", "false")).lower() in ("true", "1")
        low, high = _ts_key(oldest), _ts_key(str(latest)) if latest else None
        msgs = sorted(self._history(c, who["team_id"]), key=lambda m: _ts_key(m["ts"]), reverse=True)
        msgs = [m for m in msgs
                if (_ts_key(m["ts"]) >= low if inclusive else _ts_key(m["ts"]) > low)
                and (high is None or (_ts_key(m["ts"]) <= high if inclusive else _ts_key(m["ts"]) < high))]
        if args.get("cursor"):
            below = decode_cursor("next_ts", str(args["cursor"]))
            if below is None or not _TS.match(below):
                return error("invalid_cursor")
            msgs = [m for m in msgs if _ts_key(m["ts"]) <= _ts_key(below)]
        page, more = msgs[:limit or 100], msgs[limit or 100:]
        out: dict[str, Any] = {"messages": page, "has_more": bool(more), "pin_count": 0,
                               "channel_actions_ts": None, "channel_actions_count": 0}
        if more:
            out["response_metadata"] = {"next_cursor": encode_cursor("next_ts", more[0]["ts"])}
        return ok(**out)

    async def conversations_replies(self, who: dict[str, Any], args: dict[str, Any]) -> web.Response:
        c = self._visible_channel(who, args)
        if isinstance(c, web.Response):
            return c
        ts = str(args.get("ts") or "")
        parent = next((m for m in self._history(c, who["team_id"]) if m["ts"] == ts), None)
        if parent is None:
            return error("thread_not_found")
        limit = _int_arg(args, "limit", 1000, 1000)
        if limit is None:
            return error("invalid_limit")
        with self._lock:
            posted = list(self.thread_posts.get((who["team_id"], c["id"], ts), []))
        replies = seeded_replies(parent, who["team_id"]) if parent.get("reply_count") else []
        msgs = [parent, *replies, *posted]
        start = 0
        if args.get("cursor"):
            from_ts = decode_cursor("next_ts", str(args["cursor"]))
            start = next((i for i, m in enumerate(msgs) if m["ts"] == from_ts), -1)
            if start < 0:
                return error("invalid_cursor")
        page, more = msgs[start:start + (limit or 1000)], msgs[start + (limit or 1000):]
        out: dict[str, Any] = {"messages": page, "has_more": bool(more)}
        if more:
            out["response_metadata"] = {"next_cursor": encode_cursor("next_ts", more[0]["ts"])}
        return ok(**out)

    async def chat_post_message(self, who: dict[str, Any], args: dict[str, Any]) -> web.Response:
        if who["token"].startswith("xoxb-readonly"):
            return error("missing_scope", needed="chat:write", provided=READONLY_SCOPES)
        c = self._visible_channel(who, args)
        if isinstance(c, web.Response):
            return c
        if c.get("is_archived"):
            return error("is_archived")
        text, blocks = args.get("text"), args.get("blocks")
        if not text and not blocks:
            return error("no_text")
        if isinstance(text, str) and len(text) > 40000:
            return error("msg_too_long")
        if blocks is not None and (not isinstance(blocks, list)
                                   or not all(isinstance(b, dict) and "type" in b for b in blocks)):
            return error("invalid_blocks", response_metadata={"messages": ["[ERROR] missing required field: type "
                                                                           "[json-pointer:/blocks/0]"]})
        with self._lock:
            ts = f"{self._next_ts // 1_000_000}.{self._next_ts % 1_000_000:06d}"
            self._next_ts += 1
        msg: dict[str, Any] = {"user": who["user_id"], "type": "message", "ts": ts, "text": text or "",
                               "team": who["team_id"], "blocks": blocks or []}
        if who["is_bot"]:
            msg.update(bot_id=who["bot_id"], app_id="A0SIMULATOR")
        thread_ts = args.get("thread_ts")
        with self._lock:
            if thread_ts:
                msg["thread_ts"] = str(thread_ts)
                msg["parent_user_id"] = "U00000002"
                self.thread_posts.setdefault((who["team_id"], c["id"], str(thread_ts)), []).append(msg)
            else:
                self.posted.setdefault((who["team_id"], c["id"]), []).append(msg)
        return ok(channel=c["id"], ts=ts, message=msg)

    async def reactions_add(self, who: dict[str, Any], args: dict[str, Any]) -> web.Response:
        if who["token"].startswith("xoxb-readonly"):
            return error("missing_scope", needed="reactions:write", provided=READONLY_SCOPES)
        c = self._visible_channel(who, args)
        if isinstance(c, web.Response):
            return c
        ts, name = str(args.get("timestamp") or ""), str(args.get("name") or "")
        if not ts or not name:
            return error("invalid_arguments", response_metadata={"messages": ["[ERROR] missing required field"]})
        if not any(m["ts"] == ts for m in self._history(c, who["team_id"])):
            return error("message_not_found")
        if name.split("::skin-tone-")[0] not in EMOJI:
            return error("invalid_name")
        key = (who["team_id"], who["user_id"], c["id"], ts, name)
        with self._lock:
            if key in self.reactions:
                return error("already_reacted")
            self.reactions.add(key)
        return ok()

    async def users_list(self, who: dict[str, Any], args: dict[str, Any]) -> web.Response:
        # No limit (or 0) means "everything at once", as Slack does for small workspaces.
        limit = _int_arg(args, "limit", 0, 1000)
        if limit is None:
            return error("invalid_limit")
        start = 1
        if args.get("cursor"):
            after = decode_cursor("user", str(args["cursor"]))
            index = user_index(after or "")
            if index is None:
                return error("invalid_cursor")
            start = index
        stop = N_USERS + 1 if not limit else min(start + limit, N_USERS + 1)
        members = [user(i, who["team_id"]) for i in range(start, stop)]
        cursor = encode_cursor("user", f"U{stop:08d}") if stop <= N_USERS else ""
        return ok(members=members, cache_ts=1700000000, response_metadata={"next_cursor": cursor})

    async def users_profile_get(self, who: dict[str, Any], args: dict[str, Any]) -> web.Response:
        uid = str(args.get("user") or who["user_id"])
        if uid == who["user_id"]:
            return ok(profile=profile("me", "Token Owner", who["team_id"], who["is_bot"]))
        index = user_index(uid)
        if index is None:
            return error("user_not_found")
        u = user(index, who["team_id"])
        return ok(profile=u["profile"])

    async def search_messages(self, who: dict[str, Any], args: dict[str, Any]) -> web.Response:
        if not who["token"].startswith("xoxp-"):
            return error("not_allowed_token_type")
        query = str(args.get("query") or "")
        if not query:
            return error("invalid_arguments", response_metadata={"messages": ["[ERROR] missing required field: "
                                                                              "query"]})
        count = _int_arg(args, "count", 20, 100) or 20
        page_no = max(1, _int_arg(args, "page", 1, 100) or 1)
        words = query.lower().split()
        matches = []
        for cid in channel_ids()[:5]:
            c = channel(cid, who["team_id"])
            assert c is not None
            for m in reversed(seeded_messages(c, who["team_id"])):
                if all(w in m["text"].lower() for w in words):
                    matches.append({
                        "iid": f"{cid}-{m['ts']}", "team": who["team_id"], "type": "message",
                        "channel": {"id": cid, "is_channel": True, "is_private": c["is_private"], "name": c["name"]},
                        "user": m["user"], "username": f"user{int(m['user'][1:]):03d}", "ts": m["ts"],
                        "text": m["text"], "score": 1,
                        "permalink": f"https://sim.slack.com/archives/{cid}/p{m['ts'].replace('.', '')}"})
        total = len(matches)
        pages = (total + count - 1) // count
        chunk = matches[(page_no - 1) * count:page_no * count]
        first = (page_no - 1) * count + 1 if chunk else 0
        return ok(query=query, messages={
            "total": total, "matches": chunk,
            "pagination": {"total_count": total, "page": page_no, "per_page": count, "page_count": pages,
                           "first": first, "last": first + len(chunk) - 1 if chunk else 0},
            "paging": {"count": count, "total": total, "page": page_no, "pages": pages}})
