"""
Tests for L{qeetgw.clientlimits} and the channel that applies it
(L{qeetgw.server.GatewayChannel}), in memory: raw bytes over a
StringTransport, a L{MemoryReactorClock} for the timers.
"""

from __future__ import annotations

import random
import re
from typing import Any, List, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from qeetgw.clientlimits import ClientLimits, RequestHead, bad_request, error_response
from qeetgw.server import SEND_BYTES, GatewaySite
from tests.memory import Connection, get, parse_response, with_body

LIMITS = ClientLimits(
    header_timeout=10.0,
    body_timeout=30.0,
    keepalive_timeout=65.0,
    max_header_bytes=16384,
    max_connections=10000,
)


class Recording(Resource):
    """
    A leaf that counts what it renders and answers 200, or holds the request
    when C{hold} is set.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered: List[bytes] = []
        self.held: List[IRequest] = []
        self.hold = False

    def render(self, request: IRequest) -> Any:
        self.rendered.append(request.content.read())
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"text/plain")
        return b"ok"


class ChannelTestCase(SynchronousTestCase):
    """
    A site with L{Recording} behind it, and the events of L{qeetgw.clients}
    and the access log.
    """

    limits = LIMITS

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.resource = Recording()
        self.site = GatewaySite(self.resource, 1024 * 1024, self.clock, limits=self.limits)
        self.events: List[LogEvent] = []

        def observe(event: LogEvent) -> None:
            if event.get("log_namespace") in ("qeetgw.clients", "qeetgw.access"):
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def connect(self) -> Connection:
        return Connection(self.site)

    def assert_refused(
        self, connection: Connection, status: int, code: str, reason: Optional[str] = None
    ) -> None:
        """
        C{connection} got exactly one JSON envelope response with C{status}
        and C{code}, is closing, nothing was rendered, and one event said why.
        """
        raw = connection.transport.value()
        self.assertTrue(raw, "no response was written")
        response, rest = parse_response(raw)
        self.assertEqual(rest, b"")
        self.assertEqual(response.code, status)
        self.assertTrue(response.complete)
        self.assertEqual(response.json()["success"], False)
        self.assertEqual(response.json()["error"]["code"], code)
        self.assertEqual(response.header(b"connection"), b"close")
        self.assertEqual(response.header(b"content-type"), b"application/json; charset=utf-8")
        self.assertEqual(response.header(b"content-length"), b"%d" % (len(response.body),))
        correlation = response.header(b"x-correlation-id")
        self.assertIsNotNone(correlation)
        self.assertEqual(response.json()["error"]["correlationId"], correlation.decode())
        self.assertEqual(response.header(b"x-content-type-options"), b"nosniff")
        self.assertTrue(connection.transport.disconnecting)
        self.assertEqual(self.resource.rendered, [])
        refusals = [e for e in self.events if e["log_namespace"] == "qeetgw.clients"]
        self.assertEqual(len(refusals), 1, refusals)
        self.assertEqual(refusals[0]["status"], status)
        self.assertEqual(refusals[0]["client"], "203.0.113.9:50000")
        self.assertIn("limit", refusals[0])
        if reason is not None:
            self.assertEqual(refusals[0]["reason"], reason)
        # The refusal's event stands for the request: no access event too.
        connection.close()
        self.assertEqual(
            [e for e in self.events if e["log_namespace"] == "qeetgw.access"], []
        )

    def assert_ok(self, connection: Connection) -> None:
        response = connection.response()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.body, b"ok")


class HeaderDeadlineTests(ChannelTestCase):
    """
    Headers must be complete within the header timeout of the first byte.
    """

    def test_dribbled_headers(self) -> None:
        """
        A byte every half second never resets the deadline: 408 at 10 s.
        """
        connection = self.connect()
        raw = get(b"/", b"X-Long: " + b"a" * 100 + b"\r\n")
        for index in range(19):
            connection.send(raw[index:index + 1])
            self.clock.advance(0.5)
        self.assertEqual(connection.transport.value(), b"")
        connection.send(raw[19:20])
        self.clock.advance(0.5)
        self.assert_refused(connection, 408, "REQUEST_TIMEOUT", "header timeout")

    def test_partial_request_line(self) -> None:
        """
        Even before the request line is complete.
        """
        connection = self.connect()
        connection.send(b"GE")
        self.clock.advance(9.9)
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(0.1)
        self.assert_refused(connection, 408, "REQUEST_TIMEOUT")

    def test_deadline_starts_at_first_byte(self) -> None:
        """
        Time spent idle before the request does not count.
        """
        connection = self.connect()
        self.clock.advance(60)
        connection.send(get(b"/")[:5])
        self.clock.advance(9)
        connection.send(get(b"/")[5:])
        self.assert_ok(connection)
        self.assertFalse(connection.transport.disconnecting)

    def test_second_request_has_its_own_deadline(self) -> None:
        connection = self.connect()
        connection.send(get(b"/"))
        self.clock.advance(9)
        connection.transport.clear()
        connection.send(b"GET / HTTP/1.1\r\n")
        self.clock.advance(9)
        connection.send(b"Host: x\r\n\r\n")
        self.assert_ok(connection)
        self.assertEqual(len(self.resource.rendered), 2)


    def test_stray_crlf_after_a_body_is_idle(self) -> None:
        """
        The CRLF some clients send after a body starts no deadline: the
        connection is idle, under the keep-alive timeout.
        """
        connection = self.connect()
        connection.send(with_body(b"POST", b"/", b"hello") + b"\r\n")
        self.clock.advance(60)
        self.assertFalse(connection.transport.disconnecting)
        connection.transport.clear()
        connection.send(get(b"/"))
        self.assert_ok(connection)

    def test_bad_line_refused_as_it_arrives(self) -> None:
        """
        Not at the header deadline: the head is judged a line at a time
        while it is incomplete.
        """
        connection = self.connect()
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\nX A: b\r\n")
        self.assert_refused(connection, 400, "BAD_REQUEST", "invalid header name")

    def test_second_stray_crlf_refused(self) -> None:
        connection = self.connect()
        connection.send(b"\r\n\r\n")
        self.assert_refused(connection, 400, "BAD_REQUEST")


class BodyTimeoutTests(ChannelTestCase):
    """
    A body that stalls for the body timeout is refused.
    """

    def test_stalled_body(self) -> None:
        connection = self.connect()
        connection.send(with_body(b"POST", b"/", b"0123456789")[:-5])
        self.clock.advance(29)
        connection.send(b"5")
        self.clock.advance(29)
        self.assertEqual(connection.transport.value(), b"")
        self.clock.advance(1)
        self.assert_refused(connection, 408, "REQUEST_TIMEOUT", "body timeout")

    def test_stalled_chunked_body(self) -> None:
        connection = self.connect()
        connection.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
        )
        self.clock.advance(30)
        self.assert_refused(connection, 408, "REQUEST_TIMEOUT")

    def test_slow_but_moving_body(self) -> None:
        """
        A body whose bytes keep coming is not limited in total time.
        """
        connection = self.connect()
        body = b"x" * 10
        connection.send(with_body(b"POST", b"/", body)[:-10])
        for byte in body:
            self.clock.advance(20)
            connection.send(bytes([byte]))
        self.assert_ok(connection)
        self.assertEqual(self.resource.rendered, [body])


class KeepAliveTests(ChannelTestCase):
    """
    Idle keep-alive connections close after the keep-alive timeout.
    """

    def test_idle_after_response(self) -> None:
        connection = self.connect()
        connection.send(get(b"/"))
        self.assert_ok(connection)
        self.clock.advance(64.9)
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(connection.transport.disconnecting)
        idle = [e for e in self.events if e["log_namespace"] == "qeetgw.clients"]
        self.assertEqual([(e["reason"], e["limit"]) for e in idle], [("keep-alive timeout", 65.0)])

    def test_idle_from_connect(self) -> None:
        connection = self.connect()
        self.clock.advance(65)
        self.assertTrue(connection.transport.disconnecting)
        self.assertEqual(connection.transport.value(), b"")

    def test_not_while_answering(self) -> None:
        """
        A slow response is not cut off by any client timer.
        """
        self.resource.hold = True
        connection = self.connect()
        connection.send(get(b"/"))
        self.clock.advance(1000)
        self.assertFalse(connection.transport.disconnecting)
        request = self.resource.held[0]
        request.write(b"late")
        request.finish()
        self.assertEqual(connection.response().body, b"late")
        self.clock.advance(64)
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(connection.transport.disconnecting)

    def test_one_timer_per_idle_connection(self) -> None:
        """
        Idle connections cost one delayed call each, and nothing runs
        until it is due.
        """
        before = len(self.clock.getDelayedCalls())
        connections = [self.connect() for _ in range(50)]
        for connection in connections:
            connection.send(get(b"/"))
        self.assertEqual(len(self.clock.getDelayedCalls()) - before, 50)

    def test_abort_when_client_does_not_let_go(self) -> None:
        connection = self.connect()
        self.clock.advance(65)
        self.assertTrue(connection.transport.disconnecting)
        self.assertFalse(connection.transport.disconnected)
        self.clock.advance(15)
        self.assertTrue(connection.transport.disconnected)


class SizeTests(ChannelTestCase):
    """
    414 for a long request line, 431 for a large header block.
    """

    def test_request_line_at_limit(self) -> None:
        line = b"GET /" + b"a" * (8192 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
        self.assertEqual(len(line), 8192)
        connection = self.connect()
        connection.send(line + b"\r\nHost: x\r\n\r\n")
        self.assert_ok(connection)

    def test_request_line_over_limit(self) -> None:
        line = b"GET /" + b"a" * (8193 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
        connection = self.connect()
        connection.send(line + b"\r\nHost: x\r\n\r\n")
        self.assert_refused(connection, 414, "URI_TOO_LONG", "request line too long")

    def test_request_line_without_end(self) -> None:
        """
        Refused as soon as too much has arrived, not at the deadline.
        """
        connection = self.connect()
        connection.send(b"GET /" + b"a" * 9000)
        self.assert_refused(connection, 414, "URI_TOO_LONG")

    def test_pipelined_request_line_over_limit(self) -> None:
        connection = self.connect()
        connection.send(get(b"/") + b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
        response, rest = parse_response(connection.transport.value())
        self.assertEqual(response.code, 200)
        self.assertEqual(parse_response(rest)[0].code, 414)

    def test_header_block_over_limit(self) -> None:
        headers = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 1000) for n in range(17))
        connection = self.connect()
        connection.send(get(b"/", headers))
        self.assert_refused(connection, 431, "HEADERS_TOO_LARGE", "header block too large")

    def test_header_block_at_limit(self) -> None:
        # "Host: gateway.test\r\n" is 20 bytes; one more field fills the rest.
        filler = 16384 - 20 - len(b"X-Fill: \r\n")
        connection = self.connect()
        connection.send(get(b"/", b"X-Fill: " + b"v" * filler + b"\r\n"))
        self.assert_ok(connection)

    def test_one_endless_header_line(self) -> None:
        connection = self.connect()
        connection.send(b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 17000)
        self.assert_refused(connection, 431, "HEADERS_TOO_LARGE")

    def test_too_many_fields(self) -> None:
        headers = b"".join(b"X-H%d: v\r\n" % (n,) for n in range(100))
        connection = self.connect()
        connection.send(get(b"/", headers))  # with Host, 101 fields
        self.assert_refused(connection, 431, "HEADERS_TOO_LARGE", "too many header fields")

    def test_hundred_fields(self) -> None:
        headers = b"".join(b"X-H%d: v\r\n" % (n,) for n in range(99))
        connection = self.connect()
        connection.send(get(b"/", headers))
        self.assert_ok(connection)


class ConfiguredSizeTests(ChannelTestCase):
    """
    CLIENT_MAX_HEADER_BYTES is honoured.
    """

    limits = ClientLimits(max_header_bytes=1024)

    def test_small_limit(self) -> None:
        connection = self.connect()
        connection.send(get(b"/", b"X-A: " + b"v" * 1100 + b"\r\n"))
        self.assert_refused(connection, 431, "HEADERS_TOO_LARGE")


#: Requests refused as smuggling shapes or malformed, each with its reason.
SMUGGLING = [
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        "both Content-Length and Transfer-Encoding",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\n",
        "both Content-Length and Transfer-Encoding",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "differing Content-Length values",
    ),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!", "differing Content-Length values"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello", "repeated Content-Length"),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "repeated Content-Length",
    ),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", "invalid Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello", "invalid Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "invalid Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding other than chunked"),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding other than chunked",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding other than chunked",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
        "Transfer-Encoding other than chunked",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "repeated Transfer-Encoding",
    ),
    (
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding in an HTTP/1.0 request",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding other than chunked",
    ),
    (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",
        "obs-fold or whitespace before a header field",
    ),
    (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n\ttwo\r\n\r\n",
        "obs-fold or whitespace before a header field",
    ),
    (
        b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
        "obs-fold or whitespace before a header field",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
        "whitespace before a header colon",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
        "whitespace before a header colon",
    ),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "NUL, CR or LF in a header value"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", "NUL, CR or LF in a header value"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nContent-Length: 5\r\n\r\n", "NUL, CR or LF in a header value"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n", "invalid header name"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nJunk\r\n\r\n", "header line without a colon"),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "invalid chunked body",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        "invalid chunked body",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        "invalid chunked body",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        "invalid chunked body",
    ),
    (b"GET /\r\nHost: x\r\n\r\n", "malformed request line"),
]


class SmugglingTests(ChannelTestCase):
    """
    Each smuggling shape is answered 400 with the envelope and closed, and
    never reaches the resource tree.
    """

    def test_each_shape(self) -> None:
        for raw, reason in SMUGGLING:
            self.events.clear()
            self.resource.rendered.clear()
            connection = self.connect()
            connection.send(raw)
            self.assert_refused(connection, 400, "BAD_REQUEST", reason)

    def test_shape_byte_by_byte(self) -> None:
        """
        The same answers when the request arrives a byte at a time.
        """
        for raw, reason in SMUGGLING:
            self.events.clear()
            connection = self.connect()
            for index in range(len(raw)):
                connection.send(raw[index:index + 1])
            self.assert_refused(connection, 400, "BAD_REQUEST", reason)

    def test_after_a_good_request(self) -> None:
        """
        A pipelined smuggling attempt behind a good request: the good one is
        answered, the bad one refused.
        """
        connection = self.connect()
        connection.send(
            get(b"/")
            + b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        first, rest = parse_response(connection.transport.value())
        self.assertEqual(first.code, 200)
        second, _ = parse_response(rest)
        self.assertEqual(second.code, 400)
        self.assertEqual(second.json()["error"]["code"], "BAD_REQUEST")
        self.assertEqual(len(self.resource.rendered), 1)
        self.assertTrue(connection.transport.disconnecting)

    def test_accepted_framings(self) -> None:
        """
        What stays allowed: optional whitespace around C{chunked}, any case,
        one Content-Length.
        """
        for raw, body in [
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tChunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\n\r\nhello", b"hello"),
            (b"POST / HTTP/1.0\r\nHost: x\r\nContent-Length:5\r\n\r\nhello", b"hello"),
        ]:
            self.resource.rendered.clear()
            connection = self.connect()
            connection.send(raw)
            self.assertEqual(connection.response().code, 200, raw)
            self.assertEqual(self.resource.rendered, [body])


class ReadingTests(ChannelTestCase):
    """
    How the channel reads requests: pipelined ones in order, bodies and the
    requests after them in one read, methods, C{Expect: 100-continue}.
    """

    def responses(self, connection: Connection) -> List[Any]:
        raw, found = connection.transport.value(), []
        while raw:
            response, raw = parse_response(raw)
            found.append(response)
        return found

    def test_pipelined_in_one_read(self) -> None:
        connection = self.connect()
        connection.send(
            get(b"/1") + with_body(b"POST", b"/2", b"two") + b"\r\n" + get(b"/3")
        )
        self.assertEqual([r.code for r in self.responses(connection)], [200, 200, 200])
        self.assertEqual(self.resource.rendered, [b"", b"two", b""])
        self.assertFalse(connection.transport.disconnecting)

    def test_pipelined_while_answering(self) -> None:
        """
        Requests sent while one is answered wait for it, in order.
        """
        self.resource.hold = True
        connection = self.connect()
        connection.send(get(b"/1") + get(b"/2")[:10])
        connection.send(get(b"/2")[10:] + get(b"/3"))
        self.assertEqual(len(self.resource.held), 1)
        self.resource.hold = False
        held = self.resource.held.pop()
        held.write(b"first")
        held.finish()
        self.assertEqual([r.body for r in self.responses(connection)], [b"first", b"ok", b"ok"])
        self.assertEqual([e["path"] for e in self.events if e["log_namespace"] == "qeetgw.access"],
                         ["/1", "/2", "/3"])

    def test_reading_paused_past_16_kib_of_pipelined_bytes(self) -> None:
        self.resource.hold = True
        connection = self.connect()
        connection.send(get(b"/1"))
        filler = get(b"/2", b"X-Fill: " + b"v" * 9000 + b"\r\n")
        connection.send(filler)
        self.assertEqual(connection.transport.producerState, "producing")
        connection.send(filler)
        self.assertEqual(connection.transport.producerState, "paused")
        self.resource.hold = False
        self.resource.held.pop().finish()
        self.assertEqual(connection.transport.producerState, "producing")
        self.assertEqual([r.code for r in self.responses(connection)], [200, 200, 200])

    def test_any_token_is_a_method(self) -> None:
        seen: List[bytes] = []
        render = self.resource.render

        def record(request: IRequest) -> Any:
            seen.append(request.method)
            return render(request)

        self.resource.render = record  # type: ignore[method-assign]
        connection = self.connect()
        connection.send(get(b"/", method=b"BREW"))
        self.assert_ok(connection)
        self.assertEqual(seen, [b"BREW"])

    def test_expect_100_continue(self) -> None:
        connection = self.connect()
        connection.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        self.assertEqual(connection.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        connection.transport.clear()
        connection.send(b"hello")
        self.assert_ok(connection)
        self.assertEqual(self.resource.rendered, [b"hello"])

    def test_no_100_continue_without_a_body(self) -> None:
        connection = self.connect()
        connection.send(get(b"/", b"Expect: 100-continue\r\n"))
        self.assertTrue(connection.transport.value().startswith(b"HTTP/1.1 200 "))

    def test_http_1_0_closes_after_its_answer(self) -> None:
        connection = self.connect()
        connection.send(b"GET / HTTP/1.0\r\n\r\n" + get(b"/2"))
        self.assertEqual([r.code for r in self.responses(connection)], [200])
        self.assertTrue(connection.transport.disconnecting)
        self.assertEqual(len(self.resource.rendered), 1)
        # What comes after the last request is never read, nor kept.
        connection.send(get(b"/3") * 100)
        self.assertEqual(connection.channel._inbox, bytearray())
        self.assertEqual(len(self.resource.rendered), 1)

    def test_body_in_many_reads(self) -> None:
        """
        A body that arrives in pieces, the last with the next request.
        """
        body = bytes(range(256)) * 400
        raw = with_body(b"POST", b"/", body)
        head_end = raw.index(b"\r\n\r\n") + 4
        connection = self.connect()
        connection.send(raw[:head_end + 10])
        for start in range(head_end + 10, len(raw) - 100, 4096):
            connection.send(raw[start:min(start + 4096, len(raw) - 100)])
        connection.send(raw[len(raw) - 100:] + get(b"/next"))
        self.assertEqual(self.resource.rendered, [body, b""])
        self.assertEqual([r.code for r in self.responses(connection)], [200, 200])

    def test_chunked_body_in_many_reads(self) -> None:
        chunks = [bytes([65 + n]) * (1000 + n) for n in range(20)]
        raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks
        ) + b"0\r\n\r\n"
        connection = self.connect()
        for start in range(0, len(raw), 777):
            connection.send(raw[start:start + 777])
        self.assertEqual(self.resource.rendered, [b"".join(chunks)])
        self.assert_ok(connection)


class SendLimitTests(ChannelTestCase):
    """
    A client connection sends up to L{SEND_BYTES} in one call, over TCP and
    over the TCP connection beneath TLS.
    """

    def test_tcp(self) -> None:
        class TCP(StringTransport):
            SEND_LIMIT = 128 * 1024

        transport = TCP()
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        channel.makeConnection(transport)
        self.assertEqual(transport.SEND_LIMIT, SEND_BYTES)
        self.assertEqual(TCP.SEND_LIMIT, 128 * 1024)

    def test_beneath_tls(self) -> None:
        class TCP(StringTransport):
            SEND_LIMIT = 128 * 1024

        class TLS(StringTransport):
            def __init__(self) -> None:
                super().__init__()
                self.transport = TCP()

        transport = TLS()
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        channel.makeConnection(transport)
        self.assertEqual(transport.transport.SEND_LIMIT, SEND_BYTES)
        self.assertFalse(hasattr(transport, "SEND_LIMIT"))


class GeneratedHeadsTests(ChannelTestCase):
    """
    Requests with random damage (seeded: the same every run): each is
    answered the same whether it arrives whole or a few bytes at a time,
    either by the resource or with a refusal in the envelope; never a 500,
    never a failure logged.
    """

    BASES = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET /x HTTP/1.0\r\nAccept: */*\r\nX-A: b\r\n\r\n",
    ]
    PIECES = [
        b" ", b"\t", b":", b"\r", b"\n", b"\r\n", b"\x00", b"\x01", b"\x7f", b"\x80", b"a", b"0",
        b"5", b"-", b",", b"/", b"?", b"%", b"HTTP/1.1", b"chunked", b"Content-Length",
        b"Transfer-Encoding", b"GET", b"(",
    ]

    def outcome(self, raw: bytes, step: int) -> Any:
        self.events.clear()
        self.resource.rendered.clear()
        failures: List[LogEvent] = []
        globalLogPublisher.addObserver(failures.append)
        try:
            connection = self.connect()
            for start in range(0, len(raw), step):
                connection.send(raw[start:start + step])
        finally:
            globalLogPublisher.removeObserver(failures.append)
        self.assertEqual([e for e in failures if "log_failure" in e], [], raw)
        out = connection.transport.value()
        # (A status line follows the body before it, "ok", directly.)
        statuses = re.findall(rb"HTTP/1\.[01] (\d{3}) ", out)
        self.assertNotIn(b"500", statuses, raw)
        reasons = [e["reason"] for e in self.events if e["log_namespace"] == "qeetgw.clients"]
        return statuses, reasons, list(self.resource.rendered)

    def test_whole_or_in_pieces(self) -> None:
        rnd = random.Random(20261206)
        for _ in range(300):
            raw = bytearray(rnd.choice(self.BASES))
            for _ in range(rnd.randint(1, 3)):
                at = rnd.randint(0, len(raw))
                choice = rnd.random()
                if choice < 0.4:
                    raw[at:at] = rnd.choice(self.PIECES)
                elif choice < 0.7:
                    del raw[at:at + rnd.randint(1, 3)]
                else:
                    raw[at:at + 1] = rnd.choice(self.PIECES)
            whole = self.outcome(bytes(raw), len(raw) or 1)
            self.assertEqual(self.outcome(bytes(raw), 3), whole, bytes(raw))
            statuses, reasons, _ = whole
            for status in statuses:
                self.assertIn(status, (b"200", b"400", b"408", b"413", b"414", b"431"), bytes(raw))


class _ClientEnd:
    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.half_closed = 0
        self.lost: List[Any] = []

    def client_data(self, data: bytes) -> None:
        self.data.append(data)

    def client_half_closed(self) -> None:
        self.half_closed += 1

    def client_lost(self, reason: Any) -> None:
        self.lost.append(reason)


class SwitchProtocolsTests(ChannelTestCase):
    """
    A channel whose request switched protocols hands its connection to a
    tunnel.
    """

    def switched(self, early: bytes = b"") -> Any:
        self.resource.hold = True
        connection = self.connect()
        connection.send(get(b"/ws") + early)
        channel = connection.channel
        transport = channel.switch_protocols(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        self.assertIs(transport, connection.transport)
        end = _ClientEnd()
        channel.attach_tunnel(end)
        return connection, end

    def test_switch(self) -> None:
        connection, end = self.switched(b"\x81\x82early")
        self.assertEqual(connection.transport.value(), b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        # The channel no longer produces for the transport: the tunnel will.
        self.assertIsNone(connection.transport.producer)
        self.assertEqual(end.data, [b"\x81\x82early"])
        connection.send(b"more")
        self.assertEqual(end.data, [b"\x81\x82early", b"more"])
        self.assertTrue(IHalfCloseableProtocol.providedBy(connection.channel))
        connection.channel.readConnectionLost()
        self.assertEqual(end.half_closed, 1)
        self.assertFalse(connection.transport.disconnecting)

    def test_no_timer_of_the_channel(self) -> None:
        connection, _ = self.switched()
        self.clock.advance(10 ** 6)
        self.assertFalse(connection.transport.disconnecting)

    def test_closed(self) -> None:
        connection, end = self.switched()
        connection.close()
        self.assertEqual(len(end.lost), 1)


class ConnectionLimitTests(ChannelTestCase):
    """
    Past MAX_CONNECTIONS new connections are closed at once.
    """

    limits = ClientLimits(max_connections=2)

    def test_limit(self) -> None:
        first, second = self.connect(), self.connect()
        address = IPv4Address("TCP", "198.51.100.7", 4444)
        self.assertIsNone(self.site.buildProtocol(address))
        refused = [e for e in self.events if e["log_namespace"] == "qeetgw.clients"]
        self.assertEqual(
            [(e["reason"], e["client"], e["limit"]) for e in refused],
            [("too many connections", "198.51.100.7:4444", 2)],
        )
        # The open ones are unaffected.
        first.send(get(b"/"))
        self.assert_ok(first)
        second.close()
        self.assertIsNotNone(self.site.buildProtocol(address))


class RequestHeadTests(SynchronousTestCase):
    """
    The pure rules, without a channel.
    """

    def test_count_includes_line_ends(self) -> None:
        head = RequestHead(ClientLimits(max_header_bytes=1024))
        self.assertIsNone(head.request_line(b"GET / HTTP/1.1"))
        self.assertIsNone(head.header_line(b"A: " + b"v" * (1024 - 5)))
        self.assertEqual(head.header_bytes, 1024)
        refusal = head.header_line(b"B: c")
        assert refusal is not None
        self.assertEqual((refusal.status, refusal.limit), (431, 1024))

    def test_line_too_long(self) -> None:
        head = RequestHead(ClientLimits())
        self.assertEqual(head.line_too_long().status, 414)
        head.request_line(b"GET / HTTP/1.1")
        self.assertEqual(head.line_too_long().status, 431)

    def test_error_response(self) -> None:
        raw = error_response(bad_request("why"), "req-1", b"Thu, 01 Jan 1970 00:00:00 GMT")
        response, rest = parse_response(raw)
        self.assertEqual((response.code, rest), (400, b""))
        self.assertEqual(
            response.json(),
            {"success": False, "error": {"message": "Bad request: why", "code": "BAD_REQUEST", "correlationId": "req-1"}},
        )
