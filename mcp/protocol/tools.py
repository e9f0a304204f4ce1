"""Tools: what a service offers, how arguments are checked, how results are shaped.

One registry per service serves every transport (REST ``/mcp/call`` and the JSON-RPC endpoint),
so the same validation and result shaping apply whichever way a client calls. An instance with a
tool policy sees the registry through a ``ToolView``: the tools the policy allows, listed and
callable; any other tool of the service is refused (``tool_not_allowed``) before it could run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from mcp.errors import BadRequest, Forbidden, NotFound, ToolError, UpstreamError
from mcp.protocol.schema import Check, InvalidSchema, SchemaError, compile_schema

log = logging.getLogger(__name__)

ToolHandler = Callable[[Any, dict[str, Any]], Awaitable[Any]]

OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"
OUTCOME_INVALID = "invalid_arguments"
# Distinct policies a registry keeps a view for; past this many (never in practice: instances share a
# handful of policies) the views are dropped and rebuilt on demand.
MAX_VIEWS = 1024


@dataclass(frozen=True)
class Tool:
    """One MCP tool. ``handler(client, arguments)`` gets the per-call upstream client."""

    name: str
    description: str
    input_schema: dict[str, Any]
    handler: ToolHandler
    output_schema: dict[str, Any] | None = None
    title: str | None = None
    read_only: bool = True

    def describe(self) -> dict[str, Any]:
        """The MCP Tool object clients see in tools/list."""
        d: dict[str, Any] = {"name": self.name}
        if self.title:
            d["title"] = self.title
        d["description"] = self.description
        d["inputSchema"] = self.input_schema
        if self.output_schema is not None:
            d["outputSchema"] = self.output_schema
        d["annotations"] = {
            "readOnlyHint": self.read_only,
            "destructiveHint": False,
            "openWorldHint": True,
        }
        return d


class CallOutcome(NamedTuple):
    """A CallToolResult plus what usage and metrics record about it (one per call: a cheap tuple)."""

    result: dict[str, Any]
    outcome: str
    upstream: str | None = None
    upstream_code: str | None = None


def text_result(text: str, *, is_error: bool, structured: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": is_error}
    if structured is not None:
        result["structuredContent"] = structured
    return result


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """A copy of a JSON value with every occurrence of the given secrets replaced.

    Upstreams sometimes quote the token they rejected; an error result must not carry it back.
    """
    secrets = [s for s in secrets if len(s) >= 4]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "[redacted]")
        return value
    if isinstance(value, dict):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, secrets) for v in value]
    return value


def data_result(data: Any) -> dict[str, Any]:
    """Shape a handler's return value as a CallToolResult (structured data plus a text block)."""
    if isinstance(data, str):
        return text_result(data, is_error=False)
    if not isinstance(data, dict):
        # structuredContent must be an object; lists are wrapped rather than rejected.
        data = {"items": data}
    return text_result(json.dumps(data, ensure_ascii=False), is_error=False, structured=data)


class InvalidToolSchema(ValueError):
    """A tool's inputSchema is not valid JSON Schema 2020-12: the service must not start with it.

    A ValueError, so the app factory reports it as a configuration error (exit 78) with this message.
    """

    def __init__(self, tool: str, error: InvalidSchema) -> None:
        super().__init__(f"tool {tool!r} has an invalid inputSchema: {error}")
        self.tool = tool
        self.keyword = error.keyword


def unknown_tool(name: Any, available: Iterable[str]) -> BadRequest | NotFound:
    """The error for a ``name`` that names no tool in ``available``."""
    if not isinstance(name, str) or not name:
        return BadRequest("'name' must be a non-empty string naming a tool", field="name")
    names = ", ".join(available)
    return NotFound(f"unknown tool {name!r}; available: {names or 'none'}", code="unknown_tool", field="name")


def allowed_tools(tools: Iterable[Tool], policy: Mapping[str, Any]) -> frozenset[str]:
    """The names a stored tool policy allows among ``tools``.

    ``{"allow": [names]}``: those names (one the service no longer has is ignored); ``{"read_only": true}``:
    the tools annotated read-only. The API validates policies before storing them; a policy this code cannot
    read (edited in the database by hand) allows no tool rather than every tool.
    """
    tools = list(tools)
    if len(policy) == 1 and policy.get("read_only") is True:
        return frozenset(t.name for t in tools if t.read_only)
    allow = policy.get("allow") if len(policy) == 1 else None
    if isinstance(allow, list):
        wanted = {name for name in allow if isinstance(name, str)}
        return frozenset(t.name for t in tools if t.name in wanted)
    log.warning("an instance has a tool policy this service cannot read (keys: %s); it allows no tool",
                ", ".join(sorted(map(str, policy)))[:200])
    return frozenset()


class ToolRegistry:
    """A service's tools by name, with input schemas checked and compiled once, when the service is built."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        self._checks: dict[str, Check] = {}
        self._integer_fields: dict[str, tuple[str, ...]] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"tool {tool.name!r} is defined twice")
            self._tools[tool.name] = tool
            try:
                self._checks[tool.name] = compile_schema(tool.input_schema)
            except InvalidSchema as e:
                raise InvalidToolSchema(tool.name, e) from None
            self._integer_fields[tool.name] = tuple(
                name for name, prop in (tool.input_schema.get("properties") or {}).items()
                if isinstance(prop, dict) and prop.get("type") == "integer")
        self._described = [t.describe() for t in self._tools.values()]
        # Canonical policy JSON -> its view: built once per distinct policy, not per request.
        self._views: dict[str, ToolView] = {}

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    def describe(self) -> list[dict[str, Any]]:
        return self._described

    def get(self, name: Any) -> Tool:
        tool = self._tools.get(name) if isinstance(name, str) else None
        if tool is None:
            raise unknown_tool(name, self._tools)
        return tool

    def allowing(self, policy: Mapping[str, Any] | None) -> ToolRegistry | ToolView:
        """The tools an instance with this policy (``Instance.tool_policy``) may list and call.

        No policy (the usual case) is the registry itself: one ``is None`` test on the hot path.
        """
        if policy is None:
            return self
        key = json.dumps(policy, sort_keys=True, separators=(",", ":"))
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= MAX_VIEWS:
                self._views.clear()
            view = self._views[key] = ToolView(self, allowed_tools(self._tools.values(), policy))
        return view

    def check_arguments(self, tool: Tool, arguments: Any) -> dict[str, Any]:
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise BadRequest("'arguments' must be a JSON object", field="arguments")
        self._checks[tool.name](arguments)
        # JSON Schema counts 3.0 as an integer; handlers (and upstream URLs) must get 3, not 3.0.
        floats = [k for k in self._integer_fields[tool.name] if isinstance(arguments.get(k), float)]
        if floats:
            arguments = {**arguments, **{k: int(arguments[k]) for k in floats}}
        return arguments

    async def call(self, tool: Tool, arguments: Any, client: Any) -> CallOutcome:
        """Validate arguments, run the handler, and shape whatever happens as a CallToolResult."""
        try:
            args = self.check_arguments(tool, arguments)
        except SchemaError as e:
            msg = f"invalid arguments for {tool.name}: {e}"
            return CallOutcome(
                text_result(msg, is_error=True, structured={"code": "invalid_arguments", "field": e.field,
                                                             "message": msg}),
                OUTCOME_INVALID,
            )
        try:
            data = await tool.handler(client, args)
        except UpstreamError as e:
            return CallOutcome(text_result(e.message, is_error=True, structured=e.structured()), OUTCOME_ERROR,
                               upstream=e.upstream, upstream_code=e.code)
        except ToolError as e:
            return CallOutcome(text_result(e.message, is_error=True, structured=e.structured()), OUTCOME_ERROR)
        except Exception:
            log.exception("tool %s failed unexpectedly", tool.name)
            msg = f"{tool.name} failed because of an internal error; it has been logged"
            return CallOutcome(
                text_result(msg, is_error=True, structured={"code": "internal_error", "message": msg}),
                OUTCOME_ERROR,
            )
        return CallOutcome(data_result(data), OUTCOME_OK)


class ToolView:
    """A registry as one tool policy shows it: the allowed tools in the registry's order.

    ``describe`` and ``get`` answer like the registry's, for the allowed tools only; ``get`` refuses a tool
    the service has but the policy does not allow with 403 ``tool_not_allowed``, so the call never runs.
    """

    def __init__(self, registry: ToolRegistry, allowed: frozenset[str]) -> None:
        self.registry = registry
        self._allowed = allowed
        self._names = [name for name in registry.names() if name in allowed]
        self._described = [d for d in registry.describe() if d["name"] in allowed]

    def __len__(self) -> int:
        return len(self._names)

    def names(self) -> list[str]:
        return list(self._names)

    def describe(self) -> list[dict[str, Any]]:
        return self._described

    def get(self, name: Any) -> Tool:
        if isinstance(name, str) and name in self._allowed:
            return self.registry.get(name)
        try:
            self.registry.get(name)
        except (BadRequest, NotFound):
            raise unknown_tool(name, self._names) from None
        allowed = ", ".join(self._names) or "none"
        raise Forbidden(f"tool {name!r} is not allowed for this instance; allowed: {allowed}",
                        code="tool_not_allowed", field="name")
