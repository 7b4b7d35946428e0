"""
Upstream health probes and the report of C{GET /health/services}.

L{probe} GETs one instance's health path, bounded by a timeout on an
injected clock, and never fails: a refused connection, a timeout or a 503
all become a failed L{ProbeResult} with a short C{error} for people.

A L{HealthChecker} probes every instance of every service at once when
C{/health/services} is asked (HEALTH_CHECK_INTERVAL_MS=0); with background
checks on, L{qeetgw.upstream.activehealth.ActiveHealthChecker} probes on its own
schedule and answers from what it found.  Both report a L{HealthReport}:
plain values that know their JSON shape.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import attrs
from twisted.internet import protocol
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse
from zope.interface import Interface, implementer

from qeetgw.config import ServiceConfig
from qeetgw.upstream.balancing import BalancingSettings, InstanceSet, InstanceSnapshot
from qeetgw.upstream.balancing.instances import Status

_log = Logger()

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso_timestamp(seconds: float) -> str:
    """
    C{seconds} since the epoch as JavaScript's C{Date.prototype.toISOString}
    writes it: UTC, milliseconds, a C{Z} (C{"2026-11-27T05:08:05.123Z"}).
    """
    # Rounded, not truncated: a clock's float seconds (1795756085.123) are
    # often a hair below the millisecond they stand for.
    millis = round(seconds * 1000)
    moment = _EPOCH + timedelta(milliseconds=millis)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
        f".{millis % 1000:03d}Z"
    )


@attrs.frozen
class InstanceHealth:
    """
    What is known of one instance's health.

    @ivar url: its base URL (C{"http://10.0.0.7:8082"}).
    @ivar state: C{"unknown"} (no check result yet), C{"healthy"},
        C{"unhealthy"} or C{"ejected"} (taken out by outlier ejection, which
        says the most: it comes back on its own).
    @ivar last_check: the clock's seconds at its last health check, or
        L{None} before the first.
    @ivar latency_ms: how long that check took, in whole milliseconds, or
        L{None}.
    @ivar ejections: how many times outlier ejection took it out, ever.
    @ivar error: why its last check failed, short and for people; L{None}
        when it passed or there was none.
    @ivar streak: C{(count, threshold)}: results in a row that go against
        its state (failures while healthy, passes while unhealthy), and how
        many of them change it; L{None} when there are none.  So a healthy
        instance whose last check failed says why it is still healthy.
    """

    url: str
    state: Status
    last_check: Optional[float]
    latency_ms: Optional[int]
    ejections: int = 0
    error: Optional[str] = None
    streak: Optional[Tuple[int, int]] = None

    @classmethod
    def of_snapshot(cls, snapshot: InstanceSnapshot, settings: BalancingSettings) -> "InstanceHealth":
        """
        What the background checks (and ejections) found of an instance,
        from its L{InstanceSnapshot} and its service's thresholds.
        """
        streak = None
        if snapshot.health == "healthy" and snapshot.check_failures:
            streak = (snapshot.check_failures, settings.health_unhealthy_threshold)
        elif snapshot.health == "unhealthy" and snapshot.check_successes:
            streak = (snapshot.check_successes, settings.health_healthy_threshold)
        return cls(
            url=snapshot.url,
            state=snapshot.status,
            last_check=snapshot.last_check,
            latency_ms=None if snapshot.latency_ms is None else round(snapshot.latency_ms),
            ejections=snapshot.ejections,
            error=snapshot.error,
            streak=streak,
        )

    @property
    def available(self) -> bool:
        """
        Whether balancing may send it traffic (outside panic mode).
        """
        return self.state == "healthy"

    def to_json(self) -> Dict[str, Any]:
        """
        The entry of a service's C{instances} list for this instance.
        """
        result: Dict[str, Any] = {
            "url": self.url,
            "state": self.state,
            "lastCheck": None if self.last_check is None else iso_timestamp(self.last_check),
            "latencyMs": self.latency_ms,
            "ejections": self.ejections,
        }
        if self.error is not None:
            result["error"] = self.error
        if self.streak is not None:
            count, threshold = self.streak
            if self.state == "healthy":
                result["failures"] = count
                result["unhealthyThreshold"] = threshold
            elif self.state == "unhealthy":
                result["passes"] = count
                result["healthyThreshold"] = threshold
        return result


@attrs.frozen
class ServiceHealth:
    """
    What is known of one service's health.

    @ivar name: the service's name (C{"user-service"}).
    @ivar healthy: whether at least one instance is healthy by an actual
        check result (and not ejected).
    @ivar response_time_ms: how long the check took, in milliseconds (the
        best instance's); L{None} before any check.
    @ivar error: why it is unhealthy, short and for people
        (C{"HTTP 503"}, C{"timeout after 5000 ms"}); C{None} when healthy.
    @ivar instances: each instance's health, in configuration order.
    """

    name: str
    healthy: bool
    response_time_ms: Optional[int]
    error: Optional[str] = None
    instances: Tuple[InstanceHealth, ...] = attrs.field(default=(), converter=tuple)

    @classmethod
    def of_instances(cls, name: str, instances: Sequence[InstanceHealth]) -> "ServiceHealth":
        """
        The health of service C{name} from its instances': healthy while one
        is healthy by an actual result (an instance never checked is
        C{unknown}, which is not enough), timed by the fastest available one
        (else the fastest), and when unhealthy, explained by the first
        instance's error.
        """
        available = [i for i in instances if i.available]
        timed = [i.latency_ms for i in (available or instances) if i.latency_ms is not None]
        response_time = min(timed) if timed else None
        error = None
        if not available:
            errors = [i.error for i in instances if i.error is not None]
            if errors:
                error = errors[0]
            elif instances and all(i.state == "ejected" for i in instances):
                error = "every instance is ejected"
            elif any(i.state == "unknown" for i in instances):
                error = "no health check result yet"
            else:
                error = "no healthy instance"
        return cls(name, bool(available), response_time, error, instances)

    def to_json(self) -> Dict[str, Any]:
        """
        The entry of C{/health/services}' C{services} list for this service.
        """
        result: Dict[str, Any] = {
            "name": self.name,
            "status": "healthy" if self.healthy else "unhealthy",
            "responseTime": self.response_time_ms,
        }
        if self.error is not None:
            result["error"] = self.error
        result["instances"] = [instance.to_json() for instance in self.instances]
        return result


@attrs.frozen
class HealthReport:
    """
    What C{/health/services} reports: one round of probes, or the
    background checker's state.

    @ivar services: one L{ServiceHealth} per service, in configuration order.
    @ivar checked_at: the clock's seconds when the round finished (or when
        the state was read).
    """

    services: Tuple[ServiceHealth, ...] = attrs.field(converter=tuple)
    checked_at: float

    @property
    def healthy(self) -> bool:
        """
        Whether every service is healthy (so C{/health/services} answers 200).
        """
        return all(service.healthy for service in self.services)

    @property
    def status(self) -> str:
        """
        C{"ok"} when every service is healthy, else C{"degraded"}.
        """
        return "ok" if self.healthy else "degraded"

    def to_json(self) -> Dict[str, Any]:
        """
        The body of C{/health/services}, as SPEC.md gives it.
        """
        return {
            "status": self.status,
            "services": [service.to_json() for service in self.services],
            "timestamp": iso_timestamp(self.checked_at),
        }


class IHealthSource(Interface):
    """
    What C{/health/services} asks for its report: L{HealthChecker} probes
    on demand, L{qeetgw.upstream.activehealth.ActiveHealthChecker} answers at once
    from its background checks.
    """

    def check_all() -> "Deferred[HealthReport]":
        """
        Fire with the L{HealthReport}.
        """


class ProbeClient(Protocol):
    """
    What L{HealthChecker} needs of an HTTP client: treq's C{get}.
    L{treq.client.HTTPClient} on the forwarding agent (what
    L{qeetgw.site.build_site} gives) and L{treq.testing.StubTreq} both
    provide it.

    A L{typing.Protocol}, not an interface: it describes the shape of treq's
    objects, which declare no interface of ours.
    """

    def get(self, url: str, **kwargs: Any) -> "Deferred[IResponse]":
        """
        Start a GET of C{url}; fire with the response once its headers are in.
        """


class _ProbeTimedOut(Exception):
    """
    The probe was cancelled because it outlived the timeout.  Its own type,
    because a timed-out treq request fails like a cancelled one otherwise.
    """


class _DiscardBody(protocol.Protocol):
    """
    Reads a response body to its end and forgets it: the body says nothing
    we use, but an unread body keeps the connection out of the pool.
    """

    def __init__(self) -> None:
        self.finished: "Deferred[None]" = Deferred(self._cancel)

    def _cancel(self, finished: "Deferred[None]") -> None:
        # Drop the connection: a body we stopped reading can never be reused.
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        """
        Ignore a piece of the body.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire L{finished} when the body is complete, fail it otherwise.
        """
        # After a cancellation the Deferred has fired already.
        if self.finished.called:
            return
        # PotentialDataLoss: a body delimited by the connection's close.
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(None)
        else:
            self.finished.errback(reason)


def _read_status(response: IResponse) -> "Deferred[int]":
    """
    Discard C{response}'s body; fire with its status code once it is read.
    """
    body = _DiscardBody()
    response.deliverBody(body)
    return body.finished.addCallback(lambda _: response.code)


def _describe(failure: Failure, timeout_ms: int) -> Optional[str]:
    """
    A short reason for people why a probe failed, or C{None} when the
    failure is not a network outcome we expect (a bug, to be logged).
    """
    if failure.check(_ProbeTimedOut):
        return f"timeout after {timeout_ms} ms"
    if failure.check(ConnectionRefusedError):
        return "connection refused"
    if failure.check(DNSLookupError):
        return "host not found"
    if failure.check(ConnectTimeoutError):
        return "connection timed out"
    if failure.check(ConnectError):
        return "connection failed"
    if failure.check(ResponseNeverReceived, RequestTransmissionFailed, RequestNotSent):
        return "connection closed before a response"
    if failure.check(ResponseFailed):
        return "connection closed during the response"
    return None


@attrs.frozen
class ProbeResult:
    """
    The outcome of one health probe.

    @ivar ok: whether the instance answered its health path with a 2xx.
    @ivar latency_ms: how long the probe took, body included.
    @ivar finished_at: the clock's seconds when it ended.
    @ivar error: why it failed, short and for people; L{None} when C{ok}.
    @ivar cancelled: whether it was given up by its caller, and so says
        nothing about the instance.
    """

    ok: bool
    latency_ms: float
    finished_at: float
    error: Optional[str] = None
    cancelled: bool = False


def probe(
    client: ProbeClient, url: str, clock: IReactorTime, timeout_ms: int
) -> "Deferred[ProbeResult]":
    """
    GET C{url} (an instance's base URL and its service's health path); fire
    with the L{ProbeResult} within C{timeout_ms}, never fail.  Cancelling
    it gives up the probe (a failed result, not logged).
    """
    started = clock.seconds()
    # Redirects are not followed: a health path that redirects is a
    # misconfiguration to report, not to hide.  unbuffered: the body is
    # discarded as it arrives rather than kept.
    probing: "Deferred[Any]" = maybeDeferred(
        client.get, url, allow_redirects=False, unbuffered=True
    )
    probing.addCallback(_read_status)
    # The timeout covers the body too: an instance that sends headers and
    # then stalls must not hold a round.
    probing.addTimeout(
        timeout_ms / 1000,
        clock,
        onTimeoutCancel=lambda result, timeout: Failure(_ProbeTimedOut()),
    )

    # Whether our caller gave the probe up: the client then reports the
    # cancellation in its own way (treq's agent as ResponseNeverReceived),
    # which must not read as a fault of the instance.
    gave_up = False

    def result(ok: bool, error: Optional[str] = None) -> ProbeResult:
        now = clock.seconds()
        return ProbeResult(ok, (now - started) * 1000, now, error, gave_up)

    def answered(code: int) -> ProbeResult:
        if 200 <= code < 300:
            return result(True)
        return result(False, f"HTTP {code}")

    def failed(failure: Failure) -> ProbeResult:
        if gave_up:
            return result(False, "probe cancelled")
        error = _describe(failure, timeout_ms)
        if error is None:
            _log.failure("Health probe of {url} failed unexpectedly", failure, url=url)
            error = "probe failed"
        return result(False, error)

    def give_up(outcome: "Deferred[ProbeResult]") -> None:
        nonlocal gave_up
        gave_up = True
        probing.cancel()

    outcome: "Deferred[ProbeResult]" = Deferred(give_up)

    def deliver(value: ProbeResult) -> None:
        # Fired already if the client did not end the probe when cancelled.
        if not outcome.called:
            outcome.callback(value)

    probing.addCallbacks(answered, failed).addCallback(deliver)
    return outcome


def service_timeout_ms(service: ServiceConfig, default_ms: int) -> int:
    """
    How long a probe of C{service} may take: its own <SERVICE>_TIMEOUT_MS,
    else GATEWAY_PROXY_TIMEOUT_MS (C{default_ms}), as for proxied requests.
    """
    return service.timeout_ms if service.timeout_ms is not None else default_ms


@implementer(IHealthSource)
class HealthChecker:
    """
    Probes every instance of every upstream on demand, concurrently, each
    probe bounded by a timeout, and reports what it found.  Used when the
    background checks are off (HEALTH_CHECK_INTERVAL_MS=0).

    Calls of L{check_all} while a round is in flight join that round instead
    of starting another: C{/health/services} is public, and each call must
    not become one request per upstream.

    These probes are not recorded into the instances' state: with active
    health off, which instances get traffic must not depend on who calls a
    public endpoint.  They show in the report only.
    """

    def __init__(
        self,
        services: Sequence[ServiceConfig],
        http_client: ProbeClient,
        clock: IReactorTime,
        timeout_ms: int,
        instances: Optional[Mapping[str, InstanceSet]] = None,
    ) -> None:
        """
        @param services: the services to probe, in report order.
        @param http_client: a treq-like client; see L{ProbeClient}.
        @param clock: the clock that times probes and bounds them.
        @param timeout_ms: the longest a probe may take, body included,
            for a service without a timeout of its own.
        @param instances: each service's instances, by service name, whose
            ejections the report shows (the proxy's); when not given (or a
            service is missing), the service's configured instances, never
            ejected.
        """
        self._services = tuple(services)
        self._client = http_client
        self._clock = clock
        self._timeout_ms = timeout_ms
        given = instances or {}
        self._instances: Dict[str, InstanceSet] = {
            service.name: given.get(service.name)
            or InstanceSet(service.instances, BalancingSettings(), clock)
            for service in self._services
        }
        self._waiters: List["Deferred[HealthReport]"] = []

    def check_all(self) -> "Deferred[HealthReport]":
        """
        Probe every instance; fire with the L{HealthReport}, within the
        timeout (plus the clock's scheduling).  Cancelling the result only
        stops waiting for it: the round goes on for any other caller.
        """
        waiter: "Deferred[HealthReport]" = Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._start_round()
        return waiter

    def _start_round(self) -> None:
        """
        Start one probe per instance and deliver the report to every waiter.
        """
        probes = [self._check_service(service) for service in self._services]
        round_: "Deferred[List[ServiceHealth]]" = gatherResults(
            probes, consumeErrors=True
        )
        round_.addCallback(
            lambda results: HealthReport(results, self._clock.seconds())
        )
        round_.addBoth(self._deliver)

    def _deliver(self, result: Union[HealthReport, Failure]) -> None:
        """
        Fire every waiter of the round that just finished with C{result}.
        """
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            # A cancelled waiter has fired already (with CancelledError).
            if waiter.called:
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _check_service(self, service: ServiceConfig) -> "Deferred[ServiceHealth]":
        """
        Probe every instance of C{service}; fire with its L{ServiceHealth}.
        """
        instances = self._instances[service.name]
        snapshots = instances.snapshot()
        timeout_ms = service_timeout_ms(service, self._timeout_ms)
        probes = [
            probe(self._client, snapshot.url + service.health_path, self._clock, timeout_ms)
            for snapshot in snapshots
        ]

        def combine(results: List[ProbeResult]) -> ServiceHealth:
            found = []
            for snapshot, result in zip(snapshots, results):
                state: Status = "ejected" if snapshot.status == "ejected" else (
                    "healthy" if result.ok else "unhealthy"
                )
                found.append(
                    InstanceHealth(
                        url=snapshot.url,
                        state=state,
                        last_check=result.finished_at,
                        latency_ms=round(result.latency_ms),
                        ejections=snapshot.ejections,
                        error=result.error,
                    )
                )
                if not result.ok:
                    _log.warn(
                        "Instance {url} of {service} failed its health probe: {error}",
                        service=service.name,
                        url=snapshot.url,
                        error=result.error,
                        response_time_ms=round(result.latency_ms),
                    )
            return ServiceHealth.of_instances(service.name, found)

        return gatherResults(probes, consumeErrors=True).addCallback(combine)
