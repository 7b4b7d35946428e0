"""
The status page's data, C{/status.json}, from a real gateway on loopback:
on the metrics listener only, with the instances' checks and traffic as
they happened.  (The page itself, in a browser: L{tests.e2e.test_status_page}.)
"""

from __future__ import annotations

from typing import Any, Dict

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from qeetgw.headers import HELMET_HEADERS
from tests.e2e.support import (
    closed_port_url,
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    start_gateway,
)


class _Ok(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return b'{"ok":true}'


def users_of(report: Dict[str, Any]) -> Dict[str, Any]:
    [users] = [entry for entry in report["services"] if entry["name"] == "user-service"]
    return users  # type: ignore[no-any-return]


class StatusJSONTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_status_json_on_the_metrics_port_only(self) -> Any:
        upstream = listen_upstream(self, _Ok())
        down = closed_port_url()
        env = gateway_environment(
            upstream,
            USER_SERVICE_URL=f"{upstream},{down}",
            METRICS_PORT="tcp:0:interface=127.0.0.1",
            HEALTH_CHECK_INTERVAL_MS="300",
        )
        service, port = yield start_gateway(self, env)
        metrics_port = service.getServiceNamed("metrics").endpoint.port.getHost().port

        report: Dict[str, Any] = {}

        @inlineCallbacks
        def read() -> Any:
            response = yield fetch(metrics_port, request(b"GET", b"/status.json"))
            self.assertEqual(response.code, 200)
            report.clear()
            report.update(response.json())
            return response

        @inlineCallbacks
        def checked() -> Any:
            # The first round of checks runs as the gateway starts (bounded:
            # 200 polls 50 ms apart).
            for _ in range(200):
                yield read()
                states = [row["state"] for row in users_of(report)["instances"]]
                if states == ["healthy", "unhealthy"]:
                    return
                yield deferLater(reactor, 0.05, lambda: None)
            self.fail(f"instances never checked: {report}")

        yield checked()
        for _ in range(10):
            response = yield fetch(port, request(b"GET", b"/api/v1/users/1"))
            self.assertEqual(response.code, 200)
        response = yield read()
        for name, value in HELMET_HEADERS:
            if name == b"Content-Security-Policy":
                # Over plain HTTP, without upgrade-insecure-requests
                # (qeetgw.statuspage.apply_status_headers).
                value = value.replace(b";upgrade-insecure-requests", b"")
            self.assertEqual(response.header(name), value, name)
        self.assertEqual(response.header(b"content-type"), b"application/json; charset=utf-8")

        gateway = report["gateway"]
        self.assertEqual(gateway["readiness"], "ready")
        self.assertEqual(gateway["healthCheckIntervalMs"], 300)
        self.assertEqual(gateway["rateLimit"]["store"], "memory")
        self.assertIsNone(gateway["workers"])
        self.assertGreaterEqual(gateway["connections"], 0)
        self.assertEqual(gateway["tunnels"], 0)
        self.assertGreaterEqual(gateway["uptimeSeconds"], 0)
        self.assertEqual(len(report["routes"]), 6)
        self.assertEqual(len(report["services"]), 6)

        users = users_of(report)
        up, refused = users["instances"]
        self.assertEqual((up["url"], up["state"], up["reason"]), (upstream, "healthy", None))
        self.assertEqual((refused["url"], refused["state"]), (down, "unhealthy"))
        self.assertEqual(refused["reason"], "connection refused")
        self.assertIsNotNone(up["lastCheck"])
        self.assertIsInstance(up["checkLatencyMs"], float)
        # Balancing skips the unhealthy instance: all ten went to the other.
        self.assertEqual((up["requests"], refused["requests"]), (10, 0))
        self.assertGreater(up["requestsPerSecond"], 0)
        self.assertEqual(up["errorsPerSecond"], 0)
        self.assertIsNotNone(up["p50Ms"])
        self.assertIsNone(refused["p50Ms"])
        self.assertEqual((users["state"], users["requests"], users["inFlight"]), ("healthy", 10, 0))

        # The other pages of the listener.
        page = yield fetch(metrics_port, request(b"GET", b"/status"))
        self.assertEqual(page.code, 200)
        self.assertIn(b'<script src="status.js" defer>', page.body)
        self.assertIn(b"script-src 'self';script-src-attr 'none'", page.header(b"content-security-policy"))
        script = yield fetch(metrics_port, request(b"GET", b"/status.js"))
        self.assertEqual(script.header(b"content-type"), b"text/javascript; charset=utf-8")

        # Never on the public port.
        for path in (b"/status", b"/status.json", b"/status.js", b"/status.css"):
            public = yield fetch(port, request(b"GET", path))
            self.assertEqual(public.code, 404, path)
            self.assertEqual(public.json()["error"]["code"], "NOT_FOUND")
