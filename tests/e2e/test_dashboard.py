"""
The Grafana dashboard (contrib/grafana/qeetgw.json) against a real scrape:
a gateway on loopback, a little real traffic, /metrics scraped over HTTP,
and every metric and label the dashboard queries found in it; in one
process and with C{--workers 2}.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any, Dict, List

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.dashboardcheck import load, problems, scraped
from tests.e2e.support import (
    JSONUpstream,
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    spawn_gateway,
    start_gateway,
    stop_workers_at_cleanup,
    wait_for,
)
from tests.gateway import SECRET, token


def bearer() -> bytes:
    """
    An Authorization header with a token valid now (minted with pyjwt).
    """
    now = int(time.time())
    return b"Authorization: Bearer " + token({"iat": now - 10, "exp": now + 900}).encode() + b"\r\n"



def misspelt(dashboard: Dict[str, Any]) -> Dict[str, Any]:
    """
    A copy of C{dashboard} with one metric and one label misspelt, in the
    first query that uses each.
    """
    broken = copy.deepcopy(dashboard)
    text = json.dumps(broken["panels"])
    text = text.replace("qeetgw_requests_total", "qeetgw_request_total", 1)
    text = text.replace("by (budget)", "by (budgets)", 1)
    broken["panels"] = json.loads(text)
    return broken


class DashboardEndToEndTests(TestCase):
    """
    The dashboard's queries against what a running gateway serves.
    """

    timeout = 120

    @inlineCallbacks
    def send(self, port: int) -> Any:
        """
        A proxied 200 (a public path), a 401 (no token), a 404 (an /api
        path no route matches) and, past RATE_LIMIT_MAX=3, a 429.
        """
        codes: List[int] = []
        for method, path, headers in [
            (b"POST", b"/api/v1/auth/login", b""),
            (b"GET", b"/api/v1/users/1", b""),
            (b"GET", b"/api/v1/nowhere", bearer()),
            (b"GET", b"/api/v1/users/1", bearer()),
        ]:
            body = b"{}" if method == b"POST" else None
            response = yield fetch(port, request(method, path, body, headers))
            codes.append(response.code)
        return codes

    @inlineCallbacks
    def scrape(self, port: int) -> Any:
        response = yield fetch(port, request(b"GET", b"/metrics"))
        self.assertEqual(response.code, 200)
        return scraped(response.body.decode("utf-8"))

    def check(self, scrape: Dict[str, Any]) -> None:
        """
        Everything the dashboard queries is in C{scrape}; and the check
        can fail: a copy with a misspelt metric and label is caught.
        """
        self.assertEqual(problems(load(), scrape), [])
        found = problems(misspelt(load()), scrape)
        self.assertEqual(len(found), 2, found)
        self.assertIn("no metric qeetgw_request_total in the scrape", found[0])
        self.assertIn("no label 'budgets' on qeetgw_rate_limited_total", found[1])

    @inlineCallbacks
    def test_one_process(self) -> Any:
        upstream = listen_upstream(self, JSONUpstream())
        env = gateway_environment(
            upstream,
            METRICS_PORT="tcp:0:interface=127.0.0.1",
            REQUIRE_AUTH="true",
            JWT_SECRET=SECRET,
            RATE_LIMIT_MAX="3",
        )
        service, port = yield start_gateway(self, env)
        metrics_port = service.getServiceNamed("metrics").endpoint.port.getHost().port

        codes = yield self.send(port)
        self.assertEqual(codes, [200, 401, 404, 429])
        scrape = yield self.scrape(metrics_port)
        self.assertEqual(scrape["qeetgw_requests_total"], {"service", "method", "status_class"})
        self.check(scrape)

    @inlineCallbacks
    def test_workers(self) -> Any:
        """
        With workers the scrape is the supervisor's sum of the workers'
        files, and the process figures are by worker: the dashboard reads
        it all the same.  Each worker limits on its own (a memory store
        each), so no 429 is asked for: the budget's series is there at 0.
        """
        upstream = listen_upstream(self, JSONUpstream())
        env = gateway_environment(
            upstream,
            METRICS_PORT="tcp:0:interface=127.0.0.1",
            REQUIRE_AUTH="true",
            JWT_SECRET=SECRET,
        )
        process = spawn_gateway(self, env, "--workers", "2")
        stop_workers_at_cleanup(self, process)
        port = yield process.port
        yield wait_for(lambda: process.logged("qeetgw.metrics", "metrics on"), "the metrics port", within=30)
        [listening] = process.logged("qeetgw.metrics", "metrics on")
        yield wait_for(
            lambda: len(process.logged("qeetgw.process.worker", "worker")) == 2, "two workers serving", within=30
        )

        codes = yield self.send(port)
        self.assertEqual(codes, [200, 401, 404, 200])
        # A worker counts a request as it logs it: wait for the four.
        yield wait_for(lambda: len(process.logged("qeetgw.access")) == 4, "4 access events", within=30)
        scrape = yield self.scrape(listening["port"])
        self.assertIn("worker", scrape["process_resident_memory_bytes"])
        self.assertIn("worker", scrape["qeetgw_upstream_instances"])
        self.check(scrape)
