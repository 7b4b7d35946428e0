"""
The gateway's HTTP server: twisted.web's Site, Request and HTTPChannel with
the few changes a gateway needs.

- Requests are read by the channel, not by twisted.web's line parser: the
  head by llhttp (L{qeetgw.clienthead}), the body by a decoder of the
  channel's; twisted.web's Request, Resource tree and response writing are
  used as they are.
- The request body limit is enforced while the body arrives: an over-size
  body is answered with 413 as soon as it is known to be too large, and is
  never buffered whole.
- twisted.web's form parsing of POST bodies is off: bodies are forwarded,
  not read.
- No header names the server's software, and a fault of ours is the JSON
  500 envelope, never twisted.web's HTML traceback page.
- One structured access event per request, instead of the combined-log line.
- The site knows its open connections and in-flight requests, for a drain
  on shutdown.
- Clients that misbehave are refused (the rules are in
  L{qeetgw.clientlimits}): a header deadline and a body stall timeout (408),
  an idle keep-alive timeout, a request line limit (414), header block and
  field count limits (431), the request smuggling shapes (400), all answered
  with the JSON envelope before the connection is closed, and a cap on open
  connections past which new ones are closed at once.
- A chunk-size line is judged as it is read: more than 16 hex digits is
  400, a chunk that cannot fit in what is left of the body limit 413, both
  before any of the chunk's data has arrived.
- Every early refusal (413, 400, 408, 414, 431) ends in a lingering close,
  as nginx does it: the answer is written, the gateway half-closes (TCP
  C{shutdown(SHUT_WR)}; TLS C{close_notify}), reads and throws away what the
  client still sends for a bounded time and amount, then closes.  Closing at
  once would make the kernel reset a connection whose client is still
  writing its body, and a client that writes its whole body before it reads
  (Python's http.client) would never read the answer.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any, Callable, Optional, Set

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel, datetimeToString
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Site
from zope.interface import alsoProvides

from qeetgw.clienthead import SKIPPED, Head, HeadReader
from qeetgw.clientlimits import (
    MAX_CHUNK_SIZE_DIGITS,
    ClientLimits,
    Refusal,
    bad_request,
    body_timeout,
    chunk_size_too_long,
    describe_address,
    error_response,
    header_timeout,
    log_connection_refused,
    log_idle_closed,
    log_linger_ended,
    log_refusal,
)
from qeetgw.config import TrustProxy
from qeetgw.correlation import correlation_id, make_id
from qeetgw.errors import GatewayError, render_error
from qeetgw.logging import access_event
from qeetgw.readiness import Readiness
from qeetgw.requeststate import RequestState, attach_state, resolve_route, state_of
from qeetgw.twistedcompat import (
    ChunkedDecoder,
    HookedHTTPChannel,
    HookedRequest,
    MalformedChunkedData,
    add_received_fields,
)
from qeetgw.upstream.routes import RouteTable
from qeetgw.websocket import take_query_token

log = Logger()


class _Discard:
    """
    A content file that keeps nothing: the body of a refused request.
    """

    def write(self, data: bytes) -> None:
        pass

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


#: The standard reason phrase of every status code Python knows (RFC 9110 and
#: the registry), for the codes twisted.web's own table lacks.
_STANDARD_PHRASES = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


class GatewayRequest(HookedRequest):
    """
    A request of the gateway.  See the module docstring for what differs
    from L{twisted.web.server.Request}.
    """

    #: Refused by the channel before it reached the resource tree (see
    #: L{GatewayChannel}): its refusal event stands for it, so neither the
    #: access event nor the request metrics see it.
    refused = False
    _body_received = 0

    def __init__(self, channel: HTTPChannel, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        site = channel.site
        #: What the gateway knows of this request (L{qeetgw.requeststate}):
        #: it began now, and its body may be as large as the site allows.
        self.state = attach_state(
            self,
            RequestState(started=site.clock.seconds(), body_limit=getattr(site, "body_limit", None)),
        )

    def gotLength(self, length: Optional[int]) -> None:
        limit = self.state.body_limit
        if limit is not None and length is not None and length > limit:
            self._refuse_body()
            return
        super().gotLength(length)

    def chunk_declared(self, length: int) -> None:
        """
        A chunk-size line of a chunked body declared C{length} bytes to
        come: when they cannot fit in what is left of the limit, answer 413
        now, before any of them arrives.
        """
        if self.state.body_refused:
            return
        limit = self.state.body_limit
        if limit is not None and self._body_received + length > limit:
            self._refuse_body()

    def handleContentChunk(self, data: bytes) -> None:
        if self.state.body_refused:
            return
        self._body_received += len(data)
        limit = self.state.body_limit
        if limit is not None and self._body_received > limit:
            self._refuse_body()
            return
        self.content.write(data)

    def _refuse_body(self) -> None:
        """
        Answer 413 now and close the connection; the rest of the body is
        dropped unread.
        """
        self.drop_body()
        # No "100 Continue" for a body we will not read.
        self.requestHeaders.removeHeader(b"expect")
        channel: GatewayChannel = self.channel
        channel.refuse_body(self)

    def drop_body(self) -> None:
        """
        Throw away what was received of the body and ignore the rest: the
        request is refused and will never be forwarded.
        """
        self.state.body_refused = True
        if self.content is not None:
            self.content.close()
        self.content = _Discard()

    def render(self, resrc: IResource) -> None:
        # Twisted's own Server header names its software and version.
        self.responseHeaders.removeHeader(b"server")
        self.channel.site.request_started(self)
        correlation_id(self)
        # A refused body (state.body_refused) is answered by the resource
        # tree's root, below the wrappers that add security and CORS headers.
        super().render(resrc)

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:
        """
        Set the status; a code twisted.web has no reason phrase for (429,
        431, 422, ...) gets its RFC 9110 phrase rather than "Unknown Status".
        """
        if message is None and code not in RESPONSES:
            message = _STANDARD_PHRASES.get(code)
        super().setResponseCode(code, message)

    def write(self, data: bytes) -> None:
        if not self.startedWriting and self.channel.site.readiness.draining:
            # Draining: this response is the connection's last, and says so.
            self.setHeader(b"connection", b"close")
            self.channel.persistent = False
        super().write(data)

    def processingFailed(self, reason: Failure) -> None:
        """
        A fault of ours: log the traceback, answer the JSON 500 envelope
        (never twisted.web's HTML traceback), or drop the connection when the
        response had already begun.
        """
        log.failure(
            "request processing failed",
            failure=reason,
            correlation_id=correlation_id(self),
        )
        if self.state.disconnected or self.finished:
            return None
        if self.startedWriting:
            self.channel.transport.abortConnection()
            return None
        body = render_error(self, GatewayError("INTERNAL_ERROR", "Internal server error"))
        self.write(body)
        self.finish()
        return None

    def connectionLost(self, reason: Failure) -> None:
        site: GatewaySite = self.channel.site
        # Before the notifyFinish errbacks run (in super), which read it.
        self.state.disconnected = True
        super().connectionLost(reason)
        if not self.finished:
            # A finished request was logged when it finished; this one was
            # cut off (the client left, or we aborted it), or refused.
            if not self.refused:
                site.log(self, finished=False)
            site.request_done(self)

    def cleaned_up(self, channel: HTTPChannel) -> None:
        site: GatewaySite = channel.site
        site.request_done(self)


class _ChunkSizeTooLong(MalformedChunkedData):
    """
    A chunk-size of more than L{MAX_CHUNK_SIZE_DIGITS} hex digits.
    """


#: The start of a chunk-size with too many hex digits.
_TOO_MANY_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]{%d}" % (MAX_CHUNK_SIZE_DIGITS + 1,))


class _LimitedChunkedDecoder(ChunkedDecoder):
    """
    twisted.web's chunked decoder, which also judges each chunk-size line
    as it is read: more than L{MAX_CHUNK_SIZE_DIGITS} hex digits raises
    L{_ChunkSizeTooLong} as soon as the digit past them arrives, and each
    chunk's declared size is told to C{declared} before its data is read.

    Without this twisted.web reads any number of digits (Python's int has
    no bound: C{10000000000000005} is 2**64 + 5) and waits for that many
    bytes; the body limit, counted on bytes as they arrived, said nothing
    until they came, so the request waited for the body timeout.
    """

    def __init__(
        self,
        dataCallback: Callable[[bytes], None],
        finishCallback: Callable[[bytes], None],
        declared: Callable[[int], None],
    ) -> None:
        super().__init__(dataCallback, finishCallback)
        self._declared = declared

    def check_chunk_size_line(self, line: bytearray) -> None:
        if _TOO_MANY_HEX_DIGITS.match(line):
            raise _ChunkSizeTooLong("chunk size over %d hex digits" % (MAX_CHUNK_SIZE_DIGITS,))

    def chunk_size_read(self, length: int) -> None:
        self._declared(length)


class _ContentLengthDecoder:
    """
    The body of a request with a Content-Length: its bytes go to C{data}
    until C{length} have come; then C{finish} gets what followed them.
    """

    __slots__ = ("_remaining", "_data", "_finish")

    def __init__(
        self, length: int, data: Callable[[bytes], None], finish: Callable[[bytes], None]
    ) -> None:
        self._remaining = length
        self._data = data
        self._finish = finish

    def dataReceived(self, data: bytes) -> None:
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            self._data(data)
            return
        self._remaining = 0
        self._data(data[:remaining])
        self._finish(data[remaining:])


# What a connection is doing, which decides what its one timer means.
_IDLE = "idle"  # between requests: the keep-alive timeout
_HEADERS = "headers"  # a request head is arriving: the header deadline
_BODY = "body"  # a request body is arriving: the body stall timeout
_HANDLING = "handling"  # the request is being answered: no timer
_LINGERING = "lingering"  # refused and half-closed: reading and discarding
_CLOSING = "closing"  # we closed: abort if the client does not let go
_TUNNEL = "tunnel"  # switched protocols: bytes relayed (the tunnel times it)

#: The most a client connection hands the kernel in one send(2) (Twisted's
#: FileDescriptor.SEND_LIMIT, 128 KiB by default): a large response takes
#: half the sends.  1 MiB responses through the gateway: +11% requests/s
#: (A/B, 3 alternating rounds of wrk -c50: 961 -> 1,065), peak RSS
#: unchanged; nothing more is buffered, the data is already in the
#: transport's buffer.
SEND_BYTES = 512 * 1024

#: While a request is answered, the bytes of the next ones (pipelined) are
#: kept; past this many the connection stops reading until the answer is
#: done (twisted.web's figure).
_PIPELINED_BYTES = 0x4000


class GatewayChannel(HookedHTTPChannel):
    """
    twisted.web's HTTP channel with the gateway's reading of requests: the
    head by llhttp (L{qeetgw.clienthead}), the body by the channel, which
    can answer a request before its body has arrived (the 413 of an
    over-size body) and then ignore the rest of it, and refuses clients
    that misbehave (see L{qeetgw.clientlimits}).  Responses are written by
    twisted.web, as for any channel.

    The connection has one timer, twisted.web's idle timeout
    (L{twisted.protocols.policies.TimeoutMixin}), whose meaning follows the
    phase: the keep-alive timeout while idle, a deadline from the first byte
    of a request while its head arrives (never reset by more bytes), a stall
    timeout reset by each byte while a body arrives, off while a request is
    answered, the linger timeout (or what is left of the linger time) while
    lingering after a refusal, and the abort timeout once we have closed.

    Every early refusal goes the same way: the answer is written
    (L{_refuse}, or the resource tree's 413 after L{refuse_body}), then
    L{loseConnection} lingers (L{_linger}) instead of closing at once.

    A request whose upstream switched protocols (a WebSocket's 101) turns
    the connection into one end of a tunnel (L{switch_protocols},
    L{attach_tunnel}): from then on its bytes, its half-close and its close
    go to the tunnel, and the tunnel has the only timer.
    """

    _refused = False
    _phase = _IDLE
    _limits = ClientLimits()
    #: The method, target and version of the request whose head or body is
    #: arriving (the request itself learns them when its body is complete).
    _request_line = (b"", b"", b"")
    #: The decoder of the body arriving, Content-Length or chunked.
    _decoder: Optional[Any] = None
    #: Whether L{_read} is running: bytes that arrive meanwhile (a
    #: replayed pipeline) are read by its loop.
    _reading = False
    #: While lingering: whether only our side was shut (TCP), rather than
    #: the transport asked to close (TLS, or a transport without half-close).
    _half_closed = False
    #: While lingering: bytes read and discarded, when it began, when the
    #: linger time runs out (on the site's clock).
    _lingered = 0
    _linger_started = 0.0
    _linger_deadline = 0.0
    #: Whether connectionLost was called: nothing to linger on then.
    _lost = False
    #: After a 101: the tunnel the connection's bytes go to
    #: (L{qeetgw.upstream.tunnel.Tunnel}).
    _tunnel: Optional[Any] = None

    def __init__(self) -> None:
        super().__init__()
        #: What the client sent that is not read yet.
        self._inbox = bytearray()
        self._reader = HeadReader(self._limits)

    def refuse_body(self, request: GatewayRequest) -> None:
        """
        Answer C{request} now, with the method, target and version already
        parsed, then close by lingering (the answer ends in
        L{requestDone}, which calls L{loseConnection}).
        """
        self._refused = True
        self.persistent = False
        self._phase = _CLOSING
        self.setTimeout(self.abortTimeout)
        request.requestReceived(*self._request_line)

    _host: Optional[IAddress] = None

    def getHost(self) -> IAddress:
        # The local address of a connection never changes; the transport
        # asks the kernel (getsockname) on every call, once per request.
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    def switch_protocols(self, head: bytes) -> Any:
        """
        The request being answered switched protocols: write the 101's
        C{head}, stop reading requests, and return the transport, no longer
        producing for this channel, for the tunnel to take over (then
        L{attach_tunnel}).
        """
        self._phase = _TUNNEL
        self.setTimeout(None)
        # The tunnel registers the upstream as this transport's producer.
        self.release_transport()
        # The client's end of its stream is passed on, not a close.
        alsoProvides(self, IHalfCloseableProtocol)
        self.transport.write(head)
        return self.transport

    def attach_tunnel(self, tunnel: Any) -> None:
        """
        From now on what the client sends goes to C{tunnel}, starting with
        what it sent after its handshake.
        """
        self._tunnel = tunnel
        if self._inbox:
            early = bytes(self._inbox)
            del self._inbox[:]
            tunnel.client_data(early)

    def dataReceived(self, data: bytes) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.client_data(data)
            return
        if self._refused:
            # Answered early: never parsed, never kept.
            if self._phase == _LINGERING:
                self._discard(len(data))
            return
        # (Not HTTPChannel.dataReceived: it resets the timer on every read,
        # which would turn the header deadline back into an idle timer that
        # a client sending a byte at a time never trips.)
        if self._phase == _BODY:
            self.resetTimeout()
            if not self._inbox and not self._reading:
                # More of a body, as it comes: to its decoder, not copied.
                self._decode_body(data)
                if self._inbox:
                    self._read()
                return
        self._inbox += data
        self._read()

    def _read(self) -> None:
        """
        Read what is in the inbox, request after request, until it is empty,
        a request is being answered, or the connection is refused or closing.
        """
        if self._reading:
            return
        self._reading = True
        try:
            inbox = self._inbox
            while inbox and not self._refused:
                phase = self._phase
                if phase == _HANDLING:
                    # Pipelined: kept until the answer is done.
                    if len(inbox) > _PIPELINED_BYTES:
                        self.pause_reading()
                    return
                if phase == _CLOSING:
                    # Sent after the connection's last request: never read.
                    del inbox[:]
                    return
                if phase == _BODY:
                    data = bytes(inbox)
                    del inbox[:]
                    self._decode_body(data)
                    continue
                if phase == _IDLE:
                    self._begin_request()
                result = self._reader.read(inbox)
                if result is None:
                    return
                if result is SKIPPED:
                    # The stray CRLF some clients send after a body: the
                    # connection is idle again, not slow.
                    self._phase = _IDLE
                    self.setTimeout(self._limits.keepalive_timeout)
                elif isinstance(result, Refusal):
                    self._refuse(result)
                else:
                    self._head_received(result)
        finally:
            self._reading = False

    def _begin_request(self) -> None:
        """
        The first byte of a request: start its header deadline.
        """
        self._phase = _HEADERS
        self.setTimeout(self._limits.header_timeout)

    def _head_received(self, head: Head) -> None:
        """
        A request head was read: make its request, then read its body, or
        answer it when it has none.  (What twisted.web's C{lineReceived} and
        C{allHeadersReceived} do, with the head already checked.)
        """
        self._request_line = (head.method, head.target, head.version)
        request: GatewayRequest = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        add_received_fields(request.requestHeaders, head.fields)
        request.parseCookies()
        self.persistent = self.checkPersistence(request, head.version)
        if head.chunked:
            length: Optional[int] = None
        else:
            length = head.content_length or 0
        request.gotLength(length)
        if self._refused:
            return  # 413, answered as the length became known
        if length == 0:
            self._all_content_received()
            return
        expect = request.requestHeaders.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue" and head.version == b"HTTP/1.1":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length is None:
            # A chunked body; each chunk-size line is judged as it is read.
            self._decoder = _LimitedChunkedDecoder(
                request.handleContentChunk, self._body_received, request.chunk_declared
            )
        else:
            self._decoder = _ContentLengthDecoder(
                length, request.handleContentChunk, self._body_received
            )
        self._phase = _BODY
        self.setTimeout(self._limits.body_timeout)

    def _decode_body(self, data: bytes) -> None:
        """
        Feed C{data} to the body's decoder.  The only bad request found in a
        body is a malformed chunked encoding (an invalid chunk size, a
        missing CRLF).
        """
        try:
            self._decoder.dataReceived(data)
        except _ChunkSizeTooLong:
            self._refuse(chunk_size_too_long())
        except MalformedChunkedData:
            self._refuse(bad_request("invalid chunked body"))

    def _body_received(self, rest: bytes) -> None:
        """
        The whole body has arrived; C{rest} is what followed it.
        """
        self._decoder = None
        if self._refused:
            # The refused request was already answered; what followed its
            # body is never read.
            return
        self._inbox[:0] = rest
        self._all_content_received()

    def _all_content_received(self) -> None:
        """
        The request has arrived whole: answer it.  (What twisted.web's
        C{allContentReceived} does.)
        """
        self._phase = _HANDLING
        self.begin_handling()
        request: GatewayRequest = self.requests[-1]
        request.requestReceived(*self._request_line)

    def requestDone(self, request: GatewayRequest) -> None:
        if self.persistent:
            # Idle again: HTTPChannel restores the "saved" timeout, which
            # must be the keep-alive one, not the deadline of the request.
            self._phase = _IDLE
            self.set_timeout_after_request(self._limits.keepalive_timeout)
        else:
            self._phase = _CLOSING
            self.setTimeout(self.abortTimeout)
        super().requestDone(request)
        if self.persistent and self._inbox:
            # The next requests, sent while this one was answered.
            self._read()

    def timeoutConnection(self) -> None:
        phase = self._phase
        if phase == _LINGERING:
            # Either nothing came for the linger timeout, or the linger time
            # is up (the timer is set to whichever comes first).
            if self._linger_deadline - self.site.clock.seconds() <= 0:
                self._end_linger("linger time")
            else:
                self._end_linger("linger timeout")
        elif self._refused or phase == _CLOSING:
            # We closed and the client will not read what we sent.
            self.transport.abortConnection()
        elif phase == _HEADERS:
            self._refuse(header_timeout(self._limits))
        elif phase == _BODY:
            self._refuse(body_timeout(self._limits))
        else:
            log_idle_closed(describe_address(self.transport.getPeer()), self._limits)
            self._phase = _CLOSING
            self.setTimeout(self.abortTimeout)
            self.loseConnection()

    def bad_request_received(self) -> None:
        # twisted.web's answer is a bare "400 Bad Request" without a body.
        self._refuse(bad_request("malformed request"))

    def _refuse(self, refusal: Refusal) -> None:
        """
        Answer C{refusal} with the JSON envelope, log it, and close by
        lingering; the request never reaches the resource tree.
        """
        if self._refused:
            return
        self._refused = True
        self.persistent = False
        self._phase = _CLOSING
        request = self.requests[-1] if self.requests else None
        if request is not None:
            request.refused = True
            cid = correlation_id(request)
        else:
            cid = make_id()
        log_refusal(refusal, describe_address(self.transport.getPeer()), cid)
        date = datetimeToString(self.site.clock.seconds())
        self.transport.write(error_response(refusal, cid, date))
        # Bounded: a client that does not read the answer is aborted.
        self.setTimeout(self.abortTimeout)
        self.loseConnection()

    def loseConnection(self) -> None:
        """
        Close the connection once what was written has been sent; after an
        early refusal, by lingering (L{_linger}) unless the linger time is 0.
        """
        if (
            self._refused
            and self._phase != _LINGERING
            and self._limits.linger_time > 0
            and not self._lost
        ):
            self._linger()
            return
        super().loseConnection()

    def _linger(self) -> None:
        """
        Close after an early refusal the way nginx's lingering close does:
        half-close once the answer is written, then read and discard what the
        client still sends, and close when the client closes, when nothing
        came for the linger timeout, when the linger time has passed since
        the refusal, or when the linger byte cap was discarded.

        The client may still be writing its body.  Closing at once with its
        bytes unread makes the kernel answer them with a reset, which loses
        the answer: a client that writes its whole body before it reads
        (Python's http.client) gets a broken pipe instead of the 413.
        """
        limits = self._limits
        self._phase = _LINGERING
        self._lingered = 0
        self._linger_started = self.site.clock.seconds()
        self._linger_deadline = self._linger_started + limits.linger_time
        # Nothing the client sent is parsed or kept from here on: not what
        # is unread in the inbox (a head, pipelined requests), not a refused
        # body.
        del self._inbox[:]
        for request in self.requests:
            request.drop_body()
        # Stop being the transport's producer, as HTTPChannel.loseConnection
        # does, and have it read: a full send buffer may have paused it.
        self.release_transport()
        # Counted and timed before the transport is touched, in case closing
        # it ends the connection there and then.
        self.site.linger_started(self)
        self.setTimeout(min(limits.linger_timeout, limits.linger_time))
        transport = self.transport
        if not self.isSecure() and IHalfCloseableDescriptor.providedBy(transport):
            # TCP: shutdown(SHUT_WR) once the answer is written.  Twisted
            # tells a protocol of the client's end of the stream through
            # readConnectionLost, instead of closing the connection, only
            # when the protocol provides IHalfCloseableProtocol: this one
            # connection does from now on.  (Not every connection: a client
            # that half-closes after an ordinary request is closed at once,
            # as it always was.)
            alsoProvides(self, IHalfCloseableProtocol)
            self._half_closed = True
            transport.loseWriteConnection()
        else:
            # TLS: loseConnection sends close_notify (TLS's half-close) once
            # the answer is written, and the TLS layer goes on reading and
            # delivering what the client sends until the client's own
            # close_notify or the end of its TCP connection.  (Its
            # loseWriteConnection, from the TCP transport underneath, would
            # cut the TLS stream.)  The end of the linger aborts.
            transport.loseConnection()

    def _discard(self, size: int) -> None:
        """
        C{size} more bytes arrived while lingering, and were thrown away:
        count them, and close when a bound is reached.
        """
        self._lingered += size
        limits = self._limits
        if self._lingered >= limits.linger_max_bytes:
            self._end_linger("linger bytes")
            return
        remaining = self._linger_deadline - self.site.clock.seconds()
        if remaining <= 0:
            self._end_linger("linger time")
            return
        # As nginx: the next wait is the linger timeout, or what is left of
        # the linger time when that is shorter.
        self.setTimeout(min(limits.linger_timeout, remaining))

    def _stop_lingering(self, why: str) -> None:
        """
        Leave the lingering state, saying C{why}.
        """
        self._phase = _CLOSING
        log_linger_ended(
            describe_address(self.transport.getPeer()),
            why,
            self._lingered,
            self.site.clock.seconds() - self._linger_started,
            self._limits,
        )

    def _end_linger(self, why: str) -> None:
        """
        The linger is over for C{why}: close.
        """
        if self._phase != _LINGERING:
            return
        self._stop_lingering(why)
        if self._half_closed:
            # Our side is shut already: this closes the socket at once (or
            # once the answer is sent, if it is still being written, which
            # the abort timeout bounds).
            self.setTimeout(self.abortTimeout)
            self.transport.loseConnection()
        else:
            # loseConnection was called when the linger began.
            self.setTimeout(None)
            self.transport.abortConnection()
        # Last: this may end a drain, which closes what is left at once.
        self.site.linger_done(self)

    def readConnectionLost(self) -> None:
        """
        The client closed its side of the connection: it will send nothing
        more, so close ours, or, in a tunnel, pass it on.
        (L{IHalfCloseableProtocol}, provided while lingering and in a
        tunnel only.)
        """
        if self._phase == _LINGERING:
            self._end_linger("client closed")
        elif self._tunnel is not None:
            self._tunnel.client_half_closed()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our side of the connection is shut, what was written sent
        (L{IHalfCloseableProtocol}, provided while lingering and in a
        tunnel only): the linger, or the tunnel, goes on.
        """

    def connectionMade(self) -> None:
        site = getattr(self, "site", None)
        if site is not None:
            self._limits = site.limits
            self._reader = HeadReader(site.limits)
        # TCP directly, or the TCP connection beneath TLS.
        for transport in (self.transport, getattr(self.transport, "transport", None)):
            if hasattr(transport, "SEND_LIMIT"):
                transport.SEND_LIMIT = SEND_BYTES
        # The keep-alive timeout from the very start: a connection that sends
        # nothing is an idle one.
        self.timeOut = self._limits.keepalive_timeout
        super().connectionMade()
        if site is not None:
            site.channels.add(self)

    def connectionLost(self, reason: Failure) -> None:
        if self._tunnel is not None:
            self._tunnel.client_lost(reason)
        self._lost = True
        site = getattr(self, "site", None)
        if site is not None:
            site.channel_lost(self)
        if self._phase == _LINGERING:
            # The client closed the connection while we lingered (over TLS,
            # its close_notify or its end of TCP), or it was reset or
            # aborted (a drain whose grace ran out).
            closed = reason.check(ConnectionDone) is not None
            self._stop_lingering("client closed" if closed else "connection lost")
            self.site.linger_done(self)
        super().connectionLost(reason)

    def close_for_shutdown(self) -> None:
        """
        The drain's grace ran out with this connection busy: a tunnel is
        closed on both sides with a close frame 1001 each (what was relayed
        is still sent), anything else is aborted.
        """
        if self._tunnel is not None:
            self._tunnel.going_away()
        else:
            self.transport.abortConnection()

    def is_idle(self) -> bool:
        """
        Whether no request is in progress on this connection, and it is not
        lingering after a refusal.
        """
        return not self.requests and self._phase != _LINGERING


class GatewaySite(Site):
    """
    The gateway's Site: builds L{GatewayRequest}s and L{GatewayChannel}s,
    logs one access event per request, and drains on shutdown.

    @ivar body_limit: the largest request body accepted, in bytes.
    @ivar trust_proxy: which proxies may tell us the client's address.
    @ivar clock: the clock for request durations and the drain.
    @ivar channels: the open client connections.
    @ivar in_flight: the requests not yet finished.
    @ivar lingering: the connections lingering after an early refusal.
    @ivar limits: what clients are allowed (timeouts, sizes, connections).
    @ivar routes: the route table, to resolve each /api request's route as
        it is dispatched.
    """

    requestFactory = GatewayRequest
    protocol = GatewayChannel
    displayTracebacks = False

    def __init__(
        self,
        resource: IResource,
        body_limit: Optional[int],
        clock: IReactorTime,
        trust_proxy: TrustProxy = TrustProxy(),
        readiness: Optional[Readiness] = None,
        limits: Optional[ClientLimits] = None,
        routes: Optional[RouteTable] = None,
        jwt_query_param: Optional[bytes] = None,
    ) -> None:
        # Bodies are forwarded as bytes, never parsed into args: that parse
        # costs time and would answer a malformed multipart body with 400
        # before the upstream could.
        super().__init__(
            resource,
            requestFactory=GatewayRequest,
            parsePOSTFormSubmission=False,
            reactor=clock,
        )
        self.body_limit = body_limit
        self.clock = clock
        #: TRUST_PROXY, for L{qeetgw.clientaddr.client_ip}.
        self.trust_proxy = trust_proxy
        #: Set to draining when a drain starts: responses then close their
        #: connections.
        self.readiness = readiness if readiness is not None else Readiness()
        self.channels: Set[GatewayChannel] = set()
        self.in_flight: Set[GatewayRequest] = set()
        self.lingering: Set[GatewayChannel] = set()
        self._drained: Optional[Deferred[None]] = None
        #: Fired once the last connection has closed, while a drain waits
        #: for that (L{_all_closed}).
        self._closed_waiter: Optional[Deferred[None]] = None
        self.limits = limits if limits is not None else ClientLimits()
        #: The route table /api requests are routed on, resolved as each
        #: request is dispatched (L{getResourceFor}); L{None} leaves it to
        #: the proxy.
        self.routes = routes
        #: JWT_QUERY_PARAM: the query parameter a WebSocket handshake may
        #: carry its token in (L{qeetgw.websocket.take_query_token}).
        self.jwt_query_param = jwt_query_param

    @property
    def limits(self) -> ClientLimits:
        """
        What clients are allowed; setting it applies to new connections.
        """
        return self._limits

    @limits.setter
    def limits(self, limits: ClientLimits) -> None:
        self._limits = limits
        # twisted.web copies the factory's timeOut onto each channel: the
        # keep-alive timeout, which GatewayChannel re-purposes per phase.
        self.timeOut = limits.keepalive_timeout

    def buildProtocol(self, addr: IAddress) -> Optional[GatewayChannel]:  # type: ignore[override]
        """
        A channel for a new connection, or L{None} past MAX_CONNECTIONS:
        the listening port then closes the socket before reading from it,
        and the open connections are not touched.
        """
        if len(self.channels) >= self._limits.max_connections:
            log_connection_refused(describe_address(addr), self._limits)
            return None
        channel: GatewayChannel = super().buildProtocol(addr)
        return channel

    def log(self, request: GatewayRequest, finished: bool = True) -> None:  # type: ignore[override]
        """
        Emit the access event for C{request} (once), instead of the
        combined-log line.  twisted.web calls this as a request finishes;
        L{GatewayRequest} calls it with C{finished=False} for a request cut
        off before then.
        """
        state = state_of(request)
        if state.logged:
            return
        state.logged = True
        access_event(request, self.clock.seconds(), finished)

    def getResourceFor(self, request: IRequest) -> IResource:
        """
        The resource that answers C{request}: the root, as twisted.web
        finds it, once the request's route is resolved
        (L{qeetgw.requeststate.resolve_route}).
        """
        if self.jwt_query_param is not None:
            take_query_token(request, self.jwt_query_param)
        if self.routes is not None:
            resolve_route(request, self.routes)
        resource: IResource = super().getResourceFor(request)
        return resource

    def request_started(self, request: GatewayRequest) -> None:
        """
        Count C{request} as in flight.
        """
        self.in_flight.add(request)

    def request_done(self, request: GatewayRequest) -> None:
        """
        C{request} is over; fire the drain when it was the last.
        """
        self.in_flight.discard(request)
        self._check_drained()

    def linger_started(self, channel: GatewayChannel) -> None:
        """
        C{channel} lingers after an early refusal.
        """
        self.lingering.add(channel)

    def linger_done(self, channel: GatewayChannel) -> None:
        """
        C{channel} no longer lingers; fire the drain when it was the last
        thing waited for.
        """
        self.lingering.discard(channel)
        self._check_drained()

    def _check_drained(self) -> None:
        """
        Fire the drain when nothing is left in flight or lingering.
        """
        if self._drained is not None and not self.in_flight and not self.lingering:
            drained, self._drained = self._drained, None
            drained.callback(None)

    def channel_lost(self, channel: "GatewayChannel") -> None:
        """
        C{channel}'s connection is closed; fire a drain waiting for the last
        one.
        """
        self.channels.discard(channel)
        if self._closed_waiter is not None and not self.channels:
            waiter, self._closed_waiter = self._closed_waiter, None
            waiter.callback(None)

    def _all_closed(self, deadline: float) -> "Deferred[None]":
        """
        Fire once every connection has closed, or at C{deadline} (the
        site's clock), when whatever is still open is aborted.

        A connection closed with C{loseConnection} first sends what it has
        buffered: a response that finished a moment before the drain ended
        is still on its way, and the reactor must not stop under it.
        """
        if not self.channels:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closed_waiter = waiter

        def give_up() -> None:
            if self._closed_waiter is waiter:
                self._closed_waiter = None
                for channel in list(self.channels):
                    channel.transport.abortConnection()
                waiter.callback(None)

        timer = self.clock.callLater(max(deadline - self.clock.seconds(), 0.0), give_up)

        def stop_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        waiter.addBoth(stop_timer)
        return waiter

    def drain(self, grace: float) -> "Deferred[None]":
        """
        Wait up to C{grace} seconds for in-flight requests to finish and
        lingering closes to end, then close every connection (idle
        keep-alive ones at once, busy and lingering ones when the grace runs
        out), and fire once they have all closed: within the grace, a
        closing connection first sends the end of its last response.
        """
        finished: Deferred[None] = Deferred()
        timer: Optional[IDelayedCall] = None
        deadline = self.clock.seconds() + grace

        def closed(_: object) -> None:
            if not finished.called:
                finished.callback(None)

        def close_all(_: object = None) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            for channel in list(self.channels):
                if channel.is_idle():
                    channel.transport.loseConnection()
                else:
                    channel.close_for_shutdown()
            self._all_closed(deadline).addCallback(closed)

        for channel in list(self.channels):
            if channel.is_idle():
                channel.transport.loseConnection()
        if not self.in_flight and not self.lingering:
            close_all()
            return finished
        self._drained = Deferred()
        self._drained.addCallback(close_all)
        timer = self.clock.callLater(grace, close_all)
        return finished
