"""
Tests for L{qeetgw.app}: the gateway's own endpoints, driven in memory
through the resource the site mounts at its root.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional, Tuple

import treq
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from qeetgw.app import GatewayApp
from qeetgw.config import Config, ServiceConfig
from qeetgw.errors import GatewayError
from qeetgw.upstream.health import HealthChecker, HealthReport, ServiceHealth

#: 2026-11-27T05:08:05.123Z
NOW = 1795756085.123
STAMP = "2026-11-27T05:08:05.123Z"
JSON_TYPE = [b"application/json; charset=utf-8"]

USER = ServiceConfig(
    name="user-service",
    client_prefix="/api/v1/users",
    upstream_prefix="/users",
    url="http://localhost:8082",
    health_path="/actuator/health",
    url_variable="USER_SERVICE_URL",
)
ORDER = ServiceConfig(
    name="order-service",
    client_prefix="/api/v1/orders",
    upstream_prefix="/orders",
    url="http://orders.internal:8084",
    health_path="/health",
    url_variable="ORDER_SERVICE_URL",
)
CONFIG = Config(services=(USER, ORDER))


class CannedHealth(HealthChecker):
    """
    A L{HealthChecker} whose rounds give what the test says.
    """

    def __init__(self, result: Any) -> None:
        self.result = result

    def check_all(self) -> "Deferred[HealthReport]":
        if isinstance(self.result, Exception):
            raise self.result
        return succeed(self.result)


def report(*healthy: bool) -> HealthReport:
    """
    A report with one service per flag.
    """
    return HealthReport(
        [
            ServiceHealth(f"s{i}", ok, 3, None if ok else "HTTP 503")
            for i, ok in enumerate(healthy)
        ],
        NOW,
    )


class GatewayAppTests(SynchronousTestCase):
    """
    The endpoints, their JSON, their errors.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.use(CannedHealth(report(True, True)))

    def use(self, health: HealthChecker) -> None:
        self.app = GatewayApp(CONFIG, health, self.clock, "26.11.0")
        self.client = StubTreq(self.app.resource())

    def request(
        self, method: str, path: str, headers: Optional[dict] = None
    ) -> Tuple[IResponse, bytes]:
        d = self.client.request(method, "http://gateway.test" + path, headers=headers)
        self.client.flush()
        response = self.successResultOf(d)
        body = treq.content(response)
        self.client.flush()
        return response, self.successResultOf(body)

    def assert_json(self, response: IResponse, body: bytes, status: int) -> Any:
        """
        C{response} is C{status} with compact JSON and a correlation id.
        """
        self.assertEqual(response.code, status)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), JSON_TYPE)
        [correlation] = response.headers.getRawHeaders(b"x-correlation-id")
        self.assertTrue(correlation)
        value = json.loads(body)
        self.assertEqual(body, json.dumps(value, separators=(",", ":")).encode())
        return value

    def assert_envelope(
        self, response: IResponse, body: bytes, status: int, code: str, message: str
    ) -> None:
        value = self.assert_json(response, body, status)
        [correlation] = response.headers.getRawHeaders(b"x-correlation-id")
        self.assertEqual(
            value,
            {
                "success": False,
                "error": {
                    "message": message,
                    "code": code,
                    "correlationId": correlation.decode(),
                },
            },
        )

    def test_health(self) -> None:
        response, body = self.request("GET", "/health")
        self.assertEqual(
            self.assert_json(response, body, 200),
            {"status": "ok", "service": "api-gateway", "timestamp": STAMP},
        )

    def test_correlation_id_is_the_clients(self) -> None:
        response, _ = self.request("GET", "/health", {"X-Correlation-ID": "abc-123"})
        self.assertEqual(
            response.headers.getRawHeaders(b"x-correlation-id"), [b"abc-123"]
        )

    def test_made_correlation_id(self) -> None:
        response, _ = self.request("GET", "/info")
        [made] = response.headers.getRawHeaders(b"x-correlation-id")
        self.assertTrue(made.startswith(b"req-"))

    def test_services_all_healthy_is_200(self) -> None:
        response, body = self.request("GET", "/health/services")
        self.assertEqual(
            self.assert_json(response, body, 200), report(True, True).to_json()
        )

    def test_services_degraded_is_503(self) -> None:
        self.use(CannedHealth(report(True, False)))
        response, body = self.request("GET", "/health/services")
        value = self.assert_json(response, body, 503)
        self.assertEqual(value["status"], "degraded")
        self.assertEqual(
            value["services"][1],
            {
                "name": "s1",
                "status": "unhealthy",
                "responseTime": 3,
                "error": "HTTP 503",
                "instances": [],
            },
        )

    def test_info(self) -> None:
        response, body = self.request("GET", "/info")
        self.assertEqual(
            self.assert_json(response, body, 200),
            {
                "name": "Qeetmart API Gateway",
                "version": "26.11.0",
                "services": [
                    {"name": "user-service", "baseUrl": "http://localhost:8082"},
                    {"name": "order-service", "baseUrl": "http://orders.internal:8084"},
                ],
                "timestamp": STAMP,
            },
        )

    def test_query_string_is_ignored(self) -> None:
        response, _ = self.request("GET", "/health?probe=1")
        self.assertEqual(response.code, 200)

    def test_unknown_paths_are_json_404(self) -> None:
        paths = [
            "/",
            "/nope",
            "/health/",
            "/info/x",
            "/health/services/",
            "/HEALTH",
            "//health",
            "/health//services",
            "/health%2Fservices",
            "/%68ealth",
            "/%ff",
            "/api",
        ]
        for path in paths:
            for method in ["GET", "POST"]:
                response, body = self.request(method, path)
                self.assert_envelope(
                    response, body, 404, "NOT_FOUND", f"Route {method} {path} not found"
                )
                self.assertIsNone(response.headers.getRawHeaders(b"location"))

    def test_wrong_method_is_json_405(self) -> None:
        wrong = [("POST", "/health"), ("DELETE", "/info"), ("PUT", "/health/services")]
        for method, path in wrong:
            response, body = self.request(method, path)
            self.assert_envelope(
                response,
                body,
                405,
                "METHOD_NOT_ALLOWED",
                f"Method {method} not allowed on {path}",
            )
            self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])

    def test_head_is_get_without_body(self) -> None:
        response, body = self.request("HEAD", "/health")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, b"")
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), JSON_TYPE)
        self.assertTrue(response.headers.getRawHeaders(b"x-correlation-id"))

    def test_handler_exception_is_500_envelope(self) -> None:
        self.use(CannedHealth(RuntimeError("secret internals")))
        response, body = self.request("GET", "/health/services")
        self.assert_envelope(
            response, body, 500, "INTERNAL_ERROR", "Internal server error"
        )
        self.assertNotIn(b"secret", body)
        self.assertNotIn(b"Traceback", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_failed_deferred_is_500_envelope(self) -> None:
        class Failing(CannedHealth):
            def check_all(self) -> "Deferred[HealthReport]":
                return fail(ValueError("secret internals"))

        self.use(Failing(None))
        response, body = self.request("GET", "/health/services")
        self.assert_envelope(
            response, body, 500, "INTERNAL_ERROR", "Internal server error"
        )
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_gateway_error_in_handler_is_its_envelope(self) -> None:
        self.use(CannedHealth(GatewayError("GATEWAY_TIMEOUT", "Too slow")))
        response, body = self.request("GET", "/health/services")
        self.assert_envelope(response, body, 504, "GATEWAY_TIMEOUT", "Too slow")


class HungUpstream(Resource):
    """
    An upstream that never answers.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[IRequest] = []

    def render(self, request: IRequest) -> Any:
        self.requests.append(request)
        return NOT_DONE_YET


class ServicesTimeoutTests(SynchronousTestCase):
    """
    C{/health/services} with a real L{HealthChecker} and a hung upstream.
    """

    def test_answers_503_when_the_timeout_passes(self) -> None:
        clock = Clock()
        upstream = StubTreq(HungUpstream())
        health = HealthChecker([USER], upstream, clock, 5000)
        client = StubTreq(GatewayApp(CONFIG, health, clock, "1").resource())
        d = client.get("http://gateway.test/health/services")
        client.flush()
        upstream.flush()
        clock.advance(4.9)
        client.flush()
        self.assertNoResult(d)
        clock.advance(0.1)
        upstream.flush()
        client.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 503)
        body = treq.json_content(response)
        client.flush()
        self.assertEqual(
            self.successResultOf(body)["services"],
            [
                {
                    "name": "user-service",
                    "status": "unhealthy",
                    "responseTime": 5000,
                    "error": "timeout after 5000 ms",
                    "instances": [
                        {
                            "url": "http://localhost:8082",
                            "state": "unhealthy",
                            "lastCheck": "1970-01-01T00:00:05.000Z",
                            "latencyMs": 5000,
                            "ejections": 0,
                            "error": "timeout after 5000 ms",
                        }
                    ],
                }
            ],
        )


class RawHTTPTests(SynchronousTestCase):
    """
    Bytes on the wire, for what a client library would hide.
    """

    def exchange(self, raw: bytes) -> bytes:
        clock = Clock()
        app = GatewayApp(CONFIG, CannedHealth(report(True)), clock, "1")
        site = Site(app.resource(), reactor=MemoryReactorClock())
        peer = IPv4Address("TCP", "10.0.0.7", 40000)
        protocol = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        return transport.value()

    def head_and_body(self, raw: bytes) -> Tuple[bytes, bytes]:
        head, _, body = self.exchange(raw).partition(b"\r\n\r\n")
        return head, body

    def test_head_has_length_and_no_body(self) -> None:
        get_head, get_body = self.head_and_body(
            b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n"
        )
        head_head, head_body = self.head_and_body(
            b"HEAD /health HTTP/1.1\r\nHost: gw\r\n\r\n"
        )
        length = b"Content-Length: %d" % (len(get_body),)
        self.assertIn(length, get_head.split(b"\r\n"))
        self.assertIn(length, head_head.split(b"\r\n"))
        self.assertEqual(head_body, b"")

    def test_non_utf8_host_is_json_400(self) -> None:
        head, body = self.head_and_body(b"GET /health HTTP/1.1\r\nHost: \xff\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "))
        self.assertEqual(json.loads(body)["error"]["code"], "BAD_REQUEST")
        self.assertEqual(self.flushLoggedErrors(), [])
