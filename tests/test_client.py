"""
The gateway's upstream client (L{qeetgw.upstream.client}) and its pool
(L{qeetgw.upstream.pool.ConnectionPool}), in memory: a twisted.web Site or a
raw protocol as the upstream, over iosim.
"""

from __future__ import annotations

import io
from typing import Any, List, Optional, Tuple

from twisted.internet import protocol
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from qeetgw.upstream.client import (
    TRANSPORT_BUFFER_BYTES,
    IBodySink,
    UpstreamConnection,
    UpstreamResponse,
)
from qeetgw.upstream.pool import ConnectionPool
from tests.memoryupstream import MemoryUpstreams

KEY = (b"http", b"upstream.test", 80)


def head(method: bytes = b"GET", target: bytes = b"/x", extra: bytes = b"") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\nHost: upstream.test\r\n" + extra + b"\r\n"


@implementer(IBodySink)
class Collect:
    """
    Collects a body and how it ended.
    """

    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.ended: Optional[Failure] = None
        self.producer: Any = None

    def body_started(self, producer: Any) -> None:
        self.producer = producer

    def body_data(self, data: bytes) -> None:
        self.data.append(data)

    def body_ended(self, reason: Failure) -> None:
        self.ended = reason

    @property
    def body(self) -> bytes:
        return b"".join(self.data)


class Answer(Resource):
    isLeaf = True

    def __init__(self, answer: Any = None) -> None:
        super().__init__()
        self.seen: List[Any] = []
        self.pending: List[IRequest] = []
        self._answer = answer

    def render(self, request: IRequest) -> Any:
        self.seen.append((request.method, request.uri, request.content.read()))
        if self._answer is None:
            return b"hello"
        result = self._answer(request)
        if result is NOT_DONE_YET:
            self.pending.append(request)
        return result


class Canned(protocol.Protocol):
    """
    A raw upstream: answers each request's first bytes with the next of
    C{answers}, then closes when told to.
    """

    def __init__(self, answers: List[bytes], close: bool, close_on_empty: bool = False) -> None:
        self._answers = answers
        self._close = close
        self._close_on_empty = close_on_empty
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and self._answers:
            self.received = b""
            answer = self._answers.pop(0)
            self.transport.write(answer)
            if self._close or (self._close_on_empty and not answer):
                self.transport.loseConnection()


def raw(*answers: bytes, close: bool = False, close_on_empty: bool = False) -> MemoryUpstreams:
    factory = protocol.Factory()
    queue = list(answers)
    factory.buildProtocol = lambda addr: Canned(queue, close, close_on_empty)  # type: ignore[method-assign]
    return MemoryUpstreams(server=factory)


class Exchange:
    """
    One request through C{pool}, its response and body collected.
    """

    def __init__(self, pool: ConnectionPool, method: bytes = b"GET", head_bytes: Optional[bytes] = None, body: Any = None) -> None:
        self.response: Optional[UpstreamResponse] = None
        self.failure: Optional[Failure] = None
        self.sink = Collect()
        self.answer = pool.request(KEY, method, head_bytes or head(method), body)
        self.answer.addCallbacks(self._got, self._failed)

    def _got(self, response: UpstreamResponse) -> None:
        self.response = response
        response.deliver(self.sink)

    def _failed(self, reason: Failure) -> None:
        self.failure = reason


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_response_and_body_then_reused(self) -> None:
        upstreams = MemoryUpstreams(Answer())
        pool = upstreams.pool(self.clock)
        first = Exchange(pool)
        upstreams.flush()
        self.assertEqual(first.response.code, 200)
        self.assertEqual(first.response.phrase, b"OK")
        self.assertEqual(first.response.length, 5)
        self.assertIn((b"Content-Length", b"5"), first.response.headers)
        self.assertEqual(first.sink.body, b"hello")
        self.assertTrue(first.sink.ended.check(ResponseDone))
        self.assertEqual(pool.idle_count(KEY), 1)
        second = Exchange(pool)
        upstreams.flush()
        self.assertEqual(second.sink.body, b"hello")
        self.assertEqual(upstreams.connections, {b"upstream.test": 1})

    def test_bytes_body_sent(self) -> None:
        answer = Answer()
        upstreams = MemoryUpstreams(answer)
        Exchange(upstreams.pool(self.clock), b"POST", head(b"POST", extra=b"Content-Length: 3\r\n"), b"abc")
        upstreams.flush()
        self.assertEqual(answer.seen, [(b"POST", b"/x", b"abc")])

    def test_file_body_sent_in_pieces(self) -> None:
        answer = Answer()
        upstreams = MemoryUpstreams(answer)
        data = bytes(range(256)) * 1000
        done = Exchange(
            upstreams.pool(self.clock), b"POST",
            head(b"POST", extra=b"Content-Length: %d\r\n" % (len(data),)), io.BytesIO(data),
        )
        upstreams.flush()
        self.assertEqual(answer.seen, [(b"POST", b"/x", data)])
        self.assertEqual(done.sink.body, b"hello")

    def test_empty_query_reaches_the_upstream(self) -> None:
        answer = Answer()
        upstreams = MemoryUpstreams(answer)
        Exchange(upstreams.pool(self.clock), head_bytes=head(target=b"/x?"))
        upstreams.flush()
        self.assertEqual(answer.seen[0][1], b"/x?")

    def test_chunked_body_streamed(self) -> None:
        def slow(request: IRequest) -> Any:
            request.write(b"one ")
            return NOT_DONE_YET

        answer = Answer(slow)
        upstreams = MemoryUpstreams(answer)
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        self.assertIsNone(done.response.length)
        self.assertEqual(done.sink.body, b"one ")
        self.assertIsNone(done.sink.ended)
        answer.pending[0].write(b"two")
        answer.pending[0].finish()
        upstreams.flush()
        self.assertEqual(done.sink.body, b"one two")
        self.assertTrue(done.sink.ended.check(ResponseDone))
        self.assertEqual(pool.idle_count(KEY), 1)

    def test_head_response_keeps_its_length_and_has_no_body(self) -> None:
        upstreams = raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )
        pool = upstreams.pool(self.clock)
        done = Exchange(pool, b"HEAD")
        upstreams.flush()
        self.assertEqual(done.response.length, 1234)
        self.assertEqual(done.sink.body, b"")
        self.assertTrue(done.sink.ended.check(ResponseDone))
        after = Exchange(pool)
        upstreams.flush()
        self.assertEqual(after.sink.body, b"ok")
        self.assertEqual(upstreams.connections, {b"upstream.test": 1})

    def test_connection_close_is_not_reused(self) -> None:
        upstreams = raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        self.assertEqual(done.sink.body, b"ok")
        self.assertEqual(pool.idle_count(KEY), 0)
        self.assertEqual(upstreams.open_connections(), 0)

    def test_http_10_is_not_reused(self) -> None:
        upstreams = raw(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        self.assertEqual(done.sink.body, b"ok")
        self.assertEqual(pool.idle_count(KEY), 0)

    def test_body_to_the_close(self) -> None:
        upstreams = raw(b"HTTP/1.1 200 OK\r\n\r\nall of it", close=True)
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        self.assertEqual(done.sink.body, b"all of it")
        self.assertTrue(done.sink.ended.check(PotentialDataLoss))
        self.assertEqual(pool.idle_count(KEY), 0)

    def test_close_mid_body_fails_the_body(self) -> None:
        upstreams = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", close=True)
        done = Exchange(upstreams.pool(self.clock))
        upstreams.flush()
        self.assertEqual(done.sink.body, b"half")
        self.assertTrue(done.sink.ended.check(ResponseFailed))

    def test_close_before_a_response(self) -> None:
        upstreams = raw(b"", close=True)
        done = Exchange(upstreams.pool(self.clock), b"POST")
        upstreams.flush()
        self.assertTrue(done.failure.check(ResponseNeverReceived))

    def test_garbage_is_a_failure_and_closes(self) -> None:
        upstreams = raw(b"SMTP ready\r\n\r\n")
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        self.assertTrue(done.failure.check(ResponseNeverReceived))
        self.assertEqual(pool.idle_count(KEY), 0)
        self.assertEqual(upstreams.open_connections(), 0)

    def test_extra_bytes_after_a_response_close_the_connection(self) -> None:
        upstreams = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n")
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        self.assertEqual(done.sink.body, b"ok")
        self.assertTrue(done.sink.ended.check(ResponseDone))
        self.assertEqual(pool.idle_count(KEY), 0)

    def test_interim_responses_skipped(self) -> None:
        upstreams = raw(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        self.assertEqual(done.response.code, 200)
        self.assertEqual(done.response.headers, [(b"Content-Length", b"2")])
        self.assertEqual(done.sink.body, b"ok")
        self.assertEqual(pool.idle_count(KEY), 1)

    def test_upgrade_refused(self) -> None:
        upstreams = raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        self.assertTrue(done.failure.check(ResponseNeverReceived))
        self.assertEqual(upstreams.open_connections(), 0)

    def test_fields_as_sent(self) -> None:
        upstreams = raw(
            b"HTTP/1.1 201 Made It\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Odd_Name: v\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        done = Exchange(upstreams.pool(self.clock))
        upstreams.flush()
        self.assertEqual(done.response.code, 201)
        self.assertEqual(done.response.phrase, b"Made It")
        self.assertEqual(
            done.response.headers[:3],
            [(b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"X-Odd_Name", b"v")],
        )

    def test_cancel_closes_the_connection(self) -> None:
        upstreams = MemoryUpstreams(Answer(lambda request: NOT_DONE_YET))
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        done.answer.cancel()
        upstreams.flush()
        self.assertTrue(done.failure.check(CancelledError))
        self.assertEqual(upstreams.open_connections(), 0)
        self.assertEqual(pool.idle_count(KEY), 0)

    def test_abandoned_body_closes_the_connection(self) -> None:
        def slow(request: IRequest) -> Any:
            request.write(b"start")
            return NOT_DONE_YET

        upstreams = MemoryUpstreams(Answer(slow))
        pool = upstreams.pool(self.clock)
        done = Exchange(pool)
        upstreams.flush()
        done.sink.producer.stopProducing()
        upstreams.flush()
        self.assertEqual(upstreams.open_connections(), 0)
        self.assertEqual(pool.idle_count(KEY), 0)

    def test_refused(self) -> None:
        upstreams = MemoryUpstreams(Answer())
        upstreams.down.append(b"upstream.test")
        done = Exchange(upstreams.pool(self.clock))
        self.assertTrue(done.failure.check(ConnectionRefusedError))

    def test_cancel_while_connecting(self) -> None:
        upstreams = MemoryUpstreams(Answer())
        upstreams.silent.append(b"upstream.test")
        done = Exchange(upstreams.pool(self.clock))
        done.answer.cancel()
        self.assertTrue(done.failure.check(CancelledError))


class PoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_idle_connection_closed_after_the_timeout(self) -> None:
        upstreams = MemoryUpstreams(Answer())
        pool = upstreams.pool(self.clock, idle_timeout=5)
        Exchange(pool)
        upstreams.flush()
        self.clock.advance(4.9)
        self.assertEqual(pool.idle_count(KEY), 1)
        self.clock.advance(0.2)
        upstreams.flush()
        self.assertEqual(pool.idle_count(KEY), 0)
        self.assertEqual(upstreams.open_connections(), 0)

    def test_at_most_max_idle_kept(self) -> None:
        answer = Answer(lambda request: NOT_DONE_YET)
        upstreams = MemoryUpstreams(answer)
        pool = upstreams.pool(self.clock, max_idle=2)
        exchanges = [Exchange(pool) for _ in range(3)]
        upstreams.flush()
        for request in answer.pending:
            request.write(b"x")
            request.finish()
        upstreams.flush()
        self.assertEqual([e.sink.body for e in exchanges], [b"x"] * 3)
        self.assertEqual(pool.idle_count(KEY), 2)
        self.assertEqual(upstreams.open_connections(), 2)

    def test_idle_connection_closed_by_the_upstream_is_forgotten(self) -> None:
        upstreams = MemoryUpstreams(Answer())
        pool = upstreams.pool(self.clock)
        Exchange(pool)
        upstreams.flush()
        upstreams.server_transports[0].loseConnection()
        upstreams.flush()
        self.assertEqual(pool.idle_count(KEY), 0)

    def dead_kept_connection(self, method: bytes, body: Any = None) -> Any:
        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        # The upstream closes the kept connection as the next request
        # arrives (its keep-alive timeout), before answering it.
        upstreams = raw(ok, b"", ok, close_on_empty=True)
        pool = upstreams.pool(self.clock)
        Exchange(pool)
        upstreams.flush()
        done = Exchange(pool, method, head(method, extra=b"Content-Length: 3\r\n" if body else b""), body)
        upstreams.flush()
        return upstreams, done

    def test_dead_kept_connection_retried_for_idempotent_methods(self) -> None:
        upstreams, done = self.dead_kept_connection(b"GET")
        self.assertEqual(done.sink.body, b"hello")
        self.assertEqual(upstreams.connections, {b"upstream.test": 2})

    def test_dead_kept_connection_not_retried_for_post(self) -> None:
        upstreams, done = self.dead_kept_connection(b"POST", b"abc")
        self.assertTrue(done.failure.check(ResponseNeverReceived))
        self.assertEqual(upstreams.connections, {b"upstream.test": 1})

    def test_close_cached_connections(self) -> None:
        upstreams = MemoryUpstreams(Answer())
        pool = upstreams.pool(self.clock)
        Exchange(pool)
        upstreams.flush()
        pool.closeCachedConnections()
        upstreams.flush()
        self.assertEqual(upstreams.open_connections(), 0)


class RequestHeadTests(SynchronousTestCase):
    def test_split_url(self) -> None:
        from qeetgw.upstream.requesthead import split_url

        self.assertEqual(split_url(b"http://u.test/a?"), ((b"http", b"u.test", 80), b"u.test", b"/a?"))
        self.assertEqual(split_url(b"http://u.test?x"), ((b"http", b"u.test", 80), b"u.test", b"/?x"))
        self.assertEqual(split_url(b"https://u.test:8443"), ((b"https", b"u.test", 8443), b"u.test:8443", b"/"))
        self.assertEqual(split_url(b"http://[::1]:81/p"), ((b"http", b"::1", 81), b"[::1]:81", b"/p"))
        self.assertEqual(split_url(b"HTTP://127.0.0.1:80/p"), ((b"http", b"127.0.0.1", 80), b"127.0.0.1", b"/p"))

    def test_request_head(self) -> None:
        from qeetgw.upstream.requesthead import Unsendable, request_head

        self.assertEqual(
            request_head(b"GET", b"/a", b"h", b"X: 1\r\n", None),
            b"GET /a HTTP/1.1\r\nHost: h\r\nX: 1\r\n\r\n",
        )
        self.assertEqual(
            request_head(b"POST", b"/a", b"h", b"", None),
            b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        )
        self.assertEqual(
            request_head(b"DELETE", b"/a", b"h", b"", 3),
            b"DELETE /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
        )
        self.assertRaises(Unsendable, request_head, b"G T", b"/a", b"h", b"", None)
        self.assertRaises(Unsendable, request_head, b"GET", b"/a b", b"h", b"", None)


class BackpressureTests(SynchronousTestCase):
    """
    A slow client pauses reading from the upstream; a slow upstream holds a
    file body back.
    """

    def test_pausing_the_body_pauses_the_upstream_transport(self) -> None:
        from twisted.internet.testing import StringTransport

        from qeetgw.upstream.client import UpstreamConnection

        transport = StringTransport()
        connection = UpstreamConnection()
        connection.makeConnection(transport)
        answered = connection.send(head())
        connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        sink = Collect()
        answered.addCallback(lambda response: response.deliver(sink))
        self.assertEqual(sink.body, b"ab")
        sink.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        sink.producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        connection.dataReceived(b"cd")
        self.assertTrue(sink.ended.check(ResponseDone))
        self.assertTrue(connection.reusable)

    def test_file_body_written_as_the_transport_asks(self) -> None:
        from twisted.internet.testing import StringTransport

        from qeetgw.upstream.client import UpstreamConnection

        transport = StringTransport()
        connection = UpstreamConnection()
        connection.makeConnection(transport)
        data = b"x" * (3 * 65536 + 10)
        connection.send(head(b"POST"), io.BytesIO(data))
        writer = transport.producer
        self.assertFalse(transport.streaming)
        # Nothing of the body is written until the transport asks for it.
        self.assertEqual(transport.value(), head(b"POST"))
        for _ in range(4):
            writer.resumeProducing()
        self.assertEqual(transport.value(), head(b"POST") + data)
        self.assertIsNone(transport.producer)


class TransportBufferTests(SynchronousTestCase):
    """
    An upstream connection reads and buffers in pieces of
    L{TRANSPORT_BUFFER_BYTES}, not Twisted's 64 KiB: a 1 MiB response takes
    a quarter of the reads and of the pauses (the bench's 1 MiB scenario).
    """

    def test_tcp_transport_gets_the_larger_buffer(self) -> None:
        transport = StringTransport()
        transport.bufferSize = 64 * 1024  # as twisted.internet.abstract.FileDescriptor's
        UpstreamConnection().makeConnection(transport)
        self.assertEqual(transport.bufferSize, TRANSPORT_BUFFER_BYTES)
        self.assertEqual(TRANSPORT_BUFFER_BYTES, 256 * 1024)

    def test_a_transport_without_one_is_left_alone(self) -> None:
        transport = StringTransport()
        UpstreamConnection().makeConnection(transport)
        self.assertFalse(hasattr(transport, "bufferSize"))


class _TunnelEnd:
    """
    Records what an upstream connection hands a tunnel.
    """

    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.half_closed = 0
        self.lost: List[Failure] = []

    def upstream_data(self, data: bytes) -> None:
        self.data.append(data)

    def upstream_half_closed(self) -> None:
        self.half_closed += 1

    def upstream_lost(self, reason: Failure) -> None:
        self.lost.append(reason)


class SwitchingTests(SynchronousTestCase):
    """
    A request sent with C{upgrade} takes a 101 as its answer; the
    connection then carries a tunnel's bytes and leaves the pool.
    """

    SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

    def connect(self) -> Tuple[UpstreamConnection, StringTransport, List[UpstreamConnection]]:
        released: List[UpstreamConnection] = []
        connection = UpstreamConnection(released.append)
        transport = StringTransport()
        connection.makeConnection(transport)
        return connection, transport, released

    def test_switch(self) -> None:
        connection, transport, released = self.connect()
        answer = connection.send(head(), upgrade=True)
        connection.dataReceived(self.SWITCHING + b"\x81\x02hi")
        response = self.successResultOf(answer)
        self.assertEqual(response.code, 101)
        self.assertIs(response.transport, transport)
        end = _TunnelEnd()
        self.assertEqual(response.switch_to(end), b"\x81\x02hi")
        self.assertEqual(released, [connection])
        self.assertFalse(connection.reusable)
        connection.dataReceived(b"\x81\x03bye")
        self.assertEqual(end.data, [b"\x81\x03bye"])
        self.assertTrue(IHalfCloseableProtocol.providedBy(connection))
        connection.readConnectionLost()
        self.assertEqual(end.half_closed, 1)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(end.lost), 1)

    def test_bytes_before_the_tunnel_takes_over_are_kept(self) -> None:
        connection, _, _ = self.connect()
        answer = connection.send(head(), upgrade=True)
        connection.dataReceived(self.SWITCHING)
        connection.dataReceived(b"early")
        end = _TunnelEnd()
        self.assertEqual(self.successResultOf(answer).switch_to(end), b"early")

    def test_unasked_for_switch_is_a_broken_upstream(self) -> None:
        connection, transport, _ = self.connect()
        answer = connection.send(head())
        connection.dataReceived(self.SWITCHING)
        self.failureResultOf(answer, ResponseNeverReceived)
        self.assertTrue(transport.disconnecting)

    def test_other_answers_to_a_handshake_are_responses(self) -> None:
        connection, _, _ = self.connect()
        answer = connection.send(head(), upgrade=True)
        connection.dataReceived(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
        response = self.successResultOf(answer)
        collected = Collect()
        response.deliver(collected)
        self.assertEqual((response.code, b"".join(collected.data)), (403, b"no"))
