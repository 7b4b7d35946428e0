"""
Tests for a refusal the client can read (issue 11, part 5), in memory: the
lingering close of L{qeetgw.server.GatewayChannel} after every early
refusal, and the chunk-size lines judged as they are read.  Raw bytes over a
StringTransport, a L{MemoryReactorClock} for the timers.
"""

from __future__ import annotations

import tracemalloc
from typing import Any, List, Optional

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableDescriptor, IHalfCloseableProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from qeetgw.clientlimits import ClientLimits
from qeetgw.config import load_config
from qeetgw.root import GatewayRoot
from qeetgw.server import GatewayChannel, GatewaySite
from tests.memory import HOST, PEER, get, parse_response, with_body
from tests.test_clientlimits import Recording

MIB = 1024 * 1024
LIMITS = ClientLimits()

#: The head of a POST whose declared length is over the 1 MiB limit.
OVER_LIMIT_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n"
#: The head of a chunked POST.
CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@implementer(IHalfCloseableDescriptor)
class HalfCloseTransport(StringTransport):
    """
    A StringTransport that can shut its writing side, as a TCP transport
    can; C{write_shut} says it was.
    """

    write_shut = False

    def loseWriteConnection(self) -> None:
        """
        Shut the writing side (recorded only).
        """
        self.write_shut = True


class HalfCloseConnection:
    """
    A client connection to C{site} over a L{HalfCloseTransport} (or, with
    C{half_close=False}, a plain StringTransport: a transport that cannot
    half-close, as TLS's).
    """

    def __init__(self, site: GatewaySite, half_close: bool = True) -> None:
        factory = HalfCloseTransport if half_close else StringTransport
        self.transport = factory(peerAddress=PEER, hostAddress=HOST)
        self.channel: GatewayChannel = site.buildProtocol(PEER)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        """
        Deliver C{data} as if it arrived from the client.
        """
        self.channel.dataReceived(data)

    def close(self) -> None:
        """
        The client goes away.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.channel.connectionLost(Failure(ConnectionDone()))


class LingerTestCase(SynchronousTestCase):
    """
    A site with a 1 MiB body limit whose root answers 413 as the gateway's
    does, and the events of L{qeetgw.clients}.
    """

    limits = LIMITS

    def setUp(self) -> None:
        """
        The site, its clock and the event observer.
        """
        self.clock = MemoryReactorClock()
        self.resource = Recording()
        root = GatewayRoot(self.resource, self.resource)
        self.site = GatewaySite(root, MIB, self.clock, limits=self.limits)
        self.events: List[LogEvent] = []

        def observe(event: LogEvent) -> None:
            """
            Keep the events of qeetgw.clients.
            """
            if event.get("log_namespace") == "qeetgw.clients":
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def connect(self, half_close: bool = True) -> HalfCloseConnection:
        """
        A new client connection (half-closeable unless told not).
        """
        return HalfCloseConnection(self.site, half_close)

    def refused(self, raw: bytes = OVER_LIMIT_HEAD, half_close: bool = True) -> HalfCloseConnection:
        """
        A connection that sent C{raw} and was refused.
        """
        connection = self.connect(half_close)
        connection.send(raw)
        self.assertTrue(connection.transport.value(), "no answer was written")
        return connection

    def assert_lingering(self, connection: HalfCloseConnection, status: Optional[int] = None) -> None:
        """
        C{connection} was answered (with C{status}), its writing side is
        shut and it is still open, reading.
        """
        if status is not None:
            response, rest = parse_response(connection.transport.value())
            self.assertEqual((response.code, rest), (status, b""))
            self.assertEqual(response.header(b"connection"), b"close")
        transport = connection.transport
        self.assertTrue(transport.write_shut)
        self.assertFalse(transport.disconnecting)
        self.assertIn(connection.channel, self.site.lingering)
        self.assertIn(connection.channel, self.site.channels)
        self.assertTrue(IHalfCloseableProtocol.providedBy(connection.channel))

    def assert_closed(self, connection: HalfCloseConnection, why: str) -> None:
        """
        The linger of C{connection} ended for C{why}, and it is closing.
        """
        self.assertTrue(connection.transport.disconnecting)
        self.assertNotIn(connection.channel, self.site.lingering)
        ended = [e for e in self.events if e.get("reason") == "lingering close"]
        self.assertEqual([e["why"] for e in ended], [why])
        self.assertEqual(ended[0]["client"], "203.0.113.9:50000")


class EveryRefusalLingersTests(LingerTestCase):
    """
    Each early refusal is answered, then the connection half-closes and
    lingers: 413, and 400, 408, 414 and 431.
    """

    def test_413_declared_length(self) -> None:
        """
        A Content-Length over the limit: 413, half-closed, and the channel no
        longer the transport's producer.
        """
        connection = self.refused()
        self.assert_lingering(connection, 413)
        self.assertEqual(connection.transport.producer, None)

    def test_413_of_a_chunk_past_a_full_limit(self) -> None:
        """
        A chunked body that filled the limit exactly, then one more chunk:
        413 on its size line, then lingering.
        """
        connection = self.refused(CHUNKED_HEAD + b"100000\r\n" + b"x" * MIB + b"\r\n1\r\nx")
        self.assert_lingering(connection, 413)

    def test_400_smuggling(self) -> None:
        """
        Content-Length with Transfer-Encoding: 400, then lingering.
        """
        connection = self.refused(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.assert_lingering(connection, 400)

    def test_400_invalid_chunked_body(self) -> None:
        """
        A malformed chunk size: 400, then lingering.
        """
        connection = self.refused(CHUNKED_HEAD + b"zz\r\n")
        self.assert_lingering(connection, 400)

    def test_408_header_timeout(self) -> None:
        """
        Headers not complete in time: 408, then lingering.
        """
        connection = self.connect()
        connection.send(b"GET / HTTP/1.1\r\n")
        self.clock.advance(10)
        self.assert_lingering(connection, 408)

    def test_408_body_timeout(self) -> None:
        """
        A stalled body: 408, then lingering.
        """
        connection = self.connect()
        connection.send(with_body(b"POST", b"/", b"0123456789")[:-5])
        self.clock.advance(30)
        self.assert_lingering(connection, 408)

    def test_414(self) -> None:
        """
        A request line too long: 414, then lingering.
        """
        connection = self.refused(b"GET /" + b"a" * 9000)
        self.assert_lingering(connection, 414)

    def test_431(self) -> None:
        """
        A header block too large: 431, then lingering.
        """
        connection = self.refused(b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 17000)
        self.assert_lingering(connection, 431)

    def test_answered_requests_do_not_linger(self) -> None:
        """
        A request that was read whole and answered with Connection: close
        closes as before, and an ordinary connection is not half-closeable
        (a client that half-closes after its request is closed at once).
        """
        connection = self.connect()
        self.assertFalse(IHalfCloseableProtocol.providedBy(connection.channel))
        connection.send(get(b"/", b"Connection: close\r\n"))
        self.assertEqual(parse_response(connection.transport.value())[0].code, 200)
        self.assertTrue(connection.transport.disconnecting)
        self.assertFalse(connection.transport.write_shut)
        self.assertEqual(self.site.lingering, set())
        self.assertFalse(IHalfCloseableProtocol.providedBy(connection.channel))


class LingerStateTests(LingerTestCase):
    """
    While lingering: what arrives is discarded unparsed; the connection
    closes when the client closes, when it is quiet for the linger timeout,
    at the linger time, or at the byte cap.
    """

    def test_discarded_unparsed(self) -> None:
        """
        A whole request sent after the refusal is neither parsed nor
        answered.
        """
        connection = self.refused()
        answered = connection.transport.value()
        connection.send(get(b"/") + get(b"/other"))
        self.assertEqual(connection.transport.value(), answered)
        self.assertEqual(self.resource.rendered, [])
        self.assertEqual(connection.channel._lingered, len(get(b"/") + get(b"/other")))

    def test_client_closes(self) -> None:
        """
        The client's end of the stream (readConnectionLost) closes ours.
        """
        connection = self.refused()
        connection.send(b"x" * 1000)
        self.clock.advance(1)
        connection.channel.readConnectionLost()
        self.assert_closed(connection, "client closed")
        ended = [e for e in self.events if e.get("reason") == "lingering close"][0]
        self.assertEqual((ended["discarded"], ended["seconds"]), (1000, 1.0))
        connection.close()
        self.assertEqual(self.site.channels, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_client_resets(self) -> None:
        """
        A connection lost while lingering ends the linger.
        """
        connection = self.refused()
        connection.close()
        self.assertEqual(self.site.lingering, set())
        self.assertEqual(self.site.channels, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_linger_timeout(self) -> None:
        """
        Closed after 5 s without a byte; each byte restarts the wait.
        """
        connection = self.refused()
        self.clock.advance(4.9)
        connection.send(b"x")
        self.clock.advance(4.9)
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(0.1)
        self.assert_closed(connection, "linger timeout")

    def test_linger_time(self) -> None:
        """
        A client that keeps sending is closed 30 s after the refusal.
        """
        connection = self.refused()
        for _ in range(7):
            self.clock.advance(4)
            connection.send(b"x")
        # 28 s: the next wait is the 2 s left, not the 5 s timeout.
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(1.9)
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(0.1)
        self.assert_closed(connection, "linger time")

    def test_bytes_after_the_linger_time(self) -> None:
        """
        A byte that arrives when the linger time is up closes at once.
        """
        connection = self.refused()
        for _ in range(6):
            self.clock.advance(4.5)
            connection.send(b"x")
        self.clock.advance(3.0)  # 30 s, and the timer not yet run
        connection.channel.dataReceived(b"x")
        self.assert_closed(connection, "linger time")

    def test_abort_if_the_answer_is_never_sent(self) -> None:
        """
        Once the linger ends, a client that does not let go (the answer
        still unsent) is aborted after the abort timeout.
        """
        connection = self.refused()
        self.clock.advance(5)
        self.assert_closed(connection, "linger timeout")
        self.assertFalse(connection.transport.disconnected)
        self.clock.advance(15)
        self.assertTrue(connection.transport.disconnected)


class ByteCapTests(LingerTestCase):
    """
    CLIENT_LINGER_MAX_BYTES: the most discarded.
    """

    limits = ClientLimits(linger_max_bytes=MIB)

    def test_byte_cap(self) -> None:
        """
        Closed once 1 MiB was discarded, not before.
        """
        connection = self.refused()
        chunk = b"x" * 65536
        for _ in range(15):
            connection.send(chunk)
        self.assertFalse(connection.transport.disconnecting)
        connection.send(chunk)
        self.assert_closed(connection, "linger bytes")


class NothingBufferedTests(LingerTestCase):
    """
    Discarded bytes never accumulate: 100 MiB through a lingering channel
    leaves its buffers empty and memory where it was.
    """

    limits = ClientLimits(linger_max_bytes=1024 * MIB)

    def feed(self, connection: HalfCloseConnection) -> None:
        """
        100 MiB in 64 KiB reads; the peak of memory allocated meanwhile
        stays far below what buffering them would take.
        """
        chunk = b"x" * 65536
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(1600):
            connection.send(chunk)
        _, peak = tracemalloc.get_traced_memory()
        self.assertLess(peak - before, MIB)
        channel = connection.channel
        self.assertEqual(channel._lingered, 100 * MIB)
        # The channel's unread bytes (private).
        self.assertEqual(channel._inbox, bytearray())
        for request in channel.requests:
            self.assertEqual(request.content.read(), b"")
        self.assertIn(channel, self.site.lingering)

    def test_after_a_413(self) -> None:
        """
        After the 413 of a declared length.
        """
        self.feed(self.refused())

    def test_after_a_413_of_a_chunked_body(self) -> None:
        """
        After the 413 of a chunk declared too large.
        """
        self.feed(self.refused(CHUNKED_HEAD + b"200000\r\n"))

    def test_after_a_408_of_a_partial_body(self) -> None:
        """
        The part of the body received before the 408 is let go too.
        """
        connection = self.connect()
        connection.send(with_body(b"POST", b"/", b"y" * 500000)[:-1000])
        self.clock.advance(30)
        self.assert_lingering(connection, 408)
        self.feed(connection)


class WithoutHalfCloseTests(LingerTestCase):
    """
    A transport that cannot half-close (TLS, whose close sends close_notify
    and goes on reading): asked to close at once, lingered on, aborted when
    the linger ends.
    """

    def test_closes_then_aborts(self) -> None:
        """
        Closed (close_notify, for TLS) at once, read on, aborted at the linger
        timeout.
        """
        connection = self.refused(half_close=False)
        self.assertTrue(connection.transport.disconnecting)
        self.assertFalse(connection.transport.disconnected)
        self.assertIn(connection.channel, self.site.lingering)
        self.assertFalse(IHalfCloseableProtocol.providedBy(connection.channel))
        connection.send(b"x" * 1000)
        self.assertEqual(connection.channel._lingered, 1000)
        self.clock.advance(5)
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(self.site.lingering, set())
        ended = [e for e in self.events if e.get("reason") == "lingering close"]
        self.assertEqual([e["why"] for e in ended], ["linger timeout"])


class LingerOffTests(LingerTestCase):
    """
    CLIENT_LINGER_TIME_MS=0: close at once, as before.
    """

    limits = ClientLimits(linger_time=0)

    def test_closes_at_once(self) -> None:
        """
        The refused connection closes at once, without half-closing.
        """
        connection = self.refused()
        self.assertEqual(parse_response(connection.transport.value())[0].code, 413)
        self.assertTrue(connection.transport.disconnecting)
        self.assertFalse(connection.transport.write_shut)
        self.assertEqual(self.site.lingering, set())


class DrainTests(LingerTestCase):
    """
    A drain waits for lingering connections within the grace, never
    beyond it.
    """

    def test_waits_for_the_linger(self) -> None:
        """
        The drain ends when the lingering client closes; idle connections close
        at once.
        """
        idle = self.connect()
        connection = self.refused()
        drained = self.site.drain(10)
        self.assertTrue(idle.transport.disconnecting)  # idle: closed at once
        self.assertFalse(connection.transport.disconnecting)  # lingering
        self.assertNoResult(drained)
        connection.channel.readConnectionLost()
        # Both are closing: the drain waits until their sockets have closed
        # (what they had buffered sent), not only until they were told to.
        self.assertNoResult(drained)
        for each in (idle, connection):
            each.channel.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)

    def test_waits_for_a_closing_connection_within_the_grace(self) -> None:
        """
        A connection still sending the end of its last response when the
        drain is over is waited for until the grace runs out, then aborted.
        """
        slow = self.connect()
        drained = self.site.drain(10)
        self.assertTrue(slow.transport.disconnecting)
        self.clock.advance(9)
        self.assertNoResult(drained)
        self.assertFalse(slow.transport.disconnected)
        self.clock.advance(1)
        self.successResultOf(drained)
        self.assertTrue(slow.transport.disconnected)

    def test_not_beyond_the_grace(self) -> None:
        """
        A client that keeps sending is aborted when the grace runs out.
        """
        connection = self.refused()
        drained = self.site.drain(3)
        for _ in range(5):
            self.clock.advance(1)
            connection.send(b"x")
        self.successResultOf(drained)
        self.assertTrue(connection.transport.disconnected)

    def test_nothing_lingering(self) -> None:
        """
        Nothing in flight or lingering: the drain ends at once.
        """
        self.successResultOf(self.site.drain(10))


class ChunkSizeTests(LingerTestCase):
    """
    A chunk-size line is judged as it is read, before the chunk's data.
    """

    def refusal_reason(self) -> Any:
        """
        The (status, reason) of each refusal event.
        """
        refusals = [e for e in self.events if "status" in e]
        return [(e["status"], e["reason"]) for e in refusals]

    def test_seventeen_hex_digits(self) -> None:
        """
        C{10000000000000005}: 400 on its size line.
        """
        connection = self.refused(CHUNKED_HEAD + b"10000000000000005\r\n")
        self.assert_lingering(connection, 400)
        self.assertEqual(self.refusal_reason(), [(400, "chunk size over 16 hex digits")])

    def test_seventeen_digits_without_the_crlf(self) -> None:
        """
        Seventeen digits are refused before the line ends; leading zeros count.
        """
        connection = self.refused(CHUNKED_HEAD + b"00000000000000000")
        self.assert_lingering(connection, 400)

    def test_digit_by_digit(self) -> None:
        """
        Sixteen digits one at a time are fine; the seventeenth is 400.
        """
        connection = self.connect()
        connection.send(CHUNKED_HEAD)
        for digit in b"1000000000000000":
            connection.send(bytes([digit]))
        self.assertEqual(connection.transport.value(), b"")
        connection.send(b"5")
        self.assert_lingering(connection, 400)

    def test_sixteen_digits_over_the_limit(self) -> None:
        """
        C{FFFFFFFFFFFFFFFF}: a valid size, far over the limit: 413.
        """
        connection = self.refused(CHUNKED_HEAD + b"FFFFFFFFFFFFFFFF\r\n")
        self.assert_lingering(connection, 413)

    def test_chunk_over_the_limit_before_its_data(self) -> None:
        """
        A 2 MiB chunk against 1 MiB: 413 with none of its data sent.
        """
        connection = self.refused(CHUNKED_HEAD + b"200000\r\n")
        self.assert_lingering(connection, 413)
        self.assertEqual(
            parse_response(connection.transport.value())[0].json()["error"]["code"],
            "PAYLOAD_TOO_LARGE",
        )

    def test_chunk_over_what_is_left(self) -> None:
        """
        512 KiB received, then a chunk of 512 KiB + 1 declared: 413.
        """
        connection = self.connect()
        connection.send(CHUNKED_HEAD + b"80000\r\n" + b"x" * 0x80000 + b"\r\n")
        self.assertEqual(connection.transport.value(), b"")
        connection.send(b"80001\r\n")
        self.assert_lingering(connection, 413)

    def test_chunks_that_fit(self) -> None:
        """
        Chunks filling the limit exactly, a 16-digit size with leading
        zeros and a chunk extension are all accepted.
        """
        connection = self.connect()
        connection.send(
            CHUNKED_HEAD
            + b"80000\r\n" + b"x" * 0x80000 + b"\r\n"
            + b"000000000007FFFF;ext=1\r\n" + b"y" * 0x7FFFF + b"\r\n"
            + b"1\r\nz\r\n0\r\n\r\n"
        )
        self.assertEqual(parse_response(connection.transport.value())[0].code, 200)
        self.assertEqual(len(self.resource.rendered[0]), MIB)
        self.assertEqual(self.site.lingering, set())


class ConfigTests(SynchronousTestCase):
    """
    CLIENT_LINGER_TIMEOUT_MS, CLIENT_LINGER_TIME_MS and
    CLIENT_LINGER_MAX_BYTES reach the limits, and are checked.
    """

    def test_defaults(self) -> None:
        """
        The defaults: nginx's 5 s and 30 s, and 64 MiB.
        """
        limits = ClientLimits.from_config(load_config({"REQUIRE_AUTH": "false"}))
        self.assertEqual(
            (limits.linger_timeout, limits.linger_time, limits.linger_max_bytes),
            (5.0, 30.0, 64 * MIB),
        )
        self.assertEqual(limits, ClientLimits())

    def test_set(self) -> None:
        """
        Set values reach the limits, in seconds and bytes.
        """
        config = load_config({
            "REQUIRE_AUTH": "false",
            "CLIENT_LINGER_TIMEOUT_MS": "250",
            "CLIENT_LINGER_TIME_MS": "0",
            "CLIENT_LINGER_MAX_BYTES": "1.5mb",
        })
        limits = ClientLimits.from_config(config)
        self.assertEqual(
            (limits.linger_timeout, limits.linger_time, limits.linger_max_bytes),
            (0.25, 0.0, 1572864),
        )

    def test_bad_values(self) -> None:
        """
        Bad values stop start-up, naming the variable.
        """
        from qeetgw.config import ConfigError

        for name, value in [
            ("CLIENT_LINGER_TIMEOUT_MS", "0"),
            ("CLIENT_LINGER_TIMEOUT_MS", "5s"),
            ("CLIENT_LINGER_TIME_MS", "-1"),
            ("CLIENT_LINGER_MAX_BYTES", "0"),
            ("CLIENT_LINGER_MAX_BYTES", "lots"),
        ]:
            with self.assertRaises(ConfigError) as raised:
                load_config({"REQUIRE_AUTH": "false", name: value})
            self.assertIn(name, str(raised.exception))
