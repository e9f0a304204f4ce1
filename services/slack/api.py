"""The Slack Web API client, bound to one instance's token for one call.

Slack answers most failures with HTTP 200 and ``{"ok": false, "error": "<code>"}``, so every answer
goes through ``json_answer`` with ``not_ok`` as its in-body check. The error code becomes an
UpstreamError whose ``code`` is Slack's own string and whose ``status`` is the HTTP status that best
describes it (Slack's real status when it sent a non-2xx one), so direct endpoints answer 404 for an
unknown channel and 429 for a rate limit.
"""

from __future__ import annotations

from typing import Any

from mcp.errors import UpstreamError
from mcp.server.upstream import UpstreamHTTP, UpstreamResponse, json_answer, parse_retry_after

UPSTREAM = "slack"

# Slack wants the charset spelled out for JSON bodies; without it, it answers with a warning.
JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# A page of a list method (conversations.list, users.list) may hold fewer items than asked for, even
# none, while more remain; following cursors server-side is capped so one call cannot run away.
MAX_PAGES = 25

_REPLACE_TOKEN = "replace this instance's access_token (a bot token xoxb-… or a user token xoxp-…)"

# Slack error code -> (the HTTP status that best describes it, what to tell a person).
_ERRORS: dict[str, tuple[int, str]] = {
    "not_authed": (401, f"Slack received no token; {_REPLACE_TOKEN}"),
    "invalid_auth": (401, f"Slack rejected the token (invalid_auth); {_REPLACE_TOKEN}"),
    "account_inactive": (401, "The token belongs to a deactivated user or an uninstalled app (account_inactive); "
                              f"reinstall the app and {_REPLACE_TOKEN}"),
    "token_revoked": (401, f"The token has been revoked (token_revoked); reinstall the app and {_REPLACE_TOKEN}"),
    "token_expired": (401, "The token has expired (token_expired; the app uses token rotation); refresh it and "
                           f"{_REPLACE_TOKEN}"),
    "no_permission": (403, "The token is not allowed to do this in this workspace (no_permission); ask a "
                           "workspace admin to grant the app access"),
    "not_allowed_token_type": (403, "Slack does not accept this kind of token for this method "
                                    "(not_allowed_token_type); message search needs a user token (xoxp-) with the "
                                    "search:read scope"),
    "ekm_access_denied": (403, "The workspace's Enterprise Key Management revoked access to this content "
                               "(ekm_access_denied)"),
    "restricted_action": (403, "The workspace's settings do not allow this action (restricted_action); ask a "
                               "workspace admin"),
    "team_access_not_granted": (403, "The token has not been granted access to this workspace "
                                     "(team_access_not_granted)"),
    "channel_not_found": (404, "Slack found no such channel, or the token cannot see it (channel_not_found): check "
                               "the channel id (C…, G… or D…, from list_channels); for a private channel, invite "
                               "the app to it first"),
    "not_in_channel": (403, "The app is not a member of this channel (not_in_channel); invite it (type "
                            "/invite @<app name> in the channel) and try again"),
    "is_archived": (409, "The channel is archived (is_archived); unarchive it or use another channel"),
    "msg_too_long": (400, "The message text is too long (msg_too_long); shorten it (Slack's limit is 40,000 "
                          "characters) or split it into several messages"),
    "no_text": (400, "The message has no content (no_text); pass text, or blocks"),
    "too_many_attachments": (400, "The message has too many attachments (too_many_attachments; Slack allows "
                                  "100); send fewer"),
    "invalid_blocks": (400, "Slack rejected the blocks (invalid_blocks); check them against Block Kit "
                            "(https://app.slack.com/block-kit-builder)"),
    "invalid_blocks_format": (400, "The blocks are not a JSON array of Block Kit blocks (invalid_blocks_format)"),
    "thread_not_found": (404, "Slack found no thread with that thread_ts in this channel (thread_not_found): pass "
                              "the ts of the thread's parent message"),
    "message_not_found": (404, "Slack found no message with that timestamp in this channel (message_not_found): "
                               "check the ts, e.g. from get_channel_history"),
    "already_reacted": (409, "That reaction is already on the message (already_reacted); nothing to do"),
    "too_many_emoji": (400, "The message already has the maximum number of distinct reactions (too_many_emoji)"),
    "too_many_reactions": (400, "The message already has the maximum number of reactions (too_many_reactions)"),
    "invalid_name": (400, "Slack knows no emoji by that name (invalid_name); use a name such as thumbsup, "
                          "white_check_mark or one of the workspace's custom emoji, without colons"),
    "user_not_found": (404, "Slack found no such user (user_not_found): check the user id (U… or W…, from "
                            "list_users)"),
    "users_not_found": (404, "Slack found no such user (users_not_found): check the user id (U… or W…, from "
                             "list_users)"),
    "ratelimited": (429, "Slack rate limit reached (ratelimited)"),
    "invalid_cursor": (400, "The cursor is invalid or has expired (invalid_cursor); start again without a cursor"),
    "invalid_ts_latest": (400, "latest is not a valid Slack timestamp (invalid_ts_latest); use one like "
                               "1700000000.000100"),
    "invalid_ts_oldest": (400, "oldest is not a valid Slack timestamp (invalid_ts_oldest); use one like "
                               "1700000000.000100"),
    "invalid_arguments": (400, "Slack rejected the arguments (invalid_arguments)"),
    "invalid_form_data": (400, "Slack could not read the request body (invalid_form_data); this is a bug in the "
                               "Slack service, please report it"),
    "invalid_json": (400, "Slack could not read the request body (invalid_json); this is a bug in the Slack "
                          "service, please report it"),
    "json_not_object": (400, "Slack could not read the request body (json_not_object); this is a bug in the "
                             "Slack service, please report it"),
    "unknown_method": (404, "Slack does not know this API method (unknown_method); check SLACK_API_URL"),
    "fatal_error": (503, "Slack failed internally (fatal_error); try again later"),
    "internal_error": (503, "Slack failed internally (internal_error); try again later"),
    "service_unavailable": (503, "Slack is unavailable (service_unavailable); try again later"),
    "request_timeout": (503, "Slack timed out (request_timeout); try again later"),
}
# Every code this client can report: its table, and missing_scope (reported with the scopes it needed).
ERROR_CODES = frozenset(_ERRORS) | {"missing_scope"}


def _detail_text(body: dict[str, Any]) -> str:
    """Slack's own explanation, when it sends one (invalid_arguments, invalid_blocks)."""
    meta = body.get("response_metadata")
    messages = meta.get("messages") if isinstance(meta, dict) else None
    if isinstance(messages, list) and messages:
        return "; ".join(str(m) for m in messages[:5])[:300]
    return ""


def not_ok(body: Any) -> str | None:
    """Slack's error code when a 2xx answer is not a success (``ok`` is anything but true), else None."""
    if isinstance(body, dict) and body.get("ok") is True:
        return None
    return str(body.get("error") or "not ok") if isinstance(body, dict) else "not a Web API response"


def slack_error(resp: UpstreamResponse, body: Any) -> UpstreamError:
    """The UpstreamError for an answer that is not ``ok`` (an HTTP error or ``ok: false``)."""
    data = body if isinstance(body, dict) else {}
    code = str(data.get("error") or "")
    retry = parse_retry_after(resp.headers.get("Retry-After"))
    if resp.status == 429 or code == "ratelimited":
        wait = f"retry after {retry} s" if retry is not None else "retry in a minute"
        return UpstreamError(UPSTREAM, f"Slack rate limit reached for this method; {wait}",
                             status=429, code="ratelimited", retry_after_s=retry)
    details: dict[str, Any] = {}
    if code == "missing_scope":
        needed = str(data.get("needed") or "unknown")
        provided = str(data.get("provided") or "none")
        details = {"needed": needed, "provided": provided}
        message = (f"The token lacks the Slack scope this needs (missing_scope): needed {needed}; the token has "
                   f"{provided}. Add {needed} to the Slack app's scopes, reinstall the app, and replace this "
                   "instance's access_token with the new token")
        status = 403
    elif code in _ERRORS:
        status, message = _ERRORS[code]
    elif code:
        status = 400
        message = (f"Slack refused the request with error {code!r}; see the method's page on "
                   "https://api.slack.com/methods for what it means")
    elif resp.status >= 500:
        status, code = resp.status, "upstream_unavailable"
        message = f"Slack failed (HTTP {resp.status}); try again later"
    elif not resp.ok:
        status, code = resp.status, "upstream_error"
        message = f"Slack answered HTTP {resp.status}"
    else:
        status, code = 502, "bad_response"
        message = "Slack answered with something that is not a Web API response"
    if not resp.ok:
        # A real non-2xx status (404 unknown_method, 5xx) says more than our guess from the code.
        status = resp.status
    said = _detail_text(data)
    if said:
        message = f"{message}. Slack said: {said}"
    return UpstreamError(UPSTREAM, message, status=status, code=code, details=details)


class SlackClient:
    """Slack Web API calls; every request carries this instance's token and nothing else's."""

    def __init__(self, http: UpstreamHTTP, credentials: dict[str, str]) -> None:
        self._http = http
        self._token = credentials["access_token"]
        self._headers = {"Authorization": f"Bearer {self._token}"}

    @property
    def is_user_token(self) -> bool:
        """User tokens (xoxp-) act as a person; some methods (search.*) accept nothing else."""
        return self._token.startswith("xoxp-")

    @staticmethod
    def _check(resp: UpstreamResponse) -> dict[str, Any]:
        body: dict[str, Any] = json_answer(resp, UPSTREAM, in_body_error=not_ok, error=slack_error)
        return body

    async def get(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A read method, arguments in the query string."""
        resp = await self._http.request("GET", f"/{method}", headers=self._headers, params=params)
        return self._check(resp)

    async def post(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """A write method, arguments as a JSON body."""
        headers = {**self._headers, "Content-Type": JSON_CONTENT_TYPE}
        resp = await self._http.request("POST", f"/{method}", headers=headers,
                                        json_body={k: v for k, v in body.items() if v is not None})
        return self._check(resp)

    async def collect(self, method: str, key: str, params: dict[str, Any], *, page_size: int, max_items: int,
                      cursor: str | None = None) -> tuple[list[Any], str | None]:
        """Items of a cursor-paginated list method, following next_cursor up to ``max_items``.

        Each request asks for no more than are still wanted, so no item is fetched and then dropped,
        and the returned cursor (None at the end) continues exactly after the last item returned.
        """
        items: list[Any] = []
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            want = min(page_size, max_items - len(items))
            page = await self.get(method, {**params, "limit": want, "cursor": cursor})
            got = page.get(key)
            if isinstance(got, list):
                items.extend(got)
            cursor = next_cursor(page)
            if cursor is None or len(items) >= max_items or cursor in seen:
                break
            seen.add(cursor)
        return items, cursor

    async def list_channels(self, *, types: list[str], page_size: int, max_items: int,
                            cursor: str | None = None) -> tuple[list[Any], str | None]:
        return await self.collect("conversations.list", "channels",
                                  {"types": ",".join(types), "exclude_archived": True},
                                  page_size=page_size, max_items=max_items, cursor=cursor)

    async def list_users(self, *, page_size: int, max_items: int,
                         cursor: str | None = None) -> tuple[list[Any], str | None]:
        return await self.collect("users.list", "members", {}, page_size=page_size, max_items=max_items,
                                  cursor=cursor)

    async def history(self, channel: str, *, limit: int, oldest: str | None = None, latest: str | None = None,
                      cursor: str | None = None) -> dict[str, Any]:
        return await self.get("conversations.history", {"channel": channel, "limit": limit, "oldest": oldest,
                                                        "latest": latest, "cursor": cursor})

    async def replies(self, channel: str, thread_ts: str, *, limit: int,
                      cursor: str | None = None) -> dict[str, Any]:
        return await self.get("conversations.replies", {"channel": channel, "ts": thread_ts, "limit": limit,
                                                        "cursor": cursor})

    async def post_message(self, channel: str, text: str | None, *, blocks: list[Any] | None = None,
                           thread_ts: str | None = None) -> dict[str, Any]:
        return await self.post("chat.postMessage", {"channel": channel, "text": text, "blocks": blocks,
                                                    "thread_ts": thread_ts})

    async def add_reaction(self, channel: str, timestamp: str, name: str) -> dict[str, Any]:
        return await self.post("reactions.add", {"channel": channel, "timestamp": timestamp, "name": name})

    async def user_profile(self, user: str) -> dict[str, Any]:
        return await self.get("users.profile.get", {"user": user})

    async def search_messages(self, query: str, *, count: int, page: int) -> dict[str, Any]:
        return await self.get("search.messages", {"query": query, "count": count, "page": page})


def next_cursor(page: dict[str, Any]) -> str | None:
    """The cursor of the next page; Slack marks the last page with an empty string."""
    meta = page.get("response_metadata")
    cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
    return cursor if isinstance(cursor, str) and cursor else None
