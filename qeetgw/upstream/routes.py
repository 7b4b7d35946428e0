"""
The route table: which service a client path goes to, and the upstream URL
it becomes.  Pure functions on bytes; no Twisted here.
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import attrs

from qeetgw.config import ServiceConfig


@attrs.frozen
class Route:
    """
    One client prefix and the upstream base it is rewritten to.

    @ivar service: the service this route serves.
    @ivar client_prefix: the raw client path prefix (C{b"/api/v1/users"}).
    @ivar upstream_base: the service URL with the upstream prefix appended
        (C{b"http://localhost:8082/users"}); the rest of the client path
        follows it.
    """

    service: ServiceConfig
    client_prefix: bytes
    upstream_base: bytes

    @classmethod
    def for_service(cls, service: ServiceConfig) -> "Route":
        """
        The route of C{service}'s configured prefixes and URL.
        """
        return cls(
            service=service,
            client_prefix=service.client_prefix.encode("ascii"),
            upstream_base=(service.url + service.upstream_prefix).encode("ascii"),
        )

    def match(self, path: bytes) -> Optional[bytes]:
        """
        The rest of C{path} after this route's prefix, when the prefix
        matches on a segment boundary; else L{None}.

        C{/api/v1/users} and C{/api/v1/users/7} match (rests C{b""} and
        C{b"/7"}); C{/api/v1/usersX} does not.
        """
        prefix = self.client_prefix
        if path.startswith(prefix):
            rest = path[len(prefix):]
            if not rest or rest.startswith(b"/"):
                return rest
        return None

    def upstream_url(
        self, rest: bytes, query: Optional[bytes], instance: Optional[bytes] = None
    ) -> bytes:
        """
        The upstream URL for a client path's C{rest} and raw C{query}, whose
        bytes are kept exactly, on C{instance} (one of the service's base
        URLs; the first when not given).
        """
        if instance is None:
            url = self.upstream_base + rest
        else:
            url = instance + self.service.upstream_prefix.encode("ascii") + rest
        if query is not None:
            url += b"?" + query
        return url


@attrs.frozen
class RouteTable:
    """
    All routes, tried in order.
    """

    routes: Tuple[Route, ...]

    @classmethod
    def from_services(cls, services: Iterable[ServiceConfig]) -> "RouteTable":
        """
        A table with one route per service.
        """
        return cls(tuple(Route.for_service(service) for service in services))

    def match(self, path: bytes) -> Optional[Tuple[Route, bytes]]:
        """
        The route for the raw client C{path} and the rest of the path after
        its prefix, or L{None} when no route matches.
        """
        for route in self.routes:
            rest = route.match(path)
            if rest is not None:
                return route, rest
        return None
