"""
The gateway's HTTP server: twisted.web's Site, Request and HTTPChannel with
the few changes a gateway needs.

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
"""

from __future__ import annotations

from typing import Any, Optional, Set

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.basic import LineReceiver
from twisted.web.http import HTTPChannel, datetimeToString
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from qeetgw.clientlimits import (
    ClientLimits,
    Refusal,
    RequestHead,
    bad_request,
    body_timeout,
    describe_address,
    error_response,
    header_timeout,
    log_connection_refused,
    log_idle_closed,
    log_refusal,
)
from qeetgw.logging import access_event
from qeetgw.readiness import Readiness
from qeetgw.config import TrustProxy
from qeetgw.correlation import correlation_id, make_id
from qeetgw.errors import GatewayError, render_error

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


class GatewayRequest(Request):
    """
    A request of the gateway.  See the module docstring for what differs
    from L{twisted.web.server.Request}.
    """

    body_refused = False
    #: Refused by the channel before it reached the resource tree (see
    #: L{GatewayChannel}): its refusal event stands for it, so neither the
    #: access event nor the request metrics see it.
    refused = False
    _body_received = 0
    _logged = False

    def __init__(self, channel: HTTPChannel, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        #: When the request began, for its duration in the access log.
        self.started: float = channel.site.clock.seconds()

    @property
    def body_limit(self) -> Optional[int]:
        """
        The largest body accepted, from the site; L{None} for no limit.
        """
        return getattr(getattr(self.channel, "site", None), "body_limit", None)

    def gotLength(self, length: Optional[int]) -> None:
        limit = self.body_limit
        if limit is not None and length is not None and length > limit:
            self._refuse_body()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_refused:
            return
        self._body_received += len(data)
        limit = self.body_limit
        if limit is not None and self._body_received > limit:
            self._refuse_body()
            return
        self.content.write(data)

    def _refuse_body(self) -> None:
        """
        Answer 413 now and close the connection; the rest of the body is
        dropped unread.
        """
        self.body_refused = True
        if self.content is not None:
            self.content.close()
        self.content = _Discard()
        # No "100 Continue" for a body we will not read.
        self.requestHeaders.removeHeader(b"expect")
        channel: GatewayChannel = self.channel
        channel.refuse_body(self)

    def render(self, resrc: IResource) -> None:
        # Twisted's own Server header names its software and version.
        self.responseHeaders.removeHeader(b"server")
        self.channel.site.request_started(self)
        correlation_id(self)
        # A refused body (self.body_refused) is answered by the resource
        # tree's root, below the wrappers that add security and CORS headers.
        super().render(resrc)

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
        if self._disconnected or self.finished:
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
        super().connectionLost(reason)
        if not self.finished:
            # A finished request was logged when it finished; this one was
            # cut off (the client left, or we aborted it), or refused.
            if not self.refused:
                site.log(self, finished=False)
            site.request_done(self)

    def _cleanup(self) -> None:
        site: GatewaySite = self.channel.site
        super()._cleanup()
        site.request_done(self)


# What a connection is doing, which decides what its one timer means.
_IDLE = "idle"  # between requests: the keep-alive timeout
_HEADERS = "headers"  # a request head is arriving: the header deadline
_BODY = "body"  # a request body is arriving: the body stall timeout
_HANDLING = "handling"  # the request is being answered: no timer
_CLOSING = "closing"  # we closed: abort if the client does not let go


class GatewayChannel(HTTPChannel):
    """
    An HTTP channel that can answer a request before its body has arrived
    (the 413 of an over-size body) and then ignore the rest of the body, and
    that refuses clients that misbehave (see L{qeetgw.clientlimits}).

    The connection has one timer, twisted.web's idle timeout
    (L{twisted.protocols.policies.TimeoutMixin}), whose meaning follows the
    phase: the keep-alive timeout while idle, a deadline from the first byte
    of a request while its head arrives (never reset by more bytes), a stall
    timeout reset by each byte while a body arrives, off while a request is
    answered, and the abort timeout once we have closed.
    """

    # Backstops only: the checks of RequestHead refuse first, with 414/431
    # rather than twisted.web's bare 400.  (ClientLimits caps the header
    # block at 1 MiB and the request line at 8 KiB.)
    maxHeaders = 10000
    totalHeadersSize = 8192 + 1048576 + 1

    _refused = False
    _phase = _IDLE
    _head: Optional[RequestHead] = None
    _limits = ClientLimits()
    #: The reason given when twisted.web itself finds a request malformed.
    _bad_request_reason = "malformed request"

    def refuse_body(self, request: GatewayRequest) -> None:
        """
        Answer C{request} now, with the method, target and version already
        parsed, then close.
        """
        self._refused = True
        self.persistent = False
        self._head = None
        self._phase = _CLOSING
        self.setTimeout(self.abortTimeout)
        # These three are the channel's record of the request line; the
        # request itself only learns them when the whole body has arrived.
        request.requestReceived(self._command, self._path, self._version)

    _host: Optional[IAddress] = None

    def getHost(self) -> IAddress:
        # The local address of a connection never changes; the transport
        # asks the kernel (getsockname) on every call, once per request.
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return  # the connection is closing after an early answer
        phase = self._phase
        if phase == _IDLE:
            self._begin_request()
        elif phase == _BODY:
            self.resetTimeout()
        # Not HTTPChannel.dataReceived: it resets the timer on every read,
        # which would turn the header deadline back into an idle timer that
        # a client sending a byte at a time never trips.
        LineReceiver.dataReceived(self, data)

    def _begin_request(self) -> None:
        """
        The first byte of a request: start its header deadline.
        """
        self._phase = _HEADERS
        self._head = RequestHead(self._limits)
        self.MAX_LENGTH = self._limits.max_request_line
        self.setTimeout(self._limits.header_timeout)

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if self._phase == _IDLE:
            # A pipelined request replayed from the buffer after the
            # previous response: it begins now.
            self._begin_request()
        head = self._head
        assert head is not None
        if not head.request_line_seen:
            if not line:
                # The stray CRLF some clients send after a body: twisted.web
                # skips one and refuses a second.
                super().lineReceived(line)
                if not self._refused and not self.requests:
                    # Skipped: the connection is idle again, not slow.
                    self._phase = _IDLE
                    self._head = None
                    self.setTimeout(self._limits.keepalive_timeout)
                return
            refusal = head.request_line(line)
            if refusal is not None:
                self._refuse(refusal)
                return
            # Header lines may each be as long as the whole block.
            self.MAX_LENGTH = self._limits.max_header_bytes
            self._bad_request_reason = "malformed request line"
            try:
                super().lineReceived(line)
            finally:
                del self._bad_request_reason
            return
        refusal = head.header_line(line)
        if refusal is not None:
            self._refuse(refusal)
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # twisted's LineReceiver would close without a word.
        if self._phase == _IDLE:
            self._begin_request()
        assert self._head is not None
        self._refuse(self._head.line_too_long())

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        self._head = None
        if self._refused:
            return  # 413, answered as the length became known
        if self.length != 0:
            self._phase = _BODY
            self.setTimeout(self._limits.body_timeout)

    def rawDataReceived(self, data: bytes) -> None:
        if self._handlingRequest:
            super().rawDataReceived(data)
            return
        # The only bad request twisted.web finds in a body is a malformed
        # chunked encoding (an invalid chunk size, a missing CRLF).
        self._bad_request_reason = "invalid chunked body"
        try:
            super().rawDataReceived(data)
        finally:
            del self._bad_request_reason

    def allContentReceived(self) -> None:
        if self._refused:
            return  # the refused request was already answered
        self._phase = _HANDLING
        self._head = None
        # (HTTPChannel turns the timer off while the request is answered.)
        super().allContentReceived()

    def requestDone(self, request: GatewayRequest) -> None:
        if self.persistent:
            # Idle again: HTTPChannel restores the "saved" timeout, which
            # must be the keep-alive one, not the deadline of the request.
            self._phase = _IDLE
            self._savedTimeOut = self._limits.keepalive_timeout
        else:
            self._phase = _CLOSING
            self.setTimeout(self.abortTimeout)
        super().requestDone(request)

    def timeoutConnection(self) -> None:
        phase = self._phase
        if self._refused or phase == _CLOSING:
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

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's answer is a bare "400 Bad Request" without a body.
        self._refuse(bad_request(self._bad_request_reason))

    def _refuse(self, refusal: Refusal) -> None:
        """
        Answer C{refusal} with the JSON envelope, log it, and close; the
        request never reaches the resource tree.
        """
        if self._refused:
            return
        self._refused = True
        self.persistent = False
        self._head = None
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

    def connectionMade(self) -> None:
        site = getattr(self, "site", None)
        if site is not None:
            self._limits = site.limits
        # The keep-alive timeout from the very start: a connection that sends
        # nothing is an idle one.
        self.timeOut = self._limits.keepalive_timeout
        super().connectionMade()
        if site is not None:
            site.channels.add(self)

    def connectionLost(self, reason: Failure) -> None:
        site = getattr(self, "site", None)
        if site is not None:
            site.channels.discard(self)
        super().connectionLost(reason)

    def is_idle(self) -> bool:
        """
        Whether no request is in progress on this connection.
        """
        return not self.requests


class GatewaySite(Site):
    """
    The gateway's Site: builds L{GatewayRequest}s and L{GatewayChannel}s,
    logs one access event per request, and drains on shutdown.

    @ivar body_limit: the largest request body accepted, in bytes.
    @ivar trust_proxy: which proxies may tell us the client's address.
    @ivar clock: the clock for request durations and the drain.
    @ivar channels: the open client connections.
    @ivar in_flight: the requests not yet finished.
    @ivar limits: what clients are allowed (timeouts, sizes, connections).
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
        self._drained: Optional[Deferred[None]] = None
        self.limits = limits if limits is not None else ClientLimits()

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
        if getattr(request, "_logged", False):
            return
        request._logged = True
        access_event(request, self.clock.seconds(), finished)

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
        if self._drained is not None and not self.in_flight:
            drained, self._drained = self._drained, None
            drained.callback(None)

    def drain(self, grace: float) -> "Deferred[None]":
        """
        Wait up to C{grace} seconds for in-flight requests to finish, then
        close every connection (idle keep-alive ones at once, busy ones when
        the grace runs out).
        """
        finished: Deferred[None] = Deferred()
        timer: Optional[IDelayedCall] = None

        def close_all(_: object = None) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            for channel in list(self.channels):
                if channel.is_idle():
                    channel.transport.loseConnection()
                else:
                    channel.transport.abortConnection()
            if not finished.called:
                finished.callback(None)

        for channel in list(self.channels):
            if channel.is_idle():
                channel.transport.loseConnection()
        if not self.in_flight:
            close_all()
            return finished
        self._drained = Deferred()
        self._drained.addCallback(close_all)
        timer = self.clock.callLater(grace, close_all)
        return finished
