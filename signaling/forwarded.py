"""The client's address behind a TLS-terminating proxy. Pure.

Behind a load balancer every connection comes from the balancer's address, so the limits kept
per address (connections, handshakes, registrations) would count all clients as one. A proxy
named in ``trusted_proxies`` says whom it accepted the connection from in ``X-Forwarded-For``
(HAProxy's ``option forwardfor``); only the *last* entry is taken: it is the address the proxy
itself saw, while any earlier ones are whatever the client wrote. A connection from anyone else
is its own peer address, whatever header it sends: a client cannot pick its address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (``10.0.0.5``, ``172.28.0.0/24``, ``::1``); ValueError
    naming the first that is neither."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def is_trusted(peer: str, proxies: Sequence[Network]) -> bool:
    """Whether ``peer`` (an address as the socket reports it) is one of ``proxies``."""
    if not proxies:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 proxy
    return any(address in network for network in proxies)


def client_address(peer: str, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """The address the limits count for a connection from ``peer`` that carried the
    ``X-Forwarded-For`` header values ``forwarded_for`` (every occurrence, in order)."""
    if not forwarded_for or not is_trusted(peer, proxies):
        return peer
    last = ",".join(forwarded_for).split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer  # a proxy of ours writes addresses only: count it as the proxy itself
