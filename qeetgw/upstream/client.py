"""
The upstream side of one connection: sends a request head (bytes built by
the caller) and its body, parses the response with httptools (llhttp, the
parser behind uvicorn), and streams the response body to a sink with
backpressure.

Made for proxying rather than general use: no header canonicalisation, no
redirects, no decoding; the response's fields come back as the raw
(name, value) pairs the upstream sent.  A connection says, once its
exchange is over, whether it may carry another one (L{UpstreamConnection.reusable}):
only after a complete request and a complete response, with neither side
asking to close, and never on any doubt.

Failures use twisted.web.client's exception types, so that the proxy maps
them to errors and metrics exactly as it did with twisted's client:
L{ResponseNeverReceived} when the connection failed before a response
began, L{ResponseFailed} when it failed during one, L{ResponseDone} (or
L{PotentialDataLoss} for a body framed by the connection's close) when a
body ended.
"""

from __future__ import annotations

from typing import IO, Any, Callable, List, Optional, Tuple, Union

import httptools
from twisted.internet import protocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from zope.interface import Interface, alsoProvides, implementer

log = Logger()

#: A request body: none, bytes written at once, or a file read in pieces
#: as the connection accepts them.
Body = Union[None, bytes, IO[bytes]]

#: How much a connection's transport reads at once and buffers before it
#: pauses its producer (Twisted's FileDescriptor.bufferSize, 64 KiB by
#: default).
TRANSPORT_BUFFER_BYTES = 256 * 1024

#: The piece of a file body written each time the transport asks for more.
_PIECE = 64 * 1024


class UpstreamParseError(Exception):
    """
    The upstream's response is not HTTP/1.1 we can read.
    """


class IBodySink(Interface):
    """
    What a response body is delivered to (L{UpstreamResponse.deliver}).
    """

    def body_started(producer: IPushProducer) -> None:
        """
        The body begins; C{producer} pauses and resumes reading it, and
        stops it (closing the connection).
        """

    def body_data(data: bytes) -> None:
        """
        A piece of the body.
        """

    def body_ended(reason: Failure) -> None:
        """
        The body ended: L{ResponseDone} or L{PotentialDataLoss} when whole,
        anything else when it broke off.
        """


@implementer(IBodySink)
class _Discard:
    """
    Reads and drops a body, so its connection can be reused.
    """

    def body_started(self, producer: IPushProducer) -> None:
        pass

    def body_data(self, data: bytes) -> None:
        pass

    def body_ended(self, reason: Failure) -> None:
        pass


class UpstreamResponse:
    """
    A response's head, and its body as it arrives.

    @ivar code: the status code.
    @ivar phrase: the reason phrase, as sent.
    @ivar headers: the header fields, as sent: (name, value) pairs in order.
    @ivar length: the body's Content-Length, or L{None} when it has none
        (chunked, or up to the connection's close).
    """

    def __init__(
        self,
        connection: "UpstreamConnection",
        code: int,
        phrase: bytes,
        headers: List[Tuple[bytes, bytes]],
        length: Optional[int],
    ) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = length
        self._connection = connection

    def deliver(self, sink: IBodySink) -> None:
        """
        Deliver the body to C{sink}: what has arrived at once, the rest as
        it arrives.
        """
        self._connection._deliver(sink)

    def discard(self) -> None:
        """
        Read and drop the body, so the connection can be reused.
        """
        self._connection._deliver(_Discard())

    def abandon(self) -> None:
        """
        Stop reading the body and close the connection: it cannot carry
        another exchange mid-response.
        """
        self._connection._abandon()

    @property
    def transport(self) -> Any:
        """
        The transport of the connection the response came on (for a 101:
        the one the tunnel takes over).
        """
        return self._connection.transport

    def switch_to(self, tunnel: Any) -> bytes:
        """
        The upstream switched protocols (a 101 to a request sent with
        C{upgrade}): from now on what it sends goes to C{tunnel}'s
        C{upstream_data}, its half-close to C{upstream_half_closed} and its
        close to C{upstream_lost}.  The connection leaves the pool for good.
        Returns the bytes it sent after the 101's head.
        """
        return self._connection._switch_to(tunnel)


@implementer(IPushProducer)
class _Reading:
    """
    Pauses and resumes reading a response body: the producer the proxy
    registers with the client's request.
    """

    def __init__(self, connection: "UpstreamConnection") -> None:
        self._connection = connection

    def pauseProducing(self) -> None:
        self._connection._pause_reading()

    def resumeProducing(self) -> None:
        self._connection._resume_reading()

    def stopProducing(self) -> None:
        self._connection._abandon()


class _FileWriter:
    """
    Writes a file body in pieces, each when the transport asks for more (a
    pull producer): a slow upstream holds the rest in the file.
    """

    def __init__(self, connection: "UpstreamConnection", body: IO[bytes]) -> None:
        self._connection = connection
        self._body = body

    def resumeProducing(self) -> None:
        piece = self._body.read(_PIECE)
        transport = self._connection.transport
        if transport is None:
            return
        if piece:
            transport.write(piece)
        if len(piece) < _PIECE:
            transport.unregisterProducer()
            self._connection._request_sent()

    def stopProducing(self) -> None:
        pass


class UpstreamConnection(protocol.Protocol):
    """
    One connection to an upstream, carrying one exchange at a time.

    @ivar reusable: whether the connection may carry another exchange; set
        once an exchange is complete on both sides.
    @ivar released: called with this connection when its exchange is over
        (whether or not it is reusable), or when it closed while idle.
    """

    def __init__(self, released: Callable[["UpstreamConnection"], None] = lambda c: None) -> None:
        self.released = released
        self.reusable = False
        self.exchanges = 0
        self.closed = False
        self._waiting_for_close: List[Deferred[None]] = []
        self._parser: Any = None
        self._answer: Optional[Deferred[UpstreamResponse]] = None
        self._head_request = False
        self._request_complete = False
        #: After a 101: what the upstream sends goes to it.
        self._tunnel: Any = None
        self._reset_exchange()

    # -- one exchange ----------------------------------------------------

    def _reset_exchange(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._answer = None
        self._request_complete = False
        self._head_request = False
        self._status_phrase = b""
        self._fields: List[Tuple[bytes, bytes]] = []
        self._response: Optional[UpstreamResponse] = None
        self._response_started = False
        self._response_complete = False
        self._body: List[bytes] = []
        self._sink: Optional[IBodySink] = None
        self._broken: Optional[Failure] = None
        self._keep_alive = False
        self._stray = False
        self._interim = False
        self._ended_by_close = False
        self._fired = False
        self._over = False
        # A request that asked to upgrade, and an upstream that switched.
        self._upgrade = False
        self._switched = False
        self._after_switch = b""

    def send(
        self, head: bytes, body: Body = None, head_request: bool = False, upgrade: bool = False
    ) -> "Deferred[UpstreamResponse]":
        """
        Send a request: C{head} is its request line and header lines, each
        ending in CRLF, and the empty line that ends them; C{body}, when
        not L{None}, is framed by a Content-Length the head already has.
        C{head_request} says the request is a HEAD, whose response has no
        body whatever its head says.  C{upgrade} says the request asks to
        switch protocols: a 101 is then its answer (see
        L{UpstreamResponse.switch_to}), not a broken upstream.

        The result fires with the response's head, or fails with
        L{ResponseNeverReceived}; cancelling it closes the connection.
        """
        assert self._answer is None and not self.closed, "one exchange at a time"
        self.reusable = False
        self.exchanges += 1
        answer: Deferred[UpstreamResponse] = Deferred(lambda d: self._cancel())
        self._answer = answer
        self._head_request = head_request
        self._upgrade = upgrade
        transport = self.transport
        assert transport is not None
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
            self._request_sent()
        else:
            transport.write(head)
            transport.registerProducer(_FileWriter(self, body), False)
        return answer

    def _request_sent(self) -> None:
        # A request finishing after its response (an early answer) finds
        # the connection already closed by _maybe_reusable.
        self._request_complete = True

    # -- httptools callbacks (names fixed by httptools) ------------------

    def on_message_begin(self) -> None:
        if self._response_started:
            # A second response to one request: whatever it is, the
            # connection is not to be trusted with another exchange.
            self._stray = True
            raise UpstreamParseError("bytes after the response")
        self._response_started = True

    def on_status(self, status: bytes) -> None:
        self._status_phrase += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        code = parser.get_status_code()
        if code == 101:
            if not self._upgrade:
                # An upgrade the gateway never asked for and does not forward.
                raise UpstreamParseError("unasked-for upgrade")
            # The exchange is over with this head: what follows is the
            # tunnel's.
            self._switched = True
            self._keep_alive = False
            self._response = UpstreamResponse(self, code, self._status_phrase, self._fields, None)
            self._response_complete = True
            return
        if 100 <= code < 200:
            # An interim response (100 Continue, 103 Early Hints): skipped,
            # as twisted's client did; the final response follows.
            self._interim = True
            return
        length: Optional[int] = None
        for name, value in self._fields:
            if name.lower() == b"content-length":
                length = int(value)
        self._keep_alive = bool(parser.should_keep_alive()) and not parser.should_upgrade()
        self._response = UpstreamResponse(self, code, self._status_phrase, self._fields, length)
        if self._head_request or code in (204, 304):
            # llhttp knows 204 and 304 have no body, but not that a HEAD's
            # response has none (httptools gives no way to tell it): the
            # exchange is over with its head, and any byte after it is a
            # broken upstream.
            self._response_complete = True

    def on_body(self, data: bytes) -> None:
        if self._response_complete:
            self._stray = True
            raise UpstreamParseError("bytes after a response without a body")
        self._body.append(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._response_started = False
            self._status_phrase = b""
            self._fields = []
            return
        self._response_complete = True

    # -- the transport ---------------------------------------------------

    def connectionMade(self) -> None:
        # Read (and buffer writes) in larger pieces than Twisted's 64 KiB:
        # a large response then takes fewer reads, and fewer pauses and
        # resumes (each an epoll change) of this transport.
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = TRANSPORT_BUFFER_BYTES

    def dataReceived(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.upstream_data(data)
            return
        if self._switched:
            # Tunnel bytes before the tunnel took over: kept for it.
            self._after_switch += data
            return
        if self._answer is None and not self._fired:
            # Bytes nobody asked for: the connection cannot be trusted.
            log.info("upstream sent bytes on an idle connection; closing it")
            self._close()
            return
        if self._over or self._broken is not None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._switched:
                # llhttp stops at the end of the 101's head.
                self._after_switch = data[upgrade.args[0]:]
            else:
                self._broken = Failure(UpstreamParseError("upgrade"))
        except (httptools.HttpParserError, ValueError) as error:
            if self._stray and self._response_complete:
                # The response itself was whole: deliver it, then close.
                self._keep_alive = False
            else:
                cause = error.__context__ if isinstance(error.__context__, UpstreamParseError) else error
                self._broken = Failure(UpstreamParseError(str(cause)))
        self._dispatch()

    def readConnectionLost(self) -> None:
        """
        The upstream shut its writing side (provided once it carries a
        tunnel: see L{_switch_to}).
        """
        if self._tunnel is not None:
            self._tunnel.upstream_half_closed()

    def writeConnectionLost(self) -> None:
        """
        Our writing side is shut (a tunnel passing on the client's).
        """

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if self._tunnel is not None:
            self.closed = True
            self._tunnel.upstream_lost(reason)
            return
        self.closed = True
        self.reusable = False
        waiting, self._waiting_for_close = self._waiting_for_close, []
        for each in waiting:
            each.callback(None)
        if self._answer is None and not self._fired or self._over:
            # Closed while idle (or after its exchange): tell the pool.
            self.released(self)
            return
        if self._broken is None and not self._response_complete:
            if self._response is not None and self._response.length is None and not self._chunked():
                # A body framed by the connection's close ends with it
                # (httptools has no way to tell llhttp the input ended).
                self._response_complete = True
                self._ended_by_close = True
            else:
                self._broken = reason
        self._dispatch()

    def _chunked(self) -> bool:
        return any(
            name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
            for name, value in self._fields
        )

    # -- delivering what was parsed --------------------------------------

    def _dispatch(self) -> None:
        """
        Act on what the parser found, outside the parser's callbacks.
        """
        if self._broken is not None and not self._fired:
            self._fail_answer(self._broken)
            return
        if self._response is not None and not self._fired:
            self._fired = True
            answer, self._answer = self._answer, None
            assert answer is not None
            answer.callback(self._response)
        if self._sink is not None:
            self._flush_body()
        if self._broken is not None:
            self._close()

    def _fail_answer(self, reason: Failure) -> None:
        self._fired = True
        self._over = True
        answer, self._answer = self._answer, None
        self._close()
        self.released(self)
        if answer is not None:
            if reason.check(ResponseNeverReceived):
                answer.errback(reason)
            else:
                answer.errback(ResponseNeverReceived([reason]))

    def _deliver(self, sink: IBodySink) -> None:
        self._sink = sink
        sink.body_started(_Reading(self))
        self._flush_body()

    def _flush_body(self) -> None:
        sink = self._sink
        assert sink is not None
        body, self._body = self._body, []
        for piece in body:
            sink.body_data(piece)
        if self._over:
            return
        if self._broken is not None:
            self._over = True
            self._close()
            self.released(self)
            sink.body_ended(Failure(ResponseFailed([self._broken])))
        elif self._response_complete:
            ended_by_close = self._ended_by_close
            self._over = True
            self._maybe_reusable()
            self.released(self)
            sink.body_ended(Failure(PotentialDataLoss() if ended_by_close else ResponseDone()))

    def _maybe_reusable(self) -> None:
        if (
            self._request_complete
            and self._keep_alive
            and not self.closed
            and self._broken is None
            and not self._ended_by_close
        ):
            self.reusable = True
            self._reset_exchange()
            if self.transport is not None:
                self.transport.resumeProducing()
        else:
            self._close()

    def _switch_to(self, tunnel: Any) -> bytes:
        assert self._switched and self._tunnel is None
        self._tunnel = tunnel
        self._over = True
        self.reusable = False
        # The upstream's end of the stream is passed on, not a close.
        alsoProvides(self, IHalfCloseableProtocol)
        self.released(self)
        after, self._after_switch = self._after_switch, b""
        return after

    # -- stopping --------------------------------------------------------

    def _pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pauseProducing()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resumeProducing()

    def _abandon(self) -> None:
        """
        The body is no longer wanted (the client left): close at once.
        """
        if self._over:
            return
        self._over = True
        self._sink = None
        self._close()
        self.released(self)

    def _cancel(self) -> None:
        """
        The response is no longer awaited (a timeout, the client left).
        """
        self._fired = True
        self._over = True
        self._answer = None
        self._close()
        self.released(self)

    def _close(self) -> None:
        self.reusable = False
        transport = self.transport
        if transport is not None and not self.closed:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()

    def close(self) -> "Deferred[None]":
        """
        Close an idle connection; the result fires once it is closed.
        """
        self._over = True
        if self.closed:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._waiting_for_close.append(closed)
        # An idle connection has nothing in flight: close it politely.
        self.reusable = False
        if self.transport is not None:
            self.transport.loseConnection()
        return closed
