"""
Tests for L{qeetgw.upstream.proxy} and L{qeetgw.server}, in memory: raw HTTP bytes in
from a client, the proxy's own client connected to an in-memory upstream
(L{tests.memoryupstream.MemoryUpstreams}), a fake clock for timeouts.
"""

from __future__ import annotations

import gzip
from typing import Any

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from qeetgw.errors import GatewayError, render_error
from qeetgw.root import GatewayRoot
from qeetgw.server import GatewaySite
from qeetgw.upstream.proxy import ReverseProxyResource
from qeetgw.upstream.routes import RouteTable
from tests.memory import (
    SERVICES,
    Connection,
    RecordingUpstream,
    get,
    with_body,
)
from tests.memoryupstream import MemoryUpstreams, refusing


class NotFound(Resource):
    """
    Stands in for the gateway's own endpoints.
    """

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return render_error(request, GatewayError("NOT_FOUND", "own"))


def gateway(upstreams: MemoryUpstreams, body_limit: int = 1024 * 1024, timeout: float = 5.0) -> tuple[GatewaySite, MemoryReactorClock]:
    clock = MemoryReactorClock()
    proxy = ReverseProxyResource(RouteTable.from_services(SERVICES), upstreams.pool(clock), clock, timeout)
    return GatewaySite(GatewayRoot(proxy, NotFound()), body_limit, clock), clock


class ForwardingTests(SynchronousTestCase):
    """
    What the client sends is what the upstream gets.
    """

    def setUp(self) -> None:
        self.upstream = RecordingUpstream()
        self.agent = MemoryUpstreams(self.upstream)
        self.site, self.clock = gateway(self.agent)

    def exchange(self, raw: bytes, head: bool = False) -> Any:
        connection = Connection(self.site)
        connection.send(raw)
        self.agent.flush()
        return connection.response(head)

    def test_prefix_rewritten_and_query_kept(self) -> None:
        response = self.exchange(get(b"/api/v1/users/7/a%20b%2Fc?x=%41&y=1+2"))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.upstream.seen[0].uri, b"/users/7/a%20b%2Fc?x=%41&y=1+2")

    def test_bare_prefix(self) -> None:
        self.exchange(get(b"/api/v1/orders"))
        self.assertEqual(self.upstream.seen[0].uri, b"/orders")

    def test_every_route(self) -> None:
        for segment in [b"auth", b"users", b"products", b"orders", b"payments", b"inventory"]:
            self.exchange(get(b"/api/v1/" + segment + b"/x"))
        self.assertEqual(
            [seen.uri for seen in self.upstream.seen],
            [b"/auth/x", b"/users/x", b"/products/x", b"/orders/x", b"/payments/x", b"/inventory/x"],
        )

    def test_any_method(self) -> None:
        for method in [b"GET", b"DELETE", b"OPTIONS", b"PATCH", b"PROPFIND"]:
            self.exchange(get(b"/api/v1/products", method=method))
        self.assertEqual(
            [seen.method for seen in self.upstream.seen],
            [b"GET", b"DELETE", b"OPTIONS", b"PATCH", b"PROPFIND"],
        )

    def test_json_body_reaches_upstream(self) -> None:
        body = b'{"email":"a@b.c","password":"p\\u00e9"}'
        response = self.exchange(
            with_body(b"POST", b"/api/v1/auth/login", body, b"Content-Type: application/json\r\n")
        )
        self.assertEqual(response.code, 200)
        seen = self.upstream.seen[0]
        self.assertEqual((seen.method, seen.uri, seen.body), (b"POST", b"/auth/login", body))
        self.assertEqual(seen.headers.getRawHeaders(b"content-length"), [b"%d" % len(body)])
        self.assertEqual(seen.headers.getRawHeaders(b"content-type"), [b"application/json"])

    def test_form_body_is_not_parsed(self) -> None:
        body = b"--x\r\nbroken multipart"
        self.exchange(
            with_body(b"POST", b"/api/v1/products", body, b"Content-Type: multipart/form-data; boundary=x\r\n")
        )
        self.assertEqual(self.upstream.seen[0].body, body)

    def test_chunked_upload_forwarded_with_a_length(self) -> None:
        raw = (
            b"POST /api/v1/orders HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        self.exchange(raw)
        seen = self.upstream.seen[0]
        self.assertEqual(seen.body, b"hello world")
        self.assertEqual(seen.headers.getRawHeaders(b"content-length"), [b"11"])
        self.assertIsNone(seen.headers.getRawHeaders(b"transfer-encoding"))

    def test_large_body_from_a_temporary_file(self) -> None:
        body = bytes(range(256)) * 1024  # 256 KiB: twisted.web keeps it in a file
        connection = Connection(self.site)
        connection.send(with_body(b"PUT", b"/api/v1/products/1", body))
        for _ in range(10):  # 4 steps of 64 KiB, each scheduled on the clock
            self.clock.advance(0)
            self.agent.flush()
        self.assertEqual(connection.response().code, 200)
        self.assertEqual(len(self.upstream.seen), 1)
        self.assertEqual(self.upstream.seen[0].body, body)

    def test_request_headers(self) -> None:
        self.exchange(
            get(
                b"/api/v1/users/me",
                b"Authorization: Bearer t0k3n\r\nX-Correlation-ID: abc-123\r\n"
                b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nAccept-Encoding: gzip, br\r\n"
                b"Cookie: a=1\r\n",
            )
        )
        headers = self.upstream.seen[0].headers
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer t0k3n"])
        self.assertEqual(headers.getRawHeaders(b"x-correlation-id"), [b"abc-123"])
        self.assertEqual(headers.getRawHeaders(b"x-request-id"), [b"abc-123"])
        self.assertEqual(headers.getRawHeaders(b"host"), [b"upstream.test"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-for"), [b"203.0.113.9"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"gateway.test"])
        self.assertEqual(headers.getRawHeaders(b"accept-encoding"), [b"gzip, br"])
        self.assertEqual(headers.getRawHeaders(b"cookie"), [b"a=1"])
        self.assertIsNone(headers.getRawHeaders(b"x-hop"))

    def test_correlation_id_made_and_returned(self) -> None:
        response = self.exchange(get(b"/api/v1/users"))
        made = response.header(b"x-correlation-id")
        self.assertTrue(made.startswith(b"req-"), made)
        self.assertEqual(self.upstream.seen[0].headers.getRawHeaders(b"x-correlation-id"), [made])

    def test_no_server_header(self) -> None:
        response = self.exchange(get(b"/api/v1/users"))
        self.assertIsNone(response.header(b"server"))


class PassThroughTests(SynchronousTestCase):
    """
    What the upstream answers is what the client gets.
    """

    def answer_with(self, answer: Any, raw: bytes, head: bool = False) -> Any:
        self.upstream = RecordingUpstream(answer)
        self.agent = MemoryUpstreams(self.upstream)
        self.site, self.clock = gateway(self.agent)
        self.connection = Connection(self.site)
        self.connection.send(raw)
        self.agent.flush()
        if not self.connection.transport.value():
            return None  # the upstream has not answered yet
        return self.connection.response(head)

    def test_status_phrase_and_body(self) -> None:
        def teapot(request: IRequest) -> bytes:
            request.setResponseCode(418, b"Short And Stout")
            request.setHeader(b"x-upstream", b"yes")
            return b"<html>not json</html>"

        response = self.answer_with(teapot, get(b"/api/v1/products"))
        self.assertEqual((response.code, response.phrase), (418, b"Short And Stout"))
        self.assertEqual(response.body, b"<html>not json</html>")
        self.assertEqual(response.header(b"x-upstream"), b"yes")

    def test_no_content_type_added(self) -> None:
        def bare(request: IRequest) -> bytes:
            request.responseHeaders.removeHeader(b"content-type")
            request.defaultContentType = None
            return b"raw"

        response = self.answer_with(bare, get(b"/api/v1/products"))
        self.assertIsNone(response.header(b"content-type"))

    def test_redirect_not_followed(self) -> None:
        def moved(request: IRequest) -> bytes:
            request.setResponseCode(302)
            request.setHeader(b"location", b"/elsewhere")
            return b""

        response = self.answer_with(moved, get(b"/api/v1/auth/oauth"))
        self.assertEqual(response.code, 302)
        self.assertEqual(response.header(b"location"), b"/elsewhere")
        self.assertEqual(len(self.upstream.seen), 1)

    def test_gzip_untouched(self) -> None:
        compressed = gzip.compress(b'{"big":"' + b"x" * 1000 + b'"}')

        def zipped(request: IRequest) -> bytes:
            request.setHeader(b"content-encoding", b"gzip")
            request.setHeader(b"content-type", b"application/json")
            return compressed

        response = self.answer_with(zipped, get(b"/api/v1/products", b"Accept-Encoding: gzip\r\n"))
        self.assertEqual(response.body, compressed)
        self.assertEqual(response.header(b"content-encoding"), b"gzip")
        self.assertEqual(self.upstream.seen[0].headers.getRawHeaders(b"accept-encoding"), [b"gzip"])

    def test_set_cookie_kept_several_and_never_replayed(self) -> None:
        def cookies(request: IRequest) -> bytes:
            request.responseHeaders.setRawHeaders(b"set-cookie", [b"session=alice; Path=/", b"theme=dark"])
            return b"{}"

        response = self.answer_with(cookies, get(b"/api/v1/auth/login"))
        self.assertEqual(response.headers.getRawHeaders(b"set-cookie"), [b"session=alice; Path=/", b"theme=dark"])
        # A second client must not be sent alice's cookie.
        other = Connection(self.site)
        other.send(get(b"/api/v1/users/me"))
        self.agent.flush()
        self.assertIsNone(self.upstream.seen[1].headers.getRawHeaders(b"cookie"))

    def test_hop_by_hop_response_headers_dropped(self) -> None:
        def hop(request: IRequest) -> bytes:
            request.setHeader(b"keep-alive", b"timeout=5")
            request.setHeader(b"upgrade", b"h2c")
            request.setHeader(b"proxy-connection", b"keep-alive")
            request.setHeader(b"x-powered-by", b"Express")
            return b"{}"

        response = self.answer_with(hop, get(b"/api/v1/products"))
        self.assertEqual(response.body, b"{}")
        for name in [b"keep-alive", b"upgrade", b"proxy-connection", b"x-powered-by", b"server"]:
            self.assertIsNone(response.header(name), name)

    def test_head_204_304_have_no_body(self) -> None:
        def answer(code: int) -> Any:
            def render(request: IRequest) -> bytes:
                request.setResponseCode(code)
                return b""
            return render

        for code in (204, 304):
            response = self.answer_with(answer(code), get(b"/api/v1/products"))
            self.assertEqual(response.code, code)
            rest = self.connection.transport.value().split(b"\r\n\r\n", 1)[1]
            self.assertEqual(rest, b"")
            self.assertIsNone(response.header(b"transfer-encoding"))
            self.assertIsNone(response.header(b"content-length"))

        def sized(request: IRequest) -> bytes:
            return b"0123456789"

        response = self.answer_with(sized, get(b"/api/v1/products", method=b"HEAD"), head=True)
        self.assertEqual(self.connection.transport.value().split(b"\r\n\r\n", 1)[1], b"")
        self.assertEqual(self.upstream.seen[0].method, b"HEAD")

    def test_streamed_as_it_arrives(self) -> None:
        response = self.answer_with(lambda request: NOT_DONE_YET, get(b"/api/v1/orders/stream"))
        pending = self.upstream.pending[0]
        pending.setHeader(b"content-type", b"text/event-stream")
        pending.write(b"data: one\n\n")
        self.agent.flush()
        self.assertIn(b"data: one\n\n", self.connection.transport.value())
        pending.write(b"data: two\n\n")
        self.agent.flush()
        self.assertIn(b"data: two\n\n", self.connection.transport.value())
        pending.finish()
        self.agent.flush()
        response = self.connection.response()
        self.assertTrue(response.complete)
        self.assertEqual(response.body, b"data: one\n\ndata: two\n\n")

    def test_upstream_dying_mid_body_aborts_the_client(self) -> None:
        self.answer_with(lambda request: NOT_DONE_YET, get(b"/api/v1/orders/big"))
        pending = self.upstream.pending[0]
        pending.setHeader(b"content-length", b"100")
        pending.write(b"x" * 10)
        self.agent.flush()
        pending.channel.transport.loseConnection()
        self.agent.flush()
        self.assertTrue(self.connection.transport.disconnecting)
        response = self.connection.response()
        self.assertFalse(response.complete)

    def test_client_leaving_closes_the_upstream_request(self) -> None:
        self.answer_with(lambda request: NOT_DONE_YET, get(b"/api/v1/orders/slow"))
        pending = self.upstream.pending[0]
        lost = []
        pending.notifyFinish().addErrback(lost.append)
        self.connection.close()
        self.agent.flush()
        self.assertEqual(len(lost), 1)

    def test_client_leaving_mid_body_closes_the_upstream(self) -> None:
        self.answer_with(lambda request: NOT_DONE_YET, get(b"/api/v1/orders/slow"))
        pending = self.upstream.pending[0]
        pending.write(b"partial")
        self.agent.flush()
        lost = []
        pending.notifyFinish().addErrback(lost.append)
        self.connection.close()
        self.agent.flush()
        self.assertEqual(len(lost), 1)


class FailureTests(SynchronousTestCase):
    """
    Upstream failures become the SPEC's JSON errors.
    """

    def test_unreachable_is_502(self) -> None:
        agent = refusing(ConnectionRefusedError("127.0.0.1"))
        site, _ = gateway(agent)
        connection = Connection(site)
        connection.send(get(b"/api/v1/users/7", b"X-Correlation-ID: c-1\r\n"))
        response = connection.response()
        self.assertEqual(response.code, 502)
        self.assertEqual(response.header(b"content-type"), b"application/json; charset=utf-8")
        self.assertEqual(
            response.json(),
            {"success": False, "error": {"message": "Service user-service is unavailable",
                                         "code": "SERVICE_UNAVAILABLE", "correlationId": "c-1"}},
        )

    def test_slow_upstream_is_504_at_the_timeout(self) -> None:
        upstream = RecordingUpstream(lambda request: NOT_DONE_YET)
        agent = MemoryUpstreams(upstream)
        site, clock = gateway(agent, timeout=5.0)
        connection = Connection(site)
        connection.send(get(b"/api/v1/payments/1"))
        agent.flush()
        clock.advance(4.9)
        self.assertEqual(connection.transport.value(), b"")
        clock.advance(0.2)
        response = connection.response()
        self.assertEqual(response.code, 504)
        self.assertEqual(response.json()["error"]["code"], "GATEWAY_TIMEOUT")
        self.assertIn("payment-service", response.json()["error"]["message"])

    def test_no_route_is_404(self) -> None:
        agent = refusing(ConnectionRefusedError())
        site, _ = gateway(agent)
        for path in [b"/api/v1/usersX", b"/api/v1/nothing/1", b"/api", b"/api/v2/users"]:
            connection = Connection(site)
            connection.send(get(path))
            response = connection.response()
            self.assertEqual((path, response.code), (path, 404))
            self.assertEqual(response.json()["error"]["code"], "NOT_FOUND")
        self.assertEqual(agent.requests, [])

    def test_bad_target_is_400(self) -> None:
        agent = refusing(ConnectionRefusedError())
        site, _ = gateway(agent)
        connection = Connection(site)
        connection.send(get(b"/api/v1/users/..%2F..%2Fadmin"))
        response = connection.response()
        self.assertEqual(response.code, 400)
        self.assertEqual(response.json()["error"]["code"], "BAD_REQUEST")
        self.assertEqual(agent.requests, [])

    def test_our_fault_is_500_without_traceback(self) -> None:
        broken = MemoryUpstreams(Resource())
        broken.raise_on_connect = ZeroDivisionError("secret internals")
        site, _ = gateway(broken)
        errors: list = []
        globalLogPublisher.addObserver(errors.append)
        self.addCleanup(globalLogPublisher.removeObserver, errors.append)
        connection = Connection(site)
        connection.send(get(b"/api/v1/users"))
        response = connection.response()
        self.assertEqual(response.code, 500)
        self.assertEqual(response.json()["error"]["code"], "INTERNAL_ERROR")
        self.assertNotIn(b"secret", response.body)
        self.assertNotIn(b"Traceback", response.body)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class BodyLimitTests(SynchronousTestCase):
    """
    JSON_BODY_LIMIT is enforced while the body arrives.
    """

    def setUp(self) -> None:
        self.upstream = RecordingUpstream()
        self.agent = MemoryUpstreams(self.upstream)
        self.site, _ = gateway(self.agent, body_limit=100)

    def test_declared_length_over_limit_answered_at_once(self) -> None:
        connection = Connection(self.site)
        connection.send(
            b"POST /api/v1/orders HTTP/1.1\r\nHost: g\r\nContent-Length: 101\r\n"
            b"Expect: 100-continue\r\nX-Correlation-ID: big-1\r\n\r\n"
        )
        response = connection.response()
        self.assertEqual(response.code, 413)
        self.assertEqual(response.json()["error"],
                         {"message": "Request body is larger than the limit of 100 bytes",
                          "code": "PAYLOAD_TOO_LARGE", "correlationId": "big-1"})
        self.assertNotIn(b"100 Continue", connection.transport.value())
        self.assertTrue(connection.transport.disconnecting)
        # the rest of the body is ignored, not parsed as a request
        connection.send(b"x" * 101 + get(b"/api/v1/orders"))
        self.assertEqual(self.upstream.seen, [])

    def test_chunked_body_over_limit_refused_while_arriving(self) -> None:
        connection = Connection(self.site)
        connection.send(b"POST /api/v1/orders HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n")
        connection.send(b"40\r\n" + b"a" * 64 + b"\r\n")
        self.assertEqual(connection.transport.value(), b"")
        connection.send(b"40\r\n" + b"b" * 64 + b"\r\n")
        response = connection.response()
        self.assertEqual(response.code, 413)
        connection.send(b"0\r\n\r\n")
        self.assertEqual(self.upstream.seen, [])

    def test_body_at_the_limit_passes(self) -> None:
        connection = Connection(self.site)
        connection.send(with_body(b"POST", b"/api/v1/orders", b"z" * 100))
        self.agent.flush()
        self.assertEqual(connection.response().code, 200)
        self.assertEqual(self.upstream.seen[0].body, b"z" * 100)

    def test_limit_applies_to_every_content_type(self) -> None:
        connection = Connection(self.site)
        connection.send(with_body(b"POST", b"/api/v1/orders", b"z" * 101, b"Content-Type: application/octet-stream\r\n"))
        self.assertEqual(connection.response().code, 413)
