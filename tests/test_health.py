"""
Tests for L{qeetgw.upstream.health}: probes against fake upstream resources driven
in memory, timeouts on a fake clock.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from qeetgw.config import ServiceConfig, load_config
from qeetgw.upstream.health import (
    HealthChecker,
    HealthReport,
    InstanceHealth,
    ServiceHealth,
    iso_timestamp,
)
from qeetgw.upstream.pool import make_pool

#: 2026-11-27T05:08:05.123Z
NOW = 1795756085.123


def service(name: str, port: int, health_path: str = "/health") -> ServiceConfig:
    """
    A service on localhost:C{port}.
    """
    return ServiceConfig(
        name=name,
        client_prefix="/api/v1/" + name,
        upstream_prefix="/" + name,
        url=f"http://localhost:{port}",
        health_path=health_path,
        url_variable=name.upper() + "_URL",
    )


USER = service("user-service", 8082, "/actuator/health")
ORDER = service("order-service", 8084, "/health")


class FakeUpstreams(Resource):
    """
    Every upstream at once, told apart by the Host header's port.

    @ivar statuses: port -> the status to answer with, or C{None} to hang.
    @ivar requests: (port, uri) of every request, in arrival order.
    @ivar pending: the hung requests, by port.
    """

    isLeaf = True

    def __init__(self, **statuses: Optional[int]) -> None:
        super().__init__()
        self.statuses = {int(port[1:]): status for port, status in statuses.items()}
        self.requests: List[Tuple[int, bytes]] = []
        self.pending: dict[int, IRequest] = {}

    def render(self, request: IRequest) -> Any:
        port = int(request.getHeader(b"host").rpartition(b":")[2])
        self.requests.append((port, request.uri))
        status = self.statuses[port]
        if status is None:
            self.pending[port] = request
            return NOT_DONE_YET
        request.setResponseCode(status)
        if status == 302:
            request.setHeader(b"location", b"/elsewhere")
        return b'{"status":"UP"}'


def answer(request: IRequest, status: int = 200) -> None:
    """
    Answer a hung request of L{FakeUpstreams}.
    """
    request.setResponseCode(status)
    request.write(b'{"status":"UP"}')
    request.finish()


class HealthCheckerTests(SynchronousTestCase):
    """
    L{HealthChecker} against upstreams in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def checker(
        self, upstreams: Resource, *services: ServiceConfig
    ) -> Tuple[HealthChecker, StubTreq]:
        stub = StubTreq(upstreams)
        return HealthChecker(services, stub, self.clock, 5000), stub

    def check(self, checker: HealthChecker, stub: StubTreq) -> HealthReport:
        """
        Run a round whose upstreams all answer at once.
        """
        d = checker.check_all()
        stub.flush()
        return self.successResultOf(d)

    def test_all_healthy_is_ok(self) -> None:
        upstreams = FakeUpstreams(p8082=200, p8084=204)
        checker, stub = self.checker(upstreams, USER, ORDER)
        report = self.check(checker, stub)
        self.assertTrue(report.healthy)
        self.assertEqual(
            report.to_json(),
            {
                "status": "ok",
                "services": [
                    {
                        "name": "user-service",
                        "status": "healthy",
                        "responseTime": 0,
                        "instances": [
                            {
                                "url": "http://localhost:8082",
                                "state": "healthy",
                                "lastCheck": "2026-11-27T05:08:05.123Z",
                                "latencyMs": 0,
                                "ejections": 0,
                            }
                        ],
                    },
                    {
                        "name": "order-service",
                        "status": "healthy",
                        "responseTime": 0,
                        "instances": [
                            {
                                "url": "http://localhost:8084",
                                "state": "healthy",
                                "lastCheck": "2026-11-27T05:08:05.123Z",
                                "latencyMs": 0,
                                "ejections": 0,
                            }
                        ],
                    },
                ],
                "timestamp": "2026-11-27T05:08:05.123Z",
            },
        )

    def test_probes_the_health_paths(self) -> None:
        upstreams = FakeUpstreams(p8082=200, p8084=200)
        checker, stub = self.checker(upstreams, USER, ORDER)
        self.check(checker, stub)
        self.assertEqual(
            upstreams.requests, [(8082, b"/actuator/health"), (8084, b"/health")]
        )

    def test_503_is_unhealthy(self) -> None:
        upstreams = FakeUpstreams(p8082=200, p8084=503)
        checker, stub = self.checker(upstreams, USER, ORDER)
        report = self.check(checker, stub)
        self.assertFalse(report.healthy)
        self.assertEqual(report.status, "degraded")
        self.assertEqual(
            report.services[1],
            ServiceHealth(
                "order-service",
                False,
                0,
                "HTTP 503",
                [InstanceHealth("http://localhost:8084", "unhealthy", NOW, 0, 0, "HTTP 503")],
            ),
        )
        self.assertTrue(report.services[0].healthy)

    def test_redirect_is_not_followed(self) -> None:
        upstreams = FakeUpstreams(p8084=302)
        checker, stub = self.checker(upstreams, ORDER)
        report = self.check(checker, stub)
        self.assertEqual(report.services[0].error, "HTTP 302")
        self.assertEqual(len(upstreams.requests), 1)

    def test_hung_upstream_times_out_exactly_at_the_timeout(self) -> None:
        upstreams = FakeUpstreams(p8082=200, p8084=None)
        checker, stub = self.checker(upstreams, USER, ORDER)
        d = checker.check_all()
        stub.flush()
        self.clock.advance(4.999)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        report = self.successResultOf(d)
        self.assertEqual(
            report.to_json()["services"][1],
            {
                "name": "order-service",
                "status": "unhealthy",
                "responseTime": 5000,
                "error": "timeout after 5000 ms",
                "instances": [
                    {
                        "url": "http://localhost:8084",
                        "state": "unhealthy",
                        "lastCheck": "2026-11-27T05:08:10.123Z",
                        "latencyMs": 5000,
                        "ejections": 0,
                        "error": "timeout after 5000 ms",
                    }
                ],
            },
        )
        self.assertTrue(report.services[0].healthy)
        self.assertEqual(report.checked_at, NOW + 5)

    def test_timed_out_probe_drops_its_connection(self) -> None:
        upstreams = FakeUpstreams(p8084=None)
        checker, stub = self.checker(upstreams, ORDER)
        d = checker.check_all()
        stub.flush()
        gone = upstreams.pending[8084].notifyFinish()
        self.clock.advance(5)
        stub.flush()
        self.successResultOf(d)
        self.failureResultOf(gone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stalled_body_times_out(self) -> None:
        """
        The timeout covers the body: headers then silence is a timeout.
        """
        upstreams = FakeUpstreams(p8084=None)
        checker, stub = self.checker(upstreams, ORDER)
        d = checker.check_all()
        stub.flush()
        request = upstreams.pending[8084]
        request.setHeader(b"content-length", b"100")
        request.write(b"{")
        stub.flush()
        self.clock.advance(5)
        stub.flush()
        self.assertEqual(
            self.successResultOf(d).services[0].error, "timeout after 5000 ms"
        )

    def test_probes_run_concurrently(self) -> None:
        """
        Every probe starts before any finishes; the report waits for the last
        and times each from its own start.
        """
        upstreams = FakeUpstreams(p8082=None, p8084=None)
        checker, stub = self.checker(upstreams, USER, ORDER)
        d = checker.check_all()
        stub.flush()
        self.assertEqual(sorted(upstreams.pending), [8082, 8084])
        self.clock.advance(1)
        answer(upstreams.pending[8084])
        stub.flush()
        self.assertNoResult(d)
        self.clock.advance(1.5)
        answer(upstreams.pending[8082])
        stub.flush()
        report = self.successResultOf(d)
        self.assertEqual(
            [(s.name, s.response_time_ms) for s in report.services],
            [("user-service", 2500), ("order-service", 1000)],
        )

    def test_checks_during_a_round_join_it(self) -> None:
        upstreams = FakeUpstreams(p8084=None)
        checker, stub = self.checker(upstreams, ORDER)
        first = checker.check_all()
        second = checker.check_all()
        stub.flush()
        self.assertEqual(len(upstreams.requests), 1)
        answer(upstreams.pending[8084])
        stub.flush()
        self.assertIs(self.successResultOf(first), self.successResultOf(second))

    def test_cancelling_one_caller_leaves_the_round_running(self) -> None:
        upstreams = FakeUpstreams(p8084=None)
        checker, stub = self.checker(upstreams, ORDER)
        first = checker.check_all()
        second = checker.check_all()
        stub.flush()
        first.cancel()
        self.failureResultOf(first)
        answer(upstreams.pending[8084])
        stub.flush()
        self.assertTrue(self.successResultOf(second).healthy)

    def test_a_new_round_after_the_last(self) -> None:
        upstreams = FakeUpstreams(p8084=200)
        checker, stub = self.checker(upstreams, ORDER)
        self.check(checker, stub)
        self.check(checker, stub)
        self.assertEqual(len(upstreams.requests), 2)

    def test_connection_refused(self) -> None:
        class Refusing:
            def get(self, url: str, **kwargs: Any) -> "Deferred[Any]":
                return fail(ConnectionRefusedError())

        checker = HealthChecker([ORDER], Refusing(), self.clock, 5000)
        report = self.successResultOf(checker.check_all())
        [order] = report.services
        self.assertEqual(
            (order.healthy, order.response_time_ms, order.error),
            (False, 0, "connection refused"),
        )
        self.assertEqual(order.instances[0].error, "connection refused")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unexpected_failure_is_logged_not_shown(self) -> None:
        class Broken:
            def get(self, url: str, **kwargs: Any) -> "Deferred[Any]":
                raise RuntimeError("internal detail")

        checker = HealthChecker([ORDER], Broken(), self.clock, 5000)
        report = self.successResultOf(checker.check_all())
        self.assertEqual(report.services[0].error, "probe failed")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_no_services_is_ok(self) -> None:
        checker = HealthChecker([], StubTreq(Resource()), self.clock, 5000)
        report = self.successResultOf(checker.check_all())
        self.assertEqual(report.to_json()["services"], [])
        self.assertEqual(report.status, "ok")


class ProbeClientTests(SynchronousTestCase):
    """
    Probes through the client L{qeetgw.site.build_site} gives them (treq on
    the forwarding agent and its pool) on a memory reactor, with the
    connection played by hand.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        upstreams = make_pool(load_config({"REQUIRE_AUTH": "false"}), self.reactor)
        client = HTTPClient(upstreams.agent)
        self.checker = HealthChecker([ORDER], client, self.reactor, 5000)

    def connect(self) -> Tuple[Any, StringTransport]:
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        self.assertEqual((host, port), ("127.0.0.1", 8084))
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_connection_refused(self) -> None:
        d = self.checker.check_all()
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        # Reported at once, with no time passing: not when a next attempt
        # would be due (Twisted's HostnameEndpoint waits 0.3 s for that).
        self.assertEqual(
            self.successResultOf(d).services[0].error, "connection refused"
        )

    def test_body_is_read_and_connection_reused(self) -> None:
        d = self.checker.check_all()
        protocol, transport = self.connect()
        self.assertTrue(transport.value().startswith(b"GET /health HTTP/1.1\r\n"))
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" b'{"status":"UP"}'
        )
        self.assertTrue(self.successResultOf(d).healthy)
        transport.clear()
        second = self.checker.check_all()
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.assertTrue(transport.value().startswith(b"GET /health HTTP/1.1\r\n"))
        protocol.dataReceived(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.successResultOf(second).services[0].error, "HTTP 503")

    def test_redirect_is_not_followed(self) -> None:
        d = self.checker.check_all()
        protocol, _ = self.connect()
        protocol.dataReceived(
            b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://elsewhere/\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.successResultOf(d).services[0].error, "HTTP 301")
        self.assertEqual(len(self.reactor.tcpClients), 1)


class ValueTests(SynchronousTestCase):
    """
    The value objects and the timestamp format.
    """

    def test_timestamp_is_javascript_iso(self) -> None:
        self.assertEqual(iso_timestamp(NOW), "2026-11-27T05:08:05.123Z")
        self.assertEqual(iso_timestamp(0), "1970-01-01T00:00:00.000Z")

    def test_healthy_service_has_no_error_key(self) -> None:
        self.assertEqual(
            ServiceHealth("user-service", True, 12).to_json(),
            {"name": "user-service", "status": "healthy", "responseTime": 12, "instances": []},
        )
