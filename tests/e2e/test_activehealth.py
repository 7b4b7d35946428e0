"""
Active health checks with real sockets: two instances of an upstream on
loopback, one failing its health path, the gateway probing every 100 ms.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from tests.e2e.support import fetch, gateway_environment, listen_upstream, request, start_gateway


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
        # Three failed rounds take b out: about 300 ms; wait at most 10 s.
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
        self.assertGreaterEqual(bad.probes, 3)
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
