"""
Rate limiting on real sockets: the memory store, one limit across two
gateway processes sharing a Redis, and a Redis outage.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.e2e.redisserver import (
    SHARED_PORT,
    SHARED_URL,
    RedisServer,
    connect,
    delete_keys,
    unique_prefix,
)
from tests.e2e.support import (
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    spawn_gateway,
    start_gateway,
)
from tests.e2e.upstreams import ScriptedUpstream


class MemoryStoreEndToEndTests(TestCase):
    """
    The default store through real sockets.
    """

    timeout = 30

    @inlineCallbacks
    def test_429_after_the_budget(self) -> Any:
        upstream = ScriptedUpstream()
        _, port = yield start_gateway(self, gateway_environment(listen_upstream(self, upstream), RATE_LIMIT_MAX="3"))
        codes = []
        for _ in range(4):
            response = yield fetch(port, request(b"GET", b"/api/v1/products/echo"))
            codes.append(response.code)
        self.assertEqual(codes, [200, 200, 200, 429])
        self.assertEqual(response.json()["error"]["code"], "TOO_MANY_REQUESTS")
        self.assertEqual(response.header(b"ratelimit-remaining"), b"0")
        self.assertEqual(len(upstream.seen), 3)


class TwoReplicaTests(TestCase):
    """
    Two gateway processes sharing one Redis enforce one combined limit.
    """

    timeout = 60

    @inlineCallbacks
    def test_one_limit_across_replicas(self) -> Any:
        prefix = unique_prefix()
        client = yield connect(SHARED_PORT)
        self.addCleanup(lambda: delete_keys(client, prefix).addCallback(lambda _: client.transport.loseConnection()))
        upstream_url = listen_upstream(self, ScriptedUpstream())
        env = gateway_environment(
            upstream_url, RATE_LIMIT_STORE="redis", REDIS_URL=SHARED_URL,
            RATE_LIMIT_REDIS_PREFIX=prefix, RATE_LIMIT_MAX="10", RATE_LIMIT_WINDOW_MS="60000",
        )
        first, second = spawn_gateway(self, env), spawn_gateway(self, env)
        ports = yield gatherResults([first.port, second.port])
        # Both are connected to Redis once /health/services says so.
        for port in ports:
            for _ in range(50):
                health = yield fetch(port, request(b"GET", b"/health/services"))
                if health.json()["rateLimit"]["status"] == "healthy":
                    break
                yield deferLater(reactor, 0.05, lambda: None)
            self.assertEqual(health.json()["rateLimit"]["store"], "redis")
        codes: List[int] = []
        for index in range(14):
            response = yield fetch(ports[index % 2], request(b"GET", b"/api/v1/orders/echo"))
            codes.append(response.code)
        self.assertEqual(codes.count(200), 10, codes)
        self.assertEqual(codes.count(429), 4, codes)
        self.assertEqual(codes[:10], [200] * 10)
        for process in (first, second):
            process.terminate()
        for process in (first, second):
            code = yield process.ended
            self.assertEqual(code, 0, process.text())


class OutageTests(TestCase):
    """
    Redis stops mid-run and comes back.
    """

    timeout = 60

    @inlineCallbacks
    def gateway_on(self, server: RedisServer, fail: str) -> Any:
        env = gateway_environment(
            listen_upstream(self, ScriptedUpstream()), RATE_LIMIT_STORE="redis", REDIS_URL=server.url,
            RATE_LIMIT_MAX="100", RATE_LIMIT_FAIL=fail, RATE_LIMIT_REDIS_TIMEOUT_MS="200",
        )
        service, port = yield start_gateway(self, env)
        yield self.until(port, lambda response: response.header(b"ratelimit-limit") == b"100")
        return port

    @inlineCallbacks
    def until(self, port: int, condition: Any, tries: int = 100) -> Any:
        """
        Send requests until C{condition(response)} holds (bounded).
        """
        for _ in range(tries):
            response = yield fetch(port, request(b"GET", b"/api/v1/users/echo"))
            if condition(response):
                return response
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail("condition never held")

    @inlineCallbacks
    def test_fail_open_then_recover(self) -> Any:
        server = yield RedisServer.started(self)
        port = yield self.gateway_on(server, "open")
        yield server.stop()
        for _ in range(5):
            response = yield fetch(port, request(b"GET", b"/api/v1/users/echo"))
            self.assertEqual(response.code, 200)
            self.assertIsNone(response.header(b"ratelimit-limit"))
        health = yield fetch(port, request(b"GET", b"/health/services"))
        self.assertEqual(health.json()["rateLimit"]["status"], "unhealthy")
        yield server.start()
        recovered = yield self.until(port, lambda response: response.header(b"ratelimit-limit") is not None)
        self.assertEqual(recovered.code, 200)

    @inlineCallbacks
    def test_fail_closed_refuses_until_back(self) -> Any:
        server = yield RedisServer.started(self)
        port = yield self.gateway_on(server, "closed")
        yield server.stop()
        response = yield fetch(port, request(b"GET", b"/api/v1/users/echo"))
        self.assertEqual(response.code, 503)
        self.assertEqual(response.json()["error"]["code"], "SERVICE_UNAVAILABLE")
        own = yield fetch(port, request(b"GET", b"/health"))
        self.assertEqual(own.code, 200)
        yield server.start()
        yield self.until(port, lambda response: response.code == 200)
