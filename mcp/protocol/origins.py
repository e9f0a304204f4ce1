"""Which Origin and Host headers the MCP endpoint answers: its defence against DNS rebinding.

A web page can make a browser send requests to ``localhost``; a DNS-rebinding page can even make
the browser believe our address is its own site. The Streamable HTTP transport therefore requires
servers to check ``Origin`` (403 when present and not allowed) and we also check ``Host`` (421 when
not allowed), each against an allow-list read once from the settings:

- an origin entry is ``scheme://host[:port]``, with ``:*`` for any port, or ``*`` for any origin;
- a host entry is a host name or address (its port is ignored: nginx passes ``$host`` without
  one), or ``*`` for any host.

A request without ``Origin`` is not from a browser page and passes the origin check.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

ANY = "*"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_PORTS = {"http": 80, "https": 443}


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def local_origins() -> tuple[str, ...]:
    """The default origins: localhost, 127.0.0.1 and [::1] on any port, over http and https."""
    return tuple(f"{scheme}://{_bracket(host)}:*" for scheme in ("http", "https") for host in LOCAL_HOSTS)


def _split_origin(value: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an origin, the port defaulted from the scheme; None if it is not one."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    return parts.scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[parts.scheme]


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL such as PUBLIC_URL (a path is allowed and dropped)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1].lower()}"


def parse_origin_entry(entry: str) -> str:
    """An allow-list origin entry, normalised; ValueError saying what is wrong with it."""
    entry = entry.strip()
    if entry == ANY:
        return entry
    probe = entry[:-2] if entry.endswith(":*") else entry
    split = _split_origin(probe)
    if split is None:
        raise ValueError(f"{entry!r} is not an origin like https://app.example.com or http://localhost:*")
    scheme, host, port = split
    suffix = ":*" if entry.endswith(":*") else ("" if port == DEFAULT_PORTS[scheme] else f":{port}")
    return f"{scheme}://{_bracket(host)}{suffix}"


def parse_host_entry(entry: str) -> str:
    """An allow-list host entry (a name or address, port dropped); ValueError if it is none."""
    entry = entry.strip().lower()
    if entry == ANY:
        return entry
    host = host_name(entry)
    if not host or "/" in host or " " in host:
        raise ValueError(f"{entry!r} is not a host name or address")
    return host


@functools.lru_cache(maxsize=256)  # a pure function of the Host header, read on every MCP request
def host_name(value: str) -> str:
    """The name or address part of a Host header value: ``[::1]:8080`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else ""
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


@dataclass(frozen=True)
class OriginPolicy:
    """The allow-lists of one process, from Settings; answers whether a request may proceed."""

    origins: tuple[str, ...]
    hosts: tuple[str, ...]

    def origin_allowed(self, origin: str | None) -> bool:
        if origin is None:
            return True
        if ANY in self.origins:
            return True
        split = _split_origin(origin)
        if split is None:  # "null" (sandboxed pages, file://) and anything malformed
            return False
        scheme, host, port = split
        for entry in self.origins:
            wildcard = entry.endswith(":*")
            allowed = _split_origin(entry[:-2] if wildcard else entry)
            if allowed is None:
                continue
            if allowed[0] == scheme and allowed[1] == host and (wildcard or allowed[2] == port):
                return True
        return False

    def host_allowed(self, host: str | None) -> bool:
        if ANY in self.hosts:
            return True
        return host is not None and host_name(host) in self.hosts
