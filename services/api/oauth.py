"""Connecting an account through OAuth: ``POST /api/connect`` starts it, ``GET /oauth/<service>/callback`` ends it.

The state in the authorize URL is the only capability the callback needs (the callback is public: it is the
user's browser coming back from the provider). It is random, single use, bound to one instance and service, and
lives 10 minutes (mcp.oauth.states). A connection that fails at any step changes nothing: a new instance stays
``pending``, a reconnected one keeps its tokens and status until the exchange has succeeded.

Nothing here logs a code, a state, a token or an instance id: the access log has no query strings, and the
lines below name only the service and an error code.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from typing import Any

import aiohttp

from mcp.errors import BadRequest, Conflict, NotFound, PlatformError, UpstreamFailed, client_error
from mcp.oauth.client import OAuthError, authorization_url, exchange_code, fetch_account, new_pkce
from mcp.oauth.settings import OAuthApp, oauth_variables
from mcp.oauth.states import STATE_TTL_S, consume_state, create_state
from mcp.oauth.tokens import store_tokens
from mcp.tenancy.instances import parse_instance_id
from services.api import pages, store
from services.api.handlers import ApiHandler, parse_email, reject_unknown
from services.api.oauth_apps import ServiceOAuth

log = logging.getLogger(__name__)

# mcp_table's CHECK on a service name (the callback's route takes only these).
SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
# A scope as providers spell them ("repo", "read:user", "chat:write", "file_content:read", URLs for some).
_SCOPE = re.compile(r"[\x21-\x7e]{1,200}")
_MAX_SCOPES = 50

# What a person reads at the top of a failure page, per error code.
_TITLES = {
    "missing_state": "This link is incomplete",
    "missing_code": "This link is incomplete",
    "invalid_state": "This connection link is not valid",
    "state_expired": "This connection link has expired",
    "access_denied": "Authorization was denied",
    "authorization_failed": "The authorization did not complete",
    "token_exchange_failed": "Could not finish connecting the account",
    "oauth_not_configured": "Connecting accounts is not set up",
    "instance_not_found": "The instance no longer exists",
}


def parse_scopes(value: Any) -> list[str] | None:
    """``scopes``: a list of scope names, or one string of them separated by spaces or commas."""
    if value is None:
        return None
    items = re.split(r"[,\s]+", value) if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise BadRequest("'scopes' must be a list of scope names", field="scopes")
    scopes = [s for s in items if s]
    if not scopes or len(scopes) > _MAX_SCOPES:
        raise BadRequest(f"'scopes' must hold 1 to {_MAX_SCOPES} scope names", field="scopes")
    for scope in scopes:
        if not _SCOPE.fullmatch(scope):
            raise BadRequest("each scope must be 1-200 printable ASCII characters without spaces", field="scopes")
    return list(dict.fromkeys(scopes))


def not_configured(service: str, display_name: str) -> Conflict:
    names = oauth_variables(service)
    return Conflict(f"{display_name} accounts cannot be connected: set {' and '.join(names)} (this deployment's "
                    "OAuth app) in the environment and restart the API", code="oauth_not_configured",
                    details={"variables": names})


class OAuthHandler(ApiHandler):
    """What both OAuth endpoints need: the redirect URI and the session to talk to providers."""

    def redirect_uri(self, service: str) -> str:
        """Where the provider sends the browser back; registered with the OAuth app, so it must be stable."""
        base = self.runtime.settings.public_url or f"http://127.0.0.1:{self.runtime.port}"
        return f"{base}/oauth/{service}/callback"

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self.runtime.session is not None, "the runtime has not started"
        return self.runtime.session


class ConnectHandler(OAuthHandler):
    """POST /api/connect: a new pending instance (or an existing one to reconnect) and the URL to authorize it."""

    async def post(self) -> None:
        body = self.json_body()
        reject_unknown(body, {"service", "user", "instance_id", "scopes"})
        for name in ("service", "user"):
            if name not in body:
                raise BadRequest(f"'{name}' is required", field=name, code="missing_field")
        service = body["service"]
        if not isinstance(service, str) or not SERVICE_NAME.fullmatch(service):
            raise BadRequest("'service' must be a service name", field="service", code="unknown_service")
        email = parse_email(body["user"])
        requested = parse_scopes(body.get("scopes"))
        reconnect: uuid.UUID | None = None
        if body.get("instance_id") is not None:
            if not isinstance(body["instance_id"], str):
                raise BadRequest("'instance_id' must be an instance id", field="instance_id")
            reconnect = parse_instance_id(body["instance_id"])

        async with self.runtime.db.connection() as conn:
            oauth = await self.service_oauth(conn, service)
            app = oauth.app
            assert app is not None
            scopes = requested if requested is not None else list(app.scopes)
            verifier, challenge = new_pkce() if app.provider.pkce else (None, None)
            async with conn.transaction():
                if reconnect is not None:
                    instance_id = reconnect
                    row = await store.get_instance(conn, instance_id)
                    if row is None:
                        raise NotFound("no instance with this id", code="instance_not_found", field="instance_id")
                    if row["service"] != service:
                        raise Conflict(f"this instance belongs to the {row['service']} service, not {service}",
                                       code="instance_service_mismatch", field="instance_id")
                    if row["user"] != email:
                        raise Conflict("this instance belongs to another user", code="instance_user_mismatch",
                                       field="instance_id")
                else:
                    instance_id = uuid.uuid4()
                    user_id = await store.upsert_user(conn, email)
                    await store.insert_pending_instance(conn, instance_id, user_id, service,
                                                        self.runtime.cipher.encrypt(instance_id, {}))
                state, state_expires_at = await create_state(
                    conn, self.runtime.cipher, instance_id=instance_id, service=service, scopes=scopes,
                    code_verifier=verifier)
            row = await store.get_instance(conn, instance_id)
        assert row is not None
        url = authorization_url(app, state=state, redirect_uri=self.redirect_uri(service), scopes=scopes,
                                code_challenge=challenge)
        log.info("%s authorization started (%s)", service, "reconnect" if reconnect else "new instance")
        self.set_header("Location", f"/api/instances/{instance_id}")
        self.write_json({
            "instance_id": str(instance_id), "service": service, "status": self.instance_view(row)["status"],
            "authorize_url": url, "state_expires_at": state_expires_at, "state_ttl_s": STATE_TTL_S,
            "redirect_uri": self.redirect_uri(service),
        }, status=201)

    async def service_oauth(self, conn: Any, service: str) -> ServiceOAuth:
        """The service's OAuth with a configured app, or the error saying what is missing."""
        oauth = await self.runtime.oauth_apps.get(conn, service)
        entry = await store.catalog_entry(conn, service) if oauth is not None else None
        if oauth is None or entry is None or not entry["active"]:
            names = ", ".join(r["name"] for r in await store.catalog(conn) if r["active"])
            raise BadRequest(f"unknown service {service!r}; available: {names}", field="service",
                             code="unknown_service")
        if oauth.provider is None:
            raise BadRequest(f"the {service} service does not connect accounts through OAuth; create its "
                             "instances with POST /api/instances and credentials", field="service",
                             code="oauth_not_supported")
        if oauth.app is None:
            raise not_configured(service, oauth.provider.display_name)
        return oauth


class CallbackHandler(OAuthHandler):
    """GET /oauth/<service>/callback?code=..&state=..: the provider sends the user's browser back here.

    Public: the state is the capability. Answers a small HTML page, or JSON for ``Accept: application/json``.
    """

    public = True

    async def get(self, service: str) -> None:
        state = self.get_query_argument("state", "")
        error = self.get_query_argument("error", "")
        code = self.get_query_argument("code", "")
        if not state and not error:
            raise BadRequest("the link has no state: it did not come from a connection we started; ask for a new "
                             "link (POST /api/connect)", code="missing_state")
        async with self.runtime.db.connection() as conn:
            oauth = await self.runtime.oauth_apps.get(conn, service)
            provider = oauth.provider if oauth is not None else None
            name = provider.display_name if provider is not None else service
            # Used up whatever happens next, a denial included: a state completes at most one attempt.
            pending = (await consume_state(conn, self.runtime.cipher, state=state, service=service)
                       if provider is not None and state else None)
        if error:
            log.info("%s authorization ended with the provider's error %s", service, _safe_code(error))
            if error == "access_denied":
                raise BadRequest(f"authorization was denied: {name} reports that access was not allowed. Nothing "
                                 "was changed; to connect, ask for a new link and choose Allow.",
                                 code="access_denied")
            raise BadRequest(f"{name} did not complete the authorization (error {_safe_code(error)!r}). Nothing "
                             "was changed; ask for a new link and try again.", code="authorization_failed",
                             details={"provider_error": _safe_code(error)})
        if pending is None:
            raise BadRequest("this connection link is not valid: it was already used, or it did not come from us. "
                             "Ask for a new link (POST /api/connect).", code="invalid_state")
        if pending.expired:
            raise BadRequest(f"this connection link has expired (links last {STATE_TTL_S // 60} minutes). Ask for "
                             "a new link (POST /api/connect).", code="state_expired")
        if not code:
            raise BadRequest(f"{name} sent no authorization code. Nothing was changed; ask for a new link and try "
                             "again.", code="missing_code")
        assert oauth is not None
        if oauth.app is None:
            raise not_configured(service, name)
        await self.complete(oauth.app, pending.instance_id, code, pending.code_verifier, pending.scopes)

    async def complete(self, app: OAuthApp, instance_id: uuid.UUID, code: str, verifier: str | None,
                       scopes: tuple[str, ...]) -> None:
        service, name = app.provider.service, app.provider.display_name
        async with self.runtime.db.connection() as conn:
            if await store.get_instance(conn, instance_id) is None:
                raise NotFound("the instance this link was for has been deleted; nothing was connected",
                               code="instance_not_found")
        try:
            tokens = await exchange_code(self.session, app, code=code, redirect_uri=self.redirect_uri(service),
                                         code_verifier=verifier)
        except OAuthError as e:
            log.warning("%s code exchange failed: %s", service, e.code)
            raise UpstreamFailed(f"could not finish connecting to {name}: its token endpoint refused or failed "
                                 f"({e.message}). Nothing was changed; ask for a new link and try again.",
                                 code="token_exchange_failed", details={"provider_error": e.code}) from None
        if tokens.scopes is None and scopes:
            # The provider did not say what it granted: it granted what was asked.
            tokens = dataclasses.replace(tokens, scopes=" ".join(scopes))
        account = await self.account(app, tokens)
        async with self.runtime.db.connection() as conn:
            async with conn.transaction():
                await store_tokens(conn, self.runtime.cipher, instance_id, tokens, keep_refresh_token=None,
                                   account=account, activate=True)
            row = await store.get_instance(conn, instance_id)
        if row is None:
            raise NotFound("the instance this link was for has been deleted; nothing was connected",
                           code="instance_not_found")
        log.info("%s account connected", service)
        view = self.instance_view(row)
        if self.wants_json():
            self.write_json({"instance_id": view["instance_id"], "service": service, "status": view["status"],
                             "urls": view["urls"], "account": view["account"]})
            return
        self.send_page(pages.connected(name, view["account"], view["urls"]["mcp"]))

    async def account(self, app: OAuthApp, tokens: Any) -> str | None:
        """Who connected, for the page and the instance view; a failed lookup costs only the label."""
        try:
            return await fetch_account(self.session, app, tokens)
        except (TimeoutError, OAuthError, aiohttp.ClientError, ValueError) as e:
            log.warning("%s account lookup failed (%s); connected without its name", app.provider.service,
                        type(e).__name__)
            return None

    def wants_json(self) -> bool:
        accept = self.request.headers.get("Accept", "").lower()
        return "application/json" in accept and "text/html" not in accept

    def send_page(self, page: pages.Page) -> None:
        self.set_status(page.status)
        for header, value in pages.HEADERS.items():
            self.set_header(header, value)
        self.finish(page.html.encode())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.wants_json():
            super().write_error(status_code, **kwargs)
            return
        err: PlatformError = client_error(kwargs.get("exc_info", (None, None, None))[1], status_code, self._reason)
        for header, value in err.headers().items():
            self.set_header(header, value)
        self.send_page(pages.failed(err.status, _TITLES.get(err.code, "Could not connect the account"), err.message,
                                    err.code))


def _safe_code(value: str) -> str:
    """A provider's error code fit for a log line or a page: a short word, or '?'."""
    return value if re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value) else "?"
