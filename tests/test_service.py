"""
The gateway's service tree (L{qeetgw.process.service.GatewayService}): its
children are the gateway's parts, in order; the ports are bound at start-up;
the children stop after the drain, and the drain waits for them.  In
memory: a memory reactor, no sockets.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Dict, List, Optional

from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from qeetgw.metricfiles import MetricFiles
from qeetgw.metrics import Metrics
from qeetgw.process.service import GatewayService
from qeetgw.process.startup import CannotListen
from tests.gateway import MemoryGateway

#: Every part there can be in one process: METRICS_PORT, DNS discovery and
#: background health checks.
ALL_PARTS = {
    "METRICS_PORT": "tcp:9464",
    "SERVICE_DISCOVERY": "dns",
    "HEALTH_CHECK_INTERVAL_MS": "1000",
}


class _Reactor(MemoryReactorClock):
    """
    A memory reactor on which the ports in C{taken} are in use.
    """

    def __init__(self, taken: Any = ()) -> None:
        super().__init__()
        self.taken = set(taken)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if port in self.taken:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


class _Pool:
    """
    An upstream pool that says when it is closed.
    """

    def __init__(self) -> None:
        self.closed = False

    def closeCachedConnections(self) -> "Deferred[None]":
        self.closed = True
        return succeed(None)


class _Part(Service):
    """
    A child that notes when it stops, into C{stops}, and returns C{stopping}
    (or, C{broken}, raises L{ZeroDivisionError}).
    """

    def __init__(
        self,
        name: str,
        stops: List[str],
        stopping: "Optional[Deferred[None]]" = None,
        broken: bool = False,
    ) -> None:
        self.name = name
        self._stops = stops
        self._stopping = stopping
        self._broken = broken

    def stopService(self) -> "Optional[Deferred[None]]":
        super().stopService()
        self._stops.append(self.name)
        if self._broken:
            raise ZeroDivisionError("cannot stop")
        return self._stopping


class ServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def service(
        self,
        env: Optional[Dict[str, str]] = None,
        reactor: Optional[_Reactor] = None,
        metrics: Optional[Metrics] = None,
        delay: float = 0.0,
        daemon: bool = False,
    ) -> GatewayService:
        self.reactor = reactor if reactor is not None else _Reactor()
        self.made = MemoryGateway({"LISTEN": "tcp:4000", **(env or {})}, metrics=metrics, reactor=self.reactor)
        self.pool = _Pool()
        service = GatewayService(
            self.made.config.listen,
            self.made.gateway.site,
            self.pool,  # type: ignore[arg-type]
            grace=1.0,
            reactor=self.reactor,
            parts=self.made.gateway.parts,
            delay=delay,
            daemon=daemon,
        )
        # Only what the service says from now on.
        del self.events[:]
        return service

    def messages(self, namespace: str = "qeetgw.") -> List[str]:
        """
        The messages logged by our own modules, in order.
        """
        return [
            event["log_format"].format(**event)
            for event in self.events
            if event.get("log_namespace", "").startswith(namespace) and "log_format" in event
        ]

    def critical(self) -> List[Dict[str, Any]]:
        return [event for event in self.events if getattr(event.get("log_level"), "name", None) == "critical"]


class TreeTests(ServiceTests):
    """
    The children are the gateway's parts, in the order they start.
    """

    def test_every_part_in_order(self) -> None:
        service = self.service(ALL_PARTS)
        self.assertEqual(
            [child.name for child in service],
            ["token-verifier", "rate-limit-store", "metrics", "dns-discovery", "health-checks"],
        )
        self.assertEqual(list(service), list(self.made.gateway.parts))
        for child in service:
            self.assertTrue(verifyObject(IService, child))
            self.assertIs(child.parent, service)

    def test_the_fewest_parts(self) -> None:
        service = self.service({"HEALTH_CHECK_INTERVAL_MS": "0"})
        self.assertEqual([child.name for child in service], ["token-verifier", "rate-limit-store"])

    def test_a_workers_parts(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        files = MetricFiles(directory, "101", "0")
        self.addCleanup(files.close)
        service = self.service(metrics=Metrics(files=files))
        self.assertEqual(
            [child.name for child in service],
            ["token-verifier", "rate-limit-store", "health-checks", "instance-gauge"],
        )

    def test_started_and_stopped_with_the_service(self) -> None:
        service = self.service(ALL_PARTS)
        service.startService()
        self.assertEqual([child.running for child in service], [True] * 5)
        self.successResultOf(service.stopService())
        self.assertEqual([child.running for child in service], [False] * 5)


class SettleHeapTests(ServiceTests):
    """
    C{settle_heap} is called once, when the service has started its parts.
    """

    def test_called_once_after_the_parts_started(self) -> None:
        service = self.service(ALL_PARTS)
        seen: List[List[bool]] = []
        service.settle_heap = lambda: seen.append([child.running for child in service])
        service.startService()
        self.assertEqual(seen, [[True] * 5])
        self.successResultOf(service.stopService())
        self.assertEqual(len(seen), 1)

    def test_twistd_settles_the_heap(self) -> None:
        from qeetgw.process.heap import settle
        from qeetgw.process.tap import Options, makeService

        options = Options(environ={"REQUIRE_AUTH": "false"}, dotenv_path="/nonexistent/.env")
        options.parseOptions([])
        service = makeService(options)
        assert isinstance(service, GatewayService)
        self.assertIs(service.settle_heap, settle)

    def test_not_by_default(self) -> None:
        self.assertIsNone(self.service().settle_heap)


class StartUpTests(ServiceTests):
    """
    The gateway's port, then METRICS_PORT, bound before the reactor runs.
    """

    def test_both_ports_bound_at_privileged_start(self) -> None:
        service = self.service({"METRICS_PORT": "tcp:9464"})
        service.privilegedStartService()
        self.assertEqual([port for port, *_ in self.reactor.tcpServers], [4000, 9464])
        self.assertEqual(
            self.messages(),
            ["metrics on 0.0.0.0:9464", "qeetgw listening on 0.0.0.0:4000"],
        )
        self.assertEqual(self.successResultOf(service.listening).getHost().port, 4000)
        # Starting does not listen again.
        service.startService()
        self.assertEqual(len(self.reactor.tcpServers), 2)
        self.assertTrue(service.getServiceNamed("metrics").running)

    def test_metrics_port_in_use_exits_1(self) -> None:
        service = self.service({"METRICS_PORT": "tcp:9464"}, reactor=_Reactor(taken=[9464]))
        with self.assertRaises(SystemExit) as raised:
            service.privilegedStartService()
        self.assertEqual(raised.exception.code, 1)
        [event] = self.critical()
        self.assertEqual(event["log_namespace"], "qeetgw.process.startup")
        self.assertEqual((event["purpose"], event["endpoint"]), ("for metrics on", "tcp:9464"))
        self.assertIn("Address already in use", event["error"])

    def test_metrics_port_in_use_as_a_daemon(self) -> None:
        service = self.service({"METRICS_PORT": "tcp:9464"}, reactor=_Reactor(taken=[9464]), daemon=True)
        with self.assertRaises(CannotListen) as raised:
            service.privilegedStartService()
        self.assertEqual(raised.exception.purpose, "for metrics on")
        self.assertEqual(len(self.critical()), 1)

    def test_gateway_port_in_use_is_said_first(self) -> None:
        service = self.service({"METRICS_PORT": "tcp:9464"}, reactor=_Reactor(taken=[4000, 9464]))
        with self.assertRaises(SystemExit):
            service.privilegedStartService()
        [event] = self.critical()
        self.assertEqual((event["purpose"], event["endpoint"]), ("on", self.made.config.listen))

    def test_metrics_port_in_use_without_privileged_start(self) -> None:
        """
        Started without privilegedStartService (as the tests start it), a
        port in use is the same critical line, and stops the reactor.
        """
        service = self.service({"METRICS_PORT": "tcp:9464"}, reactor=_Reactor(taken=[9464]))
        self.reactor.running = True
        service.startService()
        self.failureResultOf(service.listening, CannotListen)
        [event] = self.critical()
        self.assertEqual(event["purpose"], "for metrics on")
        self.assertTrue(self.reactor.hasStopped)


class StopTests(ServiceTests):
    """
    The drain first, then the children, and the drain waits for them.
    """

    def test_children_stop_after_the_drain(self) -> None:
        stops: List[str] = []
        service = self.service({"METRICS_PORT": "tcp:9464"}, delay=2.0)
        _Part("last", stops).setServiceParent(service)
        service.startService()
        stopping = service.stopService()
        self.assertTrue(self.made.gateway.readiness.draining)
        self.reactor.advance(1.9)
        self.assertEqual(stops, [])
        self.assertTrue(service.getServiceNamed("metrics").running)
        self.reactor.advance(0.1)
        self.assertEqual(stops, ["last"])
        self.successResultOf(stopping)
        self.assertFalse(service.getServiceNamed("metrics").running)
        self.assertTrue(self.pool.closed)
        self.assertEqual(self.messages()[-1], "shutdown complete")

    def test_the_last_started_stops_first(self) -> None:
        stops: List[str] = []
        service = self.service({"HEALTH_CHECK_INTERVAL_MS": "0"})
        for name in ("first", "second", "third"):
            _Part(name, stops).setServiceParent(service)
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual(stops, ["third", "second", "first"])

    def test_the_drain_waits_for_a_child(self) -> None:
        stops: List[str] = []
        child_stopped: "Deferred[None]" = Deferred()
        service = self.service()
        _Part("slow", stops, stopping=child_stopped).setServiceParent(service)
        service.startService()
        stopping = service.stopService()
        self.assertEqual(stops, ["slow"])
        self.assertNoResult(stopping)
        self.assertFalse(self.pool.closed)
        self.assertNotIn("shutdown complete", self.messages())
        child_stopped.callback(None)
        self.successResultOf(stopping)
        self.assertTrue(self.pool.closed)
        self.assertEqual(self.messages()[-1], "shutdown complete")

    def test_a_child_that_fails_to_stop_blocks_nothing(self) -> None:
        """
        The others are stopped, the pool closed, the shutdown complete; the
        failure is logged (as an unhandled error, once collected).
        """
        stops: List[str] = []
        service = self.service({"HEALTH_CHECK_INTERVAL_MS": "0"})
        _Part("first", stops).setServiceParent(service)
        _Part("broken", stops, broken=True).setServiceParent(service)
        _Part("last", stops).setServiceParent(service)
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual(stops, ["last", "broken", "first"])
        self.assertFalse(any(child.running for child in service))
        self.assertTrue(self.pool.closed)
        self.assertEqual(self.messages()[-1], "shutdown complete")
        gc.collect()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
