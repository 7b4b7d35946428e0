"""
WebSocket tunnels through the gateway, on loopback: Twisted's own WebSocket
server (twisted.web.websocket, on wsproto) as the upstream, and Twisted's
WebSocket client, or raw bytes where a test needs a header or a frame of
its own.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import sys
import tracemalloc
from typing import Any, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.websocket import (
    ConnectionRejected,
    WebSocketClientEndpoint,
    WebSocketResource,
    WebSocketTransport,
)

from tests.e2e.support import (
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    spawn_gateway,
    start_gateway,
    wait_for,
)
from tests.e2e.test_metrics import parse
from tests.e2e.test_security import live_token
from tests.e2e.wsupstream import EchoServer
from tests.gateway import SECRET
from tests.test_project import PROJECT_ROOT


class Upstream:
    """
    The WebSocket upstream: its handshakes (the request each came with) and
    the connections it saw end.
    """

    def __init__(self) -> None:
        self.handshakes: List[IRequest] = []
        self.lost: List[Failure] = []

    def buildProtocol(self, request: IRequest) -> EchoServer:
        self.handshakes.append(request)
        return EchoServer(self.lost.append)


class Refusing(Resource):
    """
    An upstream that refuses every handshake with 403.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[IRequest] = []

    def render_GET(self, request: IRequest) -> bytes:
        self.seen.append(request)
        request.setResponseCode(403)
        return b"no"


class Client:
    """
    The client's WebSocket protocol: keeps what it receives.
    """

    def __init__(self) -> None:
        self.transport: Optional[WebSocketTransport] = None
        self.messages: List[Any] = []
        self.lost: Deferred[None] = Deferred()
        self.reason: Optional[Failure] = None

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.messages.append(message)

    def bytesMessageReceived(self, data: bytes) -> None:
        self.messages.append(bytes(data))

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.lost.callback(None)


class ClientFactory:
    def __init__(self) -> None:
        self.client = Client()

    def buildProtocol(self, url: str) -> Client:
        return self.client


def connect(url: str) -> "Deferred[Client]":
    """
    Open a WebSocket to C{url} with Twisted's client.
    """
    factory = ClientFactory()
    return ensureDeferred(WebSocketClientEndpoint.new(reactor, url).connect(factory))


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """
    One final frame of C{opcode}, masked as a client must (RFC 6455 5.3).
    """
    mask = os.urandom(4)
    assert len(payload) < 126
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


def handshake(path: bytes, *extra: bytes) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: gateway.test\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n"
        + b"".join(line + b"\r\n" for line in extra) + b"\r\n"
    )


class RawSocket(Protocol):
    """
    Writes bytes, keeps what comes back.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost.callback(None)


def server_frames(data: bytes) -> List[Tuple[int, bytes]]:
    """
    The (opcode, payload) of each short unmasked frame in C{data}.
    """
    frames = []
    while len(data) >= 2:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        assert length < 126 and not data[1] & 0x80
        if len(data) < 2 + length:
            break
        frames.append((opcode, data[2:2 + length]))
        data = data[2 + length:]
    return frames


class TunnelTests(TestCase):
    """
    A WebSocket through the gateway to a real WebSocket server.
    """

    timeout = 30

    @inlineCallbacks
    def gateway(self, resource: Optional[Resource] = None, **env: str) -> Any:
        self.upstream = Upstream()
        root = Resource()
        users = Resource()
        root.putChild(b"users", users)
        users.putChild(b"ws", resource if resource is not None else WebSocketResource(self.upstream))
        url = listen_upstream(self, root)
        self.events: List[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.service, port = yield start_gateway(self, gateway_environment(url, **env))
        self.port = port
        return f"ws://127.0.0.1:{port}/api/v1/users/ws"

    def tunnel_events(self) -> List[LogEvent]:
        return [e for e in self.events if e.get("log_namespace") == "qeetgw.tunnels"]

    @inlineCallbacks
    def test_text_and_binary_echo(self) -> Any:
        url = yield self.gateway()
        client = yield connect(url)
        client.transport.sendTextMessage("hello")
        client.transport.sendBytesMessage(b"\x00\x01\xfe\xff")
        yield wait_for(lambda: len(client.messages) == 2, "two echoes")
        self.assertEqual(client.messages, ["echo:hello", b"\x00\x01\xfe\xff"])
        [request] = self.upstream.handshakes
        # The path rewritten, the identity and correlation fields added.
        self.assertEqual(request.uri, b"/users/ws")
        self.assertIsNotNone(request.requestHeaders.getRawHeaders(b"x-correlation-id"))
        client.transport.loseConnection()
        yield client.lost
        yield wait_for(lambda: self.upstream.lost, "the upstream to see the close")
        [ended] = yield wait_for(self.tunnel_events, "the tunnel event")
        self.assertEqual(ended["closed_by"], "client")
        self.assertGreater(ended["to_upstream"], 0)
        self.assertGreater(ended["to_client"], 0)
        access = [e for e in self.events if e.get("log_namespace") == "qeetgw.access"]
        self.assertEqual([e["status"] for e in access], [101])

    @inlineCallbacks
    def test_metrics(self) -> Any:
        """
        The open tunnels by service, the bytes each way, and the handshake
        counted once as a 1xx request, not as a request in flight.
        """
        url = yield self.gateway(METRICS_PORT="tcp:0:interface=127.0.0.1")
        metrics_port = self.service.getServiceNamed("metrics").endpoint.port.getHost().port

        def scrape() -> Any:
            return fetch(metrics_port, request(b"GET", b"/metrics")).addCallback(lambda r: parse(r.body))

        client = yield connect(url)
        client.transport.sendTextMessage("hello")
        yield wait_for(lambda: client.messages, "the echo")
        service = frozenset({("service", "user-service")})
        samples = yield scrape()
        self.assertEqual(samples[("qeetgw_websocket_tunnels", service)], 1)
        self.assertEqual(samples[("qeetgw_upstream_requests_in_flight", service)], 0)
        up = samples[("qeetgw_websocket_bytes_total", service | {("direction", "to_upstream")})]
        down = samples[("qeetgw_websocket_bytes_total", service | {("direction", "to_client")})]
        # A masked frame of 5 bytes is 11; the echo, unmasked, 2 + 10.
        self.assertEqual((up, down), (11, 12))
        client.transport.loseConnection()
        yield client.lost
        yield wait_for(self.tunnel_events, "the tunnel event")
        samples = yield scrape()
        self.assertEqual(samples[("qeetgw_websocket_tunnels", service)], 0)
        requests = {
            dict(labels)["status_class"]: value
            for (name, labels), value in samples.items()
            if name == "qeetgw_requests_total" and dict(labels).get("service") == "user-service"
        }
        self.assertEqual(requests, {"1xx": 1})

    @inlineCallbacks
    def test_upstream_closes(self) -> Any:
        """
        The client sees the upstream's close frame, then the end of the
        stream.
        """
        yield self.gateway()
        raw = RawSocket()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), raw)
        raw.transport.write(handshake(b"/api/v1/users/ws") + masked_frame(0x1, b"bye"))
        yield raw.lost
        frames = server_frames(raw.received.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(frames[-1], (0x8, b"\x03\xe8"))
        [ended] = yield wait_for(self.tunnel_events, "the tunnel event")
        self.assertEqual(ended["closed_by"], "upstream")

    @inlineCallbacks
    def test_refused_handshake_is_relayed(self) -> Any:
        refusing = Refusing()
        url = yield self.gateway(refusing)
        failure = yield self.assertFailure(connect(url), ConnectionRejected)
        self.assertEqual(failure.args[0].code, 403)
        self.assertEqual(len(refusing.seen), 1)
        self.assertEqual(self.tunnel_events(), [])

    @inlineCallbacks
    def test_no_token_no_handshake(self) -> Any:
        url = yield self.gateway(REQUIRE_AUTH="true", JWT_SECRET=SECRET)
        failure = yield self.assertFailure(connect(url), ConnectionRejected)
        self.assertEqual(failure.args[0].code, 401)
        self.assertEqual(self.upstream.handshakes, [])

    @inlineCallbacks
    def test_token_and_first_frame_with_the_handshake(self) -> Any:
        """
        A client that sends its first frame in the same write as its
        handshake (with a bearer token) gets the echo: the bytes after the
        head go through the tunnel.
        """
        yield self.gateway(REQUIRE_AUTH="true", JWT_SECRET=SECRET)
        raw = RawSocket()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), raw)
        raw.transport.write(
            handshake(b"/api/v1/users/ws", b"Authorization: Bearer " + live_token().encode("ascii"))
            + masked_frame(0x1, b"early")
        )
        yield wait_for(lambda: b"\r\n\r\n" in raw.received and server_frames(raw.received.split(b"\r\n\r\n", 1)[1]), "the 101 and a frame")
        head, rest = raw.received.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertIn(b"\r\nUpgrade: websocket", head)
        self.assertIn(b"\r\nSec-Websocket-Accept: ", head.title())
        self.assertEqual(server_frames(rest)[0], (0x1, b"echo:early"))
        [request] = self.upstream.handshakes
        self.assertIsNotNone(request.requestHeaders.getRawHeaders(b"x-user-id"))
        raw.transport.loseConnection()
        yield raw.lost

    @inlineCallbacks
    def test_token_in_the_query(self) -> Any:
        """
        With JWT_QUERY_PARAM, a browser's handshake carries its token in the
        query string: accepted, taken out of the target the upstream gets,
        and in no log event.
        """
        yield self.gateway(REQUIRE_AUTH="true", JWT_SECRET=SECRET, JWT_QUERY_PARAM="access_token")
        secret_token = live_token()
        raw = RawSocket()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), raw)
        raw.transport.write(handshake(b"/api/v1/users/ws?room=7&access_token=" + secret_token.encode("ascii")))
        yield wait_for(lambda: b"\r\n\r\n" in raw.received, "an answer")
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 101 "), raw.received[:60])
        [request] = self.upstream.handshakes
        self.assertEqual(request.uri, b"/users/ws?room=7")
        self.assertIsNone(request.requestHeaders.getRawHeaders(b"authorization"))
        self.assertIsNotNone(request.requestHeaders.getRawHeaders(b"x-user-id"))
        raw.transport.loseConnection()
        yield raw.lost
        yield wait_for(self.tunnel_events, "the tunnel event")
        logged = [str(event) + formatEvent(event) for event in self.events]
        self.assertTrue(logged)
        self.assertEqual([text for text in logged if secret_token in text], [])

    @inlineCallbacks
    def test_query_token_off_by_default(self) -> Any:
        yield self.gateway(REQUIRE_AUTH="true", JWT_SECRET=SECRET)
        raw = RawSocket()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), raw)
        raw.transport.write(handshake(b"/api/v1/users/ws?access_token=" + live_token().encode("ascii")))
        yield wait_for(lambda: b"\r\n\r\n" in raw.received, "an answer")
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 401 "), raw.received[:60])
        self.assertEqual(self.upstream.handshakes, [])
        raw.transport.loseConnection()
        yield raw.lost

    @inlineCallbacks
    def test_refused_origin(self) -> Any:
        yield self.gateway(CORS_ORIGINS="https://shop.example")
        for origin, status in [(b"https://evil.example", b"403"), (b"https://shop.example", b"101")]:
            raw = RawSocket()
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), raw)
            raw.transport.write(handshake(b"/api/v1/users/ws", b"Origin: " + origin))
            yield wait_for(lambda: b"\r\n\r\n" in raw.received, "an answer")
            self.assertTrue(raw.received.startswith(b"HTTP/1.1 " + status + b" "), raw.received[:60])
            raw.transport.loseConnection()
            yield raw.lost
        # Only the allowed origin's handshake reached the upstream.
        [request] = self.upstream.handshakes
        self.assertEqual(request.requestHeaders.getRawHeaders(b"origin"), [b"https://shop.example"])

    @inlineCallbacks
    def test_idle_timeout(self) -> Any:
        url = yield self.gateway(WEBSOCKET_IDLE_TIMEOUT_MS="300")
        client = yield connect(url)
        yield client.lost
        [ended] = yield wait_for(self.tunnel_events, "the tunnel event")
        self.assertEqual(ended["closed_by"], "idle")

    @inlineCallbacks
    def test_max_tunnels(self) -> Any:
        url = yield self.gateway(WEBSOCKET_MAX_TUNNELS="1")
        first = yield connect(url)
        failure = yield self.assertFailure(connect(url), ConnectionRejected)
        self.assertEqual(failure.args[0].code, 503)
        first.transport.loseConnection()
        yield first.lost
        yield wait_for(self.tunnel_events, "the first tunnel to end")
        again = yield connect(url)
        again.transport.loseConnection()
        yield again.lost

    @inlineCallbacks
    def test_drain_waits_for_a_tunnel_through_the_grace(self) -> Any:
        """
        On shutdown an open tunnel is a request in flight: it keeps working
        through the grace, then is closed.
        """
        url = yield self.gateway(SHUTDOWN_GRACE_MS="3000")
        client = yield connect(url)
        stopped = self.service.stopService()
        client.transport.sendTextMessage("still there")
        yield wait_for(lambda: client.messages, "an echo during the drain", within=2.5)
        self.assertFalse(stopped.called)
        self.assertEqual(client.messages, ["echo:still there"])
        yield stopped
        yield client.lost
        [ended] = yield wait_for(self.tunnel_events, "the tunnel event")
        self.assertEqual((ended["closed_by"], ended["clean"]), ("gateway", True))

    @inlineCallbacks
    def test_drain_sends_going_away(self) -> Any:
        """
        At the end of the grace both sides get a close frame 1001: the
        client unmasked, then the end of the stream.
        """
        yield self.gateway(SHUTDOWN_GRACE_MS="300")
        raw = RawSocket()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), raw)
        raw.transport.write(handshake(b"/api/v1/users/ws") + masked_frame(0x1, b"hi"))
        yield wait_for(lambda: b"echo:hi" in raw.received, "the echo")
        yield self.service.stopService()
        yield raw.lost
        head, frames = raw.received.split(b"\r\n\r\n", 1)
        self.assertEqual(server_frames(frames), [(0x1, b"echo:hi"), (0x8, b"\x03\xe9")])
        yield wait_for(lambda: self.upstream.lost, "the upstream to see the close")

    @inlineCallbacks
    def test_other_upgrades_not_forwarded(self) -> Any:
        """
        C{Upgrade: h2c} is not WebSocket: the request goes on as plain
        HTTP/1.1, without the Upgrade field.
        """
        seen: List[IRequest] = []

        class Plain(Resource):
            isLeaf = True

            def render_GET(self, request: IRequest) -> bytes:
                seen.append(request)
                return b"plain"

        yield self.gateway(Plain())
        raw = RawSocket()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), raw)
        raw.transport.write(
            b"GET /api/v1/users/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        yield wait_for(lambda: raw.received.endswith(b"plain"), "the plain answer")
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 200 "))
        [request] = seen
        self.assertIsNone(request.requestHeaders.getRawHeaders(b"upgrade"))
        self.assertIsNone(request.requestHeaders.getRawHeaders(b"http2-settings"))
        raw.transport.loseConnection()
        yield raw.lost


class _UpstreamProcess(ProcessProtocol):
    """
    The upstream of L{tests.e2e.wsupstream}, in a process of its own: its
    port once it prints it.
    """

    def __init__(self) -> None:
        self.port: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._out = b""

    def outReceived(self, data: bytes) -> None:
        self._out += data
        if b"\n" in self._out and not self.port.called:
            self.port.callback(int(self._out.split(b"\n")[0]))

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class SlowReaderTests(TestCase):
    """
    A 10 MiB message toward a client that does not read: the gateway stops
    reading the upstream, and holds far less than the message.
    """

    timeout = 60

    @inlineCallbacks
    def test_memory_bounded(self) -> Any:
        process = _UpstreamProcess()
        transport = reactor.spawnProcess(
            process, sys.executable, [sys.executable, "-m", "tests.e2e.wsupstream"],
            env=dict(os.environ), path=PROJECT_ROOT,
        )

        def stop() -> Any:
            transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(stop)
        upstream_port = yield process.port
        _, port = yield start_gateway(self, gateway_environment(f"http://127.0.0.1:{upstream_port}"))
        raw = RawSocket()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
        raw.transport.write(handshake(b"/api/v1/users/ws"))
        yield wait_for(lambda: b"\r\n\r\n" in raw.received, "the 101")
        size = 10 * 1024 * 1024
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        raw.transport.pauseProducing()
        raw.transport.write(masked_frame(0x1, b"big %d" % (size,)))
        # Long enough for the upstream to have sent all it could.
        yield deferLater(reactor, 2.0, lambda: None)
        _, peak = tracemalloc.get_traced_memory()
        self.assertLess(peak, 4 * 1024 * 1024)
        raw.transport.resumeProducing()
        head_length = raw.received.index(b"\r\n\r\n") + 4
        # A binary frame of 10 MiB: a 10-byte header, then the payload.
        yield wait_for(lambda: len(raw.received) >= head_length + 10 + size, "the whole message", within=30)
        self.assertEqual(raw.received[head_length:head_length + 2], b"\x82\x7f")
        raw.transport.loseConnection()
        yield raw.lost


class RawUpstream(Protocol):
    """
    A WebSocket upstream written by hand: answers the handshake with 101 and
    keeps every byte that comes after it.
    """

    def __init__(self) -> None:
        self.head = b""
        self.after = b""
        self.switched = False
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if not self.switched:
            self.head += data
            if b"\r\n\r\n" in self.head:
                self.switched = True
                self.head, self.after = self.head.split(b"\r\n\r\n", 1)
                key = [line.split(b":", 1)[1].strip() for line in self.head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:")][0]
                accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
            return
        self.after += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost.callback(None)


class GoingAwayBothWaysTests(TestCase):
    """
    At the end of the drain's grace the upstream gets a masked close frame
    1001 too, between two frames of the client's.
    """

    timeout = 30

    @inlineCallbacks
    def test_upstream_gets_a_masked_1001(self) -> Any:
        upstreams: List[RawUpstream] = []

        def build(_: Any) -> RawUpstream:
            upstreams.append(RawUpstream())
            return upstreams[-1]

        factory = Factory.forProtocol(RawUpstream)
        factory.buildProtocol = build  # type: ignore[method-assign]
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}"
        service, port = yield start_gateway(self, gateway_environment(url, SHUTDOWN_GRACE_MS="200"))
        raw = RawSocket()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
        first = masked_frame(0x1, b"to the upstream")
        raw.transport.write(handshake(b"/api/v1/users/ws") + first)
        yield wait_for(lambda: upstreams and upstreams[0].after == first, "the client's frame upstream")
        yield service.stopService()
        upstream = upstreams[0]
        yield upstream.lost
        self.assertTrue(upstream.after.startswith(first))
        close = upstream.after[len(first):]
        self.assertEqual(close[:2], b"\x88\x82")
        mask = close[2:6]
        self.assertEqual(bytes(b ^ mask[i % 4] for i, b in enumerate(close[6:])), b"\x03\xe9")
        yield raw.lost
        self.assertTrue(raw.received.endswith(b"\x88\x02\x03\xe9"))


class TwistdDrainTests(TestCase):
    """
    C{twistd qeetgw} on SIGTERM with a tunnel open: the tunnel works through
    the grace, gets its close frame 1001, and the process exits 0.
    """

    timeout = 60

    @inlineCallbacks
    def test_sigterm_with_a_tunnel_open(self) -> Any:
        upstream = Upstream()
        root = Resource()
        users = Resource()
        root.putChild(b"users", users)
        users.putChild(b"ws", WebSocketResource(upstream))
        env = gateway_environment(listen_upstream(self, root), SHUTDOWN_GRACE_MS="1500")
        process = spawn_gateway(self, env)
        port = yield process.port
        raw = RawSocket()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
        raw.transport.write(handshake(b"/api/v1/users/ws") + masked_frame(0x1, b"one"))
        yield wait_for(lambda: b"echo:one" in raw.received, "the first echo")
        process.terminate()
        yield wait_for(lambda: process.logged("qeetgw.process.service", "draining"), "draining")
        raw.transport.write(masked_frame(0x1, b"two"))
        yield wait_for(lambda: b"echo:two" in raw.received, "an echo during the grace")
        code = yield process.ended
        self.assertEqual(code, 0, process.text())
        yield raw.lost
        frames = server_frames(raw.received.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(frames[-1], (0x8, b"\x03\xe9"))
        [ended] = process.logged("qeetgw.tunnels")
        self.assertEqual(ended["closed_by"], "gateway")


class TLSTunnelTests(TestCase):
    """
    A WebSocket through a gateway that terminates TLS (C{--port ssl:...}):
    the tunnel's client side is a TLS transport.
    """

    timeout = 60

    @inlineCallbacks
    def test_echo_and_close_over_tls(self) -> Any:
        from cryptography.hazmat.primitives import serialization
        from twisted.internet.endpoints import wrapClientTLS
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        from qeetgw.config import load_config
        from qeetgw.process.service import GatewayService
        from qeetgw.site import build_site
        from tests.e2e.test_tls import make_ca_and_leaf

        upstream = Upstream()
        root = Resource()
        users = Resource()
        root.putChild(b"users", users)
        users.putChild(b"ws", WebSocketResource(upstream))
        upstream_url = listen_upstream(self, root)
        ca_pem, key, certificate = make_ca_and_leaf("localhost")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key_file = os.path.join(directory, "key.pem")
        cert_file = os.path.join(directory, "cert.pem")
        with open(key_file, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        with open(cert_file, "wb") as out:
            out.write(certificate.public_bytes(serialization.Encoding.PEM))
        listen = f"ssl:0:interface=127.0.0.1:privateKey={key_file}:certKey={cert_file}"
        config = load_config(gateway_environment(upstream_url), {}, {"LISTEN": listen})
        gateway = build_site(config, reactor)
        service = GatewayService(config.listen, gateway.site, gateway.upstreams, 1.0)
        service.startService()
        self.addCleanup(service.stopService)
        port = yield service.listening
        raw = RawSocket()
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(ca_pem)),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        )
        yield connectProtocol(endpoint, raw)
        raw.transport.write(handshake(b"/api/v1/users/ws") + masked_frame(0x1, b"secure"))
        yield wait_for(lambda: b"echo:secure" in raw.received, "the echo over TLS")
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 101 "))
        raw.transport.write(masked_frame(0x1, b"bye"))
        yield raw.lost
        frames = server_frames(raw.received.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(frames, [(0x1, b"echo:secure"), (0x8, b"\x03\xe8")])
        yield wait_for(lambda: upstream.lost, "the upstream's end")
