"""
What the gateway knows about one request, in one typed place.

Every part that learns something about a request writes it to the request's
L{RequestState}, and every part that needs it reads it from there: the
server (when the request began, its body limit, whether the client left,
and the route, resolved once as the site dispatches the request), the guards and the proxy (the service, the tries, the instance), the access log
and the metrics.  L{state_of} gives it for any request: a L{GatewayRequest
<qeetgw.server.GatewayRequest>} makes its own when it is created, and any
other request (C{DummyRequest} in tests) gets one on first use.

The readings of a request that are made once and then fixed (its target, its
trace context, its route) are here too, because they are remembered in the
state: L{target_of}, L{trace_of}, L{route_of} (resolved by the site as it
dispatches the request: L{resolve_route}).  The correlation id and the
client address are remembered the same way by L{qeetgw.correlation} and
L{qeetgw.clientaddr}.
"""

from __future__ import annotations

from typing import Optional, Tuple

import attrs
from twisted.web.iweb import IRequest

from qeetgw.paths import BadTarget, RequestTarget, is_api_path, parse_target
from qeetgw.tracecontext import TRACEPARENT, TRACESTATE, TraceContext, from_headers
from qeetgw.upstream.routes import Route, RouteTable

#: The one attribute the gateway sets on a twisted.web request.
_ATTRIBUTE = "qeetgw_state"


@attrs.define
class RequestState:
    """
    One request's state.  Fields are L{None} (or false) until the part that
    knows them has run.

    @ivar started: when the request began (its site's clock), for its
        duration; L{None} for a request no gateway site made.
    @ivar body_limit: the largest request body accepted, in bytes (the
        site's JSON_BODY_LIMIT); L{None} for no limit.
    @ivar body_refused: the body went over L{body_limit} and was dropped;
        the root answers 413.
    @ivar disconnected: the client's connection was lost before the
        response was complete: nobody is left to answer.
    @ivar target: the request target, parsed (see L{target_of}).
    @ivar route_resolved: whether L{route} was looked up yet (L{route} is
        L{None} both before and for a path no route matches).
    @ivar route: the matching route and the rest of the path after its
        prefix (see L{route_of}).
    @ivar correlation_id: the request's correlation id, once chosen.
    @ivar client_ip: the client's address, once resolved.
    @ivar trace: the request's trace context (see L{trace_of}).
    @ivar service: the service the request was forwarded to.
    @ivar upstream_status: the status the upstream answered with.
    @ivar tries: how many tries forwarding took.
    @ivar instance: the instance that answered (its base URL).
    @ivar query_token: the bearer token a WebSocket handshake carried in
        its query string (JWT_QUERY_PARAM), taken out of its target.
    @ivar jwt_key: the label of the key that verified the request's token
        (C{current}, C{previous-1}, ..., C{jwks}), once one did.
    @ivar logged: the access event was emitted (it is emitted once).
    @ivar counted: the request was counted in the metrics (once).
    """

    started: Optional[float] = None
    body_limit: Optional[int] = None
    body_refused: bool = False
    disconnected: bool = False
    target: Optional[RequestTarget] = None
    route_resolved: bool = False
    route: Optional[Tuple[Route, bytes]] = None
    correlation_id: Optional[str] = None
    client_ip: Optional[str] = None
    trace: Optional[TraceContext] = None
    service: Optional[str] = None
    upstream_status: Optional[int] = None
    tries: Optional[int] = None
    instance: Optional[str] = None
    query_token: Optional[str] = None
    jwt_key: Optional[str] = None
    logged: bool = False
    counted: bool = False


def attach_state(request: IRequest, state: RequestState) -> RequestState:
    """
    Give C{request} its state; done once, where the request is made.
    """
    setattr(request, _ATTRIBUTE, state)
    return state


def state_of(request: IRequest) -> RequestState:
    """
    The state of C{request}, made empty on first use for a request that was
    not given one.
    """
    state: Optional[RequestState] = getattr(request, _ATTRIBUTE, None)
    if state is None:
        state = attach_state(request, RequestState())
    return state


def target_of(request: IRequest) -> RequestTarget:
    """
    The parsed target of C{request}, parsed once and remembered.

    @raise qeetgw.paths.BadTarget: as L{parse_target}, each time it is
        asked for.
    """
    state = state_of(request)
    target = state.target
    if target is None:
        target = state.target = parse_target(request.uri)
    return target


def trace_of(request: IRequest) -> TraceContext:
    """
    The trace context of C{request}, read from its headers on first use and
    then fixed.
    """
    state = state_of(request)
    trace = state.trace
    if trace is None:
        headers = request.requestHeaders
        trace = state.trace = from_headers(
            headers.getRawHeaders(TRACEPARENT), headers.getRawHeaders(TRACESTATE)
        )
    return trace


def resolve_route(request: IRequest, routes: RouteTable) -> None:
    """
    Resolve the route of C{request} in C{routes} when it is an /api request
    whose target can be read; do nothing otherwise (the root answers a
    target it cannot read).  The site does this as it dispatches the
    request, so the route is known to every part that answers it, the
    wrappers in front of the proxy included (a preflight, a 401, a 429).
    """
    try:
        target = target_of(request)
    except BadTarget:
        return
    if is_api_path(target.path):
        route_of(request, routes)


def route_of(request: IRequest, routes: RouteTable) -> Optional[Tuple[Route, bytes]]:
    """
    The route C{request}'s path matches in C{routes}, and the rest of the
    path after the route's prefix; L{None} when no route matches.  Resolved
    once, where the request is dispatched, and remembered.

    @raise qeetgw.paths.BadTarget: when the target cannot be read.
    """
    state = state_of(request)
    if not state.route_resolved:
        state.route = routes.match(target_of(request).path)
        state.route_resolved = True
    return state.route
