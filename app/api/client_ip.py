"""Which address a request comes from, believing forwarded headers only from trusted proxies.

The TCP peer is the client unless the peer is inside `trusted_proxies`. Then one header is
read, the one the operator's proxy writes (`client_ip_header`), never the other: a proxy that
writes only X-Real-IP passes a client's own X-Forwarded-For through, and one that writes only
X-Forwarded-For passes a client's X-Real-IP, so falling back from one to the other would let a
client choose its address (an `ip` rule, a brute-force counter of its own per guess).

X-Forwarded-For is read from the right: each trusted proxy appends the address it received the
request from, so the first address that is not itself a trusted proxy is the client, and
anything further left was written by that client and is ignored. X-Real-IP is one address,
the one the nearest proxy set. Without either header the trusted peer itself is the client;
with only the other one, the client is unknown (see _other_header). An unparsable address from
a trusted proxy leaves the client unknown (None) too: no `ip` rule holds for it, rather than
the proxy's own address being used.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from app.log_limit import LogEvery
from app.setting_types import ClientIPHeader

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

log = logging.getLogger(__name__)
_unread = LogEvery(log)  # once a minute: a misconfigured proxy sends it with every request

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
    header: ClientIPHeader = "x-forwarded-for",
) -> IPAddress | None:
    """The client's address; `forwarded_for` holds every X-Forwarded-For header, in order;
    `header` is the one a trusted proxy's word is taken from."""
    address = parse_address(peer)
    if address is None or not _is_trusted(address, trusted):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    if header == "x-real-ip":
        if real_ip is not None:
            return parse_address(real_ip)
        return _other_header(address, "X-Forwarded-For", "x-forwarded-for") if hops else address
    if hops:
        return _from_hops(hops, trusted)
    return _other_header(address, "X-Real-IP", "x-real-ip") if real_ip is not None else address


def _other_header(proxy: IPAddress, sent: str, setting: str) -> IPAddress | None:
    """A trusted proxy named its client in the header not configured: most likely the header it
    writes (a config from before client_ip_header, which read either). Not the proxy's own
    address (an inside address for every outside client, matching `ip` rules written for
    inside ones): unknown, which no `ip` rule holds for, and said once a minute."""
    _unread.log(
        logging.WARNING,
        setting,
        "a trusted proxy (%s) sent %s and not the header client_ip_header names: the client "
        "address is unknown (no `ip` rule holds for it); if %s is the header the proxy "
        "writes, set client_ip_header: %s",
        proxy,
        sent,
        sent,
        setting,
    )
    return None


def _from_hops(hops: list[str], trusted: Sequence[Network]) -> IPAddress | None:
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None or not _is_trusted(address, trusted):
            return address
    return parse_address(hops[0])  # every hop is a trusted proxy: the first one asked


def _is_trusted(address: IPAddress, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)
