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
"""

from __future__ import annotations

from typing import Any, Optional, Set

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from qeetgw.logging import access_event
from qeetgw.readiness import Readiness
from qeetgw.config import TrustProxy
from qeetgw.correlation import correlation_id
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
            # cut off (the client left, or we aborted it).
            site.log(self, finished=False)
            site.request_done(self)

    def _cleanup(self) -> None:
        site: GatewaySite = self.channel.site
        super()._cleanup()
        site.request_done(self)


class GatewayChannel(HTTPChannel):
    """
    An HTTP channel that can answer a request before its body has arrived
    (the 413 of an over-size body) and then ignore the rest of the body.
    """

    _refused = False

    def refuse_body(self, request: GatewayRequest) -> None:
        """
        Answer C{request} now, with the method, target and version already
        parsed, then close.
        """
        self._refused = True
        self.persistent = False
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
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        if self._refused:
            return  # the refused request was already answered
        super().allContentReceived()

    def connectionMade(self) -> None:
        super().connectionMade()
        site = getattr(self, "site", None)
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
