"""
Tests for L{qeetgw.cors}: the cors package's answers, allow-list edition.
"""

import json

import attrs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from qeetgw.cors import CORS, EXPOSED_HEADERS, CORSPolicy, cors_headers

POLICY = CORSPolicy(
    origins=("http://localhost:3000", "https://shop.example"),
    credentials=True,
    methods=("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"),
    max_age=600,
)
ANY = CORSPolicy(origins=("*",), credentials=False, methods=("GET",), max_age=0)


class CorsHeadersTests(SynchronousTestCase):
    """
    L{cors_headers}, case by case.
    """

    def test_allowed_origin(self) -> None:
        self.assertEqual(
            cors_headers(POLICY, b"https://shop.example", False, None),
            [
                (b"Vary", b"Origin"),
                (b"Access-Control-Allow-Origin", b"https://shop.example"),
                (b"Access-Control-Allow-Credentials", b"true"),
                (b"Access-Control-Expose-Headers", EXPOSED_HEADERS),
            ],
        )

    def test_origin_matched_case_insensitively_and_echoed_as_sent(self) -> None:
        headers = dict(cors_headers(POLICY, b"HTTPS://Shop.Example", False, None))
        self.assertEqual(headers[b"Access-Control-Allow-Origin"], b"HTTPS://Shop.Example")

    def test_disallowed_origin_gets_no_access_control_header(self) -> None:
        self.assertEqual(cors_headers(POLICY, b"https://evil.example", False, None), [(b"Vary", b"Origin")])
        self.assertEqual(cors_headers(POLICY, b"https://evil.example", True, b"x-a"), [(b"Vary", b"Origin")])
        self.assertEqual(cors_headers(POLICY, b"null", False, None), [(b"Vary", b"Origin")])
        self.assertEqual(cors_headers(POLICY, b"\xff", False, None), [(b"Vary", b"Origin")])

    def test_no_origin(self) -> None:
        self.assertEqual(cors_headers(POLICY, None, False, None), [(b"Vary", b"Origin")])

    def test_preflight(self) -> None:
        self.assertEqual(
            cors_headers(POLICY, b"http://localhost:3000", True, b"authorization, content-type"),
            [
                (b"Vary", b"Origin"),
                (b"Access-Control-Allow-Origin", b"http://localhost:3000"),
                (b"Access-Control-Allow-Credentials", b"true"),
                (b"Access-Control-Allow-Methods", b"GET,HEAD,PUT,PATCH,POST,DELETE"),
                (b"Access-Control-Allow-Headers", b"authorization, content-type"),
                (b"Vary", b"Access-Control-Request-Headers"),
                (b"Access-Control-Max-Age", b"600"),
            ],
        )

    def test_any_origin(self) -> None:
        self.assertEqual(
            cors_headers(ANY, b"https://anything.example", False, None),
            [(b"Access-Control-Allow-Origin", b"*"), (b"Access-Control-Expose-Headers", EXPOSED_HEADERS)],
        )


class Downstream(Resource):
    isLeaf = True
    rendered = 0

    def render(self, request: DummyRequest) -> bytes:
        self.rendered += 1
        return b"through"


def dummy(method: bytes, headers: dict) -> DummyRequest:
    request = DummyRequest([b"api", b"v1", b"users"])
    request.method = method
    request.clientproto = b"HTTP/1.1"
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name, [value])
    return request


class CORSResourceTests(SynchronousTestCase):
    """
    The L{CORS} wrapper.
    """

    def setUp(self) -> None:
        self.downstream = Downstream()
        self.cors = CORS(self.downstream, POLICY)

    def test_preflight_answered_not_forwarded(self) -> None:
        request = dummy(b"OPTIONS", {b"origin": b"https://shop.example", b"access-control-request-method": b"POST"})
        self.assertEqual(self.cors.render(request), b"")
        self.assertEqual(request.responseCode, 204)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"access-control-allow-origin"), [b"https://shop.example"])
        self.assertEqual(self.downstream.rendered, 0)

    def test_disallowed_preflight_is_not_an_error(self) -> None:
        request = dummy(b"OPTIONS", {b"origin": b"https://evil.example", b"access-control-request-method": b"POST"})
        self.cors.render(request)
        self.assertEqual(request.responseCode, 204)
        names = [name.lower() for name, _ in request.responseHeaders.getAllRawHeaders()]
        self.assertFalse([name for name in names if name.startswith(b"access-control-")])

    def test_plain_options_is_forwarded(self) -> None:
        request = dummy(b"OPTIONS", {b"origin": b"https://shop.example"})
        self.assertEqual(self.cors.render(request), b"through")

    def test_actual_request_gets_headers_and_goes_through(self) -> None:
        request = dummy(b"GET", {b"origin": b"https://shop.example"})
        self.assertEqual(self.cors.render(request), b"through")
        self.assertEqual(request.responseHeaders.getRawHeaders(b"access-control-allow-credentials"), [b"true"])

    def test_disallowed_actual_request_goes_through_without_headers(self) -> None:
        request = dummy(b"POST", {b"origin": b"https://evil.example"})
        self.assertEqual(self.cors.render(request), b"through")
        self.assertIsNone(request.responseHeaders.getRawHeaders(b"access-control-allow-origin"))


class WebSocketOriginTests(SynchronousTestCase):
    """
    A WebSocket handshake from an origin CORS_ORIGINS does not allow is
    refused with 403: browsers apply no CORS to WebSockets.
    """

    HANDSHAKE = {b"connection": b"Upgrade", b"upgrade": b"websocket"}

    def setUp(self) -> None:
        self.downstream = Downstream()
        self.cors = CORS(self.downstream, POLICY)

    def test_refused_origin(self) -> None:
        request = dummy(b"GET", {b"origin": b"https://evil.example", **self.HANDSHAKE})
        body = json.loads(self.cors.render(request))
        self.assertEqual(request.responseCode, 403)
        self.assertEqual(body["error"]["code"], "FORBIDDEN")
        self.assertEqual(body["error"]["message"], "Origin not allowed")
        self.assertEqual(self.downstream.rendered, 0)

    def test_allowed_origin(self) -> None:
        request = dummy(b"GET", {b"origin": b"https://shop.example", **self.HANDSHAKE})
        self.assertEqual(self.cors.render(request), b"through")

    def test_no_origin(self) -> None:
        """
        Not a browser: nothing to check.
        """
        self.assertEqual(self.cors.render(dummy(b"GET", dict(self.HANDSHAKE))), b"through")

    def test_any_origin(self) -> None:
        cors = CORS(self.downstream, attrs.evolve(POLICY, origins=("*",)))
        request = dummy(b"GET", {b"origin": b"https://anyone.example", **self.HANDSHAKE})
        self.assertEqual(cors.render(request), b"through")
