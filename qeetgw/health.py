"""
Upstream health probes, for C{GET /health/services}.

A L{HealthChecker} probes every service's health path at once, each probe
bounded by the configured timeout on an injected clock, and turns what
happened into a L{HealthReport}: plain values that know their JSON shape.
Probes never fail: a refused connection, a timeout or a 503 all become an
unhealthy L{ServiceHealth} with a short C{error} for people.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple, Union

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IPolicyForHTTPS, IResponse

from qeetgw.config import ServiceConfig

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
class ServiceHealth:
    """
    What probing one service found.

    @ivar name: the service's name (C{"user-service"}).
    @ivar healthy: whether it answered its health path with a 2xx.
    @ivar response_time_ms: how long the probe took, in milliseconds.
    @ivar error: why it is unhealthy, short and for people
        (C{"HTTP 503"}, C{"timeout after 5000 ms"}); C{None} when healthy.
    """

    name: str
    healthy: bool
    response_time_ms: int
    error: Optional[str] = None

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
        return result


@attrs.frozen
class HealthReport:
    """
    The outcome of one round of probes.

    @ivar services: one L{ServiceHealth} per service, in configuration order.
    @ivar checked_at: the clock's seconds when the round finished.
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


class ProbeClient(Protocol):
    """
    What L{HealthChecker} needs of an HTTP client: treq's C{get}.
    L{treq.client.HTTPClient} (see L{make_probe_client}) and
    L{treq.testing.StubTreq} both provide it.
    """

    def get(self, url: str, **kwargs: Any) -> "Deferred[IResponse]":
        """
        Start a GET of C{url}; fire with the response once its headers are in.
        """


def make_probe_client(
    reactor: Any,
    pool: HTTPConnectionPool,
    tls_policy: Optional[IPolicyForHTTPS] = None,
) -> HTTPClient:
    """
    The treq client L{HealthChecker} probes with, on C{pool}'s connections.

    @param reactor: the reactor to connect with (C{IReactorTCP},
        C{IReactorTime} and, for https upstreams, C{IReactorSSL}).
    @param pool: the connection pool; probes read every body to the end so
        their connections go back to it.
    @param tls_policy: how to verify https upstreams (for a private CA);
        Twisted's browser-like default when C{None}.
    """
    if tls_policy is None:
        agent = Agent(reactor, pool=pool)
    else:
        agent = Agent(reactor, contextFactory=tls_policy, pool=pool)
    return HTTPClient(agent)


class _ProbeTimedOut(Exception):
    """
    The probe was cancelled because it outlived the timeout.  Its own type,
    because a timed-out treq request fails like a cancelled one otherwise.
    """


class _DiscardBody(StreamProtocol):
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


class HealthChecker:
    """
    Probes every upstream's health path concurrently, each probe bounded by
    a timeout, and reports what it found.

    Calls of L{check_all} while a round is in flight join that round instead
    of starting another: C{/health/services} is public, and each call must
    not become one request per upstream.
    """

    def __init__(
        self,
        services: Sequence[ServiceConfig],
        http_client: ProbeClient,
        clock: IReactorTime,
        timeout_ms: int,
    ) -> None:
        """
        @param services: the services to probe, in report order.
        @param http_client: a treq-like client; see L{make_probe_client}.
        @param clock: the clock that times probes and bounds them.
        @param timeout_ms: the longest a probe may take, body included.
        """
        self._services = tuple(services)
        self._client = http_client
        self._clock = clock
        self._timeout_ms = timeout_ms
        self._waiters: List["Deferred[HealthReport]"] = []

    def check_all(self) -> "Deferred[HealthReport]":
        """
        Probe every service; fire with the L{HealthReport}, within the timeout
        (plus the clock's scheduling).  Cancelling the result only stops
        waiting for it: the round goes on for any other caller.
        """
        waiter: "Deferred[HealthReport]" = Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._start_round()
        return waiter

    def _start_round(self) -> None:
        """
        Start one probe per service and deliver the report to every waiter.
        """
        probes = [self._probe(service) for service in self._services]
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

    def _probe(self, service: ServiceConfig) -> "Deferred[ServiceHealth]":
        """
        GET C{service}'s health path; fire with its L{ServiceHealth}, never
        fail.
        """
        url = service.url + service.health_path
        started = self._clock.seconds()
        # Redirects are not followed: a health path that redirects is a
        # misconfiguration to report, not to hide.  unbuffered: the body is
        # discarded as it arrives rather than kept.
        probe: "Deferred[Any]" = maybeDeferred(
            self._client.get, url, allow_redirects=False, unbuffered=True
        )
        probe.addCallback(_read_status)
        # The timeout covers the body too: a service that sends headers and
        # then stalls must not hold /health/services.
        probe.addTimeout(
            self._timeout_ms / 1000,
            self._clock,
            onTimeoutCancel=lambda result, timeout: Failure(_ProbeTimedOut()),
        )

        def elapsed_ms() -> int:
            return round((self._clock.seconds() - started) * 1000)

        def answered(code: int) -> ServiceHealth:
            if 200 <= code < 300:
                return ServiceHealth(service.name, True, elapsed_ms())
            return self._unhealthy(service, url, elapsed_ms(), f"HTTP {code}")

        def failed(failure: Failure) -> ServiceHealth:
            error = _describe(failure, self._timeout_ms)
            if error is None:
                _log.failure(
                    "Health probe of {service} failed unexpectedly",
                    failure,
                    service=service.name,
                    url=url,
                )
                error = "probe failed"
            return self._unhealthy(
                service, url, elapsed_ms(), error, failure.getErrorMessage()
            )

        return probe.addCallbacks(answered, failed)

    def _unhealthy(
        self,
        service: ServiceConfig,
        url: str,
        response_time_ms: int,
        error: str,
        detail: Optional[str] = None,
    ) -> ServiceHealth:
        """
        Log that C{service} is unhealthy and say so as a value.
        """
        _log.warn(
            "Service {service} is unhealthy: {error}",
            service=service.name,
            url=url,
            error=error,
            detail=detail,
            response_time_ms=response_time_ms,
        )
        return ServiceHealth(service.name, False, response_time_ms, error)
