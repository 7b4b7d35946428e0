"""
The metrics, in memory: known traffic through a whole gateway, then the
registry read back through prometheus_client's exposition and parser.
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Optional, Tuple

from OpenSSL.SSL import Error as TLSError
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.server import NOT_DONE_YET

from qeetgw.auth.verifier import TokenVerifier
from qeetgw.metrics import UPSTREAM_ERROR_KINDS, Metrics, auth_reason_label, status_class
from qeetgw.server import GatewaySite
from qeetgw.site import MeteredSite, build_site
from qeetgw.upstream.proxy import UpstreamTimeout, upstream_error_kind
from tests.gateway import MemoryGateway, token
from tests.memory import Connection, RecordingUpstream, get
from tests.memoryupstream import MemoryUpstreams, refusing

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    """
    Every sample of C{metrics}' registry, as a scrape would parse it.
    """
    text = generate_latest(metrics.registry).decode("utf-8")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> Optional[float]:
    """
    The value of the sample C{name} with exactly C{labels}, or L{None}.
    """
    return samples.get((name, frozenset(labels.items())))


def bearer(claims: Any = None, **kwargs: Any) -> bytes:
    return b"Authorization: Bearer " + token(claims, **kwargs).encode() + b"\r\n"


class TrafficTests(TestCase):
    """
    Known traffic, exact counts.
    """

    def setUp(self) -> None:
        self.memory = MemoryGateway({"METRICS_PORT": "tcp:0", "RATE_LIMIT_MAX": "6"})
        self.metrics = self.memory.gateway.metrics
        assert self.metrics is not None

    def test_off_by_default(self) -> None:
        gateway = MemoryGateway().gateway
        self.assertIsNone(gateway.metrics)
        self.assertIsNone(gateway.metrics_listener)
        self.assertIs(type(gateway.site), GatewaySite)
        self.assertEqual(len(gateway.parts), 3)  # verifier, store, health checker

    def test_wiring(self) -> None:
        gateway = self.memory.gateway
        self.assertIsInstance(gateway.site, MeteredSite)
        self.assertIn(gateway.metrics_listener, gateway.parts)

    def test_known_traffic(self) -> None:
        send = self.memory.send
        statuses = [
            send(get(b"/api/v1/users/%d" % (n,), bearer())).code for n in (1, 2, 3)
        ]
        statuses.append(send(get(b"/api/v1/nowhere", bearer())).code)
        statuses.append(send(get(b"/api/v1/products/1")).code)
        statuses.append(send(get(b"/api/v1/products/1", bearer(key=b"x" * 32))).code)
        statuses.append(send(get(b"/api/v1/orders/1", bearer())).code)
        statuses.append(send(get(b"/health")).code)
        statuses.append(send(get(b"/api/v1/users/1", bearer(), method=b"BREW")).code)
        self.assertEqual(statuses, [200, 200, 200, 404, 401, 401, 429, 200, 429])

        samples = scrape(self.metrics)
        requests = {
            (dict(labels)["service"], dict(labels)["method"], dict(labels)["status_class"]): v
            for (name, labels), v in samples.items()
            if name == "qeetgw_requests_total"
        }
        self.assertEqual(
            requests,
            {
                ("user-service", "GET", "2xx"): 3,
                ("none", "GET", "4xx"): 1,
                ("product-service", "GET", "4xx"): 2,
                ("order-service", "GET", "4xx"): 1,
                ("gateway", "GET", "2xx"): 1,
                ("user-service", "OTHER", "4xx"): 1,
            },
        )
        self.assertEqual(
            value(samples, "qeetgw_request_duration_seconds_count", service="user-service"), 4
        )
        self.assertEqual(
            value(samples, "qeetgw_upstream_time_to_first_byte_seconds_count", service="user-service"), 3
        )
        # Refused before forwarding: never timed, its series still at 0.
        self.assertEqual(
            value(samples, "qeetgw_upstream_time_to_first_byte_seconds_count", service="product-service"), 0
        )
        self.assertEqual(
            value(samples, "qeetgw_upstream_requests_in_flight", service="user-service"), 0
        )
        self.assertEqual(value(samples, "qeetgw_rate_limited_total", budget="default"), 2)
        self.assertEqual(value(samples, "qeetgw_auth_failures_total", reason="missing"), 1)
        self.assertEqual(value(samples, "qeetgw_auth_failures_total", reason="bad_signature"), 1)
        self.assertEqual(value(samples, "qeetgw_auth_failures_total", reason="expired"), 0)
        self.assertEqual(value(samples, "qeetgw_ratelimit_store_errors_total"), 0)
        self.assertEqual(
            value(samples, "qeetgw_client_connections_open"),
            len(self.memory.gateway.site.channels),
        )
        self.assertEqual(value(samples, "qeetgw_client_connections_open"), 9)
        # Process metrics are on our registry too.
        self.assertIsNotNone(value(samples, "process_open_fds"))
        # No raw path or user id in any label.
        for name, labels in samples:
            for _, label in labels:
                self.assertNotIn("/", label)
                self.assertNotIn("alice", label)

    def test_in_flight(self) -> None:
        """
        A request held by its upstream is in flight until it is answered or
        its client leaves.
        """
        from twisted.web.server import NOT_DONE_YET

        memory = MemoryGateway(
            {"METRICS_PORT": "tcp:0", "REQUIRE_AUTH": "false"}, answer=lambda request: NOT_DONE_YET
        )
        metrics = memory.gateway.metrics
        connection = Connection(memory.gateway.site)
        connection.send(get(b"/api/v1/orders/1"))
        memory.agent.flush()
        samples = scrape(metrics)
        self.assertEqual(value(samples, "qeetgw_upstream_requests_in_flight", service="order-service"), 1)
        connection.close()
        memory.agent.flush()
        samples = scrape(metrics)
        self.assertEqual(value(samples, "qeetgw_upstream_requests_in_flight", service="order-service"), 0)
        self.assertEqual(
            value(
                samples, "qeetgw_requests_total",
                service="order-service", method="GET", status_class="aborted",
            ),
            1,
        )


#: Every configured service's series, made at 0 when the gateway is built:
#: (sample name, labels besides C{service}).
SERVICE_SERIES = [
    ("qeetgw_upstream_requests_in_flight", {}),
    ("qeetgw_upstream_time_to_first_byte_seconds_count", {}),
    ("qeetgw_upstream_time_to_first_byte_seconds_bucket", {"le": "+Inf"}),
    ("qeetgw_request_duration_seconds_count", {}),
    ("qeetgw_request_duration_seconds_bucket", {"le": "0.1"}),
    ("qeetgw_upstream_retries_total", {}),
    ("qeetgw_upstream_ejections_total", {}),
    ("qeetgw_websocket_tunnels", {}),
    ("qeetgw_websocket_bytes_total", {"direction": "to_upstream"}),
    ("qeetgw_websocket_bytes_total", {"direction": "to_client"}),
] + [("qeetgw_upstream_errors_total", {"kind": kind}) for kind in UPSTREAM_ERROR_KINDS]

#: A configuration with a budget of its own for one prefix.
ROUTE_BUDGET = {"RATE_LIMIT_ROUTES": "/api/v1/auth/login=10/60000"}


class ZeroSeriesTests(TestCase):
    """
    The series of every configured service and budget exist, at 0, in the
    first scrape: a dashboard shows 0, not "No data", and C{rate()} sees
    the first increment.
    """

    def test_at_build(self) -> None:
        memory = MemoryGateway(ROUTE_BUDGET, metrics=Metrics(process=False))
        metrics = memory.gateway.metrics
        assert metrics is not None
        samples = scrape(metrics)
        for service in memory.config.services:
            for name, labels in SERVICE_SERIES:
                self.assertEqual(
                    value(samples, name, service=service.name, **labels), 0, (name, service.name, labels)
                )
        self.assertEqual(len(memory.config.services), 6)
        self.assertEqual(value(samples, "qeetgw_rate_limited_total", budget="default"), 0)
        self.assertEqual(value(samples, "qeetgw_rate_limited_total", budget="/api/v1/auth/login"), 0)
        # Left to first use: no request yet, no series.
        self.assertFalse([key for key in samples if key[0] == "qeetgw_requests_total"])

    def test_counted_after(self) -> None:
        """
        The children made at start are the ones counted into: a request
        moves the zero series, and makes no second one.
        """
        memory = MemoryGateway(
            {"REQUIRE_AUTH": "false", "RATE_LIMIT_MAX": "1", **ROUTE_BUDGET}, metrics=Metrics(process=False)
        )
        metrics = memory.gateway.metrics
        assert metrics is not None
        self.assertEqual(memory.send(get(b"/api/v1/users/1")).code, 200)
        self.assertEqual(memory.send(get(b"/api/v1/users/1")).code, 429)
        samples = scrape(metrics)
        self.assertEqual(value(samples, "qeetgw_request_duration_seconds_count", service="user-service"), 2)
        self.assertEqual(value(samples, "qeetgw_upstream_time_to_first_byte_seconds_count", service="user-service"), 1)
        self.assertEqual(value(samples, "qeetgw_rate_limited_total", budget="default"), 1)
        self.assertEqual(value(samples, "qeetgw_rate_limited_total", budget="/api/v1/auth/login"), 0)
        self.assertEqual(
            len([key for key in samples if key[0] == "qeetgw_rate_limited_total"]), 2
        )


class UpstreamErrorTests(TestCase):
    """
    Upstream failures, counted by kind.
    """

    def gateway(self, upstream: MemoryUpstreams) -> Any:
        memory = MemoryGateway({"REQUIRE_AUTH": "false"})
        metrics = Metrics(process=False)
        upstreams = upstream.upstream_pool(memory.clock)
        gateway = build_site(memory.config, memory.clock, upstreams=upstreams, clock=memory.clock, metrics=metrics)
        return memory.clock, gateway, metrics

    def test_connect(self) -> None:
        _, gateway, metrics = self.gateway(refusing(ConnectionRefusedError()))
        connection = Connection(gateway.site)
        connection.send(get(b"/api/v1/users/1"))
        self.assertEqual(connection.response().code, 502)
        samples = scrape(metrics)
        self.assertEqual(
            value(samples, "qeetgw_upstream_errors_total", service="user-service", kind="connect"), 1
        )
        self.assertEqual(
            value(samples, "qeetgw_upstream_errors_total", service="user-service", kind="timeout"), 0
        )
        self.assertEqual(
            value(samples, "qeetgw_requests_total", service="user-service", method="GET", status_class="5xx"), 1
        )
        self.assertEqual(value(samples, "qeetgw_upstream_requests_in_flight", service="user-service"), 0)

    def test_timeout(self) -> None:
        clock, gateway, metrics = self.gateway(MemoryUpstreams(RecordingUpstream(lambda request: NOT_DONE_YET)))
        connection = Connection(gateway.site)
        connection.send(get(b"/api/v1/users/1"))
        clock.advance(5.5)
        self.assertEqual(connection.response().code, 504)
        samples = scrape(metrics)
        self.assertEqual(
            value(samples, "qeetgw_upstream_errors_total", service="user-service", kind="timeout"), 1
        )
        self.assertEqual(value(samples, "qeetgw_request_duration_seconds_sum", service="user-service"), 5.5)

    def test_kinds(self) -> None:
        self.assertEqual(upstream_error_kind(Failure(UpstreamTimeout(5))), "timeout")
        self.assertEqual(upstream_error_kind(Failure(ConnectionRefusedError())), "connect")
        self.assertEqual(
            upstream_error_kind(Failure(ResponseNeverReceived([Failure(TLSError())]))), "tls"
        )
        self.assertEqual(
            upstream_error_kind(Failure(ResponseNeverReceived([Failure(ConnectionLost())]))), "reset"
        )
        self.assertEqual(upstream_error_kind(Failure(ValueError())), "other")


class LabelTests(TestCase):
    """
    Labels stay in small fixed sets.
    """

    def test_status_class(self) -> None:
        self.assertEqual([status_class(c) for c in (101, 200, 302, 404, 503)], ["1xx", "2xx", "3xx", "4xx", "5xx"])
        self.assertEqual(status_class(700), "other")

    def test_auth_reasons(self) -> None:
        self.assertEqual(auth_reason_label("expired"), "expired")
        self.assertEqual(auth_reason_label("malformed header"), "malformed")
        self.assertEqual(auth_reason_label("unknown key id"), "unknown_key")
        self.assertEqual(auth_reason_label("something new"), "other")


class JWKSFetchTests(TestCase):
    """
    JWKS fetches, by outcome.
    """

    def test_outcomes(self) -> None:
        from tests.test_auth import (
            EC_C,
            JWKS_URL,
            JWKSResource,
            RefusingClient,
            jwk,
            make_clock,
            make_config,
        )

        config = make_config(JWT_JWKS_URL=JWKS_URL, JWT_ALGORITHMS="HS256,ES256")
        metrics = Metrics(process=False)
        stub: Any = StubTreq(JWKSResource([jwk(EC_C, "C")]))
        good = TokenVerifier(
            config, make_clock(), jwks_client=stub,
            on_jwks_fetch=metrics.jwks_fetch,
        )
        bad = TokenVerifier(
            config, make_clock(), jwks_client=RefusingClient(), on_jwks_fetch=metrics.jwks_fetch
        )
        for verifier in (good, bad):
            verifier.startService()
            self.addCleanup(verifier.stopService)
        stub.flush()
        samples = scrape(metrics)
        self.assertEqual(value(samples, "qeetgw_jwks_fetches_total", outcome="success"), 1)
        self.assertEqual(value(samples, "qeetgw_jwks_fetches_total", outcome="failure"), 1)


class WorkersTests(TestCase):
    """
    METRICS_PORT with WORKERS > 1: one port for the group, served by the
    supervisor (tests.test_groupmetrics has the rest).
    """

    def test_supervisor_serves(self) -> None:
        from qeetgw.process.supervisor import Supervisor
        from qeetgw.process.tap import Options, makeService

        options = Options(
            environ={"REQUIRE_AUTH": "false", "METRICS_PORT": "tcp:9464", "WORKERS": "2"},
            dotenv_path="/nonexistent/.env",
        )
        options.parseOptions([])
        service = makeService(options)
        assert isinstance(service, Supervisor)
        self.assertEqual(service.metrics_port, "tcp:9464")

    def test_one_worker(self) -> None:
        from qeetgw.process.tap import Options

        options = Options(
            environ={"REQUIRE_AUTH": "false", "METRICS_PORT": "tcp:9464"},
            dotenv_path="/nonexistent/.env",
        )
        options.parseOptions([])
        self.assertEqual(options.config.metrics_port, "tcp:9464")
