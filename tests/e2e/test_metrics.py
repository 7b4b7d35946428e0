"""
/metrics on its own loopback listener, scraped over HTTP after known
traffic and parsed with prometheus_client's parser.
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Tuple

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import error
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    JSONUpstream,
    closed_port_url,
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    start_gateway,
)



def parse(body: bytes) -> Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


class MetricsEndToEndTests(TestCase):
    """
    The gateway in this process with METRICS_PORT on loopback.
    """

    @inlineCallbacks
    def test_scrape(self) -> Any:
        upstream = listen_upstream(self, JSONUpstream())
        env = gateway_environment(
            upstream,
            METRICS_PORT="tcp:0:interface=127.0.0.1",
            PAYMENT_SERVICE_URL=closed_port_url(),
        )
        service, port = yield start_gateway(self, env)
        # The metrics listener is the gateway service's child "metrics"; its
        # endpoint keeps the port it bound at start.
        listener = service.getServiceNamed("metrics")
        metrics_port = listener.endpoint.port.getHost().port
        self.assertNotEqual(metrics_port, port)

        for n in range(3):
            response = yield fetch(port, request(b"GET", b"/api/v1/users/%d" % (n,)))
            self.assertEqual(response.code, 200)
        response = yield fetch(port, request(b"POST", b"/api/v1/products", b"{}"))
        self.assertEqual(response.code, 200)
        response = yield fetch(port, request(b"GET", b"/api/v1/nowhere"))
        self.assertEqual(response.code, 404)
        response = yield fetch(port, request(b"GET", b"/api/v1/payments/1"))
        self.assertEqual(response.code, 502)
        # The public port does not serve the metrics.
        response = yield fetch(port, request(b"GET", b"/metrics"))
        self.assertEqual(response.code, 404)

        scraped = yield fetch(metrics_port, request(b"GET", b"/metrics"))
        self.assertEqual(scraped.code, 200)
        self.assertTrue(scraped.header(b"content-type").startswith(b"text/plain"))
        samples = parse(scraped.body)
        requests = {
            tuple(sorted(labels)): value
            for (name, labels), value in samples.items()
            if name == "qeetgw_requests_total"
        }
        self.assertEqual(
            requests,
            {
                (("method", "GET"), ("service", "user-service"), ("status_class", "2xx")): 3,
                (("method", "POST"), ("service", "product-service"), ("status_class", "2xx")): 1,
                (("method", "GET"), ("service", "none"), ("status_class", "4xx")): 1,
                (("method", "GET"), ("service", "payment-service"), ("status_class", "5xx")): 1,
                (("method", "GET"), ("service", "gateway"), ("status_class", "4xx")): 1,
            },
        )
        labels = frozenset({("service", "payment-service"), ("kind", "connect")})
        self.assertEqual(samples[("qeetgw_upstream_errors_total", labels)], 1)
        self.assertEqual(
            samples[("qeetgw_upstream_time_to_first_byte_seconds_count", frozenset({("service", "user-service")}))],
            3,
        )
        self.assertEqual(
            samples[("qeetgw_request_duration_seconds_count", frozenset({("service", "user-service")}))],
            3,
        )
        # Every client connection said Connection: close and is gone.
        self.assertEqual(samples[("qeetgw_client_connections_open", frozenset())], 0)
        self.assertIn(("process_cpu_seconds_total", frozenset()), samples)

        # Stopping closes the metrics port (the gateway's own stop, in the
        # clean-up, then stops it again, harmlessly).
        yield listener.stopService()
        with self.assertRaises(error.ConnectionRefusedError):
            yield fetch(metrics_port, request(b"GET", b"/metrics"))
