"""
Three instances of a real upstream on loopback behind one service.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.e2e.support import fetch, gateway_environment, listen_upstream, request, start_gateway


class Named(Resource):
    """
    Answers with its instance's name, and counts what it received.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.received: List[bytes] = []

    def render(self, request: Any) -> bytes:
        self.received.append(request.content.read())
        return self.name.encode()


class TrackingSite(Site):
    """
    A Site that can be killed like a process: no listening, no connections.
    """

    protocol = HTTPChannel  # not twisted's HTTP/2-negotiating wrapper

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.open: List[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.open.append(protocol)
        return protocol

    def kill(self) -> None:
        for protocol in self.open:
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()


class InstancesTests(TestCase):
    """
    Balancing and failover with real sockets.
    """

    timeout = 60

    @inlineCallbacks
    def test_spread_and_a_killed_instance(self) -> Any:
        upstreams = [Named(name) for name in "abc"]
        sites = [TrackingSite(resource) for resource in upstreams]
        ports = [reactor.listenTCP(0, site, interface="127.0.0.1") for site in sites]
        for port in ports:
            self.addCleanup(lambda p=port: p.stopListening() if p.connected else None)
        numbers = [port.getHost().port for port in ports]
        urls = ",".join(f"http://127.0.0.1:{number}" for number in numbers)
        env = gateway_environment(
            "http://127.0.0.1:1", USER_SERVICE_URL=urls, OUTLIER_CONSECUTIVE_FAILURES="1",
            OUTLIER_BASE_EJECTION_MS="300",
        )
        _, gateway = yield start_gateway(self, env)
        first = yield gatherResults([fetch(gateway, request(b"GET", b"/api/v1/users/1")) for _ in range(9)])
        self.assertEqual(Counter(response.body for response in first), {b"a": 3, b"b": 3, b"c": 3})
        # Instance b stops in the middle of the load: no client sees an error.
        yield ports[1].stopListening()
        sites[1].kill()
        later = []
        for _ in range(12):
            response = yield fetch(gateway, request(b"GET", b"/api/v1/users/1"))
            later.append(response)
        self.assertEqual([response.code for response in later], [200] * 12)
        self.assertEqual(set(response.body for response in later), {b"a", b"c"})
        # /health/services shows b ejected (the state the proxy balances on).
        health = yield fetch(gateway, request(b"GET", b"/health/services"))
        users = [s for s in health.json()["services"] if s["name"] == "user-service"][0]
        states = {instance["url"]: instance["state"] for instance in users["instances"]}
        self.assertEqual(states[f"http://127.0.0.1:{numbers[1]}"], "ejected")
        # A POST goes through too (its connection to b never opened).
        posted = yield fetch(gateway, request(b"POST", b"/api/v1/users", b'{"n":1}'))
        self.assertEqual(posted.code, 200)
        self.assertIn(b'{"n":1}', upstreams[0].received + upstreams[2].received)
        # b comes back on its port: once its ejection is over (300 ms, longer
        # for each time it was ejected again) it gets traffic again.
        ports[1] = reactor.listenTCP(numbers[1], sites[1], interface="127.0.0.1")
        self.addCleanup(ports[1].stopListening)
        deadline = time.monotonic() + 15
        while True:
            response = yield fetch(gateway, request(b"GET", b"/api/v1/users/1"))
            self.assertEqual(response.code, 200)
            if response.body == b"b":
                break
            if time.monotonic() > deadline:
                self.fail("b got no traffic within 15 s of coming back")
            yield deferLater(reactor, 0.05, lambda: None)


class SlowlyUnavailable(Resource):
    """
    Answers 503 after C{delay} seconds, and counts the requests it got.
    """

    isLeaf = True

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.requests = 0

    def render(self, request: Any) -> Any:
        self.requests += 1
        gone: List[object] = []
        request.notifyFinish().addErrback(gone.append)

        def answer() -> None:
            if not gone:
                request.setResponseCode(503)
                request.finish()

        reactor.callLater(self.delay, answer)
        return NOT_DONE_YET


class RetryBudgetTests(TestCase):
    """
    The retry budget bounds retries in flight, not only those waiting out
    their backoff.
    """

    timeout = 60

    @inlineCallbacks
    def test_every_instance_failing_adds_a_bounded_share_of_tries(self) -> Any:
        """
        RETRY_MAX=3 and three instances that all answer 503 after 50 ms; 40
        clients send 10 GETs each.  Were a retry counted only while it waits
        (the budget's old bug), the upstreams would get about 1.5 tries per
        request; counted until its try ends, 20% of the tries in flight
        bound them.
        """
        instances = [SlowlyUnavailable(0.05) for _ in range(3)]
        urls = ",".join(listen_upstream(self, instance) for instance in instances)
        env = gateway_environment(
            "http://127.0.0.1:1", USER_SERVICE_URL=urls, RETRY_MAX="3", HEALTH_CHECK_INTERVAL_MS="0",
        )
        _, gateway = yield start_gateway(self, env)

        @inlineCallbacks
        def client(number: int) -> Any:
            codes = []
            for n in range(10):
                response = yield fetch(gateway, request(b"GET", b"/api/v1/users/%d/%d" % (number, n)))
                codes.append(response.code)
            return codes

        results = yield gatherResults([client(number) for number in range(40)])
        self.assertEqual(Counter(code for codes in results for code in codes), Counter({503: 400}))
        tries = sum(instance.requests for instance in instances)
        self.assertGreater(tries, 400)  # some retries were made
        self.assertLessEqual(tries / 400, 1.35, f"{tries} tries for 400 requests")
