"""
Prometheus metrics: what the gateway counts, and the listener that serves
them (METRICS_PORT, never the public port).

Every metric lives in a L{CollectorRegistry} of our own rather than
prometheus_client's global one, so two gateways in one process (the tests)
never count into each other, and a scrape shows only what we chose.

Labels are bounded: a service name (from configuration), C{gateway} for the
gateway's own endpoints, C{none} for an /api path no route matches; a
method from a fixed set, else C{OTHER}; a status class; a budget name (from
configuration); a fixed set of error kinds and token-refusal reasons; the
label of the key that verified a token (C{current}, C{previous-1}, ...,
C{jwks}: from configuration, never the key).  Never a raw path or a user id.

The hot path takes label children bound once (a dictionary look-up per
request, not prometheus_client's C{labels()} with its lock and argument
checks).

With several workers (WORKERS > 1) each worker's L{Metrics} is built with
L{MetricFiles}: its values live in memory-mapped files that the supervisor
sums at scrape time (L{qeetgw.groupmetrics}).  What each metric means
across workers is decided here, metric by metric:

- counters and histograms: summed over the workers, and over the workers
  that have exited (their files are kept), so a total never goes backwards
  when a worker is restarted;
- C{qeetgw_upstream_requests_in_flight}, C{qeetgw_client_connections_open},
  C{qeetgw_websocket_tunnels}: summed over the live workers (C{livesum}):
  the group's figure;
- C{qeetgw_upstream_instances}: each worker balances with its own view of
  the instances (its own health checks and ejections), so a sum would count
  each instance once per worker; it is one series per worker, labelled
  C{worker} (the worker's number, stable across restarts, unlike a pid);
- process figures (memory, CPU, descriptors): read by the supervisor from
  each worker's C{/proc}, labelled C{worker} (L{qeetgw.groupmetrics}).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.twisted import MetricsResource
from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from qeetgw.errors import not_found, render_error
from qeetgw.metricfiles import MetricFiles
from qeetgw.process.startup import StartUpEndpoint

log = Logger()

#: The methods counted by name; any other is C{OTHER}.
METHODS: Dict[Any, str] = {
    method: method.decode("ascii")
    for method in (b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS")
}
#: The service label of the gateway's own endpoints (/health, /ready, ...).
GATEWAY = "gateway"
#: The service label of an /api request that no route matches.
NO_ROUTE = "none"
#: The status class of a request cut off before its response was complete.
ABORTED = "aborted"

#: The kinds of upstream error counted.
UPSTREAM_ERROR_KINDS = ("connect", "timeout", "reset", "tls", "other")

#: L{qeetgw.auth.TokenRejected} reasons, as label values.  A reason not
#: listed (a future one) is counted as C{other}; C{missing} is a request
#: without a token where one is required.
AUTH_REASONS: Dict[str, str] = {
    "expired": "expired",
    "not yet valid": "not_yet_valid",
    "issued in the future": "issued_in_future",
    "missing exp": "missing_exp",
    "wrong issuer": "wrong_issuer",
    "wrong audience": "wrong_audience",
    "wrong token type": "wrong_token_type",
    "refresh token": "refresh_token",
    "algorithm not allowed": "algorithm_not_allowed",
    "bad signature": "bad_signature",
    "key refused": "key_refused",
    "malformed token": "malformed",
    "unknown key id": "unknown_key",
    "keys unavailable": "keys_unavailable",
}
MISSING_TOKEN = "missing"
_AUTH_LABELS = frozenset(AUTH_REASONS.values()) | {MISSING_TOKEN, "other"}

#: Request durations: from a fast cached 401 to the proxy timeout's reach.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: The instance states counted by C{qeetgw_upstream_instances}.
INSTANCE_STATES = ("unknown", "healthy", "unhealthy", "ejected")

#: How often a worker writes its instance states into its files, in
#: seconds.  The states change on health checks and ejections, seconds
#: apart, and Prometheus scrapes every 15 s or so.
INSTANCES_REFRESH_S = 1.0


def status_class(code: Any) -> str:
    """
    C{"2xx"} and so on for an HTTP status code; C{"other"} outside 100-599.
    """
    if isinstance(code, int) and 100 <= code < 600:
        return "%dxx" % (code // 100)
    return "other"


def auth_reason_label(reason: str) -> str:
    """
    The label of a L{qeetgw.auth.TokenRejected} reason (C{malformed header}
    and the like fold into C{malformed}).
    """
    label = AUTH_REASONS.get(reason)
    if label is not None:
        return label
    if reason.startswith("malformed"):
        return "malformed"
    return "other"


class ServiceMetrics:
    """
    The label children of one upstream service, bound once.
    """

    def __init__(self, metrics: "Metrics", service: str) -> None:
        self.in_flight = metrics.in_flight.labels(service)
        self.time_to_first_byte = metrics.upstream_ttfb.labels(service)
        self._errors = {
            kind: metrics.upstream_errors.labels(service, kind) for kind in UPSTREAM_ERROR_KINDS
        }
        self.retries = metrics.upstream_retries.labels(service)
        self.ejections = metrics.upstream_ejections.labels(service)
        self.tunnels = metrics.websocket_tunnels.labels(service)
        self.tunnel_bytes_to_upstream = metrics.websocket_bytes.labels(service, "to_upstream")
        self.tunnel_bytes_to_client = metrics.websocket_bytes.labels(service, "to_client")

    def upstream_error(self, kind: str) -> None:
        """
        Count an upstream error of C{kind} (one of L{UPSTREAM_ERROR_KINDS}).
        """
        self._errors.get(kind, self._errors["other"]).inc()


class _Connections:
    """
    A collector of the open client connections, read at scrape time (no
    cost per connection).
    """

    def __init__(self, site: Any) -> None:
        self._site = site

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "qeetgw_client_connections_open",
            "Open client connections",
            value=len(self._site.channels),
        )


def instance_states(upstreams: Any) -> Iterable[Tuple[str, str, int]]:
    """
    C{(service, state, count)} for every service of C{upstreams} (the
    L{qeetgw.upstream.services.ServiceUpstream}s by name) and every state in
    L{INSTANCE_STATES}, zeros included.
    """
    for name, upstream in upstreams.items():
        states = dict.fromkeys(INSTANCE_STATES, 0)
        for snapshot in upstream.instances.snapshot():
            states[snapshot.status] = states.get(snapshot.status, 0) + 1
        for state, count in states.items():
            yield name, state, count


class _Instances:
    """
    A collector of every service's instance states, read at scrape time
    (one process: the scrape runs where the states are).
    """

    def __init__(self, upstreams: Any) -> None:
        self._upstreams = upstreams

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "qeetgw_upstream_instances",
            "Instances of each service, by state (unknown, healthy, unhealthy, ejected)",
            labels=["service", "state"],
        )
        for name, state, count in instance_states(self._upstreams):
            family.add_metric([name, state], count)
        yield family


class InstanceGauge(Service):
    """
    A worker's instance states, written into its metric files every
    L{INSTANCES_REFRESH_S} seconds while the service runs (a part started
    and stopped with the gateway service).

    Why not at scrape time, as in one process: the scrape runs in the
    supervisor, which has no instances; the states live in each worker.
    Why not on every change: the states change in the balancing logic
    (ejections, health thresholds, DNS discovery), which knows nothing of
    metrics; a snapshot a second is exact enough for a figure scraped every
    15 s, and costs a few writes a second.
    """

    name = "instance-gauge"

    def __init__(self, gauge: Gauge, worker: str, upstreams: Any, clock: IReactorTime) -> None:
        self._gauge = gauge
        self._worker = worker
        self._upstreams = upstreams
        self._children: Dict[Tuple[str, str], Any] = {}
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = clock

    def refresh(self) -> None:
        """
        Write the states as they are now.
        """
        seen = set()
        for name, state, count in instance_states(self._upstreams):
            child = self._children.get((name, state))
            if child is None:
                child = self._children[(name, state)] = self._gauge.labels(name, state, self._worker)
            child.set(count)
            seen.add((name, state))
        # A series written before and not listed now (a state no instance
        # is in any more, beyond the fixed ones) is 0, not its last count.
        for key, child in self._children.items():
            if key not in seen:
                child.set(0)

    def startService(self) -> None:
        """
        Write the states now, then every L{INSTANCES_REFRESH_S} seconds.
        """
        super().startService()
        if not self._loop.running:
            self._loop.start(INSTANCES_REFRESH_S, now=True)

    def stopService(self) -> None:
        """
        Stop writing.
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()


class GaugedChannels(set):  # type: ignore[type-arg]
    """
    A site's set of open connections that keeps a gauge at its size.

    With workers, C{qeetgw_client_connections_open} cannot be read from the
    site at scrape time (the scrape runs in the supervisor), so each worker
    writes its count as connections open and close: one write a
    connection, not a request.  The site only ever calls C{add} and
    C{discard} on it.
    """

    def __init__(self, gauge: Gauge) -> None:
        super().__init__()
        self._gauge = gauge

    def add(self, item: Any) -> None:
        super().add(item)
        self._gauge.set(len(self))

    def discard(self, item: Any) -> None:
        super().discard(item)
        self._gauge.set(len(self))

    def remove(self, item: Any) -> None:
        super().remove(item)
        self._gauge.set(len(self))


class Metrics:
    """
    The gateway's metrics, in a registry of their own.

    @param process: also register prometheus_client's process and platform
        collectors (CPU, memory, file descriptors, Python version); one
        process only (with C{files} the supervisor reads each worker's).
    @param files: a worker's metric files (WORKERS > 1): every value is
        written there for the supervisor to sum, and the gauges read at
        scrape time in one process are kept up to date by the worker
        instead (see the module docstring).
    @ivar files: C{files}, or L{None} in one process.
    """

    def __init__(self, process: bool = True, files: Optional[MetricFiles] = None) -> None:
        self.registry = CollectorRegistry()
        self.files = files
        r = self.registry
        counter, gauge, histogram = Counter, Gauge, Histogram
        if files is not None:
            counter, gauge, histogram = files.bound(Counter), files.bound(Gauge), files.bound(Histogram)
        self.requests = counter(
            "qeetgw_requests", "Requests answered, by service, method and status class",
            ["service", "method", "status_class"], registry=r,
        )
        self.request_duration = histogram(
            "qeetgw_request_duration_seconds",
            "Time from a request's arrival to its response's end, by service",
            ["service"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.upstream_ttfb = histogram(
            "qeetgw_upstream_time_to_first_byte_seconds",
            "Time from sending a request upstream to its response head, by service",
            ["service"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.upstream_errors = counter(
            "qeetgw_upstream_errors", "Upstream requests that failed, by service and kind",
            ["service", "kind"], registry=r,
        )
        # The group's requests in flight: the live workers' added up (a dead
        # worker's requests are no longer in flight).
        self.in_flight = gauge(
            "qeetgw_upstream_requests_in_flight", "Requests being forwarded, by service",
            ["service"], registry=r, multiprocess_mode="livesum",
        )
        self.upstream_retries = counter(
            "qeetgw_upstream_retries", "Tries sent again to another instance, by service",
            ["service"], registry=r,
        )
        # Open tunnels, the live workers' added up, as requests in flight.
        self.websocket_tunnels = gauge(
            "qeetgw_websocket_tunnels", "WebSocket tunnels open, by service",
            ["service"], registry=r, multiprocess_mode="livesum",
        )
        self.websocket_bytes = counter(
            "qeetgw_websocket_bytes",
            "Bytes relayed through WebSocket tunnels, by service and direction",
            ["service", "direction"], registry=r,
        )
        self.upstream_ejections = counter(
            "qeetgw_upstream_ejections", "Instances ejected by outlier detection, by service",
            ["service"], registry=r,
        )
        self.rate_limited = counter(
            "qeetgw_rate_limited", "Requests refused with 429, by budget",
            ["budget"], registry=r,
        )
        self.ratelimit_store_errors = counter(
            "qeetgw_ratelimit_store_errors",
            "Requests the rate-limit store could not count", registry=r,
        )
        self.auth_failures = counter(
            "qeetgw_auth_failures", "Requests refused with 401, by reason",
            ["reason"], registry=r,
        )
        self.jwks_fetches = counter(
            "qeetgw_jwks_fetches", "JWKS fetches, by outcome", ["outcome"], registry=r,
        )
        self.jwt_verified = counter(
            "qeetgw_jwt_verified",
            "Requests whose token was verified, by the key that verified it (current, "
            "previous-1, ..., jwks)",
            ["key"], registry=r,
        )
        #: With files: the open connections (the live workers' added up)
        #: and each worker's instance states, written by the worker.
        self.connections_open: Optional[Gauge] = None
        self.instances: Optional[Gauge] = None
        if files is not None:
            self.connections_open = gauge(
                "qeetgw_client_connections_open", "Open client connections",
                registry=r, multiprocess_mode="livesum",
            )
            # livesum with a worker label: one live process per label value
            # (a dead worker's file is removed before its successor starts),
            # so the mode only drops the pid.
            self.instances = gauge(
                "qeetgw_upstream_instances",
                "Instances of each service, by state (unknown, healthy, unhealthy, ejected), "
                "as each worker sees them",
                ["service", "state", "worker"], registry=r, multiprocess_mode="livesum",
            )
        elif process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self._request_children: Dict[Tuple[str, str, str], Tuple[Any, Any]] = {}
        self._services: Dict[str, ServiceMetrics] = {}
        self._auth = {label: self.auth_failures.labels(label) for label in _AUTH_LABELS}
        self._jwks = {outcome: self.jwks_fetches.labels(outcome) for outcome in ("success", "failure")}
        self._budgets: Dict[str, Any] = {}
        self._jwt_keys: Dict[str, Any] = {}
        self._connections: Optional[_Connections] = None

    def watch_instances(self, upstreams: Any, clock: IReactorTime) -> Optional[InstanceGauge]:
        """
        Report how many instances of each service are healthy, unhealthy or
        ejected (C{upstreams}: the services' L{qeetgw.upstream.services.ServiceUpstream}s
        by name).

        @return: in one process L{None} (the states are read at scrape
            time); with files, the L{InstanceGauge} that writes them, to be
            started and stopped with the service.
        """
        if self.instances is None or self.files is None:
            self.registry.register(_Instances(upstreams))
            return None
        return InstanceGauge(self.instances, self.files.worker, upstreams, clock)

    def watch_connections(self, site: Any) -> None:
        """
        Report C{site}'s open connections (its C{channels} set): read at
        scrape time in one process; with files, the site's set is replaced
        by a L{GaugedChannels} that writes its size as it changes.
        """
        if self.connections_open is not None:
            if not isinstance(site.channels, GaugedChannels):
                channels = GaugedChannels(self.connections_open)
                channels.update(site.channels)
                self.connections_open.set(len(channels))
                site.channels = channels
        elif self._connections is None:
            self._connections = _Connections(site)
            self.registry.register(self._connections)

    def service(self, name: str) -> ServiceMetrics:
        """
        The bound metrics of upstream service C{name}.
        """
        bound = self._services.get(name)
        if bound is None:
            bound = self._services[name] = ServiceMetrics(self, name)
        return bound

    def start_at_zero(self, services: Iterable[str], budgets: Iterable[str]) -> None:
        """
        Make now, at 0, the series of every configured service (the
        C{ServiceMetrics} children and the request-duration histogram) and
        of every rate-limit budget, rather than on their first use.

        Why: a labelled series does not exist until its label child is
        made, so a dashboard over a quiet gateway shows "No data" instead
        of 0, and C{rate()} cannot see the first increment (a series that
        appears at 1 has no earlier point to rise from).  The label sets are
        known and bounded here.  C{qeetgw_requests_total} is left to first
        use: its method and status-class combinations are many, and its
        panels divide by totals that exist as soon as there is traffic.
        With files the values are written at 0 into the worker's files, so
        the group's scrape shows them too.

        @param services: the configured services' names.
        @param budgets: the budgets' names (C{default} and the
            RATE_LIMIT_ROUTES prefixes).
        """
        for name in services:
            self.service(name)
            self.request_duration.labels(name)
        for budget in budgets:
            if budget not in self._budgets:
                self._budgets[budget] = self.rate_limited.labels(budget)

    def request_done(self, service: str, method: Any, status: str, duration: float) -> None:
        """
        Count one request of C{service} (a service name, L{GATEWAY} or
        L{NO_ROUTE}) with raw C{method}, status class C{status}, which took
        C{duration} seconds.
        """
        key = (service, METHODS.get(method, "OTHER"), status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(*key),
                self.request_duration.labels(service),
            )
        children[0].inc()
        children[1].observe(duration)

    def auth_failure(self, reason: str) -> None:
        """
        Count a 401 for C{reason} (a TokenRejected reason or L{MISSING_TOKEN}).
        """
        self._auth[reason if reason == MISSING_TOKEN else auth_reason_label(reason)].inc()

    def watch_jwt_keys(self, labels: Iterable[str]) -> None:
        """
        Make the C{qeetgw_jwt_verified} series of every key label in
        C{labels} now, at 0: a key no token has used yet (the current one,
        just after a rotation) is scraped as 0 rather than missing.
        """
        for label in labels:
            if label not in self._jwt_keys:
                self._jwt_keys[label] = self.jwt_verified.labels(label)

    def jwt_verified_with(self, label: str) -> None:
        """
        Count a request whose token was verified with the key labelled
        C{label} (from configuration: bounded).
        """
        child = self._jwt_keys.get(label)
        if child is None:
            child = self._jwt_keys[label] = self.jwt_verified.labels(label)
        child.inc()

    def jwks_fetch(self, outcome: str) -> None:
        """
        Count a JWKS fetch that ended with C{outcome} (success or failure).
        """
        self._jwks[outcome].inc()

    def rate_limited_by(self, budget: str) -> None:
        """
        Count a 429 of budget C{budget} (a name from configuration).
        """
        child = self._budgets.get(budget)
        if child is None:
            child = self._budgets[budget] = self.rate_limited.labels(budget)
        child.inc()


class _QuietSite(Site):
    """
    The metrics listener's site: no access log line per scrape (Prometheus
    scrapes every few seconds, forever).
    """

    noisy = False
    displayTracebacks = False

    def log(self, request: Any) -> None:
        pass


class _NotFound(Resource):
    """
    The gateway's JSON 404 (L{qeetgw.errors.not_found}), for any path of
    the metrics listener that nothing serves: the listener answers in the
    gateway's one error shape, as the public port does, not with
    twisted.web's HTML page.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return render_error(request, not_found(request))


class _MetricsRoot(Resource):
    """
    The metrics listener's root: its children (C{metrics}, the status
    page's files), and L{_NotFound} for every other name, the empty one
    (C{/}) included.
    """

    def getChild(self, path: bytes, request: Any) -> IResource:
        return _NotFound()


def metrics_site(registry: CollectorRegistry, extra: Optional[Mapping[bytes, IResource]] = None) -> Site:
    """
    A site serving C{registry} in the Prometheus text format at C{/metrics};
    any other path is the gateway's JSON 404.

    @param extra: more resources at the root, by name (the status page,
        L{qeetgw.statuspage}).
    """
    root = _MetricsRoot()
    root.putChild(b"metrics", MetricsResource(registry))
    for name, resource in (extra or {}).items():
        root.putChild(name, resource)
    return _QuietSite(root)


def metrics_service(
    description: str,
    registry: CollectorRegistry,
    reactor: Any,
    extra: Optional[Mapping[bytes, IResource]] = None,
) -> StreamServerEndpointService:
    """
    The service that serves C{registry} on METRICS_PORT: a C{strports.service}
    named C{metrics}, whose port is bound at once by its
    C{privilegedStartService} (before the reactor runs; a port in use raises
    L{qeetgw.process.startup.CannotListen}: an operator who asked for
    metrics must not get a gateway that silently has none), and closed by
    its C{stopService}.

    @param description: METRICS_PORT, a Twisted endpoint description.
    @param registry: what to serve.
    @param reactor: the reactor to listen with.
    @param extra: more resources at the root (L{metrics_site}).
    """
    # strports.service (unlike a bare StreamServerEndpointService) makes the
    # service raise a listening failure that comes at once, rather than log
    # it; StartUpEndpoint makes every failure come at once, as CannotListen.
    service = strports.service(description, metrics_site(registry, extra), reactor=reactor)

    def listened(port: IListeningPort) -> None:
        address = port.getHost()
        log.info(
            "metrics on {host}:{port}",
            host=getattr(address, "host", None),
            port=getattr(address, "port", None),
            endpoint=description,
        )

    service.endpoint = StartUpEndpoint(service.endpoint, description, "for metrics on", listened)
    service.setName("metrics")
    return service
