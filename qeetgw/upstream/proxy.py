"""
Our ReverseProxyResource: forwards a request to the service its path routes
to and streams the answer back, byte for byte.

It keeps the shape of L{twisted.web.proxy.ReverseProxyResource} and fixes
its limits: HTTP/1.1 with a shared keep-alive pool, streaming with
backpressure both ways, a timeout, and the gateway's JSON errors.

Why not treq, nor twisted's Agent, here: treq's L{treq.client.HTTPClient}
wraps every request in a cookie agent (one jar for all clients: one user's
Set-Cookie would be replayed for the next), a gzip-decoding agent and a
redirect agent, each wrong for a transparent proxy; the Agent under it
canonicalises every header, drops a bare C{?}, keeps a response's
Connection-named fields and a HEAD's Content-Length from us, and was half
the gateway's CPU.  Requests go out on our own L{ConnectionPool}
(L{qeetgw.upstream.pool}, L{qeetgw.upstream.client}); treq and the Agent
stay for the health probes and JWKS fetches, where none of that matters.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any, Callable, Mapping, Optional, Set

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from qeetgw.clientaddr import peer_is_trusted
from qeetgw.correlation import correlation_id
from qeetgw.errors import GatewayError, not_found, render_error, write_error
from qeetgw.paths import BadTarget
from qeetgw.requeststate import route_of, state_of, target_of, trace_of
from qeetgw.upstream.balancing import (
    Outcome,
    backoff,
    body_is_kept,
    is_retryable,
    outcome_of_status,
)
from qeetgw.upstream.client import Body, IBodySink, UpstreamResponse
from qeetgw.upstream.forwarding import (
    client_response_fields,
    header_lines,
    merge_vary,
    upstream_request_headers,
)
from qeetgw.upstream.pool import ConnectionPool
from qeetgw.upstream.requesthead import Unsendable, request_head, split_url
from qeetgw.upstream.routes import Route, RouteTable
from qeetgw.upstream.services import ServiceUpstream
from qeetgw.upstream.tunnel import Tunnel, TunnelEnded, switching_head
from qeetgw.websocket import is_websocket_handshake

if TYPE_CHECKING:
    from qeetgw.metrics import Metrics, ServiceMetrics

log = Logger()

#: One event each time a WebSocket tunnel ends (the handshake has its
#: access event).
tunnel_log = Logger(namespace="qeetgw.tunnels")

#: Bodies up to this size are handed to the upstream connection in one
#: write; larger ones (kept in a temporary file by twisted.web) are read in
#: pieces as the upstream connection accepts them.
_IN_ONE_WRITE = 64 * 1024


class UpstreamTimeout(Exception):
    """
    No response started within the proxy timeout.
    """


def note_upstream(request: IRequest, service: str, status: Optional[int]) -> None:
    """
    Remember which service answered C{request}, and with which status, for
    the access log.
    """
    state = state_of(request)
    state.service = service
    state.upstream_status = status


def request_body(content: Optional[IO[bytes]]) -> Body:
    """
    The body to send for a request that twisted.web has received whole
    into C{content} (within JSON_BODY_LIMIT): L{None} for none, bytes when
    small, else the file itself (from its start), which the connection
    reads in pieces as the upstream accepts them.

    The upstream always gets a Content-Length framing we produced ourselves,
    whatever framing (length or chunked) the client used.
    """
    if content is None:
        return None
    content.seek(0, 2)
    length = content.tell()
    content.seek(0, 0)
    if length == 0:
        return None
    if length <= _IN_ONE_WRITE:
        return content.read()
    return content


@implementer(IBodySink)
class _StreamToClient:
    """
    Receives an upstream response body and writes it to the client as it
    arrives.

    The upstream connection's reading is registered as the client request's
    producer, so a client that reads slowly pauses reading from the
    upstream: memory stays bounded whatever the body's size.
    """

    def __init__(
        self,
        request: IRequest,
        finished: "Deferred[None]",
        metrics: "Optional[ServiceMetrics]" = None,
    ) -> None:
        self._request = request
        self._finished = finished
        self._metrics = metrics
        self._producer: Optional[IPushProducer] = None
        self.client_gone = False
        #: Whether the upstream body broke off before its end.
        self.broke = False

    def body_started(self, producer: IPushProducer) -> None:
        self._producer = producer
        self._request.registerProducer(producer, True)

    def body_data(self, data: bytes) -> None:
        if not self.client_gone:
            self._request.write(data)

    def body_ended(self, reason: Failure) -> None:
        request = self._request
        if not self.client_gone:
            request.unregisterProducer()
            if reason.check(ResponseDone, PotentialDataLoss):
                # PotentialDataLoss is how a body framed by the connection's
                # close ends: complete, as far as anyone can tell.
                request.finish()
            else:
                # The upstream died mid-body.  Finishing would hand the
                # client a complete-looking truncated response; aborting the
                # connection is the only honest answer left.
                self.broke = True
                log.warn(
                    "upstream body broke off: {reason}",
                    reason=reason.getErrorMessage(),
                    correlation_id=correlation_id(request),
                )
                if self._metrics is not None:
                    self._metrics.upstream_error("reset")
                abort_client(request)
        self._finished.callback(None)

    def stop(self) -> None:
        """
        The client went away: stop reading the upstream body and close its
        connection, which cannot be reused mid-response.
        """
        if self.client_gone:
            return
        self.client_gone = True
        if self._producer is not None:
            self._producer.stopProducing()
            # The connection says nothing more once abandoned.
            if not self._finished.called:
                self._finished.callback(None)


def abort_client(request: IRequest) -> None:
    """
    Drop the client's connection at once, without finishing its response.
    """
    transport = getattr(getattr(request, "channel", None), "transport", None)
    if transport is not None and hasattr(transport, "abortConnection"):
        transport.abortConnection()
    else:
        request.loseConnection()


class ReverseProxyResource(Resource):
    """
    Forwards every request below it to the upstream its path routes to.

    @param routes: the route table.
    @param connections: the keep-alive pool requests go out on (its
        endpoints connect to in-memory upstreams in tests).
    @param clock: the clock for the proxy timeout.
    @param timeout: seconds an upstream may take to start its response.
    @param metrics: where to count upstream times, errors and requests in
        flight; L{None} counts nothing.
    @param upstreams: each service's instances, retry policy and limits, by
        name; without one a service's single URL is used, untried again.
    @param tunnel_idle_timeout: seconds without a byte either way after
        which a WebSocket tunnel is closed; 0 for never.
    @param max_tunnels: WebSocket tunnels open at most; past it a handshake
        gets 503.
    """

    isLeaf = True

    def __init__(
        self,
        routes: RouteTable,
        connections: ConnectionPool,
        clock: IReactorTime,
        timeout: float,
        metrics: "Optional[Metrics]" = None,
        upstreams: Optional[Mapping[str, ServiceUpstream]] = None,
        tunnel_idle_timeout: float = 3600.0,
        max_tunnels: int = 10000,
    ) -> None:
        super().__init__()
        self._tunnel_idle_timeout = tunnel_idle_timeout
        self._max_tunnels = max_tunnels
        #: WebSocket tunnels open now.
        self.tunnels: Set[Tunnel] = set()
        self._metrics = metrics
        self._upstreams = upstreams
        self._routes = routes
        self._connections = connections
        self._clock = clock
        self._timeout = timeout

    def render(self, request: IRequest) -> Any:
        """
        Start forwarding C{request}; the response follows asynchronously.
        """
        try:
            target = target_of(request)
            # Resolved as the site dispatched the request; resolved here
            # when this resource is used without a gateway site.
            matched = route_of(request, self._routes)
        except BadTarget as bad:
            return render_error(request, GatewayError("BAD_REQUEST", str(bad)))
        if matched is None:
            return render_error(request, not_found(request))
        route, rest = matched
        note_upstream(request, route.service.name, None)
        # twisted.web would add "Content-Type: text/html" to a response that
        # has none; an upstream's response must reach the client as it was.
        request.defaultContentType = None
        self._forward(request, route, rest, target.query)
        return NOT_DONE_YET

    def _forward(self, request: IRequest, route: Route, rest: bytes, query: Optional[bytes]) -> None:
        """
        Send C{request} to an instance of C{route}'s service and relay what
        comes back; see L{_Exchange}.
        """
        upstream = self._upstreams.get(route.service.name) if self._upstreams else None
        if len(self.tunnels) >= self._max_tunnels and is_websocket_handshake(request):
            request.setHeader(b"retry-after", b"1")
            write_error(
                request,
                GatewayError("SERVICE_UNAVAILABLE", "Too many WebSocket connections", status=503),
            )
            return
        if upstream is not None and upstream.at_capacity():
            # The circuit breaker: answer now rather than queue without bound.
            request.setHeader(b"retry-after", b"1")
            write_error(
                request,
                GatewayError(
                    "SERVICE_UNAVAILABLE", f"Service {route.service.name} is overloaded", status=503
                ),
            )
            return
        _Exchange(self, request, route, rest, query, upstream).start()

    def _failed(
        self,
        reason: Failure,
        request: IRequest,
        route: Route,
        metrics: "Optional[ServiceMetrics]" = None,
    ) -> None:
        """
        Answer C{request} with the error C{reason} maps to, unless the
        client is already gone.
        """
        if state_of(request).disconnected:
            return  # cancelled because the client left: nobody to answer
        if metrics is not None:
            metrics.upstream_error(upstream_error_kind(reason))
        name = route.service.name
        if reason.check(UpstreamTimeout):
            error = GatewayError(
                "GATEWAY_TIMEOUT",
                f"Service {name} did not respond in time",
            )
            log.warn(
                "upstream timed out: {service}",
                service=name,
                correlation_id=correlation_id(request),
            )
        elif _is_unreachable(reason):
            error = GatewayError("SERVICE_UNAVAILABLE", f"Service {name} is unavailable")
            log.warn(
                "upstream unavailable: {service}: {reason}",
                service=name,
                reason=reason.getErrorMessage(),
                correlation_id=correlation_id(request),
            )
        else:
            log.failure(
                "proxying failed",
                failure=reason,
                service=name,
                correlation_id=correlation_id(request),
            )
            error = GatewayError("INTERNAL_ERROR", "Internal server error")
        if getattr(request, "startedWriting", False):
            abort_client(request)
        else:
            write_error(request, error)

class _Exchange:
    """
    One client request forwarded: tries on the service's instances until
    one answers or the retry rules say stop, then relays the answer.

    A try that failed is tried again on another instance, within RETRY_MAX
    and the service's retry budget, only as L{qeetgw.upstream.balancing.is_retryable}
    allows (any method when the connection failed before a byte was sent;
    idempotent methods with a kept body also after a reset, a timeout or a
    502/503/504).  A service with a single instance is never tried twice:
    one URL works exactly as it always has.
    """

    def __init__(
        self,
        proxy: ReverseProxyResource,
        request: IRequest,
        route: Route,
        rest: bytes,
        query: Optional[bytes],
        upstream: Optional[ServiceUpstream],
    ) -> None:
        self.proxy = proxy
        self.request = request
        self.route = route
        self.rest = rest
        self.query = query
        self.upstream = upstream
        self.tries = 0
        self.tried: list = []
        self.pending: Optional[Deferred[Any]] = None
        self.streaming: Optional[_StreamToClient] = None
        self.client_left = False
        # Whether this request holds one of its service's retry budget: from
        # the moment a retry is granted until that retry's try ends.
        self.holds_retry = False
        #: Counted in the requests in flight (until it ends, or becomes a
        #: tunnel, counted in the tunnels).
        self.in_flight = True
        metrics = proxy._metrics
        self.metrics = metrics.service(route.service.name) if metrics is not None else None
        self.header_lines = header_lines(upstream_request_headers(
            request.requestHeaders,
            peer_ip=getattr(request.getClientAddress(), "host", None),
            proto=b"https" if request.isSecure() else b"http",
            correlation_id=correlation_id(request),
            peer_trusted=peer_is_trusted(request),
            trace=trace_of(request),
        ))
        #: A WebSocket handshake: forwarded with its Upgrade (hop-by-hop for
        #: any other request), never tried again once sent, and a 101
        #: answer makes a tunnel.
        self.upgrade = is_websocket_handshake(request)
        if self.upgrade:
            self.header_lines += b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
        length = _content_length(request.content)
        self.length: Optional[int] = length or None
        self.body_kept = upstream is not None and body_is_kept(length, upstream.retry_buffer_bytes)

    def start(self) -> None:
        """
        Send the first try.
        """
        over = self.request.notifyFinish().addErrback(self._client_gone)
        if self.metrics is not None:
            self.metrics.in_flight.inc()
            # However the request ends (answered, failed, client gone).
            over.addBoth(lambda _: self._not_in_flight())
        self._try()

    def _not_in_flight(self) -> None:
        # Once: a request that became a tunnel left the gauge when it did.
        if self.metrics is not None and self.in_flight:
            self.in_flight = False
            self.metrics.in_flight.dec()

    def _client_gone(self, reason: Failure) -> None:
        # Cancel the try in flight (closing its connection) whether or not
        # its response has started.
        self.client_left = True
        if self.streaming is not None:
            self.streaming.stop()
        elif self.pending is not None:
            self.pending.cancel()

    def _try(self) -> None:
        upstream, request = self.upstream, self.request
        if upstream is None:
            instance = None
            url = self.route.upstream_url(self.rest, self.query)
            timeout = self.proxy._timeout
        else:
            instance = upstream.instances.pick(exclude=self.tried)
            self.tried.append(instance)
            upstream.instances.started(instance)
            url = self.route.upstream_url(self.rest, self.query, instance.url.encode("ascii"))
            timeout = upstream.timeout
        self.tries += 1
        note_tries(request, self.tries, instance.url if instance is not None else None)
        sent_at = self.proxy._clock.seconds()
        try:
            key, host, target = split_url(url)
            head = request_head(request.method, target, host, self.header_lines, self.length)
        except Unsendable:
            # A method or target that is not valid HTTP to send on: the
            # client asked for something we cannot forward.
            if instance is not None:
                upstream.instances.cancelled(instance)  # type: ignore[union-attr]
            self._release_retry()
            write_error(request, GatewayError("BAD_REQUEST", "Request cannot be forwarded"))
            return
        answered = self.proxy._connections.request(
            key, request.method, head, request_body(request.content), self.upgrade
        )
        answered.addTimeout(timeout, self.proxy._clock, onTimeoutCancel=_timed_out)
        self.pending = answered
        answered.addCallbacks(
            self._answered, self._try_failed,
            callbackArgs=(instance, sent_at), errbackArgs=(instance, sent_at),
        )
        answered.addErrback(self._bug)

    def _answered(self, response: UpstreamResponse, instance: Any, sent_at: float) -> Any:
        self.pending = None
        if response.code == 101 and self.upgrade:
            self._switch(response, instance, sent_at)
            return None
        outcome = outcome_of_status(response.code)
        if instance is not None and outcome is Outcome.GATEWAY_ERROR and self._may_retry(outcome, True):
            self._finished(instance, outcome, sent_at)
            response.discard()
            self._release_retry()
            self._retry()
            return None
        if self.metrics is not None:
            self.metrics.time_to_first_byte.observe(self.proxy._clock.seconds() - sent_at)
        request = self.request
        note_upstream(request, self.route.service.name, response.code)
        request.setResponseCode(response.code, response.phrase)
        # The upstream's fields win over any of ours set so far (as with
        # http-proxy-middleware), but Vary lists are merged, the CORS fields
        # are the gateway's alone (client_response_headers drops the
        # upstream's), and so is the correlation id.
        outgoing = request.responseHeaders
        for lowered, (name, values) in client_response_fields(response.headers).items():
            if lowered == b"vary" and outgoing.hasHeader(b"vary"):
                values = [merge_vary(outgoing.getRawHeaders(b"vary"), values)]
            elif lowered == b"content-length":
                if response.code in (204, 304):
                    # RFC 9110 forbids one on a 204 outright; a 304's would
                    # describe a body the client never gets from us.
                    continue
                # One value: llhttp refuses a response whose lengths differ.
                values = values[:1]
            outgoing.setRawHeaders(name, values)
        outgoing.setRawHeaders(b"x-correlation-id", [correlation_id(request).encode("ascii")])
        finished: Deferred[None] = Deferred()
        self.streaming = _StreamToClient(request, finished, self.metrics)
        if self.holds_retry:
            # A retry's try ends with its body, however that ends.
            finished.addBoth(self._release_retry_passing)
        response.deliver(self.streaming)
        if instance is not None:
            upstream = self.upstream

            def body_done(_: object) -> None:
                if self.client_left and self.streaming is not None and self.streaming.client_gone:
                    upstream.instances.cancelled(instance)  # type: ignore[union-attr]
                elif self.streaming is not None and self.streaming.broke:
                    self._finished(instance, Outcome.RESET, sent_at)
                else:
                    self._finished(instance, outcome, sent_at)

            finished.addCallback(body_done)
        return finished

    def _switch(self, response: UpstreamResponse, instance: Any, sent_at: float) -> None:
        """
        The upstream switched protocols: relay the 101, then bytes both ways
        in a L{Tunnel} until either side closes.
        """
        request = self.request
        if self.metrics is not None:
            self.metrics.time_to_first_byte.observe(self.proxy._clock.seconds() - sent_at)
        if instance is not None:
            self._finished(instance, Outcome.SUCCESS, sent_at)
        self._release_retry()
        if state_of(request).disconnected:
            # The client left while the upstream answered.
            response.abandon()
            return
        note_upstream(request, self.route.service.name, 101)
        channel = request.channel
        cid = correlation_id(request)
        client = channel.switch_protocols(switching_head(response.headers, cid.encode("ascii")))
        # The handshake's access event, now: the tunnel has one of its own
        # when it ends.
        request.setResponseCode(101)
        channel.site.log(request)
        tunnels = self.proxy.tunnels
        metrics = self.metrics
        counted: Optional[Callable[[int, int], None]] = None
        if metrics is not None:
            self._not_in_flight()
            metrics.tunnels.inc()
            counted = _byte_counter(metrics)
        tunnel = Tunnel(
            client,
            response.transport,
            self.proxy._clock,
            self.proxy._tunnel_idle_timeout,
            lambda ended: self._tunnel_ended(tunnel, ended, instance),
            counted,
        )
        tunnels.add(tunnel)
        after = response.switch_to(tunnel)
        channel.attach_tunnel(tunnel)
        if after:
            tunnel.upstream_data(after)

    def _tunnel_ended(self, tunnel: Tunnel, ended: TunnelEnded, instance: Any) -> None:
        self.proxy.tunnels.discard(tunnel)
        if self.metrics is not None:
            self.metrics.tunnels.dec()
        tunnel_log.info(
            "websocket tunnel of {service} closed by {closed_by}: {to_upstream} bytes up, "
            "{to_client} down in {seconds}s",
            correlation_id=correlation_id(self.request),
            service=self.route.service.name,
            instance=instance.url if instance is not None else None,
            closed_by=ended.closed_by,
            to_upstream=ended.to_upstream,
            to_client=ended.to_client,
            seconds=round(ended.seconds, 3),
            clean=ended.clean,
        )

    def _try_failed(self, reason: Failure, instance: Any, sent_at: float) -> None:
        self.pending = None
        self._release_retry()
        if self.client_left:
            if instance is not None:
                self.upstream.instances.cancelled(instance)  # type: ignore[union-attr]
            return
        outcome = _outcome_of_failure(reason)
        if instance is not None:
            self._finished(instance, outcome, sent_at)
            if self._may_retry(outcome, outcome is not Outcome.CONNECT_FAILURE):
                log.info(
                    "retrying {service} on another instance after {kind}",
                    service=self.route.service.name,
                    kind=outcome.value,
                    correlation_id=correlation_id(self.request),
                )
                self._retry()
                return
        self.proxy._failed(reason, self.request, self.route, self.metrics)

    def _finished(self, instance: Any, outcome: Outcome, sent_at: float) -> None:
        """
        Tell the instance set how a try sent at C{sent_at} ended; count an
        ejection it caused, and the try in the instance's recent traffic
        (the status page's rates and percentiles: three counter increments,
        see L{qeetgw.upstream.balancing.traffic}).
        """
        assert self.upstream is not None
        now = self.proxy._clock.seconds()
        instance.traffic.record(now, outcome.failed, now - sent_at)
        if self.upstream.instances.finished(instance, outcome):
            log.warn(
                "instance ejected: {service} {instance}",
                service=self.route.service.name,
                instance=instance.url,
                ejections=instance.ejections,
            )
            if self.metrics is not None:
                self.metrics.ejections.inc()

    def _may_retry(self, outcome: Outcome, bytes_sent: bool) -> bool:
        upstream = self.upstream
        return (
            upstream is not None
            and upstream.several
            and self.tries <= upstream.retry_max
            # A retry whose try is ending now makes room for the next one.
            and upstream.budget.can_retry(ending=int(self.holds_retry))
            and is_retryable(self.request.method, self.body_kept, outcome, bytes_sent)
            # A handshake once sent may have reached the service.
            and not (self.upgrade and bytes_sent)
        )

    def _retry(self) -> None:
        """
        Take one of the service's retry budget, wait the backoff, and try
        again; the budget is held until that try ends (as Envoy counts its
        active retries), so retries in flight, not only those waiting, are
        what the budget bounds.
        """
        upstream = self.upstream
        assert upstream is not None
        upstream.budget.retry_started()
        self.holds_retry = True
        if self.metrics is not None:
            self.metrics.retries.inc()
        wait = deferLater(self.proxy._clock, backoff(self.tries, upstream.random), lambda: None)
        self.pending = wait

        def go(_: object) -> None:
            self.pending = None
            if self.client_left:
                self._release_retry()
            else:
                self._try()

        def stopped(reason: Failure) -> None:
            self._release_retry()  # the client left during the wait

        wait.addCallbacks(go, stopped)
        wait.addErrback(self._bug)

    def _release_retry(self) -> None:
        """
        The try of a granted retry ended: give its place in the budget back.
        """
        if self.holds_retry:
            self.holds_retry = False
            assert self.upstream is not None
            self.upstream.budget.retry_finished()

    def _release_retry_passing(self, result: object) -> object:
        """
        L{_release_retry} as a callback that passes C{result} on.
        """
        self._release_retry()
        return result

    def _bug(self, reason: Failure) -> None:
        # A fault of ours while handling a try: the 500 envelope, logged.
        self.proxy._failed(reason, self.request, self.route, self.metrics)


def _byte_counter(metrics: "ServiceMetrics") -> Callable[[int, int], None]:
    """
    What counts a tunnel's bytes into C{metrics}, as they are relayed.
    """
    up, down = metrics.tunnel_bytes_to_upstream, metrics.tunnel_bytes_to_client

    def counted(to_upstream: int, to_client: int) -> None:
        if to_upstream:
            up.inc(to_upstream)
        else:
            down.inc(to_client)

    return counted


def note_tries(request: IRequest, tries: int, instance: Optional[str]) -> None:
    """
    Remember how many tries C{request} took and which instance answered,
    for the access log.
    """
    state = state_of(request)
    state.tries = tries
    state.instance = instance


def _content_length(content: Optional[IO[bytes]]) -> int:
    """
    The size of a received body.
    """
    if content is None:
        return 0
    content.seek(0, 2)
    length = content.tell()
    content.seek(0, 0)
    return length


def _outcome_of_failure(reason: Failure) -> Outcome:
    """
    The balancing outcome of a failed try.
    """
    kind = upstream_error_kind(reason)
    if kind == "connect":
        return Outcome.CONNECT_FAILURE
    if kind == "timeout":
        return Outcome.TIMEOUT
    return Outcome.RESET


def _timed_out(result: object, timeout: float) -> Failure:
    """
    Turn the cancellation caused by the proxy timeout into
    L{UpstreamTimeout}, so it is not mistaken for a client going away.
    """
    return Failure(UpstreamTimeout(timeout))


def upstream_error_kind(reason: Failure) -> str:
    """
    The kind of an upstream failure, for the metrics: C{timeout} (no
    response within the proxy timeout), C{connect} (no connection: refused,
    unreachable, DNS), C{tls} (the TLS handshake or session failed),
    C{reset} (the connection broke before or during the response), or
    C{other}.
    """
    from OpenSSL.SSL import Error as TLSError
    from twisted.web.client import (
        RequestTransmissionFailed,
        ResponseFailed,
        ResponseNeverReceived,
    )

    if reason.check(UpstreamTimeout):
        return "timeout"
    if reason.check(ConnectError, DNSLookupError):
        return "connect"
    if reason.check(TLSError):
        return "tls"
    if reason.check(ResponseNeverReceived, RequestTransmissionFailed, ResponseFailed):
        # These wrap the failures that broke the connection.
        inner = getattr(reason.value, "reasons", None) or []
        if any(isinstance(each, Failure) and each.check(TLSError) for each in inner):
            return "tls"
        return "reset"
    return "other"


def _is_unreachable(reason: Failure) -> bool:
    """
    Whether C{reason} means the upstream could not be reached or failed
    before it sent a response: a 502 rather than our own fault.
    """
    from twisted.web.client import (
        RequestGenerationFailed,
        RequestTransmissionFailed,
        ResponseFailed,
        ResponseNeverReceived,
    )

    return reason.check(
        ConnectError,
        DNSLookupError,
        ResponseNeverReceived,
        RequestTransmissionFailed,
        ResponseFailed,
        CancelledError,
    ) is not None and not reason.check(RequestGenerationFailed)

