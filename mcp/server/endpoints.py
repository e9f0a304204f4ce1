"""The HTTP endpoints every service gets: health, tool list, tool call, and the instance base."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, ClassVar

from mcp.errors import (
    Forbidden,
    MisdirectedRequest,
    NotFound,
    TooManyRequests,
    Unavailable,
    UnsupportedMediaType,
    UpstreamError,
)
from mcp.oauth.client import OAuthError, ReauthRequired, TokenEndpointUnavailable
from mcp.protocol.media import is_json
from mcp.protocol.tools import OUTCOME_ERROR, CallOutcome, Tool, redact, text_result
from mcp.server.base import BaseHandler
from mcp.server.forwarded import client_address
from mcp.server.runtime import ServiceRuntime
from mcp.tenancy.instances import Instance, parse_instance_id, reconnect_message

log = logging.getLogger(__name__)


def service_health(rt: ServiceRuntime) -> dict[str, Any]:
    """The seed's /health shape (service, status, uptime, timestamp, port, version) and the answering
    process's pid: during a reload two processes share the port, and the supervisor asks which one answered."""
    return {
        "service": rt.service.name,
        "status": "healthy",
        "uptime": round(time.time() - rt.started_at, 3),
        "timestamp": datetime.now(UTC).isoformat(),
        "port": rt.port,
        "version": rt.service.config.version,
        "pid": os.getpid(),
    }


async def call_tool(runtime: ServiceRuntime, instance: Instance, tool: Tool, arguments: Any,
                    deadline: float | None = None) -> dict[str, Any]:
    """Run one tool call for an instance, whichever endpoint asked (REST or MCP JSON-RPC).

    Arguments are checked against the tool's inputSchema first (an isError result naming the field
    if they do not match); usage and metrics are recorded; an isError result has the instance's
    credentials redacted. No upstream call outlasts ``deadline`` (event-loop time): one that would is
    abandoned, an isError result. Raises BadRequest, before anything runs, if ``arguments`` is not an object.

    An OAuth instance's token is refreshed first when it expires within the margin, and once more, with one
    retry, when the upstream says it is expired or invalid; a refresh that fails is the call's isError result
    (``instance_reauth_required`` or ``token_refresh_failed``). Usage records the final outcome, once.
    """
    registry = runtime.registry
    started = time.perf_counter()
    # Static credentials have no token expiry: this one test is all they cost.
    if instance.token_expires_at is not None and runtime.tokens is not None and runtime.tokens.due(instance):
        instance, failed = await _refreshed(runtime, instance, deadline, None)
        outcome = failed or await registry.call(tool, arguments, runtime.client_for(instance, deadline))
    else:
        outcome = await registry.call(tool, arguments, runtime.client_for(instance, deadline))
    result = outcome.result
    if result["isError"]:
        secrets = list(instance.credentials.values())
        if (outcome.upstream_code is not None and runtime.tokens is not None and _token_rejected(outcome)
                and runtime.tokens.can_refresh(instance)):
            fresh, failed = await _refreshed(runtime, instance, deadline, outcome)
            if failed is None:
                instance = fresh
                secrets.extend(fresh.credentials.values())
                outcome = await registry.call(tool, arguments, runtime.client_for(fresh, deadline))
            else:
                outcome = failed
            result = outcome.result
        if result["isError"]:
            result = redact(result, secrets)
    elapsed = time.perf_counter() - started
    runtime.usage.record(instance.id, runtime.service.name, tool.name, outcome.outcome, elapsed)
    runtime.metrics.tool_call(tool.name, outcome.outcome, elapsed, outcome.upstream_code, outcome.upstream)
    return result


def _token_rejected(outcome: CallOutcome) -> bool:
    """Whether the upstream refused the token itself (expired, revoked, invalid), not the request.

    Clients say "unauthorized" (GitHub's 401, Figma's 403 "Invalid token"); Slack keeps its own codes
    (token_expired, invalid_auth, token_revoked...) with status 401.
    """
    if outcome.upstream_code == "unauthorized":
        return True
    structured = outcome.result.get("structuredContent")
    return isinstance(structured, dict) and structured.get("status") == 401


async def _refreshed(runtime: ServiceRuntime, instance: Instance, deadline: float | None,
                     rejected: CallOutcome | None) -> tuple[Instance, CallOutcome | None]:
    """(the instance with fresh credentials, None), or (the instance, the outcome that answers the call).

    ``rejected`` is the upstream's refusal that prompted the refresh (None: refreshing ahead of expiry);
    it stands when the instance cannot be refreshed at all (no OAuth app configured, no refresh token).
    """
    tokens = runtime.tokens
    assert tokens is not None
    try:
        return await tokens.refreshed(instance, deadline), None
    except ReauthRequired:
        msg = reconnect_message(runtime.service.name, "reauth_required")
        code = "instance_reauth_required"
    except TokenEndpointUnavailable as e:
        log.warning("could not refresh a %s token (%s); the call was answered token_refresh_failed",
                    runtime.service.name, e.code)
        msg = f"could not refresh the {tokens.display_name} token, try again"
        code = "token_refresh_failed"
    except OAuthError:
        return instance, rejected
    return instance, CallOutcome(text_result(msg, is_error=True, structured={"code": code, "message": msg}),
                                 OUTCOME_ERROR)


class ServiceHandler(BaseHandler):
    def initialize(self, runtime: ServiceRuntime, **kw: Any) -> None:  # type: ignore[override]
        super().initialize(inflight=runtime.inflight)
        self.runtime = runtime

    def check_browser_rules(self) -> None:
        """The defence against cross-site pages and DNS rebinding, for every instance endpoint.

        A Host or Origin off the allow-lists is refused (421 / 403) before anything else, so such a
        page learns nothing, not even whether an id exists; and a POST must say its body is JSON,
        which a page can only send after a CORS preflight that we never answer.
        """
        self.check_host_and_origin()
        if self.request.method == "POST" and not is_json(self.request.headers.get("Content-Type")):
            raise UnsupportedMediaType("send the body as JSON, with Content-Type: application/json")

    def check_host_and_origin(self) -> None:
        """421 for a Host, 403 for an Origin that is not on the allow-lists (mcp.protocol.origins)."""
        policy = self.runtime.settings.origin_policy
        if not policy.host_allowed(self.request.host):
            raise MisdirectedRequest("this server does not answer requests for this Host; "
                                     "an operator can add it to ALLOWED_HOSTS")
        if not policy.origin_allowed(self.request.headers.get("Origin")):
            raise Forbidden("requests from this Origin are not allowed; an operator can add it to ALLOWED_ORIGINS",
                            code="origin_not_allowed")

    def deadline(self) -> float:
        """When this request must be answered by, on the event loop's clock (REQUEST_TIMEOUT)."""
        return (asyncio.get_running_loop().time() + self.runtime.settings.request_timeout_s
                - self.request.request_time())


class HealthHandler(ServiceHandler):
    async def get(self) -> None:
        self.write_json(service_health(self.runtime))


class InstanceHealthHandler(ServiceHandler):
    """Instance status plus service status; answers for inactive/expired instances too (no secrets)."""

    def prepare(self) -> None:
        super().prepare()
        self.check_browser_rules()

    async def get(self, instance: str) -> None:
        found = await self.runtime.resolver.lookup(parse_instance_id(instance))
        if found is None:
            raise NotFound(f"no {self.runtime.service.name} instance with this id", code="instance_not_found")
        info = found.public(self.runtime.resolver.now())
        self.write_json({"status": "healthy" if info["status"] == "active" else info["status"],
                         "instance": info, "service": service_health(self.runtime)})


class InstanceHandler(ServiceHandler):
    """Base for every per-instance endpoint: the instance is resolved before the method runs.

    Subclasses (the tool endpoints and each service's direct endpoints) read ``self.instance`` and
    ``self.client`` (the upstream client bound to this instance's credentials).
    """

    instance: Instance
    # Whether an expiring OAuth token is refreshed before the method runs (the direct endpoints). The tool
    # endpoints leave it to call_tool, where a failed refresh is the call's isError result.
    refreshes_token: ClassVar[bool] = True

    def prepare(self) -> Awaitable[None] | None:
        """Synchronous when the instance is cached (the usual case); else the lookup to await."""
        super().prepare()
        self.check_browser_rules()
        rt = self.runtime
        segment = self.path_kwargs["instance"]
        # Guessing ids is answered from memory once a client has used up its unknown-id budget.
        if rt.probe_limiter.tracking:
            wait = rt.probe_limiter.blocked(client_address(self.request, rt.settings.trusted_proxies))
            if wait and not rt.resolver.is_cached(segment):
                raise TooManyRequests("too many requests for unknown instances; slow down", retry_after=wait)
        try:
            instance = rt.resolver.resolve_cached(segment)
        except NotFound:
            rt.probe_limiter.acquire(client_address(self.request, rt.settings.trusted_proxies))
            raise
        if instance is None:
            return self._resolve(segment)
        if (admitting := self._admit(instance)) is not None:
            return admitting
        # Static credentials have no token expiry: this one test is all they cost.
        if instance.token_expires_at is not None and self._token_due():
            return self._refresh_token()
        return None

    async def _resolve(self, segment: str) -> None:
        try:
            instance = await self.runtime.resolver.resolve(segment)
        except NotFound:
            self.runtime.probe_limiter.acquire(client_address(self.request, self.runtime.settings.trusted_proxies))
            raise
        if (admitting := self._admit(instance)) is not None:
            return await admitting
        if instance.token_expires_at is not None and self._token_due():
            await self._refresh_token()

    def _admit(self, instance: Instance) -> Awaitable[None] | None:
        """None when the call may go ahead now (the usual case), or raises 429. When this process holds no
        rate tokens for the instance, the rest of prepare to await: the shared limit's answer, then the rest."""
        self.instance = instance
        wait = self.runtime.rate_limiter.acquire(instance.key)
        if not wait:
            return None
        if wait.__class__ is int:
            raise TooManyRequests(f"this instance is over its request rate; retry in {wait} s", retry_after=wait)
        return self._admit_later(wait)  # type: ignore[arg-type]

    async def _admit_later(self, admission: Awaitable[int]) -> None:
        wait = await admission
        if wait:
            raise TooManyRequests(f"this instance is over its request rate; retry in {wait} s", retry_after=wait)
        if self.instance.token_expires_at is not None and self._token_due():
            await self._refresh_token()

    def _token_due(self) -> bool:
        tokens = self.runtime.tokens
        return self.refreshes_token and tokens is not None and tokens.due(self.instance)

    async def _refresh_token(self) -> None:
        """Refresh the instance's expiring token before the method runs; a refresh that fails is the answer."""
        tokens = self.runtime.tokens
        assert tokens is not None
        try:
            self.instance = await tokens.refreshed(self.instance, self.deadline())
        except ReauthRequired:
            raise Forbidden(reconnect_message(self.runtime.service.name, "reauth_required"),
                            code="instance_reauth_required") from None
        except TokenEndpointUnavailable as e:
            log.warning("could not refresh a %s token (%s); the request was answered token_refresh_failed",
                        self.runtime.service.name, e.code)
            raise Unavailable(f"could not refresh the {tokens.display_name} token, try again",
                              code="token_refresh_failed", retry_after=5) from None
        except OAuthError:
            pass  # it cannot be refreshed at all: the upstream's answer to the token as it is will say so

    @property
    def client(self) -> Any:
        return self.runtime.client_for(self.instance, self.deadline())

    async def upstream(self, awaitable: Any) -> Any:
        """Await an upstream call from a direct endpoint, turning UpstreamError into an HTTP error.

        The error's text has the instance's credentials redacted (upstreams quote the token they
        refused); a call that would outlast the request's deadline is a 504 (see ``client``).
        """
        try:
            return await awaitable
        except UpstreamError as e:
            err = e.as_http_error()
            secrets = self.instance.credentials.values()
            err.message = redact(err.message, secrets)
            err.details = redact(err.details, secrets)
            raise err from None


class ToolsListHandler(InstanceHandler):
    """GET -> {"tools": [...]}: the tools this instance's policy allows (every tool without one)."""

    refreshes_token = False  # no upstream call

    async def get(self, instance: str) -> None:
        self.write_json({"tools": self.runtime.registry.allowing(self.instance.tool_policy).describe()})


class ToolCallHandler(InstanceHandler):
    """POST {"name", "arguments"} -> CallToolResult (tool failures are isError results, status 200).

    A tool the instance's policy does not allow is a 403 ``tool_not_allowed``; nothing runs.
    """

    refreshes_token = False  # call_tool refreshes

    async def post(self, instance: str) -> None:
        body = self.json_body()
        tool = self.runtime.registry.allowing(self.instance.tool_policy).get(body.get("name"))
        self.write_json(await call_tool(self.runtime, self.instance, tool, body.get("arguments"), self.deadline()))
