"""Which address a request comes from, believing forwarded headers only from trusted proxies.

The TCP peer is the client unless the peer is inside `trusted_proxies`. Then X-Forwarded-For is
read from the right: each trusted proxy appends the address it received the request from, so
the first address that is not itself a trusted proxy is the client, and anything further left
was written by that client and is ignored. Without X-Forwarded-For, X-Real-IP is used. A header
from an untrusted peer is never read. An unparsable hop from a trusted proxy leaves the client
unknown (None): no `ip` rule holds for it, rather than the proxy's own address being used.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.requests import Request

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Some proxies write a port: "203.0.113.7:41234" or "[2001:db8::7]:41234".
_WITH_PORT = re.compile(r"\[(?P<v6>[^\]]+)\](?::\d+)?|(?P<v4>[0-9.]+):\d+")


@functools.lru_cache(maxsize=4096)  # the same few peers and proxies ask again and again
def parse_address(text: str | None) -> IPAddress | None:
    """An address as a peer or a proxy writes it; IPv4-mapped IPv6 becomes IPv4; else None."""
    if not text:
        return None
    text = text.strip()
    ported = _WITH_PORT.fullmatch(text)
    if ported is not None:
        text = ported["v6"] or ported["v4"]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(
    peer: str | None,
    forwarded_for: Sequence[str],
    real_ip: str | None,
    trusted: Sequence[Network],
) -> IPAddress | None:
    """The client's address; `forwarded_for` holds every X-Forwarded-For header, in order."""
    address = parse_address(peer)
    if address is None or not _is_trusted(address, trusted):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    if hops:
        return _from_hops(hops, trusted)
    if real_ip is not None:
        return parse_address(real_ip)
    return address


def _from_hops(hops: list[str], trusted: Sequence[Network]) -> IPAddress | None:
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None or not _is_trusted(address, trusted):
            return address
    return parse_address(hops[0])  # every hop is a trusted proxy: the first one asked


def _is_trusted(address: IPAddress, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def request_client_ip(request: Request, trusted: Sequence[Network]) -> IPAddress | None:
    """The client address of a request (the POST flow too), by the rules above."""
    peer = request.client.host if request.client is not None else None
    headers = request.headers
    return client_ip(peer, headers.getlist("x-forwarded-for"), headers.get("x-real-ip"), trusted)
