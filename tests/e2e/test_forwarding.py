"""
End-to-end forwarding through the gateway on real loopback sockets.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    closed_port_url,
    exchange,
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    start_gateway,
)
from tests.e2e.upstreams import GZIPPED, ScriptedUpstream
from tests.memory import parse_response


class ForwardingEndToEndTests(TestCase):
    """
    A client, the gateway and an upstream, each on its own socket.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.upstream = ScriptedUpstream()
        url = listen_upstream(self, self.upstream)
        _, self.port = yield start_gateway(
            self,
            gateway_environment(url, JSON_BODY_LIMIT="16mb", GATEWAY_PROXY_TIMEOUT_MS="500"),
        )

    @inlineCallbacks
    def check_body(self, body: bytes) -> Any:
        response = yield fetch(self.port, request(b"POST", b"/api/v1/orders/echo", body))
        self.assertEqual(response.code, 200)
        seen = response.json()
        self.assertEqual((seen["length"], seen["sha256"]), (len(body), hashlib.sha256(body).hexdigest()))
        self.assertEqual(seen["uri"], "/orders/echo")

    def test_empty_body(self) -> Any:
        return self.check_body(b"")

    def test_one_kib_body(self) -> Any:
        return self.check_body(json.dumps({"pad": "é" * 500}).encode()[:1024])

    def test_eight_mib_body(self) -> Any:
        return self.check_body(bytes(range(256)) * (8 * 4096))

    @inlineCallbacks
    def test_chunked_upload(self) -> Any:
        chunks = [b"a" * 1000, b"b" * 70000, b"c"]
        raw = (
            b"POST /api/v1/orders/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
            + b"0\r\n\r\n"
        )
        response = yield fetch(self.port, raw)
        self.assertEqual(response.json()["sha256"], hashlib.sha256(b"".join(chunks)).hexdigest())

    @inlineCallbacks
    def test_raw_path_and_query(self) -> Any:
        response = yield fetch(self.port, request(b"GET", b"/api/v1/products/a%20b/%C3%A9%2Fx/echo?q=%41+b&&z=%2F"))
        self.assertEqual(response.json()["uri"], "/products/a%20b/%C3%A9%2Fx/echo?q=%41+b&&z=%2F")

    @inlineCallbacks
    def test_redirect_passes_through(self) -> Any:
        response = yield fetch(self.port, request(b"GET", b"/api/v1/auth/redirect"))
        self.assertEqual((response.code, response.header(b"location")), (302, b"/somewhere/else"))
        self.assertEqual(len(self.upstream.seen), 1)

    @inlineCallbacks
    def test_gzip_untouched(self) -> Any:
        response = yield fetch(self.port, request(b"GET", b"/api/v1/products/gzip", headers=b"Accept-Encoding: gzip\r\n"))
        self.assertEqual(response.body, GZIPPED)
        self.assertEqual(response.header(b"content-encoding"), b"gzip")
        self.assertEqual(self.upstream.seen[0]["headers"]["accept-encoding"], ["gzip"])

    @inlineCallbacks
    def test_cookies_isolated_between_clients(self) -> Any:
        alice = yield fetch(self.port, request(b"GET", b"/api/v1/auth/cookie?user=alice"))
        self.assertEqual(alice.headers.getRawHeaders(b"set-cookie"), [b"session=alice; Path=/", b"seen=1"])
        yield fetch(self.port, request(b"GET", b"/api/v1/users/echo"))
        self.assertNotIn("cookie", self.upstream.seen[1]["headers"])

    @inlineCallbacks
    def test_hop_by_hop_stripped_both_ways(self) -> Any:
        response = yield fetch(
            self.port,
            request(b"GET", b"/api/v1/products/hop", headers=b"Connection: close, X-Drop\r\nX-Drop: 1\r\nTE: trailers\r\nUpgrade: h2c\r\n"),
        )
        for name in [b"keep-alive", b"upgrade", b"x-powered-by", b"server"]:
            self.assertIsNone(response.header(name), name)
        seen = self.upstream.seen[0]["headers"]
        for name in ["x-drop", "te", "upgrade"]:
            self.assertNotIn(name, seen)

    @inlineCallbacks
    def test_correlation_ids(self) -> Any:
        kept = yield fetch(self.port, request(b"GET", b"/api/v1/users/echo", headers=b"X-Correlation-ID:   abc-123  \r\n"))
        self.assertEqual(kept.header(b"x-correlation-id"), b"abc-123")
        self.assertEqual(kept.json()["headers"]["x-correlation-id"], ["abc-123"])
        self.assertEqual(kept.json()["headers"]["x-request-id"], ["abc-123"])
        made = yield fetch(self.port, request(b"GET", b"/api/v1/users/echo", headers=b"X-Correlation-ID: " + b"x" * 129 + b"\r\n"))
        self.assertRegex(made.header(b"x-correlation-id").decode(), r"^req-[0-9a-f-]{36}$")

    @inlineCallbacks
    def test_forwarded_headers(self) -> Any:
        # a public path: the token is the auth-service's business, passed as sent
        response = yield fetch(self.port, request(b"GET", b"/api/v1/auth/logout", headers=b"Authorization: Bearer abc\r\n"))
        headers = response.json()["headers"]
        self.assertEqual(headers["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(headers["x-forwarded-proto"], ["http"])
        self.assertEqual(headers["x-forwarded-host"], ["127.0.0.1"])
        self.assertEqual(headers["authorization"], ["Bearer abc"])
        self.assertEqual(response.json()["uri"], "/auth/logout")
        self.assertTrue(headers["host"][0].startswith("127.0.0.1:"))

    @inlineCallbacks
    def test_body_over_limit_is_413(self) -> Any:
        response = yield fetch(self.port, request(b"POST", b"/api/v1/orders/echo", b"x" * (16 * 1024 * 1024 + 1)))
        self.assertEqual(response.code, 413)
        self.assertEqual(response.json()["error"]["code"], "PAYLOAD_TOO_LARGE")
        self.assertEqual(self.upstream.seen, [])

    @inlineCallbacks
    def test_slow_upstream_is_504(self) -> Any:
        response = yield fetch(self.port, request(b"GET", b"/api/v1/payments/slow"))
        self.assertEqual(response.code, 504)
        self.assertEqual(response.json()["error"]["code"], "GATEWAY_TIMEOUT")
        self.assertIn("correlationId", response.json()["error"])

    @inlineCallbacks
    def test_upstream_dying_mid_body_is_not_a_complete_response(self) -> Any:
        raw, _ = yield exchange(self.port, request(b"GET", b"/api/v1/orders/die"))
        response = parse_response(raw)[0]
        self.assertEqual(response.code, 200)
        self.assertFalse(response.complete)

    @inlineCallbacks
    def test_keep_alive_serves_several_requests(self) -> Any:
        one = b"GET /api/v1/users/echo HTTP/1.1\r\nHost: x\r\n\r\n"
        raw, _ = yield exchange(self.port, one + one + request(b"GET", b"/api/v1/users/echo"))
        first, rest = parse_response(raw)
        second, rest = parse_response(rest)
        third, _ = parse_response(rest)
        self.assertEqual([first.code, second.code, third.code], [200, 200, 200])


class UnreachableEndToEndTests(TestCase):
    """
    An upstream nobody listens for.
    """

    timeout = 30

    @inlineCallbacks
    def test_upstream_down_is_502(self) -> Any:
        _, port = yield start_gateway(self, gateway_environment(closed_port_url()))
        response = yield fetch(port, request(b"GET", b"/api/v1/users/7", headers=b"X-Correlation-ID: down-1\r\n"))
        self.assertEqual(response.code, 502)
        self.assertEqual(
            response.json(),
            {"success": False, "error": {"message": "Service user-service is unavailable",
                                         "code": "SERVICE_UNAVAILABLE", "correlationId": "down-1"}},
        )
