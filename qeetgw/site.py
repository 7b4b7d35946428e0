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

With METRICS_PORT (or a L{Metrics} passed in) the site is a L{MeteredSite}
and the guards and the proxy count into one L{Metrics}; a
L{metrics_service} serves them on their own port, with the status page
(L{qeetgw.statuspage}) over a L{StatusSource} of the gateway's parts.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import attrs
from treq.client import HTTPClient
from twisted.application.service import IService
from twisted.internet.interfaces import IHostnameResolver, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from qeetgw import __version__
from qeetgw.app import GatewayApp
from qeetgw.auth.guard import JWTGuard
from qeetgw.auth.verifier import TokenVerifier
from qeetgw.clientlimits import ClientLimits
from qeetgw.config import Config, previous_key_label
from qeetgw.cors import CORS, CORSPolicy
from qeetgw.headers import SecurityHeaders
from qeetgw.metrics import (
    ABORTED,
    GATEWAY,
    NO_ROUTE,
    InstanceGauge,
    Metrics,
    metrics_service,
    status_class,
)
from qeetgw.paths import is_api_path
from qeetgw.ratelimit.guard import RateLimiter, RateLimitGuard
from qeetgw.ratelimit.memory import MemoryStore
from qeetgw.ratelimit.store import Budget, IRateLimitStore
from qeetgw.readiness import Readiness
from qeetgw.requeststate import state_of
from qeetgw.root import GatewayRoot
from qeetgw.server import GatewayRequest, GatewaySite
from qeetgw.statuspage import status_resources
from qeetgw.statusreport import StatusSource
from qeetgw.upstream.activehealth import ActiveHealthChecker
from qeetgw.upstream.discovery import DNSDiscovery
from qeetgw.upstream.health import HealthChecker, IHealthSource
from qeetgw.upstream.pool import UpstreamPool, make_pool
from qeetgw.upstream.proxy import ReverseProxyResource
from qeetgw.upstream.routes import RouteTable
from qeetgw.upstream.services import service_upstreams

log = Logger()


@attrs.frozen
class Gateway:
    """
    What L{build_site} builds: the site, and the parts with a lifetime of
    their own (L{parts}: Twisted services) and the upstream pool to close.
    """

    site: GatewaySite
    upstreams: UpstreamPool
    verifier: TokenVerifier
    store: IRateLimitStore
    readiness: Readiness
    #: What is counted, when metrics are on.
    metrics: Optional[Metrics] = None
    #: The metrics listener (L{metrics_service}), when METRICS_PORT is set.
    metrics_listener: Optional[IService] = None
    #: The background health checker, when HEALTH_CHECK_INTERVAL_MS > 0.
    health_checker: Optional[ActiveHealthChecker] = None
    #: The DNS discovery, when SERVICE_DISCOVERY=dns.
    discovery: Optional[DNSDiscovery] = None
    #: What writes the instance states into a worker's metric files (with
    #: workers and metrics only).
    instance_gauge: Optional[InstanceGauge] = None
    #: What the status page shows (served on METRICS_PORT, when set).
    status: Optional[StatusSource] = None

    @property
    def parts(self) -> Tuple[IService, ...]:
        """
        The parts with a lifetime of their own, as the services the
        gateway's service starts in this order and stops after its drain
        (L{qeetgw.process.service.GatewayService}'s children).
        """
        parts: Tuple[IService, ...] = (self.verifier, self.store)
        if self.metrics_listener is not None:
            parts += (self.metrics_listener,)
        if self.discovery is not None:
            parts += (self.discovery,)
        if self.health_checker is not None:
            parts += (self.health_checker,)
        if self.instance_gauge is not None:
            parts += (self.instance_gauge,)
        return parts


class MeteredSite(GatewaySite):
    """
    A L{GatewaySite} that also counts each request (service, method, status
    class, duration) into C{metrics}.

    Why here: the site's C{log} runs exactly once per request, finished or
    cut off, with the request's final status, which is what the requests
    counter and duration histogram need.  Overriding it in a subclass keeps
    the counting out of the server module and out of the log path (no
    global log observer that every gateway in a process would share, and no
    module-level hook), and costs nothing when metrics are off because the
    plain L{GatewaySite} is used then.

    @param metrics: where to count.
    """

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics
        metrics.watch_connections(self)

    def log(self, request: GatewayRequest, finished: bool = True) -> None:  # type: ignore[override]
        """
        Emit the access event (L{GatewaySite.log}), then count the request,
        once.
        """
        super().log(request, finished)
        state = state_of(request)
        if state.counted:
            return
        state.counted = True
        now = self.clock.seconds()
        started = state.started
        self.metrics.request_done(
            service_label(request),
            getattr(request, "method", None),
            status_class(request.code) if finished else ABORTED,
            now - started if started is not None else 0.0,
        )


def service_label(request: IRequest) -> str:
    """
    The bounded service label of C{request}: the service it was (or would
    have been) forwarded to, L{NO_ROUTE} for an /api path that no route
    matches, L{GATEWAY} for the gateway's own endpoints.  The route is the
    one resolved as the site dispatched the request; it is never matched
    again here.
    """
    state = state_of(request)
    if state.service is not None:
        return state.service
    if not is_api_path(getattr(request, "path", None) or b""):
        return GATEWAY
    return state.route[0].service.name if state.route is not None else NO_ROUTE


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


def log_hmac_key(config: Config) -> None:
    """
    Say at start-up how JWT_SECRET was read: as base64 or as text, and the
    key's length in bytes.  A gateway that refuses every token usually reads
    the secret differently from the auth-service, and these two facts show
    it without a token; the key itself, or any part of it, is never logged.
    """
    read = config.read_hmac_key()
    if read is None:
        return
    log.info(
        "JWT_SECRET read as {reading}: a {key_bytes}-byte HMAC key "
        "(JWT_SECRET_ENCODING={encoding})",
        reading=read.reading,
        key_bytes=len(read.key),
        encoding=config.jwt_secret_encoding,
    )
    # The same for each previous key, by its label: the label is what the
    # access log and the metrics name it by during the rotation.
    for position, previous in enumerate(config.read_previous_hmac_keys(), 1):
        log.info(
            "JWT_PREVIOUS_SECRETS item {position} ({key_label}) read as {reading}: a "
            "{key_bytes}-byte HMAC key (JWT_SECRET_ENCODING={encoding})",
            position=position,
            key_label=previous_key_label(position),
            reading=previous.reading,
            key_bytes=len(previous.key),
            encoding=config.jwt_secret_encoding,
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
    upstreams: Optional[UpstreamPool] = None,
    clock: Optional[IReactorTime] = None,
    metrics: Optional[Metrics] = None,
    resolver: Optional[IHostnameResolver] = None,
) -> Gateway:
    """
    The gateway for C{config}.

    @param reactor: the reactor connections are made with.
    @param upstreams: the pool and agent to use; made from C{config} when
        not given (tests pass an in-memory agent).
    @param clock: the clock for timeouts, token times and durations;
        C{reactor} when not given.
    @param metrics: where to count; made when METRICS_PORT is set and none
        is given.  With neither, nothing is counted.  A worker passes
        metrics over its metric files, and no METRICS_PORT: the supervisor
        serves them.
    @param resolver: what SERVICE_DISCOVERY=dns resolves with; the
        reactor's C{nameResolver} when not given.
    """
    clock = clock if clock is not None else reactor
    started = clock.seconds()
    if metrics is None and config.metrics_port is not None:
        metrics = Metrics()
    if upstreams is None:
        upstreams = make_pool(config, reactor)
    # Health probes and JWKS fetches go through treq on the Agent: the same
    # endpoints and TLS verification as proxied requests.
    probe_client = HTTPClient(upstreams.agent)
    verifier = TokenVerifier(
        config,
        clock,
        probe_client,
        on_jwks_fetch=metrics.jwks_fetch if metrics is not None else None,
    )
    log_hmac_key(config)
    if metrics is not None:
        metrics.watch_jwt_keys(verifier.key_labels)
    routes = RouteTable.from_services(config.services)
    # One set of ServiceUpstreams for the proxy and the health checks: what
    # the probes find is what balancing skips, and what /health/services shows
    # (ejections included) is what the proxy sees.
    balanced = service_upstreams(config, clock)
    instance_gauge = metrics.watch_instances(balanced, clock) if metrics is not None else None
    discovery: Optional[DNSDiscovery] = None
    if config.service_discovery == "dns":
        discovery = DNSDiscovery(
            balanced,
            resolver if resolver is not None else reactor.nameResolver,
            clock,
            config.dns_refresh_ms,
        )
    proxy = ReverseProxyResource(
        routes,
        upstreams.connections,
        clock,
        config.proxy_timeout_ms / 1000,
        metrics=metrics,
        upstreams=balanced,
        tunnel_idle_timeout=config.websocket_idle_timeout_ms / 1000,
        max_tunnels=config.websocket_max_tunnels,
    )
    store = make_store(config, reactor, clock)
    limiter = make_limiter(config, store, verifier)
    if metrics is not None:
        metrics.start_at_zero(
            (service.name for service in config.services),
            (budget.name for budget in limiter.budgets),
        )
    api = RateLimitGuard(
        JWTGuard(proxy, verifier, config.require_auth, config.public_paths, metrics=metrics),
        limiter,
        config.rate_limit_message,
        config.rate_limit_headers,
        fail_open=config.rate_limit_fail == "open",
        metrics=metrics,
    )
    health: IHealthSource
    checker: Optional[ActiveHealthChecker] = None
    if config.health_check_interval_ms > 0:
        checker = ActiveHealthChecker(
            balanced,
            probe_client,
            clock,
            config.health_check_interval_ms,
            answer_within_ms=config.proxy_timeout_ms,
        )
        health = checker
    else:
        health = HealthChecker(
            config.services,
            probe_client,
            clock,
            config.proxy_timeout_ms,
            instances={name: upstream.instances for name, upstream in balanced.items()},
        )
    readiness = Readiness()
    own = GatewayApp(
        config, health, clock, __version__.public(), store.state, readiness
    ).resource()
    tree = SecurityHeaders(CORS(GatewayRoot(api=api, own=own), cors_policy(config)))
    for warning in startup_warnings(config):
        # (not "warning": twisted.logger reads that field as a Python warning)
        log.warn("configuration: {advice}", advice=warning)
    site_options: Dict[str, Any] = dict(
        body_limit=config.body_limit,
        clock=clock,
        trust_proxy=config.trust_proxy,
        readiness=readiness,
        limits=ClientLimits.from_config(config),
        routes=routes,
        jwt_query_param=config.jwt_query_param.encode("utf-8") if config.jwt_query_param else None,
    )
    site = (
        GatewaySite(tree, **site_options)
        if metrics is None
        else MeteredSite(tree, metrics=metrics, **site_options)
    )
    status = StatusSource(
        routes=routes,
        upstreams=balanced,
        clock=clock,
        started=started,
        version=__version__.public(),
        connections=lambda: len(site.channels),
        tunnels=lambda: len(proxy.tunnels),
        store_state=store.state,
        readiness=readiness,
        health_check_interval_ms=config.health_check_interval_ms,
    )
    listener = None
    if metrics is not None and config.metrics_port is not None:
        listener = metrics_service(
            config.metrics_port, metrics.registry, reactor, status_resources(status.report)
        )
    return Gateway(
        site=site,
        upstreams=upstreams,
        verifier=verifier,
        store=store,
        readiness=readiness,
        metrics=metrics,
        metrics_listener=listener,
        health_checker=checker,
        discovery=discovery,
        instance_gauge=instance_gauge,
        status=status,
    )
