"""
What the gateway's own upstream client (qeetgw/upstream/client.py) fixes
over twisted's Agent, on real loopback sockets: an upstream written with
raw bytes where the point is the exact bytes it sends.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import protocol, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.e2e.support import fetch, gateway_environment, listen_upstream, request, start_gateway
from tests.e2e.upstreams import ScriptedUpstream


class _RawAnswer(protocol.Protocol):
    """
    Answers every request head it receives with the factory's bytes, on a
    keep-alive connection, and records the heads.
    """

    def dataReceived(self, data: bytes) -> None:
        factory: RawUpstream = self.factory  # type: ignore[assignment]
        self._buffer = getattr(self, "_buffer", b"") + data
        while b"\r\n\r\n" in self._buffer:
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            factory.heads.append(head)
            self.transport.write(factory.answer)


class RawUpstream(protocol.Factory):
    """
    An upstream that sends C{answer} as it is, byte for byte.
    """

    protocol = _RawAnswer

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.heads: List[bytes] = []


def listen_raw(test: TestCase, answer: bytes) -> Any:
    """
    Serve C{answer} raw on a loopback port for the length of C{test}; return
    the factory and the upstream's base URL.
    """
    factory = RawUpstream(answer)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return factory, f"http://127.0.0.1:{port.getHost().port}"


class _OneAnswerEach(protocol.Protocol):
    """
    Answers the first request on its connection, keeping it open, and
    closes without an answer when a second arrives: an upstream whose
    keep-alive timeout ran out as the gateway reused the connection.
    """

    answered = False

    def dataReceived(self, data: bytes) -> None:
        factory: RawUpstream = self.factory  # type: ignore[assignment]
        factory.heads.append(data)
        if self.answered:
            self.transport.loseConnection()
        else:
            self.answered = True
            self.transport.write(factory.answer)


class UpstreamClientFixesTests(TestCase):
    """
    Connection-named fields, a HEAD's Content-Length and an empty query.
    """

    timeout = 30

    @inlineCallbacks
    def gateway_on(self, url: str) -> Any:
        _, port = yield start_gateway(self, gateway_environment(url))
        return port

    @inlineCallbacks
    def test_fields_named_in_connection_are_removed(self) -> Any:
        # RFC 9110 7.6.1: a proxy MUST remove the fields the Connection
        # field names, as well as the standard hop-by-hop fields.
        upstream, url = listen_raw(
            self,
            b"HTTP/1.1 200 OK\r\nConnection: X-Private, x-other, keep-alive\r\n"
            b"X-Private: secret\r\nX-Other: 1\r\nKeep-Alive: timeout=5\r\n"
            b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n"
            b"X-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
        )
        port = yield self.gateway_on(url)
        response = yield fetch(port, request(b"GET", b"/api/v1/users/1"))
        self.assertEqual((response.code, response.body), (200, b"ok"))
        self.assertEqual(response.header(b"x-kept"), b"yes")
        for name in [b"x-private", b"x-other", b"keep-alive", b"proxy-connection", b"te", b"upgrade"]:
            self.assertIsNone(response.header(name), name)
        # The gateway's own Connection field is about the client's connection.
        self.assertEqual(response.header(b"connection"), b"close")

    @inlineCallbacks
    def test_head_content_length_reaches_the_client(self) -> Any:
        upstream, url = listen_raw(
            self, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n"
        )
        port = yield self.gateway_on(url)
        response = yield fetch(port, request(b"HEAD", b"/api/v1/users/1"), head=True)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header(b"content-length"), b"1234")
        self.assertEqual(response.body, b"")
        self.assertTrue(upstream.heads[0].startswith(b"HEAD /users/1 HTTP/1.1\r\n"))
        # The kept connection carries the next request: no body was awaited.
        again = yield fetch(port, request(b"HEAD", b"/api/v1/users/2"), head=True)
        self.assertEqual(again.header(b"content-length"), b"1234")
        self.assertEqual(len(upstream.heads), 2)

    @inlineCallbacks
    def test_empty_query_reaches_the_upstream(self) -> Any:
        upstream = ScriptedUpstream()
        port = yield self.gateway_on(listen_upstream(self, upstream))
        response = yield fetch(port, request(b"GET", b"/api/v1/users/1?"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json()["uri"], "/users/1?")
        response = yield fetch(port, request(b"GET", b"/api/v1/users/1"))
        self.assertEqual(response.json()["uri"], "/users/1")


class DeadKeptConnectionTests(TestCase):
    """
    A kept connection the upstream closed as it was reused.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.upstream = RawUpstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.upstream.protocol = _OneAnswerEach
        port = reactor.listenTCP(0, self.upstream, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        _, self.port = yield start_gateway(self, gateway_environment(url))

    @inlineCallbacks
    def test_idempotent_request_sent_again_on_a_new_connection(self) -> Any:
        first = yield fetch(self.port, request(b"GET", b"/api/v1/users/1"))
        second = yield fetch(self.port, request(b"GET", b"/api/v1/users/2"))
        self.assertEqual((first.code, second.code), (200, 200))
        self.assertEqual(second.body, b"ok")
        # The first connection's request, the dead reuse, and the new one.
        self.assertEqual(len(self.upstream.heads), 3)

    @inlineCallbacks
    def test_post_is_not_sent_again(self) -> Any:
        first = yield fetch(self.port, request(b"GET", b"/api/v1/users/1"))
        second = yield fetch(self.port, request(b"POST", b"/api/v1/users/2", b"{}"))
        self.assertEqual((first.code, second.code), (200, 502))
        self.assertEqual(len(self.upstream.heads), 2)
