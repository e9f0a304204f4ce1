"""Generate the nginx configuration that puts every active catalog service and the main API behind one server.

``python -m mcp.nginx`` (``scripts/nginx-conf``) reads ``SELECT name, port FROM mcp_table WHERE active``
and prints an http-context file for ``/etc/nginx/conf.d/``:

- ``/<service>/...`` goes to ``127.0.0.1:<port>/...`` with the prefix stripped, through an ``upstream``
  block per service, so more copies of a service can later be added as further ``server`` lines;
- ``/api/...`` and ``= /health`` go to the main API unchanged;
- responses are not buffered, so event streams (MCP Streamable HTTP) reach clients as they are written;
- the access log records ``$scrubbed_uri``: the path with an instance id replaced by ``{instance}``
  (instance ids are bearer capabilities) and without the query string (which may carry tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mcp.config import ConfigError, load_settings
from mcp.db import resolve_database_url
from services.api import API_PORT

DEFAULT_ACCESS_LOG = "/var/log/nginx/mcp-platform.access.log"
# Same shape as the services' own scrubbing (mcp.web.scrub_path), in nginx's PCRE.
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Catalog names are checked by migrations; checked again because they become nginx tokens and paths.
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_RESERVED = {"api", "health"}


class CatalogError(RuntimeError):
    """The catalog cannot be read or holds something that cannot be proxied; the message says what."""


@dataclass(frozen=True)
class Route:
    """One service: requests under ``/<name>/`` go to ``127.0.0.1:<port>/``."""

    name: str
    port: int

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name in _RESERVED:
            raise CatalogError(f"service name {self.name!r} cannot be used as a URL prefix")
        if not 0 < self.port < 65536:
            raise CatalogError(f"service {self.name!r} has no valid port ({self.port})")

    @property
    def upstream(self) -> str:
        return f"mcp_{self.name.replace('-', '_')}"


@dataclass(frozen=True)
class NginxOptions:
    """Everything about the server block that does not come from the catalog."""

    listen: str = "80"
    server_name: str = "_"
    api_port: int = API_PORT
    access_log: str = DEFAULT_ACCESS_LOG
    client_max_body_size: str = "1m"
    read_timeout_s: int = 300
    connect_timeout_s: int = 5


def server_name_from(public_url: str | None) -> str:
    """PUBLIC_URL's host, or ``_`` (any name) when it is unset."""
    host = urllib.parse.urlsplit(public_url).hostname if public_url else None
    return host or "_"


def size_directive(n_bytes: int) -> str:
    """MAX_BODY_BYTES in nginx's notation: ``1m`` for 1048576."""
    for unit, size in (("m", 1 << 20), ("k", 1 << 10)):
        if n_bytes >= size and n_bytes % size == 0:
            return f"{n_bytes // size}{unit}"
    return str(max(1, n_bytes))


def _error_return(status: int, code: str, message: str) -> str:
    """A ``return`` directive answering with the platform's JSON error body."""
    body = json.dumps({"error": {"code": code, "message": message, "status": status}})
    return f"return {status} '{body}';"


def _scrub_map() -> list[str]:
    """``$scrubbed_uri``: the request path, its instance id replaced by ``{instance}``, no query string."""
    with_id = f"~^(?<mcp_before>[^?]*?/){_UUID}(?<mcp_after>/[^?]*)?(?:\\?.*)?$"
    return [
        "map $request_uri $scrubbed_uri {",
        f'    "{with_id}" "${{mcp_before}}{{instance}}${{mcp_after}}";',
        '    "~^(?<mcp_path>[^?]*)" $mcp_path;',
        "    default $request_uri;",
        "}",
    ]


def _upstream(name: str, port: int) -> list[str]:
    """An upstream of one server; more copies of the process become more ``server`` lines."""
    return ["", f"upstream {name} {{", f"    server 127.0.0.1:{port};", "    keepalive 16;", "}"]


def _location(route: Route) -> list[str]:
    """The location that proxies ``/<name>/...`` to the service with the prefix stripped."""
    return [
        "",
        f"    # /{route.name}/<id>/mcp -> 127.0.0.1:{route.port}/<id>/mcp (the trailing / strips the prefix)",
        f"    location /{route.name}/ {{",
        f"        proxy_pass http://{route.upstream}/;",
        f"        proxy_set_header X-Forwarded-Prefix /{route.name};",
        "    }",
        "    # Metrics are for the operator's scraper on localhost, not for the public.",
        f"    location = /{route.name}/metrics {{",
        "        default_type application/json;",
        "        " + _error_return(404, "not_found", "no such endpoint"),
        "    }",
    ]


def render(routes: Sequence[Route], options: NginxOptions) -> str:
    """The configuration text: the scrubbing map, a log format, one upstream per process and the server."""
    names = [r.name for r in routes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CatalogError(f"service(s) listed twice: {', '.join(duplicates)}")
    o = options
    lines = [
        "# Generated by scripts/nginx-conf from the service catalog (mcp_table); regenerate after adding a service.",
        "# Goes in the http context, e.g. /etc/nginx/conf.d/mcp-platform.conf; then: nginx -t && nginx -s reload",
        "# TLS: add `listen 443 ssl;` with certificates here, or let certbot --nginx edit this file.",
        "",
        "# Instance ids are bearer capabilities: log the path with them replaced, and without the query string.",
        "# (The error log may still quote a request line when an upstream fails; keep it private.)",
        *_scrub_map(),
        "",
        "log_format mcp_scrubbed '$remote_addr [$time_local] \"$request_method $scrubbed_uri $server_protocol\" '",
        "                        '$status $body_bytes_sent $request_time \"$http_user_agent\"';",
        *_upstream("mcp_api", o.api_port),
    ]
    for route in routes:
        lines += _upstream(route.upstream, route.port)
    lines += [
        "",
        "server {",
        f"    listen {o.listen};",
        f"    server_name {o.server_name};",
        f"    access_log {o.access_log} mcp_scrubbed;",
        "",
        f"    client_max_body_size {o.client_max_body_size};",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";  # keep upstream connections alive',
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Host $host;",
        "    # Event streams must reach the client as they are written, not when a buffer fills.",
        "    proxy_buffering off;",
        "    proxy_cache off;",
        "    # Request bodies stay buffered: they are small (client_max_body_size), and nginx absorbing a slow",
        "    # upload spares the single-threaded service from holding the connection open meanwhile.",
        f"    proxy_connect_timeout {o.connect_timeout_s}s;",
        f"    proxy_send_timeout {o.read_timeout_s}s;",
        "    # Long enough for a slow upstream API and for a quiet event stream between messages.",
        f"    proxy_read_timeout {o.read_timeout_s}s;",
        "",
        "    # Bodies over the limit get the same JSON 413 the services answer, not nginx's HTML page.",
        "    error_page 413 @payload_too_large;",
        "    location @payload_too_large {",
        "        default_type application/json;",
        "        " + _error_return(413, "payload_too_large", f"the body is larger than {o.client_max_body_size}"),
        "    }",
        "",
        "    location = /health {",
        "        proxy_pass http://mcp_api;",
        "    }",
        "",
        "    location /api/ {",
        "        proxy_pass http://mcp_api;",
        "    }",
    ]
    for route in routes:
        lines += _location(route)
    lines += [
        "",
        "    location / {",
        "        default_type application/json;",
        "        " + _error_return(404, "not_found", "no service at this path"),
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def read_catalog(conninfo: str) -> list[Route]:
    """Active services from ``mcp_table``, by name."""
    import psycopg  # only the command needs the database; render() is pure

    try:
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            rows = conn.execute("SELECT name, port FROM mcp_table WHERE active ORDER BY name").fetchall()
    except psycopg.Error as e:
        raise CatalogError(f"cannot read the catalog: {str(e).strip() or type(e).__name__}") from None
    return [Route(name, port) for name, port in rows]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/nginx-conf",
        description="Print (or write) the nginx configuration for every active service in the catalog.",
        epilog="The catalog is read through DATABASE_URL, or the embedded database when it is unset "
               "(start it with scripts/start-all-services). Install: --output /etc/nginx/conf.d/mcp-platform.conf, "
               "then nginx -t && nginx -s reload.",
    )
    parser.add_argument("--listen", default="80", help="what nginx listens on: a port or address:port (default 80)")
    parser.add_argument("--output", type=Path, help="write the configuration here instead of printing it")
    parser.add_argument("--server-name", help="server_name (default: PUBLIC_URL's host, else _)")
    parser.add_argument("--access-log", default=DEFAULT_ACCESS_LOG, help=f"default {DEFAULT_ACCESS_LOG}")
    parser.add_argument("--api-port", type=int, help=f"the main API's port (default API_PORT, else {API_PORT})")
    return parser


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """``scripts/nginx-conf``: read the catalog once, then print or write the configuration."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(environ)
        options = NginxOptions(
            listen=args.listen,
            server_name=args.server_name or server_name_from(settings.public_url),
            api_port=args.api_port or int(settings.get("API_PORT") or API_PORT),
            access_log=args.access_log,
            client_max_body_size=size_directive(settings.max_body_bytes),
        )
        conninfo = resolve_database_url(settings.database_url, settings.embedded_url_file)
        if conninfo is None:
            raise CatalogError("no database: set DATABASE_URL or start the embedded one (scripts/start-all-services)")
        text = render(read_catalog(conninfo), options)
    except (CatalogError, ConfigError, ValueError) as e:
        print(f"scripts/nginx-conf: error: {e}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
        return 0
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}; check and load it with: nginx -t && nginx -s reload", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
