"""Generate the nginx configuration that puts every active catalog service and the main API behind one server.

``python -m mcp.ops.nginx`` (``scripts/nginx-conf``) reads ``SELECT name, port FROM mcp_table WHERE active``
and prints an http-context file for ``/etc/nginx/conf.d/``:

- ``/<service>/...`` goes to ``127.0.0.1:<port>/...`` with the prefix stripped, through an ``upstream``
  block per service;
- with ``--formation`` (repeated), every upstream, the main API's included, lists the process on every
  formation (a copy of the whole Procfile on one host, sharing the database): ``--formation 10.0.0.2``
  for a host with the usual ports, ``--formation 127.0.0.1:api=5100,figma=49380`` for one whose ports
  differ (two formations on one machine). nginx passes a request to the next formation only when the
  first failed before answering (``proxy_next_upstream error timeout``), and never a POST or PATCH that
  was sent (no ``non_idempotent``): it may already have called the upstream API;
- ``/api/...``, ``/oauth/...`` (the end of an OAuth connection: the provider sends the user's browser to
  ``PUBLIC_URL/oauth/<service>/callback``) and ``= /health`` go to the main API unchanged;
- every proxying location sends the same whole header set (``_proxy``): a location's own
  ``proxy_set_header`` replaces all the server's, so nothing is left to inheritance;
- responses are not buffered, so event streams (MCP Streamable HTTP) reach clients as they are written;
- instance ids are bearer capabilities: the access log records ``$scrubbed_uri`` (``_scrub_map``), and the
  error log, whose lines quote the raw request line, keeps only critical conditions.

With ``--output`` it also adds ``TRUSTED_PROXIES=127.0.0.1`` to the project's ``.env`` (unless an
operator set it), because the services believe nginx's X-Real-IP only from a trusted proxy.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mcp.config import ConfigError, Settings, load_settings
from mcp.ops.envfile import ensure_env, read_env_file
from mcp.ports import API_PORT, api_port, service_port
from mcp.server.forwarded import TrustedProxies
from mcp.tenancy.database import resolve_database_url

DEFAULT_ACCESS_LOG = "/var/log/nginx/mcp-platform.access.log"
DEFAULT_ERROR_LOG = "/var/log/nginx/mcp-platform.error.log"
# nginx connects to every upstream from here, so this is the peer the services see.
PROXY_ADDRESS = "127.0.0.1"
# Where the formation runs when no --formation is given: on nginx's machine.
LOCAL_HOST = "127.0.0.1"
_EMPTY = '""'  # as a proxy_set_header value: the header is not sent, even if the client sent it
# Pieces of $scrubbed_uri's patterns (nginx's PCRE). An instance id, in any spelling the services
# accept once they have %-decoded it, either holds a '%' or 8 hex digits in a row (hyphens aside).
_HEX_RUN = "(?:[0-9A-Fa-f]-*){8}"
_SAFE_SEGMENT = f"(?![^/?]*{_HEX_RUN})[A-Za-z0-9._~-]*"  # unreserved characters only, and no hex run
_SAFE_PATH = f"(?:/{_SAFE_SEGMENT})*"
_QUERY = "(?:[?].*)?$"  # dropped: a query string may carry tokens
# Catalog names are checked by migrations; checked again because they become nginx tokens and paths.
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_RESERVED = {"api", "health", "oauth"}
# A formation's host: a DNS name, an IPv4 address or a bracketed IPv6 one (it becomes an nginx token).
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\])$")


class CatalogError(RuntimeError):
    """The catalog cannot be read or holds something that cannot be proxied; the message says what."""


@dataclass(frozen=True)
class Route:
    """One service: requests under ``/<name>/`` go to ``127.0.0.1:<port>/``, or to each of ``servers``."""

    name: str
    port: int
    servers: tuple[str, ...] = ()  # host:port of the service on every formation; empty: 127.0.0.1:<port>

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name in _RESERVED:
            raise CatalogError(f"service name {self.name!r} cannot be used as a URL prefix")
        if not 0 < self.port < 65536:
            raise CatalogError(f"service {self.name!r} has no valid port ({self.port})")

    @property
    def upstream(self) -> str:
        return f"mcp_{self.name.replace('-', '_')}"

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.servers or (f"{LOCAL_HOST}:{self.port}",)


@dataclass(frozen=True)
class FormationSpec:
    """One formation (the whole Procfile on one host): where it runs, and its ports that differ from the defaults.

    ``ports`` maps a catalog service name, or ``api`` for the main API, to the port it runs on there.
    """

    host: str
    ports: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> FormationSpec:
        """``HOST[:NAME=PORT,...]``: ``10.0.0.2``, ``[fd00::2]``, ``127.0.0.1:api=5100,figma=49380``."""
        host, sep, rest = text.partition("]:") if text.startswith("[") else text.partition(":")
        host = host + "]" if sep == "]:" else host
        if not _HOST.match(host):
            raise ValueError(f"--formation {text!r}: {host!r} is not a host name or address "
                             "(write an IPv6 address in brackets: [fd00::2])")
        ports: dict[str, int] = {}
        for item in filter(None, rest.split(",")) if sep else ():
            name, eq, value = item.partition("=")
            name = name.strip()
            if not eq or not _NAME.match(name) or not value.strip().isdigit() or not 0 < int(value) < 65536:
                raise ValueError(f"--formation {text!r}: {item!r} is not NAME=PORT (e.g. figma=49380, api=5100)")
            if name in ports:
                raise ValueError(f"--formation {text!r}: {name} is given twice")
            ports[name] = int(value)
        if sep and not ports:
            raise ValueError(f"--formation {text!r}: nothing after ':' (expected NAME=PORT,...)")
        return cls(host, ports)


def place(routes: Sequence[Route], api_port: int, formations: Sequence[FormationSpec],
          ) -> tuple[tuple[str, ...], list[Route]]:
    """The main API's servers and every route's servers, one per formation.

    A port a formation does not name is the default: the catalog's (or ``<NAME>_PORT``), ``api_port`` for the
    API. Every upstream lists every formation, the API's too: the API keeps nothing in memory that another
    copy lacks (OAuth states, instances and usage are in the database), so any copy can answer, and an
    operator's calls and the OAuth callbacks keep working while one host is down.
    """
    if not formations:
        return (f"{LOCAL_HOST}:{api_port}",), list(routes)
    known = {r.name for r in routes} | {"api"}
    for f in formations:
        unknown = sorted(set(f.ports) - known)
        if unknown:
            raise CatalogError(f"--formation {f.host}: no active service called {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(known))})")

    def servers(name: str, default: int) -> tuple[str, ...]:
        found = tuple(f"{f.host}:{f.ports.get(name, default)}" for f in formations)
        twice = sorted({s for s in found if found.count(s) > 1})
        if twice:
            raise CatalogError(f"{name}: {', '.join(twice)} is listed by two formations; formations on one "
                               "host need their own ports (e.g. --formation 127.0.0.1:api=5100,figma=49380)")
        return found

    return servers("api", api_port), [Route(r.name, r.port, servers(r.name, r.port)) for r in routes]


@dataclass(frozen=True)
class NginxOptions:
    """Everything about the server block that does not come from the catalog."""

    listen: str = "80"
    server_name: str = "_"
    api_port: int = API_PORT
    api_servers: tuple[str, ...] = ()  # host:port of the main API on every formation; empty: 127.0.0.1:api_port
    access_log: str = DEFAULT_ACCESS_LOG
    error_log: str = DEFAULT_ERROR_LOG
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


def _scrub_map(services: Sequence[str]) -> list[str]:
    """``$scrubbed_uri``: the request path as it may be logged, never with an instance id in it.

    A path of unreserved characters without a hex run is logged as it is. Otherwise only the first
    segment is kept when it is a known prefix: the segment where an instance id goes becomes
    ``{instance}`` whatever it holds, and the rest is kept when it is as plain, else it is ``{path}``.
    Anything else is ``/{path}``. No query string is logged.
    """
    prefixes = "|".join(services) or "(?!)"  # names are [a-z0-9_-] (Route), nothing to escape
    word = f"(?<mcp_word>(?![^/?]*{_HEX_RUN})[a-z][a-z_-]*)"
    rules = [
        (f"^(?<mcp_path>{_SAFE_PATH}){_QUERY}", "$mcp_path"),
        (f"^/api/{word}/[^/?]*(?<mcp_rest>{_SAFE_PATH}){_QUERY}", "/api/$mcp_word/{instance}$mcp_rest"),
        (f"^/api/{word}/", "/api/$mcp_word/{instance}/{path}"),
        (f"^/(?<mcp_service>{prefixes})/[^/?]*(?<mcp_rest>{_SAFE_PATH}){_QUERY}",
         "/$mcp_service/{instance}$mcp_rest"),
        (f"^/(?<mcp_service>{prefixes})/", "/$mcp_service/{instance}/{path}"),
    ]
    return [
        "map $request_uri $scrubbed_uri {",
        '    "" -;  # no request line nginx could read',
        *(f'    "~{pattern}" "{value}";' for pattern, value in rules),
        '    default "/{path}";',
        "}",
    ]


def _upstream(name: str, servers: Sequence[str]) -> list[str]:
    """An upstream with the process on every formation; round robin among those that answer.

    A server that refuses a connection (its host or process is down) gets no request for ``fail_timeout``,
    then one to see whether it is back. nginx keeps idle connections per worker process for the whole
    upstream, so the pool grows with the number of servers.
    """
    if len(servers) == 1:
        return ["", f"upstream {name} {{", f"    server {servers[0]};", "    keepalive 16;", "}"]
    return ["", f"upstream {name} {{",
            *(f"    server {server} max_fails=1 fail_timeout=10s;" for server in servers),
            f"    keepalive {16 * len(servers)};", "}"]


def _proxy(upstream: str, prefix: str = "") -> list[str]:
    """The body of every proxying location: where to, and the whole header set.

    In nginx, a location with any ``proxy_set_header`` of its own inherits none of the server's, so
    the set is written out in full here, once, for every location that proxies. An empty value
    drops a header the client sent.
    """
    return [
        f"        proxy_pass http://{upstream};",
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";  # keeps the upstream connection alive',
        "        proxy_set_header Host $host;",
        # nginx is the edge: the client is its peer, and what a client says about itself is replaced or dropped.
        "        proxy_set_header X-Real-IP $remote_addr;",
        "        proxy_set_header X-Forwarded-For $remote_addr;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "        proxy_set_header X-Forwarded-Host $host;",
        f"        proxy_set_header X-Forwarded-Prefix {prefix or _EMPTY};",
        '        proxy_set_header Forwarded "";',
    ]


def _location(route: Route) -> list[str]:
    """The location that proxies ``/<name>/...`` to the service with the prefix stripped."""
    return [
        "",
        f"    # /{route.name}/<id>/mcp -> {route.addresses[0]}/<id>/mcp (the trailing / strips the prefix)",
        f"    location /{route.name}/ {{",
        *_proxy(f"{route.upstream}/", prefix=f"/{route.name}"),
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
        "# The services believe X-Real-IP / X-Forwarded-For only from the proxies in TRUSTED_PROXIES: it must",
        f"# include {PROXY_ADDRESS} (scripts/nginx-conf --output adds it to .env); restart them after changing it.",
        "# Formations on other hosts see nginx's own address instead: their TRUSTED_PROXIES must hold that one.",
        "",
        "# Instance ids are bearer capabilities: the path is logged with them replaced, without the query string.",
        *_scrub_map(names),
        "",
        "log_format mcp_scrubbed '$remote_addr [$time_local] \"$request_method $scrubbed_uri $server_protocol\" '",
        "                        '$status $body_bytes_sent $request_time \"$http_user_agent\" '",
        "                        'upstream=$upstream_addr $upstream_status $upstream_response_time';",
        *_upstream("mcp_api", o.api_servers or (f"{LOCAL_HOST}:{o.api_port}",)),
    ]
    for route in routes:
        lines += _upstream(route.upstream, route.addresses)
    lines += [
        "",
        "server {",
        f"    listen {o.listen};",
        f"    server_name {o.server_name};",
        f"    access_log {o.access_log} mcp_scrubbed;",
        "    # Error lines quote the raw request line (an instance id) and cannot be reformatted: only critical",
        "    # conditions are kept. An upstream that is down or slow shows in the access log (502/504, upstream=).",
        f"    error_log {o.error_log} crit;",
        "",
        f"    client_max_body_size {o.client_max_body_size};",
        "    # Event streams must reach the client as they are written, not when a buffer fills.",
        "    proxy_buffering off;",
        "    proxy_cache off;",
        "    # Request bodies stay buffered: they are small (client_max_body_size), and nginx absorbing a slow",
        "    # upload spares the single-threaded service from holding the connection open meanwhile.",
        f"    proxy_connect_timeout {o.connect_timeout_s}s;",
        f"    proxy_send_timeout {o.read_timeout_s}s;",
        "    # Long enough for a slow upstream API and for a quiet event stream between messages.",
        f"    proxy_read_timeout {o.read_timeout_s}s;",
        "    # The next server (another formation) gets a request only when this one failed before answering",
        "    # (refused, reset or timed out). A POST or PATCH that was sent is never sent again, even if its",
        "    # answer never came (no `non_idempotent` here): it may already have called the upstream API.",
        "    proxy_next_upstream error timeout;",
        "",
        "    # Bodies over the limit get the same JSON 413 the services answer, not nginx's HTML page.",
        "    error_page 413 @payload_too_large;",
        "    location @payload_too_large {",
        "        default_type application/json;",
        "        " + _error_return(413, "payload_too_large", f"the body is larger than {o.client_max_body_size}"),
        "    }",
        "",
        "    location = /health {",
        *_proxy("mcp_api"),
        "    }",
        "",
        "    location /api/ {",
        *_proxy("mcp_api"),
        "    }",
        "",
        "    # OAuth callbacks: the code and state travel in the query string, which the access log drops.",
        "    location /oauth/ {",
        *_proxy("mcp_api"),
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


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _trusts_nginx(value: str) -> bool:
    try:
        return TrustedProxies.parse(value.split(",")).trusts(PROXY_ADDRESS)
    except ValueError:
        return False


def ensure_trusted_proxy(env_file: Path, environ: Mapping[str, str]) -> list[str]:
    """Make the services behind nginx believe its X-Real-IP: ``TRUSTED_PROXIES`` in ``.env`` must hold it.

    Added when ``.env`` has no TRUSTED_PROXIES (``.env`` is created first, with its secrets, as the
    scripts create it); an operator's own value is left alone. Returns what to tell the operator.
    """
    said = []
    ensure_env(env_file)
    current = read_env_file(env_file).get("TRUSTED_PROXIES")
    if current is None:
        text = env_file.read_text()
        with env_file.open("a") as f:  # appending keeps the file's owner and mode (it holds secrets)
            f.write(("" if not text or text.endswith("\n") else "\n")
                    + "# nginx (scripts/nginx-conf) proxies from here; its X-Real-IP is believed only from these.\n"
                    + f"TRUSTED_PROXIES={PROXY_ADDRESS}\n")
        said.append(f"added TRUSTED_PROXIES={PROXY_ADDRESS} to {env_file}: restart the services to read it "
                    "(they believe X-Real-IP only from a trusted proxy)")
    elif not _trusts_nginx(current):
        said.append(f"warning: TRUSTED_PROXIES in {env_file} ({current}) does not include {PROXY_ADDRESS}, where "
                    "nginx connects from: the services will take nginx itself for the client (per-client limits "
                    f"would apply to everyone at once). Add {PROXY_ADDRESS} and restart them.")
    exported = environ.get("TRUSTED_PROXIES")
    if exported and exported != current and not _trusts_nginx(exported):
        said.append(f"warning: TRUSTED_PROXIES in the environment ({exported}) overrides {env_file} and does not "
                    f"include {PROXY_ADDRESS}")
    return said


def _trust_hint(settings: Settings) -> list[str]:
    """Printing only: say what the services need, without touching ``.env``."""
    if settings.trusted_proxies.trusts(PROXY_ADDRESS):
        return []
    return [f"note: the services believe nginx's X-Real-IP only with TRUSTED_PROXIES={PROXY_ADDRESS} in "
            f"{settings.project_root / '.env'} (--output adds it), then a restart"]


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
    parser.add_argument("--error-log", default=DEFAULT_ERROR_LOG,
                        help=f"default {DEFAULT_ERROR_LOG} (critical conditions only: error lines quote instance ids)")
    parser.add_argument("--api-port", type=int, help=f"the main API's port (default API_PORT, else {API_PORT})")
    parser.add_argument("--formation", action="append", type=_formation, default=[], metavar="HOST[:NAME=PORT,...]",
                        help="a formation (the whole Procfile, on one host, sharing the database) to send requests "
                             "to; repeat it for each. HOST alone uses the usual ports (the catalog's or <NAME>_PORT, "
                             "API_PORT); NAME=PORT gives the ones that differ there, NAME being a service or api: "
                             "--formation 10.0.0.2 --formation 10.0.0.3, or on one machine --formation 127.0.0.1 "
                             "--formation 127.0.0.1:api=5100,figma=49380,github=49381,slack=49382. "
                             "Default: one formation on 127.0.0.1")
    return parser


def _formation(text: str) -> FormationSpec:
    try:
        return FormationSpec.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """``scripts/nginx-conf``: read the catalog once, then print or write the configuration."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(environ)
        environ = settings.environ or {}
        conninfo = resolve_database_url(settings.database_url, settings.embedded_url_file)
        if conninfo is None:
            raise CatalogError("no database: set DATABASE_URL or start the embedded one (scripts/start-all-services)")
        # Each service where it listens: its <NAME>_PORT override, else the catalog's (SERVICE_CONFIG) port.
        routes = [Route(r.name, service_port(r.name, r.port, environ)) for r in read_catalog(conninfo)]
        default_api_port = args.api_port or api_port(environ)
        api_servers, routes = place(routes, default_api_port, args.formation)
        options = NginxOptions(
            listen=args.listen,
            server_name=args.server_name or server_name_from(settings.public_url),
            api_port=default_api_port,
            api_servers=api_servers,
            access_log=args.access_log,
            error_log=args.error_log,
            client_max_body_size=size_directive(settings.max_body_bytes),
        )
        text = render(routes, options)
    except (CatalogError, ConfigError, ValueError) as e:
        print(f"scripts/nginx-conf: error: {e}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
        said = _trust_hint(settings)
    else:
        tmp = args.output.with_name(f".{args.output.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, args.output)
        print(f"wrote {args.output}; check and load it with: nginx -t && nginx -s reload", file=sys.stderr)
        said = ensure_trusted_proxy(settings.project_root / ".env", settings.environ or {})
    remote = sorted({f.host for f in args.formation if not _loopback(f.host)})
    if remote:
        said.append(f"note: on {', '.join(remote)}, set TRUSTED_PROXIES to the address nginx connects from and "
                    "BIND_HOST to an address nginx can reach (the services listen on 127.0.0.1 by default)")
    for line in said:
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
