"""
The value objects a L{qeetgw.config.Config} is made of, besides plain
numbers and text: who may forward a client's address, one upstream service,
and where Redis is.  Plain immutable values, so that the rest of qeetgw can
hold them without knowing how they were parsed.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Literal, Optional, Tuple, Union

import attrs

#: An IPv4 or IPv6 network, as L{ipaddress.ip_network} returns.
IPNetwork = Union[IPv4Network, IPv6Network]

#: The port of a C{redis://} URL that names none.
REDIS_DEFAULT_PORT = 6379


@attrs.frozen
class TrustProxy:
    """
    Which peers may tell us the client's address through X-Forwarded-For.

    @ivar mode: C{"none"} (TRUST_PROXY=false: the peer is the client),
        C{"all"} (TRUST_PROXY=true, Express's meaning: the leftmost entry),
        C{"hops"} (a hop count: trust that many proxies from the right) or
        C{"cidrs"} (trust peers inside C{networks}).
    @ivar hops: the hop count, for C{"hops"}.
    @ivar networks: the trusted networks, for C{"cidrs"}.
    """

    mode: Literal["none", "all", "hops", "cidrs"] = "none"
    hops: int = 0
    networks: Tuple[IPNetwork, ...] = ()


@attrs.frozen
class ServiceConfig:
    """
    One upstream service and the client paths routed to it.

    @ivar name: the service's name, as /health/services and errors spell it
        (C{"user-service"}).
    @ivar client_prefix: the client path that routes here (C{"/api/v1/users"}).
    @ivar upstream_prefix: what replaces C{client_prefix} upstream
        (C{"/users"}).
    @ivar url: the service's base URL, scheme and authority and an optional
        path prefix, without a trailing slash
        (C{"http://localhost:8082"}, C{"http://host:8080/inventory-api"}).
    @ivar health_path: the path probed by /health/services
        (C{"/actuator/health"}).
    @ivar url_variable: the environment variable that sets C{url}, for
        messages (C{"USER_SERVICE_URL"}).
    """

    name: str
    client_prefix: str
    upstream_prefix: str
    url: str
    health_path: str
    url_variable: str
    #: Every instance's base URL (the same path prefix on each); C{url} is
    #: the first.  Empty means C{(url,)}.
    urls: Tuple[str, ...] = ()
    #: <SERVICE>_TIMEOUT_MS: this service's own proxy timeout, or None for
    #: GATEWAY_PROXY_TIMEOUT_MS.
    timeout_ms: Optional[int] = None

    @property
    def instances(self) -> Tuple[str, ...]:
        """
        The base URL of every instance of the service.
        """
        return self.urls or (self.url,)


@attrs.frozen
class RedisURL:
    """
    Where the Redis server is and how to log in: a parsed C{REDIS_URL}.

    @ivar host: a host name or IP address (IPv6 without brackets).
    @ivar port: the TCP port.
    @ivar db: the database number, sent with C{SELECT} when not 0.
    @ivar username: an ACL user (Redis 6+), or C{None} for the default user.
    @ivar password: sent with C{AUTH} when not C{None}; never in C{repr} or
        C{str}, so it cannot reach a log.
    """

    host: str
    port: int = REDIS_DEFAULT_PORT
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"
