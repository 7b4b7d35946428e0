"""
Tests for L{qeetgw.requeststate}: one typed state per request, for any
request, and the route resolved once, where the request is dispatched.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from qeetgw.paths import BadTarget
from qeetgw.requeststate import (
    RequestState,
    resolve_route,
    route_of,
    state_of,
    target_of,
    trace_of,
)
from qeetgw.server import GatewayRequest, GatewaySite
from qeetgw.upstream.routes import Route, RouteTable
from tests.gateway import MemoryGateway
from tests.memory import Connection, get
from tests.test_app import USER
from tests.test_metrics import bearer, scrape, value

ROUTES = RouteTable.from_services([USER])


def dummy(uri: bytes) -> DummyRequest:
    """
    A DummyRequest for C{uri} (its C{uri}, as a server sets it).
    """
    request = DummyRequest(uri.split(b"?")[0][1:].split(b"/"))
    request.uri = uri
    return request


#: The paths route tables were asked to match, in order (see
#: L{counting_match}).
MATCHED: List[bytes] = []

_MATCH = RouteTable.match


def counting_match(table: RouteTable, path: bytes) -> Optional[Tuple[Route, bytes]]:
    """
    L{RouteTable.match}, recording C{path} in L{MATCHED}.
    """
    MATCHED.append(path)
    return _MATCH(table, path)


class StateTests(SynchronousTestCase):
    """
    L{state_of} gives one state per request, whatever made the request.
    """

    def test_any_request_gets_one_state(self) -> None:
        request = dummy(b"/api/v1/users/1")
        state = state_of(request)
        self.assertIsInstance(state, RequestState)
        self.assertIs(state_of(request), state)
        self.assertIsNone(state.started)
        self.assertIsNone(state.body_limit)
        self.assertIsNot(state_of(dummy(b"/x")), state)

    def test_a_gateway_request_is_made_with_its_state(self) -> None:
        clock = MemoryReactorClock()
        clock.advance(1234.5)
        site = GatewaySite(Resource(), 4096, clock)
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        request = GatewayRequest(channel)
        self.assertIs(state_of(request), request.state)
        self.assertEqual(request.state.started, 1234.5)
        self.assertEqual(request.state.body_limit, 4096)

    def test_target_read_once(self) -> None:
        request = dummy(b"/api/v1/users/1?a=b")
        first = target_of(request)
        self.assertEqual((first.path, first.query), (b"/api/v1/users/1", b"a=b"))
        request.uri = b"/changed"
        self.assertIs(target_of(request), first)
        self.assertIs(state_of(request).target, first)

    def test_bad_target_raises_each_time(self) -> None:
        request = dummy(b"/api/../x")
        self.assertRaises(BadTarget, target_of, request)
        self.assertRaises(BadTarget, target_of, request)
        self.assertIsNone(state_of(request).target)

    def test_trace_read_once(self) -> None:
        request = dummy(b"/api/v1/users/1")
        request.requestHeaders.setRawHeaders(
            b"traceparent", [b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
        )
        trace = trace_of(request)
        self.assertEqual(trace.trace_id, "0af7651916cd43dd8448eb211c80319c")
        self.assertTrue(trace.continued)
        request.requestHeaders.removeHeader(b"traceparent")
        self.assertIs(trace_of(request), trace)


class RouteTests(SynchronousTestCase):
    """
    A route is matched once per request and remembered, a miss included.
    """

    def setUp(self) -> None:
        del MATCHED[:]
        self.patch(RouteTable, "match", counting_match)
        self.routes = ROUTES

    def test_matched_once(self) -> None:
        request = dummy(b"/api/v1/users/7")
        matched = route_of(request, self.routes)
        assert matched is not None
        self.assertEqual((matched[0].service.name, matched[1]), ("user-service", b"/7"))
        self.assertEqual(route_of(request, self.routes), matched)
        self.assertEqual(MATCHED, [b"/api/v1/users/7"])

    def test_no_route_remembered(self) -> None:
        request = dummy(b"/api/v1/nowhere")
        self.assertIsNone(route_of(request, self.routes))
        self.assertIsNone(route_of(request, self.routes))
        self.assertTrue(state_of(request).route_resolved)
        self.assertEqual(MATCHED, [b"/api/v1/nowhere"])

    def test_resolve_only_api_paths_that_can_be_read(self) -> None:
        own = dummy(b"/health")
        bad = dummy(b"/api/v1/users/%2e%2e/x")
        for request in (own, bad):
            resolve_route(request, self.routes)
            self.assertFalse(state_of(request).route_resolved)
        self.assertEqual(MATCHED, [])


class DispatchTests(SynchronousTestCase):
    """
    Through the whole gateway: the site resolves each /api request's route
    as it dispatches it, and nothing matches it again.
    """

    def setUp(self) -> None:
        del MATCHED[:]
        self.patch(RouteTable, "match", counting_match)
        self.memory = MemoryGateway(
            {"METRICS_PORT": "tcp:0", "CORS_ORIGINS": "http://shop.test", "RATE_LIMIT_MAX": "100"}
        )
        self.metrics = self.memory.gateway.metrics

    def test_forwarded_request_matched_once(self) -> None:
        response = self.memory.send(get(b"/api/v1/users/1", bearer()))
        self.assertEqual(response.code, 200)
        self.assertEqual(MATCHED, [b"/api/v1/users/1"])

    def test_refused_before_the_proxy_named_by_its_route(self) -> None:
        """
        A 401 and a CORS preflight never reach the proxy; the metrics still
        name their service, from the route the site resolved, matched once
        each.
        """
        self.assertEqual(self.memory.send(get(b"/api/v1/orders/1")).code, 401)
        preflight = get(
            b"/api/v1/products/1",
            b"Origin: http://shop.test\r\nAccess-Control-Request-Method: GET\r\n",
            method=b"OPTIONS",
        )
        self.assertEqual(self.memory.send(preflight).code, 204)
        self.assertEqual(MATCHED, [b"/api/v1/orders/1", b"/api/v1/products/1"])
        samples = scrape(self.metrics)
        self.assertEqual(
            value(samples, "qeetgw_requests_total", service="order-service", method="GET", status_class="4xx"),
            1,
        )
        self.assertEqual(
            value(samples, "qeetgw_requests_total", service="product-service", method="OPTIONS", status_class="2xx"),
            1,
        )

    def test_own_endpoints_never_matched(self) -> None:
        self.assertEqual(self.memory.send(get(b"/health")).code, 200)
        self.assertEqual(MATCHED, [])


class DisconnectTests(SynchronousTestCase):
    """
    A client that leaves is known to every part answering its request.
    """

    def test_lost_connection_marks_the_state(self) -> None:
        memory = MemoryGateway(answer=lambda request: NOT_DONE_YET)
        seen: List[Any] = []
        connection = Connection(memory.gateway.site)
        connection.send(get(b"/api/v1/users/1", bearer()))
        memory.agent.flush()
        self.assertEqual(len(memory.upstream.pending), 1)
        [request] = memory.gateway.site.in_flight
        seen.append(state_of(request).disconnected)
        connection.close()
        seen.append(state_of(request).disconnected)
        self.assertEqual(seen, [False, True])
