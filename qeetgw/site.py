"""
Builds the gateway's whole resource tree from a L{Config}: the one place the
chain of concerns is visible.

    GatewaySite (body limit, correlation id, access log, JSON 500s)
      GatewayRoot: checks the raw request target once, then
        /api/...  -> ReverseProxyResource (routes, forwarding)
        otherwise -> the Klein app (/health, /health/services, /info, JSON 404)
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent, IPolicyForHTTPS

from qeetgw import __version__
from qeetgw.app import GatewayApp
from qeetgw.config import Config
from qeetgw.health import HealthChecker, make_probe_client
from qeetgw.proxy import ReverseProxyResource
from qeetgw.root import GatewayRoot
from qeetgw.routes import RouteTable
from qeetgw.server import GatewaySite
from qeetgw.tls import upstream_tls_policy


@attrs.frozen
class Upstreams:
    """
    The shared client side: one keep-alive pool and the agent on it.
    """

    pool: HTTPConnectionPool
    agent: IAgent
    tls_policy: IPolicyForHTTPS


def make_upstreams(config: Config, reactor: Any) -> Upstreams:
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
    agent = Agent(reactor, contextFactory=tls_policy, pool=pool)
    return Upstreams(pool=pool, agent=agent, tls_policy=tls_policy)


def build_site(
    config: Config,
    reactor: Any,
    upstreams: Optional[Upstreams] = None,
    clock: Optional[IReactorTime] = None,
) -> Tuple[GatewaySite, Upstreams]:
    """
    The gateway's L{GatewaySite} for C{config}, and the upstream pool it
    uses (for the service to close on shutdown).

    @param reactor: the reactor connections are made with.
    @param upstreams: the pool and agent to use; made from C{config} when
        not given (tests pass an in-memory agent).
    @param clock: the clock for timeouts and durations; C{reactor} when not
        given.
    """
    clock = clock if clock is not None else reactor
    if upstreams is None:
        upstreams = make_upstreams(config, reactor)
    timeout = config.proxy_timeout_ms / 1000
    proxy = ReverseProxyResource(
        RouteTable.from_services(config.services), upstreams.agent, clock, timeout
    )
    health = HealthChecker(
        config.services,
        make_probe_client(reactor, upstreams.pool, upstreams.tls_policy),
        clock,
        config.proxy_timeout_ms,
    )
    own = GatewayApp(config, health, clock, __version__.public()).resource()
    root = GatewayRoot(api=proxy, own=own)
    return GatewaySite(root, body_limit=config.body_limit, clock=clock), upstreams
