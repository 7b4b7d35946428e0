"""
Active health checks with real sockets: two instances of an upstream on
loopback, one failing its health path, the gateway probing every 100 ms;
and /health/services on a gateway just started, with the default interval.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from tests.e2e.support import (
    closed_port_url,
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    start_gateway,
)


class Instance(Resource):
    """
    Answers with its name; its health path answers C{health_status}.
    Counts the health probes and the other requests it gets.
    """

    isLeaf = True

    def __init__(self, name: str, health_status: int) -> None:
        super().__init__()
        self.name = name
        self.health_status = health_status
        self.probes = 0
        self.proxied: List[bytes] = []

    def render(self, request: IRequest) -> bytes:
        if request.path.endswith(b"/health"):
            self.probes += 1
            request.setResponseCode(self.health_status)
            return b'{"status":"UP"}' if self.health_status == 200 else b'{"status":"DOWN"}'
        self.proxied.append(request.path)
        return self.name.encode()


class ActiveHealthTests(TestCase):
    """
    HEALTH_CHECK_INTERVAL_MS=100 against two real instances.
    """

    timeout = 30

    @inlineCallbacks
    def test_failing_instance_becomes_unhealthy_and_gets_no_traffic(self) -> Any:
        good, bad = Instance("a", 200), Instance("b", 503)
        good_url, bad_url = listen_upstream(self, good), listen_upstream(self, bad)
        env = gateway_environment(
            good_url,
            USER_SERVICE_URL=f"{good_url},{bad_url}",
            HEALTH_CHECK_INTERVAL_MS="100",
        )
        _, port = yield start_gateway(self, env)
        user: Dict[str, Any] = {}
        # b's first result takes it out (the first round starts with the
        # gateway); wait at most 10 s.
        for _ in range(200):
            response = yield fetch(port, request(b"GET", b"/health/services"))
            [user] = [s for s in response.json()["services"] if s["name"] == "user-service"]
            if user["instances"][1]["state"] == "unhealthy":
                break
            yield deferLater(reactor, 0.05, lambda: None)
        else:
            self.fail(f"b never became unhealthy: {user}")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json()["status"], "ok")
        self.assertEqual(user["status"], "healthy")
        a, b = user["instances"]
        self.assertEqual((a["url"], a["state"]), (good_url, "healthy"))
        self.assertEqual((b["url"], b["state"], b["error"]), (bad_url, "unhealthy", "HTTP 503"))
        self.assertIsNotNone(b["lastCheck"])
        self.assertIsInstance(b["latencyMs"], int)
        self.assertGreaterEqual(bad.probes, 1)
        # /health/services itself probes nothing: the probes come from the
        # rounds alone, at most one per 100 ms.
        probes, started = bad.probes, reactor.seconds()
        for _ in range(10):
            yield fetch(port, request(b"GET", b"/health/services"))
        rounds = (reactor.seconds() - started) / 0.1
        self.assertLessEqual(bad.probes - probes, int(rounds) + 2)
        # The unhealthy instance gets no proxied traffic.
        bodies = []
        for n in range(6):
            response = yield fetch(port, request(b"GET", b"/api/v1/users/%d" % (n,)))
            bodies.append(response.body)
        self.assertEqual(bodies, [b"a"] * 6)
        self.assertEqual(bad.proxied, [])


class FirstSecondTests(TestCase):
    """
    /health/services right after start-up, with the default interval (10 s):
    it is true from the first request, not after three background rounds.
    """

    timeout = 30

    @inlineCallbacks
    def test_nothing_running_is_degraded_at_once(self) -> Any:
        # A host name, as in the default URLs: "localhost" may resolve to
        # both ::1 and 127.0.0.1, and every attempt is refused.
        down = closed_port_url().replace("127.0.0.1", "localhost")
        env = gateway_environment(down, HEALTH_CHECK_INTERVAL_MS="10000")
        _, port = yield start_gateway(self, env)
        response = yield fetch(port, request(b"GET", b"/health/services"))
        self.assertEqual(response.code, 503)
        body = response.json()
        self.assertEqual(body["status"], "degraded")
        self.assertEqual(len(body["services"]), 6)
        for service in body["services"]:
            self.assertEqual(
                (service["status"], service["error"]), ("unhealthy", "connection refused"), service
            )
            self.assertIsInstance(service["responseTime"], int)
            [instance] = service["instances"]
            self.assertEqual(
                (instance["state"], instance["error"]), ("unhealthy", "connection refused")
            )
            self.assertIsNotNone(instance["lastCheck"])

    @inlineCallbacks
    def test_a_running_upstream_is_healthy_at_once(self) -> Any:
        up = listen_upstream(self, Instance("a", 200))
        env = gateway_environment(up, HEALTH_CHECK_INTERVAL_MS="10000")
        _, port = yield start_gateway(self, env)
        response = yield fetch(port, request(b"GET", b"/health/services"))
        self.assertEqual(response.code, 200)
        body = response.json()
        self.assertEqual(body["status"], "ok")
        for service in body["services"]:
            self.assertEqual(service["status"], "healthy")
            self.assertIsInstance(service["responseTime"], int)
            [instance] = service["instances"]
            self.assertEqual(instance["state"], "healthy")
            self.assertNotIn("error", instance)
