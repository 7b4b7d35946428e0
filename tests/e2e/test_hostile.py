"""
Clients that misbehave, end to end: the gateway in this process on a real
loopback port with small limits, an upstream that records what it saw, and
raw sockets.  Every wait is bounded and every connection closed.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from qeetgw.clientlimits import ClientLimits
from qeetgw.config import load_config
from tests.e2e.support import exchange, gateway_environment, listen_upstream, start_gateway
from tests.e2e.upstreams import ScriptedUpstream
from tests.memory import parse_response
from tests.test_clientlimits import SMUGGLING

SMALL = {
    "CLIENT_HEADER_TIMEOUT_MS": "300",
    "CLIENT_BODY_TIMEOUT_MS": "300",
    "KEEPALIVE_TIMEOUT_MS": "10000",
    "CLIENT_MAX_HEADER_BYTES": "8192",
}


class Client(Protocol):
    """
    A raw client: writes what it is told, keeps what it receives, and fires
    C{closed} (with the monotonic time) when the connection ends.
    """

    def __init__(self) -> None:
        self.received: List[bytes] = []
        self.closed: Deferred[float] = Deferred()
        self.open = False

    def connectionMade(self) -> None:
        self.open = True

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.open = False
        self.closed.callback(time.monotonic())

    def data(self) -> bytes:
        return b"".join(self.received)


class HostileTestCase(TestCase):
    """
    Starts the gateway with C{extra} settings in front of a recording
    upstream.
    """

    extra: Dict[str, str] = SMALL
    timeout = 60  # seconds, per test: nothing here may hang

    @inlineCallbacks
    def setUp(self) -> Any:
        self.upstream = ScriptedUpstream()
        env = gateway_environment(listen_upstream(self, self.upstream), **self.extra)
        self.service, self.port = yield start_gateway(self, env)
        self.site = self.service.site
        # The configured limits reach the running site.
        self.assertEqual(
            self.site.limits,
            ClientLimits.from_config(load_config(env, {}, {"LISTEN": "tcp:0:interface=127.0.0.1"})),
        )
        self.clients: List[Client] = []
        self.addCleanup(self._close_clients)

    def _close_clients(self) -> Any:
        waits = []
        for client in self.clients:
            if client.open:
                client.transport.abortConnection()
            waits.append(client.closed)
        return Deferred.fromCoroutine(self._wait_all(waits))

    async def _wait_all(self, waits: List[Deferred]) -> None:
        for wait in waits:
            await wait

    @inlineCallbacks
    def connect(self) -> Any:
        client = Client()
        self.clients.append(client)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5), client)
        return client

    @inlineCallbacks
    def wait_for(self, condition: Any, limit: float = 5.0) -> Any:
        """
        Poll C{condition} every 10 ms until it holds, for at most C{limit}.
        """
        deadline = time.monotonic() + limit
        while not condition():
            if time.monotonic() > deadline:
                self.fail("condition not met in time")
            yield deferLater(reactor, 0.01, lambda: None)

    @inlineCallbacks
    def get_ok(self, client: Optional[Client] = None) -> Any:
        """
        A normal request (on C{client}, or a new connection) gets 200 from
        the upstream; fires with the seconds it took.
        """
        if client is None:
            client = yield self.connect()
        before = len(client.data())
        started = time.monotonic()
        client.transport.write(b"GET /api/v1/users/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

        def complete() -> bool:
            data = client.data()[before:]
            if b"\r\n\r\n" not in data:
                return False
            return parse_response(data)[0].complete

        yield self.wait_for(complete)
        response = parse_response(client.data()[before:])[0]
        self.assertEqual(response.code, 200)
        return time.monotonic() - started

    def assert_envelope(self, raw: bytes, status: int, code: str) -> None:
        response, _ = parse_response(raw)
        self.assertEqual(response.code, status)
        self.assertEqual(response.json()["error"]["code"], code)
        self.assertEqual(response.header(b"connection"), b"close")
        self.assertIsNotNone(response.header(b"x-correlation-id"))


class TimeoutTests(HostileTestCase):
    """
    The header deadline and the body stall timeout, on real sockets.
    """

    @inlineCallbacks
    def test_dribbled_headers(self) -> Any:
        """
        A byte every 50 ms: 408 at the 300 ms deadline, not after the last
        byte.
        """
        client = yield self.connect()
        raw = b"GET /api/v1/users/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
        position = [0]

        def drip() -> None:
            if client.open and position[0] < len(raw):
                client.transport.write(raw[position[0]:position[0] + 1])
                position[0] += 1

        dripping = LoopingCall(drip)
        started = time.monotonic()
        dripping.start(0.05)
        try:
            closed_at = yield client.closed.addTimeout(5, reactor)
        finally:
            dripping.stop()
        elapsed = closed_at - started
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 1.5)
        self.assertLess(position[0], 40)  # it was still dripping
        self.assert_envelope(client.data(), 408, "REQUEST_TIMEOUT")
        self.assertEqual(self.upstream.seen, [])

    @inlineCallbacks
    def test_stalled_body(self) -> Any:
        client = yield self.connect()
        started = time.monotonic()
        client.transport.write(
            b"POST /api/v1/users/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 100\r\n\r\n" + b"x" * 10
        )
        closed_at = yield client.closed.addTimeout(5, reactor)
        self.assertLess(closed_at - started, 1.5)
        self.assert_envelope(client.data(), 408, "REQUEST_TIMEOUT")
        self.assertEqual(self.upstream.seen, [])


class RefusalTests(HostileTestCase):
    """
    Smuggling shapes, 414 and 431: answered and closed, nothing upstream.
    """

    @inlineCallbacks
    def test_smuggling_shapes(self) -> Any:
        for raw, reason in SMUGGLING:
            raw = raw.replace(b"POST / ", b"POST /api/v1/users/echo ").replace(
                b"GET / ", b"GET /api/v1/users/echo "
            )
            data, _ = yield exchange(self.port, raw, timeout=5)
            self.assert_envelope(data, 400, "BAD_REQUEST")
        self.assertEqual(self.upstream.seen, [])
        # The gateway still serves.
        yield self.get_ok()
        self.assertEqual(len(self.upstream.seen), 1)

    @inlineCallbacks
    def test_uri_too_long(self) -> Any:
        raw = b"GET /api/v1/users/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        data, _ = yield exchange(self.port, raw, timeout=5)
        self.assert_envelope(data, 414, "URI_TOO_LONG")
        self.assertEqual(self.upstream.seen, [])

    @inlineCallbacks
    def test_headers_too_large(self) -> Any:
        raw = b"GET /api/v1/users/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n"
        data, _ = yield exchange(self.port, raw, timeout=5)
        self.assert_envelope(data, 431, "HEADERS_TOO_LARGE")
        self.assertEqual(self.upstream.seen, [])

    @inlineCallbacks
    def test_too_many_fields(self) -> Any:
        fields = b"".join(b"X-F%d: v\r\n" % (n,) for n in range(101))
        raw = b"GET /api/v1/users/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n"
        data, _ = yield exchange(self.port, raw, timeout=5)
        self.assert_envelope(data, 431, "HEADERS_TOO_LARGE")
        self.assertEqual(self.upstream.seen, [])


class IdleConnectionTests(HostileTestCase):
    """
    500 idle keep-alive connections cost one timer each and slow nobody.
    """

    extra = dict(SMALL, MAX_CONNECTIONS="1000")
    timeout = 120

    @inlineCallbacks
    def test_five_hundred_idle(self) -> Any:
        baseline = yield self.get_ok()
        calls_before = len(reactor.getDelayedCalls())
        # Open before: the baseline's connection, kept alive.
        open_before = len(self.site.channels)
        idle = []
        for _ in range(500):
            idle.append((yield self.connect()))
        yield self.wait_for(lambda: len(self.site.channels) >= open_before + 500)
        # One keep-alive timer per connection, nothing periodic.
        added = len(reactor.getDelayedCalls()) - calls_before
        self.assertLessEqual(added, 500 + 5)
        took = yield self.get_ok()
        self.assertLess(took, max(1.0, baseline * 20))
        # They are still open: idle, not refused.
        self.assertTrue(all(client.open for client in idle))
        for client in idle:
            client.transport.loseConnection()
        # Left: the baseline's and the timed request's connections.
        yield self.wait_for(lambda: len(self.site.channels) <= open_before + 1)

    @inlineCallbacks
    def test_keepalive_timeout(self) -> Any:
        self.site.limits = ClientLimits(
            header_timeout=0.3, body_timeout=0.3, keepalive_timeout=0.3
        )
        client = yield self.connect()
        yield self.get_ok(client)
        started = time.monotonic()
        closed_at = yield client.closed.addTimeout(5, reactor)
        self.assertLess(closed_at - started, 1.5)


class ConnectionLimitTests(HostileTestCase):
    """
    A burst past MAX_CONNECTIONS is closed at once; the open connections
    keep working.
    """

    extra = dict(SMALL, MAX_CONNECTIONS="20")

    @inlineCallbacks
    def test_burst(self) -> Any:
        existing = []
        for _ in range(20):
            existing.append((yield self.connect()))
        yield self.wait_for(lambda: len(self.site.channels) == 20)
        burst = []
        for _ in range(10):
            burst.append((yield self.connect()))
        started = time.monotonic()
        for client in burst:
            closed_at = yield client.closed.addTimeout(5, reactor)
            self.assertLess(closed_at - started, 2.0)
            self.assertEqual(client.data(), b"")
        self.assertEqual(len(self.site.channels), 20)
        # The existing connections are unaffected.
        yield self.get_ok(existing[0])
        yield self.get_ok(existing[19])
        self.assertTrue(all(client.open for client in existing))
