"""
Hosts and addresses: host names, the interface to listen on (HOST), and the
proxies trusted to forward a client's address (TRUST_PROXY).
"""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network
from typing import List, Mapping, Optional, Tuple

from qeetgw.config.errors import Invalid
from qeetgw.config.parsers import DIGITS
from qeetgw.config.values import IPNetwork, TrustProxy

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")


def is_host(host: str) -> bool:
    """
    Whether C{host} is an IP address or a DNS name.  Underscores are allowed
    in names because Docker Compose service names may have them.
    """
    try:
        ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    # An all-digit last label is a mistyped IPv4 address (999.1.1.1), not a name.
    if not name or len(name) > 253 or name.rsplit(".", 1)[-1].isdigit():
        return False
    return all(_HOST_LABEL.match(label) for label in name.split("."))


def has_control_or_space(text: str) -> bool:
    """
    Whether C{text} holds whitespace or a control character, which no URL,
    origin or path may.
    """
    return any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in text)


def netloc(host: str, port: Optional[int]) -> str:
    """
    C{host[:port]}, with an IPv6 address in brackets.
    """
    location = f"[{host}]" if ":" in host else host
    return location if port is None else f"{location}:{port}"


def listen_host(text: str) -> str:
    """
    The interface to listen on: an IP address (an IPv6 one with or without
    brackets) or a host name.
    """
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not is_host(host):
        raise Invalid("must be an IP address (0.0.0.0, ::, 127.0.0.1, ::1) or a host name")
    return host


_PROXY_PRESETS: Mapping[str, Tuple[str, ...]] = {
    # proxy-addr's names, which Express's "trust proxy" setting understands.
    "loopback": ("127.0.0.0/8", "::1/128"),
    "linklocal": ("169.254.0.0/16", "fe80::/10"),
    "uniquelocal": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
}


def trusted_proxies(text: str) -> TrustProxy:
    """
    C{true}, C{false}, a hop count, or a comma list of IP addresses and
    CIDRs (and proxy-addr's C{loopback}, C{linklocal}, C{uniquelocal}).
    A hop count of 0 trusts nobody, the same as C{false}.
    """
    allowed = (
        "must be true, false, a hop count (0 or more) or a comma list of IP "
        "addresses and CIDRs (loopback, linklocal, uniquelocal allowed)"
    )
    value = text.strip()
    if value.lower() == "true":
        return TrustProxy(mode="all")
    if value.lower() == "false":
        return TrustProxy(mode="none")
    if DIGITS.match(value):
        hops = int(value)
        return TrustProxy(mode="hops", hops=hops) if hops else TrustProxy(mode="none")
    networks: List[IPNetwork] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        for spelling in _PROXY_PRESETS.get(item.lower(), (item,)):
            try:
                # strict=False: 10.1.2.3/8 means 10.0.0.0/8, as proxy-addr reads it.
                network = ip_network(spelling, strict=False)
            except ValueError:
                raise Invalid(f"{item!r} is not an IP address or CIDR; {allowed}")
            if network not in networks:
                networks.append(network)
    if not networks:
        raise Invalid(allowed)
    return TrustProxy(mode="cidrs", networks=tuple(networks))
