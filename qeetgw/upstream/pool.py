"""
The gateway's client side: one keep-alive connection pool, and the agent
every forwarded request, health probe and JWKS fetch goes through.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import attrs
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from qeetgw.config import Config
from qeetgw.hostendpoint import HostEndpoint
from qeetgw.upstream.tls import upstream_tls_policy


@implementer(IAgentEndpointFactory)
class CachingEndpointFactory:
    """
    One endpoint per upstream (scheme, host, port), made once.

    twisted.web's own factory builds a new HostnameEndpoint — host name IDNA
    encoding included — for every request, about 5% of a proxied request's
    time; the upstreams are a handful of fixed URLs, so we build each once.
    Each is a L{HostEndpoint}, which reports a refused connection at once
    where HostnameEndpoint waits for its next attempt (0.3 s).
    """

    def __init__(self, reactor: Any, tls_policy: IPolicyForHTTPS) -> None:
        self._reactor = reactor
        self._tls_policy = tls_policy
        self._endpoints: Dict[Tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """
        The endpoint for C{uri}'s scheme, host and port.
        """
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            host = uri.host.decode("ascii")
            endpoint = HostEndpoint(self._reactor, host, uri.port)
            if uri.scheme == b"https":
                creator = self._tls_policy.creatorForNetloc(uri.host, uri.port)
                endpoint = wrapClientTLS(creator, endpoint)
            self._endpoints[key] = endpoint
        return endpoint


@attrs.frozen
class UpstreamPool:
    """
    The shared client side: one keep-alive pool and the agent on it.
    """

    pool: HTTPConnectionPool
    agent: IAgent
    tls_policy: IPolicyForHTTPS


def make_pool(config: Config, reactor: Any) -> UpstreamPool:
    """
    The connection pool and agent every forwarded request and probe uses.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = config.upstream_pool_size
    # Idle connections are closed before the upstream's keep-alive timeout
    # would close them under a request in flight.
    pool.cachedConnectionTimeout = config.upstream_keepalive_timeout_ms / 1000
    # Only idempotent requests are retried by the pool, and only when a
    # cached connection turned out dead: safe for a proxy.
    pool.retryAutomatically = True
    tls_policy = upstream_tls_policy(config.upstream_ca_file)
    agent = Agent.usingEndpointFactory(reactor, CachingEndpointFactory(reactor, tls_policy), pool)
    return UpstreamPool(pool=pool, agent=agent, tls_policy=tls_policy)
