"""
Tests for L{qeetgw.upstream.activehealth}: background health checks on a fake clock,
first against in-memory upstreams through treq's L{StubTreq}, then through
the whole gateway in memory (L{tests.gateway.MemoryGateway}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from qeetgw.config import load_config
from qeetgw.upstream.activehealth import ActiveHealthChecker
from qeetgw.upstream.health import HealthChecker
from qeetgw.upstream.services import ServiceUpstream, service_upstreams
from tests.gateway import NOW, MemoryGateway
from tests.memory import get

SERVICES = ["AUTH", "USER", "PRODUCT", "ORDER", "PAYMENT", "INVENTORY"]
TWO = "http://a.test,http://b.test"


def host_of(request: IRequest) -> str:
    """
    The host name a request was sent to (no port).
    """
    return request.requestHeaders.getRawHeaders(b"host")[0].decode().partition(":")[0]


class Instances(Resource):
    """
    Every instance at once, told apart by the Host header.

    @ivar health: host -> the status its health path answers with, or
        L{None} to hang; hosts not listed answer 200.
    @ivar requests: (host, path) of every request, in arrival order.
    @ivar pending: the hung requests.
    """

    isLeaf = True

    def __init__(self, **health: Optional[int]) -> None:
        super().__init__()
        self.health: Dict[str, Optional[int]] = {
            host.replace("_", "."): status for host, status in health.items()
        }
        self.requests: List[Tuple[str, bytes]] = []
        self.pending: List[IRequest] = []

    def render(self, request: IRequest) -> Any:
        host = host_of(request)
        self.requests.append((host, request.path))
        if b"health" not in request.path:
            return host.encode()
        status = self.health.get(host, 200)
        if status is None:
            self.pending.append(request)
            return NOT_DONE_YET
        request.setResponseCode(status)
        return b'{"status":"UP"}'


def upstreams_of(clock: Clock, **env: str) -> Mapping[str, ServiceUpstream]:
    """
    The ServiceUpstreams of a configuration where every service is on
    http://other.test unless C{env} says otherwise.
    """
    settings = {f"{name}_SERVICE_URL": "http://other.test" for name in SERVICES}
    settings["REQUIRE_AUTH"] = "false"
    settings.update(env)
    return service_upstreams(load_config(settings), clock)


class CheckerTests(SynchronousTestCase):
    """
    L{ActiveHealthChecker} against in-memory instances: user-service has
    instances a.test and b.test, the others one instance each.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.instances = Instances()
        self.stub = StubTreq(self.instances)
        self.upstreams = upstreams_of(self.clock, USER_SERVICE_URL=TWO)
        self.checker = ActiveHealthChecker(self.upstreams, self.stub, self.clock, 1000)

    def round(self) -> None:
        """
        Let one interval pass and the probes it starts be answered.
        """
        self.clock.advance(1)
        self.stub.flush()

    def user(self) -> Dict[str, Any]:
        """
        user-service's entry of the report.
        """
        [user] = [s for s in self.checker.report().to_json()["services"] if s["name"] == "user-service"]
        return user

    def state_of(self, host: str) -> str:
        [entry] = [i for i in self.user()["instances"] if i["url"] == f"http://{host}"]
        return entry["state"]

    def test_rejects_a_zero_interval(self) -> None:
        self.assertRaises(ValueError, ActiveHealthChecker, self.upstreams, self.stub, self.clock, 0)

    def test_first_round_at_start_then_every_interval(self) -> None:
        self.checker.startService()
        self.addCleanup(self.checker.stopService)
        self.stub.flush()
        # Every instance of every service, at its service's health path, at once.
        self.assertEqual(
            sorted(self.instances.requests),
            sorted(
                [("a.test", b"/actuator/health"), ("b.test", b"/actuator/health")]
                + [("other.test", b"/actuator/health")] * 2
                + [("other.test", b"/health")] * 3
            ),
        )
        self.assertEqual(self.checker.rounds, 1)
        self.clock.advance(0.999)
        self.stub.flush()
        self.assertEqual(self.checker.rounds, 1)
        self.clock.advance(0.001)
        self.stub.flush()
        self.assertEqual(self.checker.rounds, 2)

    def test_every_interval(self) -> None:
        self.checker.startService()
        self.addCleanup(self.checker.stopService)
        for _ in range(3):
            self.round()
        self.assertEqual(self.checker.rounds, 4)
        self.assertEqual(len(self.instances.requests), 4 * 7)

    def test_before_the_first_result_unknown_never_healthy(self) -> None:
        report = self.checker.report()
        self.assertFalse(report.healthy)
        self.assertEqual(report.status, "degraded")
        self.assertEqual(
            self.user(),
            {
                "name": "user-service",
                "status": "unhealthy",
                "responseTime": None,
                "error": "no health check result yet",
                "instances": [
                    {"url": "http://a.test", "state": "unknown", "lastCheck": None,
                     "latencyMs": None, "ejections": 0},
                    {"url": "http://b.test", "state": "unknown", "lastCheck": None,
                     "latencyMs": None, "ejections": 0},
                ],
            },
        )
        self.assertEqual(self.instances.requests, [])
        # Unknown instances still get traffic: nothing says they are down.
        user = self.upstreams["user-service"].instances
        self.assertEqual(sorted(user.pick().url for _ in range(2)), ["http://a.test", "http://b.test"])

    def test_first_result_decides(self) -> None:
        """
        As in Envoy, the first check of an instance nothing is known of
        decides its state at once; the thresholds apply after that.
        """
        self.instances.health["b.test"] = 503
        self.checker.run_round()
        self.stub.flush()
        self.assertEqual((self.state_of("a.test"), self.state_of("b.test")), ("healthy", "unhealthy"))
        b = self.user()["instances"][1]
        self.assertEqual(b["error"], "HTTP 503")
        self.assertNotIn("failures", b)

    def test_unhealthy_after_three_failed_rounds_healthy_after_two_passed(self) -> None:
        self.checker.startService()
        self.addCleanup(self.checker.stopService)
        self.stub.flush()  # the first round: b passes
        self.instances.health["b.test"] = 503
        self.round()
        self.round()
        self.assertEqual(self.state_of("b.test"), "healthy")
        self.round()
        self.assertEqual(self.state_of("b.test"), "unhealthy")
        self.assertEqual(self.state_of("a.test"), "healthy")
        user = self.upstreams["user-service"].instances
        self.assertEqual([user.pick().url for _ in range(4)], ["http://a.test"] * 4)
        self.instances.health["b.test"] = 200
        self.round()
        self.assertEqual(self.state_of("b.test"), "unhealthy")
        self.round()
        self.assertEqual(self.state_of("b.test"), "healthy")
        self.assertEqual(
            sorted(user.pick().url for _ in range(4)), ["http://a.test"] * 2 + ["http://b.test"] * 2
        )

    def test_snapshot_fields(self) -> None:
        self.checker.startService()
        self.addCleanup(self.checker.stopService)
        self.stub.flush()  # the first round at NOW: everything passes
        self.instances.health.update({"a.test": None, "b.test": None})
        self.round()
        [a_probe, b_probe] = sorted(self.instances.pending, key=host_of)
        self.clock.advance(0.02)
        a_probe.setResponseCode(204)
        a_probe.finish()
        self.stub.flush()
        self.clock.advance(4.98)  # b's probe times out (GATEWAY_PROXY_TIMEOUT_MS)
        self.stub.flush()
        user = self.user()
        self.assertEqual(
            user["instances"],
            [
                {"url": "http://a.test", "state": "healthy",
                 "lastCheck": "2027-01-15T08:00:01.020Z", "latencyMs": 20, "ejections": 0},
                # Still healthy, and it says why: one failure of the three
                # that make it unhealthy.
                {"url": "http://b.test", "state": "healthy",
                 "lastCheck": "2027-01-15T08:00:06.000Z", "latencyMs": 5000, "ejections": 0,
                 "error": "timeout after 5000 ms", "failures": 1, "unhealthyThreshold": 3},
            ],
        )
        # The best instance's time.
        self.assertEqual((user["status"], user["responseTime"]), ("healthy", 20))

    def test_unhealthy_instance_says_how_far_it_is_from_healthy(self) -> None:
        self.instances.health["b.test"] = 503
        self.checker.run_round()
        self.instances.health["b.test"] = 200
        self.checker.run_round()
        self.stub.flush()
        b = self.user()["instances"][1]
        self.assertEqual(
            (b["state"], b.get("error"), b["passes"], b["healthyThreshold"]),
            ("unhealthy", None, 1, 2),
        )

    def test_service_timeout_bounds_its_probes(self) -> None:
        upstreams = upstreams_of(self.clock, USER_SERVICE_URL="http://a.test", USER_TIMEOUT_MS="300")
        checker = ActiveHealthChecker(upstreams, self.stub, self.clock, 1000)
        self.instances.health["a.test"] = None
        done = checker.run_round()
        self.stub.flush()
        self.clock.advance(0.299)
        self.stub.flush()
        # The other services answered; user-service's probe is still out.
        self.assertNoResult(done)
        self.clock.advance(0.001)
        self.stub.flush()
        self.successResultOf(done)
        [entry] = self.user_of(checker)["instances"]
        self.assertEqual((entry["error"], entry["latencyMs"]), ("timeout after 300 ms", 300))

    def user_of(self, checker: ActiveHealthChecker) -> Dict[str, Any]:
        [user] = [s for s in checker.report().to_json()["services"] if s["name"] == "user-service"]
        return user

    def test_probes_run_concurrently(self) -> None:
        self.instances.health.update({"a.test": None, "b.test": None})
        self.checker.run_round()
        self.stub.flush()
        self.assertEqual(len(self.instances.pending), 2)

    def test_a_slow_round_skips_ticks(self) -> None:
        """
        A round still waiting for a hung instance is not joined by another:
        the ticks that come meanwhile are skipped.
        """
        checker = ActiveHealthChecker(self.upstreams, self.stub, self.clock, 1000)
        self.instances.health["b.test"] = None
        checker.startService()  # the round starts; b hangs (timeout 5 s)
        self.addCleanup(checker.stopService)
        self.stub.flush()
        self.assertEqual(len(self.instances.requests), 7)
        for _ in range(4):
            self.round()
        self.assertEqual(len(self.instances.requests), 7)
        self.assertEqual(checker.rounds, 0)
        self.round()  # b's probe times out at 5 s: the round ends
        self.assertEqual(checker.rounds, 1)
        self.round()  # and the next tick starts a new one
        self.assertEqual(len(self.instances.requests), 14)

    def test_every_instance_unhealthy_is_an_unhealthy_service(self) -> None:
        self.instances.health.update({"a.test": 503, "b.test": 500})
        for _ in range(3):
            self.checker.run_round()
            self.stub.flush()
        report = self.checker.report()
        self.assertFalse(report.healthy)
        self.assertEqual(report.status, "degraded")
        user = self.user()
        self.assertEqual((user["status"], user["error"]), ("unhealthy", "HTTP 503"))
        self.assertEqual([i["state"] for i in user["instances"]], ["unhealthy", "unhealthy"])
        self.assertEqual(user["instances"][1]["error"], "HTTP 500")
        # Panic mode: the proxy still tries one rather than failing untried.
        self.assertIn(self.upstreams["user-service"].instances.pick().url, ["http://a.test", "http://b.test"])

    def test_a_passed_check_clears_the_error(self) -> None:
        self.instances.health["b.test"] = 503
        self.checker.run_round()
        self.stub.flush()
        self.assertEqual(self.user()["instances"][1]["error"], "HTTP 503")
        self.instances.health["b.test"] = 200
        self.checker.run_round()
        self.stub.flush()
        self.assertNotIn("error", self.user()["instances"][1])

    def test_one_event_per_state_change(self) -> None:
        self.instances.health["b.test"] = 503
        with capturedLogs() as events:
            for _ in range(5):
                self.checker.run_round()
                self.stub.flush()
            self.instances.health["b.test"] = 200
            for _ in range(3):
                self.checker.run_round()
                self.stub.flush()
        changes = [e for e in events if "state" in e and e.get("url") == "http://b.test"]
        self.assertEqual([e["state"] for e in changes], ["unhealthy", "healthy"])
        self.assertEqual(
            {k: changes[0][k] for k in ("service", "url", "error", "state")},
            {"service": "user-service", "url": "http://b.test", "error": "HTTP 503", "state": "unhealthy"},
        )

    def test_check_all_answers_recent_results_at_once(self) -> None:
        self.checker.run_round()
        self.stub.flush()
        self.clock.advance(5.9)  # within the interval plus the probe timeout
        report = self.successResultOf(self.checker.check_all())
        self.assertTrue(report.healthy)
        self.assertEqual(report.checked_at, NOW + 5.9)
        self.assertEqual(len(self.instances.requests), 7)

    def test_check_all_probes_instances_without_a_result(self) -> None:
        self.instances.health["b.test"] = 503
        answer = self.checker.check_all()
        self.stub.flush()
        report = self.successResultOf(answer)
        self.assertEqual(len(self.instances.requests), 7)
        self.assertTrue(report.healthy)
        user = self.user()
        self.assertEqual((user["status"], user["responseTime"]), ("healthy", 0))
        self.assertEqual([i["state"] for i in user["instances"]], ["healthy", "unhealthy"])
        # And the results steer traffic like any check.
        self.assertEqual(self.upstreams["user-service"].instances.pick().url, "http://a.test")

    def test_check_all_probes_only_stale_instances(self) -> None:
        self.checker.run_round()
        self.stub.flush()
        self.upstreams["user-service"].instances.update(["http://a.test", "http://b.test", "http://c.test"])
        self.clock.advance(1)
        self.successResultOf(self.checker.check_all())
        self.assertEqual(self.instances.requests[7:], [("c.test", b"/actuator/health")])
        # A result older than the interval (1 s) plus the probe timeout (5 s).
        self.clock.advance(5.001)
        self.successResultOf(self.checker.check_all())
        self.assertEqual(len(self.instances.requests), 8 + 7)

    def test_concurrent_requests_share_one_probe_per_instance(self) -> None:
        self.instances.health["b.test"] = None
        first = self.checker.check_all()
        second = self.checker.check_all()
        self.stub.flush()
        self.assertNoResult(first)
        self.assertEqual(len(self.instances.requests), 7)
        # A round started meanwhile joins the probe in flight too.
        self.checker.run_round()
        self.stub.flush()
        self.assertEqual(len(self.instances.requests), 7 + 6)
        [b_probe] = self.instances.pending
        b_probe.setResponseCode(200)
        b_probe.finish()
        self.stub.flush()
        for answer in (first, second):
            self.assertTrue(self.successResultOf(answer).healthy)

    def test_check_all_answers_within_the_bound(self) -> None:
        checker = ActiveHealthChecker(self.upstreams, self.stub, self.clock, 1000, answer_within_ms=2000)
        self.instances.health["b.test"] = None
        answer = checker.check_all()
        self.stub.flush()
        self.clock.advance(1.999)
        self.assertNoResult(answer)
        self.clock.advance(0.001)
        user = [s for s in self.successResultOf(answer).to_json()["services"] if s["name"] == "user-service"][0]
        # a passed; b has no result yet: unknown, which is not healthy.
        self.assertEqual([i["state"] for i in user["instances"]], ["healthy", "unknown"])
        self.assertEqual(user["status"], "healthy")
        self.clock.advance(3)  # b's probe (5 s) still ends and is recorded
        self.stub.flush()
        self.assertEqual(
            [(i.state, i.error) for i in checker.report().services[1].instances],
            [("healthy", None), ("unhealthy", "timeout after 5000 ms")],
        )

    def test_a_cancelled_answer_leaves_the_probes_running(self) -> None:
        self.instances.health["b.test"] = None
        answer = self.checker.check_all()
        self.stub.flush()
        answer.cancel()
        self.failureResultOf(answer)
        [b_probe] = self.instances.pending
        b_probe.setResponseCode(200)
        b_probe.finish()
        self.stub.flush()
        self.assertEqual(self.state_of("b.test"), "healthy")

    def test_stop_gives_up_the_round_in_flight(self) -> None:
        self.instances.health["b.test"] = None
        self.checker.startService()
        self.round()
        stopped = self.checker.stopService()
        self.stub.flush()
        self.successResultOf(stopped)
        # Nothing left scheduled: neither the loop nor a probe's timeout.
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The given-up probe says nothing about b.
        [_, b] = self.user()["instances"]
        self.assertEqual((b["lastCheck"], b.get("error")), (None, None))

    def test_stop_when_idle(self) -> None:
        self.checker.startService()
        self.successResultOf(self.checker.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Stopping twice is harmless.
        self.successResultOf(self.checker.stopService())

    def test_instances_dropped_by_dns_are_not_reported(self) -> None:
        self.instances.health["b.test"] = 503
        self.checker.run_round()
        self.stub.flush()
        self.upstreams["user-service"].instances.update(["http://a.test"])
        self.checker.run_round()
        self.stub.flush()
        self.assertEqual(
            [(i["url"], i.get("error")) for i in self.user()["instances"]], [("http://a.test", None)]
        )


def gateway(answer: Any = None, **env: str) -> MemoryGateway:
    """
    The whole gateway in memory, user-service on a.test and b.test.
    """
    return MemoryGateway({"REQUIRE_AUTH": "false", "USER_SERVICE_URL": TWO, **env}, answer=answer)


def health_by_host(down: Dict[str, int]) -> Any:
    """
    An upstream answer: the health path answers C{down}'s status for the
    hosts in it, everything else 200 with the host's name.
    """

    def answer(request: IRequest) -> bytes:
        host = host_of(request)
        if request.path.endswith(b"/health") and host in down:
            request.setResponseCode(down[host])
            return b'{"status":"DOWN"}'
        return host.encode()

    return answer


class GatewayTests(SynchronousTestCase):
    """
    The background checks through the whole gateway in memory.
    """

    def setUp(self) -> None:
        self.made = gateway(health_by_host({"b.test": 503}), HEALTH_CHECK_INTERVAL_MS="1000")
        checker = self.made.gateway.health_checker
        assert checker is not None
        self.checker = checker
        self.checker.startService()
        self.addCleanup(self.checker.stopService)

    def tick(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.made.clock.advance(1)
            self.made.agent.flush()

    def services(self) -> Tuple[int, Dict[str, Any]]:
        response = self.made.send(get(b"/health/services"))
        return response.code, response.json()

    def test_a_part(self) -> None:
        self.assertIn(self.checker, self.made.gateway.parts)

    def test_health_services_answers_without_probing(self) -> None:
        self.tick(3)
        seen = len(self.made.upstream.seen)
        for _ in range(5):
            code, body = self.services()
        self.assertEqual(len(self.made.upstream.seen), seen)
        self.assertEqual(code, 200)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["rateLimit"]["store"], "memory")
        [user] = [s for s in body["services"] if s["name"] == "user-service"]
        self.assertEqual(user["status"], "healthy")
        self.assertEqual(
            [(i["url"], i["state"], i.get("error")) for i in user["instances"]],
            [("http://a.test", "healthy", None), ("http://b.test", "unhealthy", "HTTP 503")],
        )
        self.assertEqual(user["instances"][1]["lastCheck"], "2027-01-15T08:00:03.000Z")

    def test_before_the_first_result_the_answer_waits_for_the_first_round(self) -> None:
        """
        The first round starts with the gateway; a request that comes before
        its results waits for them (sharing its probes) rather than calling
        a never-checked instance healthy.
        """
        code, body = self.services()
        self.assertEqual(len(self.made.upstream.seen), 7)
        self.assertEqual(code, 200)
        [user] = [s for s in body["services"] if s["name"] == "user-service"]
        self.assertEqual(
            [(i["state"], i["lastCheck"]) for i in user["instances"]],
            [("healthy", "2027-01-15T08:00:00.000Z"), ("unhealthy", "2027-01-15T08:00:00.000Z")],
        )

    def test_unhealthy_instance_gets_no_traffic(self) -> None:
        self.tick(3)
        bodies = [self.made.send(get(b"/api/v1/users/%d" % (n,))).body for n in range(6)]
        self.assertEqual(bodies, [b"a.test"] * 6)

    def test_traffic_returns_after_two_passed_rounds(self) -> None:
        self.tick(3)
        self.made.upstream._answer = health_by_host({})
        self.tick(2)
        bodies = sorted(self.made.send(get(b"/api/v1/users/%d" % (n,))).body for n in range(4))
        self.assertEqual(bodies, [b"a.test", b"a.test", b"b.test", b"b.test"])

    def test_every_instance_down_is_503(self) -> None:
        self.made.upstream._answer = health_by_host({"a.test": 503, "b.test": 503})
        self.tick(3)
        code, body = self.services()
        self.assertEqual(code, 503)
        self.assertEqual(body["status"], "degraded")
        [user] = [s for s in body["services"] if s["name"] == "user-service"]
        self.assertEqual((user["status"], user["error"]), ("unhealthy", "HTTP 503"))

    def test_shares_the_proxys_instances(self) -> None:
        """
        An ejection by the proxy (passive health) shows in /health/services:
        the checker and the proxy see the same instances.
        """
        made = gateway(
            lambda request: (request.setResponseCode(502), b"")[1] if host_of(request) == "b.test" else b"ok",
            HEALTH_CHECK_INTERVAL_MS="1000",
            OUTLIER_CONSECUTIVE_FAILURES="1",
            RETRY_MAX="0",
        )
        for n in range(2):
            made.send(get(b"/api/v1/users/%d" % (n,)))
        response = made.send(get(b"/health/services"))
        [user] = [s for s in response.json()["services"] if s["name"] == "user-service"]
        self.assertEqual(
            [(i["state"], i["ejections"]) for i in user["instances"]],
            [("healthy", 0), ("ejected", 1)],
        )


class OnDemandGatewayTests(SynchronousTestCase):
    """
    HEALTH_CHECK_INTERVAL_MS=0: no background checker; /health/services
    probes every instance when asked.
    """

    def setUp(self) -> None:
        self.made = gateway(health_by_host({"b.test": 503}), HEALTH_CHECK_INTERVAL_MS="0")

    def test_no_part(self) -> None:
        self.assertIsNone(self.made.gateway.health_checker)
        self.assertEqual(len(self.made.gateway.parts), 2)

    def test_probes_every_instance_when_asked(self) -> None:
        response = self.made.send(get(b"/health/services"))
        # Seven instances: two of user-service, one of each other service.
        self.assertEqual(len(self.made.upstream.seen), 7)
        self.assertEqual(response.code, 200)
        [user] = [s for s in response.json()["services"] if s["name"] == "user-service"]
        self.assertEqual(
            [(i["url"], i["state"], i["lastCheck"], i.get("error")) for i in user["instances"]],
            [
                ("http://a.test", "healthy", "2027-01-15T08:00:00.000Z", None),
                ("http://b.test", "unhealthy", "2027-01-15T08:00:00.000Z", "HTTP 503"),
            ],
        )
        self.made.send(get(b"/health/services"))
        self.assertEqual(len(self.made.upstream.seen), 14)

    def test_on_demand_probes_do_not_steer_traffic(self) -> None:
        for _ in range(5):
            self.made.send(get(b"/health/services"))
        bodies = sorted(self.made.send(get(b"/api/v1/users/%d" % (n,))).body for n in range(4))
        self.assertEqual(bodies, [b"a.test", b"a.test", b"b.test", b"b.test"])


class OnDemandCheckerTests(SynchronousTestCase):
    """
    L{HealthChecker} with several instances per service.
    """

    def test_healthy_while_one_instance_passes(self) -> None:
        clock = Clock()
        upstreams = upstreams_of(clock, USER_SERVICE_URL=TWO)
        config_services = [u.service for u in upstreams.values()]
        instances = Instances(b_test=503)
        stub = StubTreq(instances)
        checker = HealthChecker(
            config_services, stub, clock, 5000,
            instances={name: u.instances for name, u in upstreams.items()},
        )
        d = checker.check_all()
        stub.flush()
        report = self.successResultOf(d)
        self.assertTrue(report.healthy)
        user = report.services[1]
        self.assertEqual(user.name, "user-service")
        self.assertEqual([i.state for i in user.instances], ["healthy", "unhealthy"])
        # Not recorded: with background checks off, probes do not steer.
        self.assertEqual(
            [i.last_check for i in upstreams["user-service"].instances.instances], [None, None]
        )
