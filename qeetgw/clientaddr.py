"""
Who the client is: the socket's peer, or an address from X-Forwarded-For
when TRUST_PROXY says the proxies in front of us may be believed.

The rules are Express's C{trust proxy} (the proxy-addr package): walk the
chain from the socket's peer leftwards through X-Forwarded-For, and stop at
the first address that is not trusted; that address is the client.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import List, Optional, Sequence, Union

from twisted.web.iweb import IRequest

from qeetgw.config import TrustProxy
from qeetgw.requeststate import state_of

_NOBODY = TrustProxy()


def _parse(text: str) -> Optional[Union[IPv4Address, IPv6Address]]:
    """
    C{text} as an address (IPv4-mapped IPv6 as IPv4), or L{None}.
    """
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: str, hop: int, trust: TrustProxy) -> bool:
    """
    Whether C{address}, C{hop} steps from the socket's peer (which is hop
    0), is a proxy we believe.
    """
    if trust.mode == "all":
        return True
    if trust.mode == "hops":
        return hop < trust.hops
    if trust.mode == "cidrs":
        parsed = _parse(address)
        return parsed is not None and any(parsed in network for network in trust.networks)
    return False


def forwarded_chain(peer: str, forwarded_for: Sequence[bytes]) -> List[str]:
    """
    The addresses from the socket's peer outwards: the peer, then the
    X-Forwarded-For entries from right to left.
    """
    entries: List[str] = []
    for value in forwarded_for:
        entries.extend(item.strip() for item in value.decode("latin-1").split(","))
    return [peer] + [entry for entry in reversed(entries) if entry]


def resolve_client(peer: str, forwarded_for: Sequence[bytes], trust: TrustProxy) -> str:
    """
    The client's address, by Express's rules: the first untrusted address
    walking out from the peer, or the outermost one when all are trusted.
    """
    if trust.mode == "none" or not forwarded_for:
        return peer
    chain = forwarded_chain(peer, forwarded_for)
    for hop, address in enumerate(chain[:-1]):
        if not is_trusted(address, hop, trust):
            return address
    return chain[-1]


def client_ip(request: IRequest) -> Optional[str]:
    """
    The client address of C{request}, resolved once with its site's
    TRUST_PROXY setting (nobody trusted when the site has none).
    """
    state = state_of(request)
    known = state.client_ip
    if known is not None:
        return known
    peer = getattr(request.getClientAddress(), "host", None)
    if peer is None:
        return None
    site = getattr(getattr(request, "channel", None), "site", None)
    trust: TrustProxy = getattr(site, "trust_proxy", _NOBODY)
    resolved = resolve_client(
        peer, request.requestHeaders.getRawHeaders(b"x-forwarded-for", []), trust
    )
    state.client_ip = resolved
    return resolved


def peer_is_trusted(request: IRequest) -> bool:
    """
    Whether the socket's peer is a trusted proxy, whose X-Forwarded-Proto
    and X-Forwarded-Host may be passed on.
    """
    peer = getattr(request.getClientAddress(), "host", None)
    site = getattr(getattr(request, "channel", None), "site", None)
    trust: TrustProxy = getattr(site, "trust_proxy", _NOBODY)
    return peer is not None and is_trusted(peer, 0, trust)
