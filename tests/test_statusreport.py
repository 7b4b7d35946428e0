"""
Tests for L{qeetgw.statusreport}: what C{/status.json} says, from fake
state on a L{MemoryReactorClock}.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.config import load_config
from qeetgw.ratelimit.store import StoreState
from qeetgw.readiness import Readiness
from qeetgw.statusreport import StatusSource, service_state
from qeetgw.upstream.balancing import Outcome
from qeetgw.upstream.routes import RouteTable
from qeetgw.upstream.services import service_upstreams

START = 1_800_000_000.0


def source(interval_ms: str = "500", **env: str) -> StatusSource:
    """
    A status source over a configuration whose user-service has two
    instances, on a fresh fake clock at L{START}.
    """
    clock = MemoryReactorClock()
    clock.advance(START)
    config = load_config({
        "REQUIRE_AUTH": "false",
        "USER_SERVICE_URL": "http://a.test:1,http://b.test:1",
        "HEALTH_CHECK_INTERVAL_MS": interval_ms,
        **env,
    })
    connections: List[object] = [object(), object()]
    return StatusSource(
        routes=RouteTable.from_services(config.services),
        upstreams=service_upstreams(config, clock),
        clock=clock,
        started=START,
        version="26.11.0",
        connections=lambda: len(connections),
        tunnels=lambda: 1,
        store_state=lambda: StoreState("memory", True, "3 keys"),
        readiness=Readiness(),
        health_check_interval_ms=config.health_check_interval_ms,
    )


def service(report: Dict[str, Any], name: str) -> Dict[str, Any]:
    [found] = [entry for entry in report["services"] if entry["name"] == name]
    return found  # type: ignore[no-any-return]


class GatewayFiguresTests(SynchronousTestCase):
    def test_figures(self) -> None:
        status = source()
        status.clock.advance(90.5)  # type: ignore[attr-defined]
        gateway = status.report()["gateway"]
        self.assertEqual(gateway, {
            "version": "26.11.0",
            "startedAt": "2027-01-15T08:00:00.000Z",
            "uptimeSeconds": 90.5,
            "connections": 2,
            "tunnels": 1,
            "readiness": "ready",
            "rateLimit": {"store": "memory", "status": "healthy", "detail": "3 keys"},
            "healthCheckIntervalMs": 500,
            "windowSeconds": 60,
            "workers": None,
        })

    def test_draining_gateway(self) -> None:
        status = source()
        status.readiness.draining = True
        self.assertEqual(status.report()["gateway"]["readiness"], "draining")

    def test_routes_then_services_in_configuration_order(self) -> None:
        report = source().report()
        self.assertEqual(report["routes"][1], {
            "prefix": "/api/v1/users", "service": "user-service", "upstreamPrefix": "/users",
        })
        self.assertEqual(
            [entry["name"] for entry in report["services"]],
            [route["service"] for route in report["routes"]],
        )
        self.assertEqual(len(report["services"]), 6)
        self.assertEqual(report["timestamp"], "2027-01-15T08:00:00.000Z")


class InstanceTests(SynchronousTestCase):
    def test_never_checked_is_unknown_with_nulls(self) -> None:
        users = service(source().report(), "user-service")
        self.assertEqual(users["state"], "unknown")
        self.assertEqual(users["reason"], "no health check result yet")
        first = users["instances"][0]
        self.assertEqual(first, {
            "url": "http://a.test:1",
            "state": "unknown",
            "reason": "no health check result yet",
            "health": "unknown",
            "ejectedUntil": None,
            "ejections": 0,
            "lastCheck": None,
            "checkLatencyMs": None,
            "checkError": None,
            "inFlight": 0,
            "requests": 0,
            "requestsPerSecond": 0.0,
            "errorsPerSecond": 0.0,
            "p50Ms": None,
            "p99Ms": None,
        })

    def test_checks_off_say_so(self) -> None:
        users = service(source(interval_ms="0").report(), "user-service")
        self.assertEqual(
            users["instances"][0]["reason"], "health checks are off (HEALTH_CHECK_INTERVAL_MS=0)"
        )

    def test_checked_instances(self) -> None:
        status = source()
        instances = status.upstreams["user-service"].instances
        a, b = instances.instances
        instances.record_check(a, True, 12.34)
        status.clock.advance(1)  # type: ignore[attr-defined]
        instances.record_check(b, False, 3.0, "connection refused")
        report = status.report()
        users = service(report, "user-service")
        first, second = users["instances"]
        self.assertEqual(users["state"], "healthy")
        self.assertIsNone(users["reason"])
        self.assertEqual(
            (first["state"], first["reason"], first["lastCheck"], first["checkLatencyMs"]),
            ("healthy", None, "2027-01-15T08:00:00.000Z", 12.3),
        )
        self.assertEqual(
            (second["state"], second["reason"], second["checkError"], second["lastCheck"]),
            ("unhealthy", "connection refused", "connection refused", "2027-01-15T08:00:01.000Z"),
        )

    def test_healthy_with_a_failed_check_says_why_it_stays(self) -> None:
        status = source()
        instances = status.upstreams["user-service"].instances
        a = instances.instances[0]
        instances.record_check(a, True, 1.0)
        instances.record_check(a, False, 1.0, "HTTP 503")
        first = service(status.report(), "user-service")["instances"][0]
        self.assertEqual(first["state"], "healthy")
        self.assertEqual(first["reason"], "last check failed: HTTP 503 (1 of 3 failures)")

    def test_ejected_until(self) -> None:
        status = source(OUTLIER_CONSECUTIVE_FAILURES="2", OUTLIER_BASE_EJECTION_MS="30000")
        instances = status.upstreams["user-service"].instances
        a = instances.instances[0]
        for _ in range(2):
            instances.started(a)
            instances.finished(a, Outcome.CONNECT_FAILURE)
        first = service(status.report(), "user-service")["instances"][0]
        self.assertEqual(first["state"], "ejected")
        self.assertEqual(first["ejectedUntil"], "2027-01-15T08:00:30.000Z")
        self.assertEqual(first["ejections"], 1)
        self.assertEqual(
            first["reason"], "ejected by outlier detection after 2 failed requests in a row (ejection 1)"
        )
        status.clock.advance(30)  # type: ignore[attr-defined]
        back = service(status.report(), "user-service")["instances"][0]
        self.assertEqual((back["state"], back["ejectedUntil"]), ("unknown", None))

    def test_draining_instance(self) -> None:
        status = source()
        instances = status.upstreams["user-service"].instances
        a = instances.instances[0]
        instances.started(a)
        instances.update(["http://b.test:1"])
        users = service(status.report(), "user-service")
        self.assertEqual([row["url"] for row in users["instances"]], ["http://b.test:1", "http://a.test:1"])
        draining = users["instances"][1]
        self.assertEqual(draining["state"], "draining")
        self.assertEqual(draining["inFlight"], 1)
        self.assertEqual(
            draining["reason"], "no longer listed by DNS discovery; 1 request still in flight"
        )
        self.assertEqual(users["inFlight"], 1)
        instances.finished(a, Outcome.SUCCESS)
        self.assertEqual(len(service(status.report(), "user-service")["instances"]), 1)


class TrafficTests(SynchronousTestCase):
    def test_rates_and_percentiles_per_instance_and_service(self) -> None:
        status = source()
        clock = status.clock
        a, b = status.upstreams["user-service"].instances.instances
        # 20 s of traffic: a answers 2 tries a second in 10 ms, b 1 a second
        # in 100 ms, half of them 5xx.
        for second in range(20):
            now = START + second
            a.traffic.record(now, False, 0.010)
            a.traffic.record(now + 0.5, False, 0.010)
            b.traffic.record(now, second % 2 == 0, 0.100)
        clock.advance(20)  # type: ignore[attr-defined]
        users = service(status.report(), "user-service")
        first, second = users["instances"]
        self.assertEqual((first["requests"], first["requestsPerSecond"], first["errorsPerSecond"]), (40, 2.0, 0.0))
        self.assertEqual((second["requests"], second["requestsPerSecond"], second["errorsPerSecond"]), (20, 1.0, 0.5))
        self.assertTrue(8 <= first["p50Ms"] <= 12.6, first["p50Ms"])
        self.assertTrue(80 <= second["p99Ms"] <= 126, second["p99Ms"])
        self.assertEqual((users["requests"], users["requestsPerSecond"], users["errorsPerSecond"]), (60, 3.0, 0.5))
        # Two thirds of the tries were fast: the median is a's, the p99 b's.
        self.assertTrue(users["p50Ms"] <= 12.6, users["p50Ms"])
        self.assertTrue(users["p99Ms"] >= 80, users["p99Ms"])


class ServiceStateTests(SynchronousTestCase):
    def test_service_state(self) -> None:
        self.assertEqual(service_state(["unhealthy", "healthy"]), "healthy")
        self.assertEqual(service_state(["unhealthy", "unknown"]), "unknown")
        self.assertEqual(service_state(["unhealthy", "ejected"]), "unhealthy")
        self.assertEqual(service_state([]), "unhealthy")
