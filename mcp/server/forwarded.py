"""Who sent a request: the peer, or the client a trusted proxy (nginx) names for it.

Forwarding headers are believed only from peers listed in ``TRUSTED_PROXIES`` (addresses or
networks); from anyone else they are ignored, so a client cannot pick a fresh per-client budget by
writing a new ``X-Forwarded-For`` on each request.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import tornado.httputil

# An IPv4 or IPv6 address as a proxy writes it; anything else in the header is ignored.
_ADDRESS = re.compile(r"[0-9A-Fa-f:.]{2,45}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxy_entry(entry: str) -> Network:
    """One TRUSTED_PROXIES entry (an address or a CIDR network); ValueError saying what is wrong."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{entry.strip()!r} is not an IP address or network such as 127.0.0.1 or 10.0.0.0/8") from None


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose X-Real-IP / X-Forwarded-For are believed; empty: none are."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        return cls(tuple(parse_proxy_entry(e) for e in entries if e.strip()))

    def __bool__(self) -> bool:
        return bool(self.networks)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - a handful of peers (the proxies), the policy lives as long as the process
    def trusts(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def client_address(request: tornado.httputil.HTTPServerRequest, proxies: TrustedProxies) -> str:
    """The peer, or, when the peer is a trusted proxy, the client it names in X-Real-IP or last in
    X-Forwarded-For.

    Read only where it is needed (per-client limits): Tornado's ``xheaders`` would parse the
    headers and validate the address with a getaddrinfo() call on every request.
    """
    peer = request.remote_ip or "unknown"
    if not proxies or not proxies.trusts(peer):
        return peer
    headers = request.headers
    named = headers.get("X-Real-Ip") or (headers.get("X-Forwarded-For") or "").rsplit(",", 1)[-1].strip()
    return named if named and _ADDRESS.fullmatch(named) else peer
