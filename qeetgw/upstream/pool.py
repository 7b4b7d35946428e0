"""
The gateway's client side: the keep-alive L{ConnectionPool} every forwarded
request goes out on, and the Agent (on a pool of its own) the health probes
and JWKS fetches use; both connect through one L{CachingEndpointFactory}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from qeetgw.config import Config
from qeetgw.hostendpoint import HostEndpoint
from qeetgw.upstream.client import Body, UpstreamConnection, UpstreamParseError, UpstreamResponse
from qeetgw.upstream.tls import upstream_tls_policy

log = Logger()


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
        return self.endpoint_for((uri.scheme, uri.host, uri.port))

    def endpoint_for(self, key: Tuple[bytes, bytes, int]) -> IStreamClientEndpoint:
        """
        The endpoint for a (scheme, host, port): a L{ConnectionPool}'s
        C{endpoint_for}.
        """
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            scheme, host, port = key
            endpoint = HostEndpoint(self._reactor, host.decode("ascii"), port)
            if scheme == b"https":
                creator = self._tls_policy.creatorForNetloc(host, port)
                endpoint = wrapClientTLS(creator, endpoint)
            self._endpoints[key] = endpoint
        return endpoint


@attrs.frozen
class UpstreamPool:
    """
    The shared client side: the forwarding pool (L{connections}), and the
    agent on its own pool (L{pool}) for probes and JWKS fetches.
    """

    pool: HTTPConnectionPool
    agent: IAgent
    tls_policy: IPolicyForHTTPS
    connections: "ConnectionPool"

    def closeCachedConnections(self) -> "Deferred[None]":
        """
        Close both pools' idle connections (at shutdown; the name is
        HTTPConnectionPool's, which the gateway's service calls).
        """
        both = [self.connections.closeCachedConnections(), self.pool.closeCachedConnections()]
        return gatherResults(both).addCallback(lambda _: None)


def make_pool(config: Config, reactor: Any) -> UpstreamPool:
    """
    The connection pools and agent every forwarded request and probe uses.
    """
    # Idle connections are closed before the upstream's keep-alive timeout
    # would close them under a request in flight.
    idle_timeout = config.upstream_keepalive_timeout_ms / 1000
    tls_policy = upstream_tls_policy(config.upstream_ca_file)
    endpoints = CachingEndpointFactory(reactor, tls_policy)
    connections = ConnectionPool(reactor, endpoints.endpoint_for, config.upstream_pool_size, idle_timeout)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = config.upstream_pool_size
    pool.cachedConnectionTimeout = idle_timeout
    # Only idempotent requests are retried by the pool, and only when a
    # cached connection turned out dead: safe for probes.
    pool.retryAutomatically = True
    agent = Agent.usingEndpointFactory(reactor, endpoints, pool)
    return UpstreamPool(pool=pool, agent=agent, tls_policy=tls_policy, connections=connections)


#: The key connections are pooled under: scheme, host, port.
PoolKey = Tuple[bytes, bytes, int]

#: Methods a request is sent again with, on a new connection, when a kept
#: connection turned out dead before any of its response arrived (as
#: HTTPConnectionPool.retryAutomatically did): those RFC 9110 calls
#: idempotent, as twisted's client lists them.
_RETRIED_ON_A_DEAD_CONNECTION = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"})


class ConnectionPool:
    """
    Keep-alive connections to the upstreams, made for proxying: at most
    C{max_idle} idle connections per (scheme, host, port), each closed after
    C{idle_timeout} seconds unused, and a connection is kept only when its
    exchange ended cleanly on both sides (L{UpstreamConnection.reusable}).

    @param clock: the clock of the idle timeouts.
    @param endpoint_for: the endpoint for a key (a L{CachingEndpointFactory}
        in service; tests connect to in-memory upstreams through it).
    """

    def __init__(
        self,
        clock: IReactorTime,
        endpoint_for: Callable[[PoolKey], IStreamClientEndpoint],
        max_idle: int,
        idle_timeout: float,
    ) -> None:
        self._clock = clock
        self._endpoint_for = endpoint_for
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: Dict[PoolKey, List[Tuple[UpstreamConnection, IDelayedCall]]] = {}

    def idle_count(self, key: PoolKey) -> int:
        """
        How many idle connections C{key} has.
        """
        return len(self._idle.get(key, ()))

    def request(
        self, key: PoolKey, method: bytes, head: bytes, body: Body = None, upgrade: bool = False
    ) -> "Deferred[UpstreamResponse]":
        """
        Send a request whose head is C{head} (see L{UpstreamConnection.send},
        also for C{upgrade}) on a kept connection to C{key}, or a new one.
        Cancelling the result cancels the connection attempt or closes the
        connection.
        """
        current: List[Deferred[Any]] = []
        result: Deferred[UpstreamResponse] = Deferred(lambda d: current[-1].cancel() if current else None)

        def attempt(reuse: bool) -> None:
            connection = self._take(key) if reuse else None
            if connection is not None:
                sent = connection.send(head, body, method == b"HEAD", upgrade)
                current.append(sent)
                sent.addCallbacks(result.callback, retry_or_fail, errbackArgs=(connection,))
            else:
                connected = connectProtocol(self._endpoint_for(key), UpstreamConnection(self._released(key)))
                current.append(connected)
                connected.addCallbacks(send_on, result.errback)

        def send_on(connection: UpstreamConnection) -> None:
            sent = connection.send(head, body, method == b"HEAD", upgrade)
            current.append(sent)
            sent.chainDeferred(result)

        def retry_or_fail(reason: Failure, connection: UpstreamConnection) -> None:
            if (
                reason.check(ResponseNeverReceived)
                and not _parse_failure(reason)
                and method in _RETRIED_ON_A_DEAD_CONNECTION
                and (body is None or isinstance(body, bytes))
                and not result.called
            ):
                log.info("kept upstream connection was dead; retrying on a new one", method=method)
                attempt(reuse=False)
            else:
                result.errback(reason)

        attempt(reuse=True)
        return result

    def _take(self, key: PoolKey) -> Optional[UpstreamConnection]:
        """
        The most recently used idle connection to C{key}, if any.
        """
        idle = self._idle.get(key)
        while idle:
            connection, timer = idle.pop()
            if timer.active():
                timer.cancel()
            if not connection.closed:
                return connection
        return None

    def _released(self, key: PoolKey) -> Callable[[UpstreamConnection], None]:
        def released(connection: UpstreamConnection) -> None:
            idle = self._idle.setdefault(key, [])
            kept = [entry for entry in idle if entry[0] is connection]
            if connection.closed or not connection.reusable:
                for entry in kept:
                    idle.remove(entry)
                    if entry[1].active():
                        entry[1].cancel()
                return
            if kept:
                return
            if len(idle) >= self.max_idle:
                connection.close()
                return
            timer = self._clock.callLater(self.idle_timeout, self._expire, key, connection)
            idle.append((connection, timer))

        return released

    def _expire(self, key: PoolKey, connection: UpstreamConnection) -> None:
        idle = self._idle.get(key, [])
        for entry in idle:
            if entry[0] is connection:
                idle.remove(entry)
                break
        connection.close()

    def closeCachedConnections(self) -> "Deferred[None]":
        """
        Close every idle connection (at shutdown); the result fires once
        they are closed.  The name is HTTPConnectionPool's, which the
        gateway's service calls.
        """
        closing = []
        for idle in self._idle.values():
            for connection, timer in idle:
                if timer.active():
                    timer.cancel()
                closing.append(connection.close())
        self._idle.clear()
        return gatherResults(closing).addCallback(lambda _: None)


def _parse_failure(reason: Failure) -> bool:
    """
    Whether C{reason} is the upstream sending something unreadable (never
    retried: it would say the same again), rather than a dead connection.
    """
    return any(
        isinstance(each, Failure) and each.check(UpstreamParseError) is not None
        for each in getattr(reason.value, "reasons", [])
    )
