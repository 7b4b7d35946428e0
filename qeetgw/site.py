"""
Builds the gateway's whole resource tree from a L{Config}: the one place the
chain of concerns is visible.

    GatewaySite            body limit, correlation id, access log, JSON 500s
      SecurityHeaders      helmet's headers on every response
        CORS               CORS headers; preflights answered here
          GatewayRoot      413 for a refused body; 400 for an unreadable
                           target; then by the raw path:
            /api/...         RateLimitGuard -> JWTGuard -> ReverseProxyResource
            everything else  the Klein app: /health, /health/services, /info
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import attrs
from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qeetgw import __version__
from qeetgw.app import GatewayApp
from qeetgw.auth import TokenVerifier
from qeetgw.authguard import JWTGuard
from qeetgw.client import Upstreams, make_upstreams
from qeetgw.config import Config
from qeetgw.cors import CORS, CORSPolicy
from qeetgw.headers import SecurityHeaders
from qeetgw.health import HealthChecker
from qeetgw.proxy import ReverseProxyResource
from qeetgw.ratelimit.guard import RateLimitGuard, RateLimiter
from qeetgw.ratelimit.memory import MemoryStore
from qeetgw.ratelimit.store import Budget, IRateLimitStore
from qeetgw.readiness import Readiness
from qeetgw.root import GatewayRoot
from qeetgw.routes import RouteTable
from qeetgw.server import GatewaySite

log = Logger()


@attrs.frozen
class Gateway:
    """
    What L{build_site} builds: the site, and the parts with a lifetime of
    their own (the upstream pool to close, the token verifier to start).
    """

    site: GatewaySite
    upstreams: Upstreams
    verifier: TokenVerifier
    store: IRateLimitStore
    readiness: Readiness

    @property
    def workers(self) -> Tuple[Any, ...]:
        """
        The parts started and stopped with the service (their C{start} and
        C{stop}).
        """
        return (self.verifier, self.store)


def cors_policy(config: Config) -> CORSPolicy:
    """
    The CORS policy of C{config}; C{*} turns credentials off.
    """
    any_origin = "*" in config.cors_origins
    return CORSPolicy(
        origins=("*",) if any_origin else config.cors_origins,
        credentials=config.cors_credentials and not any_origin,
        methods=config.cors_methods,
        max_age=config.cors_max_age,
    )


def make_store(config: Config, reactor: Any, clock: IReactorTime) -> IRateLimitStore:
    """
    The rate-limit store RATE_LIMIT_STORE names.
    """
    if config.rate_limit_store == "redis":
        from qeetgw.ratelimit.redis import RedisStore

        return RedisStore(
            config.redis_url,
            config.rate_limit_redis_prefix,
            config.rate_limit_redis_timeout_ms,
            reactor,
        )
    return MemoryStore(clock, config.rate_limit_memory_max_keys)


def make_limiter(
    config: Config, store: IRateLimitStore, verifier: TokenVerifier
) -> RateLimiter:
    """
    The rate limiter of C{config}: the default budget and the per-route ones.
    """
    default = Budget("default", config.rate_limit_max, config.rate_limit_window_ms)
    routes = [
        (prefix, Budget(prefix, limit, window if window is not None else config.rate_limit_window_ms))
        for prefix, limit, window in config.rate_limit_routes
    ]
    return RateLimiter(
        store, default, routes, config.rate_limit_algorithm, config.rate_limit_key, verifier
    )


def startup_warnings(config: Config) -> List[str]:
    """
    What an operator should hear about C{config} at start-up.
    """
    warnings = []
    if config.trust_proxy.mode == "all":
        warnings.append(
            "TRUST_PROXY=true believes the leftmost X-Forwarded-For entry, which any "
            "client can forge unless the ingress overwrites the header; prefer a hop "
            "count or the proxies' CIDRs"
        )
    if "*" in config.cors_origins and config.cors_credentials:
        warnings.append("CORS_ORIGINS=* allows any origin, so CORS_CREDENTIALS is turned off")
    if not config.require_auth:
        warnings.append("REQUIRE_AUTH=false: requests without a token reach the services")
    return warnings


def build_site(
    config: Config,
    reactor: Any,
    upstreams: Optional[Upstreams] = None,
    clock: Optional[IReactorTime] = None,
) -> Gateway:
    """
    The gateway for C{config}.

    @param reactor: the reactor connections are made with.
    @param upstreams: the pool and agent to use; made from C{config} when
        not given (tests pass an in-memory agent).
    @param clock: the clock for timeouts, token times and durations;
        C{reactor} when not given.
    """
    clock = clock if clock is not None else reactor
    if upstreams is None:
        upstreams = make_upstreams(config, reactor)
    # Health probes and JWKS fetches go through treq on the forwarding
    # agent: the same pool and the same TLS verification as proxied requests.
    probe_client = HTTPClient(upstreams.agent)
    verifier = TokenVerifier(config, clock, probe_client)
    proxy = ReverseProxyResource(
        RouteTable.from_services(config.services),
        upstreams.agent,
        clock,
        config.proxy_timeout_ms / 1000,
    )
    store = make_store(config, reactor, clock)
    api = RateLimitGuard(
        JWTGuard(proxy, verifier, config.require_auth, config.public_paths),
        make_limiter(config, store, verifier),
        config.rate_limit_message,
        config.rate_limit_headers,
        fail_open=config.rate_limit_fail == "open",
    )
    health = HealthChecker(config.services, probe_client, clock, config.proxy_timeout_ms)
    readiness = Readiness()
    own = GatewayApp(
        config, health, clock, __version__.public(), store.state, readiness
    ).resource()
    tree = SecurityHeaders(CORS(GatewayRoot(api=api, own=own), cors_policy(config)))
    for warning in startup_warnings(config):
        # (not "warning": twisted.logger reads that field as a Python warning)
        log.warn("configuration: {advice}", advice=warning)
    site = GatewaySite(
        tree,
        body_limit=config.body_limit,
        clock=clock,
        trust_proxy=config.trust_proxy,
        readiness=readiness,
    )
    return Gateway(
        site=site, upstreams=upstreams, verifier=verifier, store=store, readiness=readiness
    )
