"""
In-memory upstreams for the gateway's own HTTP client: endpoints that
connect the client's protocol to a twisted.web L{Site} over twisted's iosim
(the wiring treq.testing uses), and a C{flush} that pumps the bytes both
ways.  The proxy's real client code runs; only the sockets are fake.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Set

from treq.testing import RequestTraversalAgent
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.web.client import BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.resource import IResource, Resource
from twisted.web.server import Session, Site
from zope.interface import implementer

from qeetgw.upstream.pool import ConnectionPool, PoolKey, UpstreamPool

CLIENT = IPv4Address("TCP", "127.0.0.1", 31337)


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects to the in-memory upstream of C{upstreams} for C{key}.
    """

    def __init__(self, upstreams: "MemoryUpstreams", key: PoolKey) -> None:
        self._upstreams = upstreams
        self._key = key

    def connect(self, factory: IProtocolFactory) -> "Deferred[Any]":
        return self._upstreams.connect(self._key, factory)


class MemoryUpstreams:
    """
    Every upstream host answered by one resource, in memory.

    @ivar down: hosts whose connections are refused (as a stopped instance's).
    @ivar silent: hosts whose connections never complete.
    @ivar refused: how many connections each host in C{down} refused.
    @ivar connections: how many connections were made, by host.
    @ivar requests: the key of every connection asked for.
    @ivar probe_agent: an agent on the same resource, for the probes and
        JWKS fetches, which still use twisted's Agent.
    """

    def __init__(self, resource: Optional[IResource] = None, server: Optional[IProtocolFactory] = None) -> None:
        self._reactor = MemoryReactorClock()
        if server is None:
            assert resource is not None
            site = Site(resource, reactor=self._reactor)
            site.sessionFactory = lambda site, uid: Session(site, uid, reactor=self._reactor)
            site.log = lambda request: None  # type: ignore[method-assign]
            server = site
        #: What answers each connection: a Site, or a raw protocol's factory.
        self.server = server
        self._pumps: Set[iosim.IOPump] = set()
        self.probe_agent = RequestTraversalAgent(resource) if resource is not None else None
        self.requests: List[PoolKey] = []
        #: Refuse every connection with this, when set.
        self.refuse_all: Optional[Exception] = None
        #: Raise this from connect, when set (a fault of ours).
        self.raise_on_connect: Optional[Exception] = None
        self.down: List[bytes] = []
        self.silent: List[bytes] = []
        self.refusal: Callable[[bytes], Exception] = lambda host: ConnectionRefusedError(host.decode())
        self.refused: Counter = Counter()
        self.connections: Dict[bytes, int] = {}
        self.server_transports: List[iosim.FakeTransport] = []

    def endpoint_for(self, key: PoolKey) -> IStreamClientEndpoint:
        """
        The endpoint for C{key}: a L{ConnectionPool}'s C{endpoint_for}.
        """
        return MemoryEndpoint(self, key)

    def pool(self, clock: Any, max_idle: int = 10, idle_timeout: float = 60.0) -> ConnectionPool:
        """
        A connection pool whose connections go to these upstreams.
        """
        return ConnectionPool(clock, self.endpoint_for, max_idle, idle_timeout)

    def connect(self, key: PoolKey, factory: IProtocolFactory) -> "Deferred[Any]":
        self.requests.append(key)
        host = key[1]
        if self.raise_on_connect is not None:
            raise self.raise_on_connect
        if self.refuse_all is not None:
            return fail(self.refuse_all)
        if host in self.down:
            self.refused[host] += 1
            return fail(self.refusal(host))
        if host in self.silent:
            return Deferred()
        self.connections[host] = self.connections.get(host, 0) + 1
        server_address = IPv4Address("TCP", "127.0.0.1", key[2])
        server = self.server.buildProtocol(CLIENT)
        server_transport = iosim.FakeTransport(
            server, isServer=True, hostAddress=server_address, peerAddress=CLIENT
        )
        client = factory.buildProtocol(server_address)
        client_transport = iosim.FakeTransport(
            client, isServer=False, hostAddress=CLIENT, peerAddress=server_address
        )
        pump = iosim.connect(server, server_transport, client, client_transport, greet=False)
        self._pumps.add(pump)
        self.server_transports.append(server_transport)
        send = getattr(client, "send", None)
        if send is not None:
            # Each request reaches the upstream as it is sent, and whatever
            # the upstream answers at once comes back, as with treq's
            # RequestTraversalAgent; later bytes wait for flush().
            def send_and_deliver(*args: Any, **kwargs: Any) -> Any:
                answer = send(*args, **kwargs)
                pump.flush()
                return answer

            client.send = send_and_deliver
        return succeed(client)

    def upstream_pool(self, clock: Any, max_idle: int = 10, idle_timeout: float = 60.0) -> UpstreamPool:
        """
        What L{qeetgw.site.build_site} takes: the forwarding pool on these
        upstreams, and the probe agent.
        """
        return UpstreamPool(
            pool=HTTPConnectionPool(clock),
            agent=self.probe_agent,
            tls_policy=BrowserLikePolicyForHTTPS(),
            connections=self.pool(clock, max_idle, idle_timeout),
        )

    def flush(self) -> None:
        """
        Move every pending byte both ways, until nothing moves (the probe
        agent's too).
        """
        if self.probe_agent is not None:
            self.probe_agent.flush()
        for _ in range(100):
            moved = False
            for pump in list(self._pumps):
                moved = pump.pump() or moved
                if pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self._pumps.discard(pump)
            if not moved:
                return

    def open_connections(self) -> int:
        """
        How many connections are still open.
        """
        return sum(
            1 for pump in self._pumps
            if not (pump.clientIO.disconnected or pump.serverIO.disconnected)
        )


def refusing(error: Exception) -> MemoryUpstreams:
    """
    Upstreams that are all down, refusing connections with C{error}.
    """
    upstreams = MemoryUpstreams(Resource())
    upstreams.refuse_all = error
    return upstreams
