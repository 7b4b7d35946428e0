"""
The status page's data, C{/status.json}, from a real gateway on loopback:
on the metrics listener only, with the instances' checks and traffic as
they happened.  (The page itself, in a browser: L{tests.e2e.test_status_page}.)
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from qeetgw.headers import HELMET_HEADERS
from tests.e2e.support import (
    JSONUpstream,
    closed_port_url,
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    spawn_gateway,
    start_gateway,
    stop_workers_at_cleanup,
    wait_for,
)



def users_of(report: Dict[str, Any]) -> Dict[str, Any]:
    [users] = [entry for entry in report["services"] if entry["name"] == "user-service"]
    return users  # type: ignore[no-any-return]


def one_up_one_down(test: TestCase) -> Tuple[Dict[str, str], str, str]:
    """
    A gateway's environment with metrics on a loopback port, checks every
    300 ms, and two user-service instances: one answering on loopback, one
    whose port refuses; and the two instances' URLs, up then down.
    """
    upstream = listen_upstream(test, JSONUpstream())
    down = closed_port_url()
    env = gateway_environment(
        upstream,
        USER_SERVICE_URL=f"{upstream},{down}",
        METRICS_PORT="tcp:0:interface=127.0.0.1",
        HEALTH_CHECK_INTERVAL_MS="300",
    )
    return env, upstream, down


class StatusJSONTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_status_json_on_the_metrics_port_only(self) -> Any:
        env, upstream, down = one_up_one_down(self)
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


class WorkersStatusTests(TestCase):
    """
    C{twistd qeetgw --workers 2}: the supervisor's C{/status.json} merges
    both workers' reports.
    """

    timeout = 120

    @inlineCallbacks
    def test_group_status(self) -> Any:
        env, _, _ = one_up_one_down(self)
        process = spawn_gateway(self, env, "--workers", "2")
        stop_workers_at_cleanup(self, process)
        port = yield process.port
        yield wait_for(lambda: process.logged("qeetgw.metrics", "metrics on"), "the metrics port", within=30)
        metrics_port = process.logged("qeetgw.metrics", "metrics on")[0]["port"]
        yield wait_for(
            lambda: len(process.logged("qeetgw.process.worker", "worker")) == 2, "two workers serving", within=30
        )
        for index in range(10):
            response = yield fetch(port, request(b"GET", b"/api/v1/users/%d" % (index,)))
            self.assertEqual(response.code, 200)

        seen: Dict[str, Any] = {}

        @inlineCallbacks
        def merged() -> Any:
            # Bounded: 300 polls 100 ms apart; the workers write once a second.
            for _ in range(300):
                response = yield fetch(metrics_port, request(b"GET", b"/status.json"))
                if response.code == 200:
                    seen.clear()
                    seen.update(response.json())
                    users = users_of(seen)
                    states = [row["state"] for row in users["instances"]]
                    views = [len(row["workers"]) for row in users["instances"]]
                    if (
                        seen["gateway"]["workers"] == 2
                        and states == ["healthy", "unhealthy"]
                        and views == [2, 2]
                        and users["requests"] == 10
                    ):
                        return
                else:
                    # Only while no worker has written its report yet.
                    self.assertEqual(response.code, 503, response.body)
                yield deferLater(reactor, 0.1, lambda: None)
            self.fail(f"the group's status never settled: {seen}")

        yield merged()
        gateway = seen["gateway"]
        self.assertEqual((gateway["workers"], gateway["workersConfigured"]), (2, 2))
        self.assertEqual(gateway["readiness"], "ready")
        self.assertEqual(len(seen["services"]), 6)
        users = users_of(seen)
        up, refused = users["instances"]
        self.assertEqual([view["worker"] for view in up["workers"]], ["0", "1"])
        self.assertEqual({view["state"] for view in refused["workers"]}, {"unhealthy"})
        self.assertEqual(refused["reason"], "connection refused")
        self.assertEqual((up["requests"], refused["requests"]), (10, 0))
        self.assertIsNotNone(up["p99Ms"])
        page = yield fetch(metrics_port, request(b"GET", b"/status"))
        self.assertEqual(page.code, 200)

        process.terminate()
        code = yield process.ended
        self.assertEqual(code, 0, process.text())
