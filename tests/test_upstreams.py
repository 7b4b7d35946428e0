"""
Several instances per service, in memory: balancing, retries, outlier
ejection, the circuit breaker and per-service timeouts through the whole
gateway.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

from tests.gateway import MemoryGateway
from tests.memory import get, with_body

THREE = "http://a.test,http://b.test,http://c.test"


def host_of(request: IRequest) -> str:
    return request.requestHeaders.getRawHeaders(b"host")[0].decode()


def gateway(answer: Any = None, **env: str) -> MemoryGateway:
    settings = {"REQUIRE_AUTH": "false", "USER_SERVICE_URL": THREE, **env}
    made = MemoryGateway(settings, answer=answer)
    return made


def down_agent(made: MemoryGateway, *hosts: bytes) -> Any:
    """
    Put C{hosts} down behind C{made}'s proxy: their connections are refused,
    as a stopped instance's are.  The result's C{down} and C{refused} say
    which hosts are down and how often each refused.
    """
    made.agent.down = list(hosts)
    return made.agent


class BalancingTests(SynchronousTestCase):
    """
    Round robin over a service's instances.
    """

    def test_round_robin_spread(self) -> None:
        made = gateway()
        for _ in range(6):
            self.assertEqual(made.send(get(b"/api/v1/users/1"), settle=1).code, 200)
        self.assertEqual(Counter(seen.headers.getRawHeaders(b"host")[0] for seen in made.upstream.seen),
                         {b"a.test": 2, b"b.test": 2, b"c.test": 2})

    def test_one_url_is_tried_once(self) -> None:
        made = MemoryGateway({"REQUIRE_AUTH": "false", "USER_SERVICE_URL": "http://only.test"})
        agent = down_agent(made, b"only.test")
        self.assertEqual(made.send(get(b"/api/v1/users/1"), settle=1).code, 502)
        self.assertEqual(agent.refused[b"only.test"], 1)


class RetryTests(SynchronousTestCase):
    """
    Retries on another instance, within the rules.
    """

    def test_connect_failure_retried_whatever_the_method(self) -> None:
        made = gateway()
        down_agent(made, b"a.test")
        response = made.send(with_body(b"POST", b"/api/v1/users", b'{"name":"x"}'), settle=1)
        self.assertEqual(response.code, 200)
        self.assertEqual(made.upstream.seen[0].body, b'{"name":"x"}')

    def test_503_on_get_retried_elsewhere_and_logged(self) -> None:
        def answer(request: IRequest) -> bytes:
            if host_of(request) == "a.test":
                request.setResponseCode(503)
                return b"busy"
            return b"ok"

        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        made = gateway(answer)
        response = made.send(get(b"/api/v1/users/1"), settle=1)
        self.assertEqual((response.code, response.body), (200, b"ok"))
        self.assertEqual([host_of_seen(s) for s in made.upstream.seen], ["a.test", "b.test"])
        access = [e for e in events if e.get("log_namespace") == "qeetgw.access"]
        self.assertEqual((access[-1]["tries"], access[-1]["instance"]), (2, "http://b.test"))

    def test_small_put_retried_with_its_body(self) -> None:
        def answer(request: IRequest) -> bytes:
            if host_of(request) == "a.test":
                request.setResponseCode(502)
            return b"done"

        made = gateway(answer)
        response = made.send(with_body(b"PUT", b"/api/v1/users/1", b"x" * 1000), settle=1)
        self.assertEqual(response.code, 200)
        self.assertEqual([s.body for s in made.upstream.seen], [b"x" * 1000, b"x" * 1000])

    def test_post_whose_body_went_out_is_not_retried(self) -> None:
        def answer(request: IRequest) -> bytes:
            request.setResponseCode(503)
            return b"busy"

        made = gateway(answer)
        response = made.send(with_body(b"POST", b"/api/v1/users", b"{}"), settle=1)
        self.assertEqual((response.code, response.body), (503, b"busy"))
        self.assertEqual(len(made.upstream.seen), 1)

    def test_large_body_not_retried(self) -> None:
        def answer(request: IRequest) -> bytes:
            request.setResponseCode(503)
            return b"busy"

        made = gateway(answer, RETRY_BUFFER_BYTES="10")
        self.assertEqual(made.send(with_body(b"PUT", b"/api/v1/users/1", b"x" * 11), settle=1).code, 503)
        self.assertEqual(len(made.upstream.seen), 1)

    def test_retry_max(self) -> None:
        def answer(request: IRequest) -> bytes:
            request.setResponseCode(503)
            return b"busy"

        made = gateway(answer, RETRY_MAX="2")
        self.assertEqual(made.send(get(b"/api/v1/users/1"), settle=1).code, 503)
        self.assertEqual(len(made.upstream.seen), 3)


def host_of_seen(seen: Any) -> str:
    return seen.headers.getRawHeaders(b"host")[0].decode()


class OutlierTests(SynchronousTestCase):
    """
    A failing instance is ejected, and comes back.
    """

    def test_ejected_then_back(self) -> None:
        made = gateway(OUTLIER_CONSECUTIVE_FAILURES="2", OUTLIER_BASE_EJECTION_MS="10000")
        agent = down_agent(made, b"a.test")
        for _ in range(12):
            self.assertEqual(made.send(get(b"/api/v1/users/1"), settle=1).code, 200)
        # two failures eject it: no third try on a.test
        self.assertEqual(agent.refused[b"a.test"], 2)
        agent.down = []
        made.clock.advance(10)
        for _ in range(6):
            made.send(get(b"/api/v1/users/1"), settle=1)
        self.assertIn("a.test", [host_of_seen(s) for s in made.upstream.seen[-6:]])


class BreakerAndTimeoutTests(SynchronousTestCase):
    """
    UPSTREAM_MAX_IN_FLIGHT and <SERVICE>_TIMEOUT_MS.
    """

    def test_circuit_breaker(self) -> None:
        made = gateway(lambda request: NOT_DONE_YET, UPSTREAM_MAX_IN_FLIGHT="2")
        from tests.memory import Connection

        held = []
        for _ in range(2):
            connection = Connection(made.gateway.site)
            connection.send(get(b"/api/v1/users/1"))
            held.append(connection)
        made.agent.flush()
        response = made.send(get(b"/api/v1/users/1"), settle=1)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.header(b"retry-after"), b"1")
        self.assertEqual(response.json()["error"]["code"], "SERVICE_UNAVAILABLE")
        self.assertEqual(len(made.upstream.seen), 2)

    def test_per_service_timeout(self) -> None:
        made = MemoryGateway({"REQUIRE_AUTH": "false", "PAYMENT_TIMEOUT_MS": "1000"},
                             answer=lambda request: NOT_DONE_YET)
        from tests.memory import Connection

        payment, order = Connection(made.gateway.site), Connection(made.gateway.site)
        payment.send(get(b"/api/v1/payments/1"))
        order.send(get(b"/api/v1/orders/1"))
        made.agent.flush()
        made.clock.advance(1.1)
        self.assertEqual(payment.response().code, 504)
        self.assertEqual(order.transport.value(), b"")


class BudgetAndLeastRequestTests(SynchronousTestCase):
    """
    The retry budget caps extra load; least_request avoids a slow instance.
    """

    def test_retry_budget_caps_the_extra_load(self) -> None:
        from tests.memory import Connection

        def busy(request: IRequest) -> bytes:
            request.setResponseCode(503)
            return b"busy"

        made = gateway(busy, RETRY_MAX="1")
        connections = []
        for _ in range(30):
            connection = Connection(made.gateway.site)
            connection.send(get(b"/api/v1/users/1"))
            connections.append(connection)
        made.agent.flush()
        # Every first try failed at once; only max(3, 20% of in flight)
        # retries may wait for their backoff together, the rest answer 503.
        for _ in range(20):
            made.clock.advance(0.05)
            made.agent.flush()
        self.assertEqual(len(made.upstream.seen), 30 + 3)
        self.assertEqual([c.response().code for c in connections], [503] * 30)

    def test_a_retry_counts_against_the_budget_until_its_try_ends(self) -> None:
        """
        Retries that were sent and hang still hold the budget: once three
        are in flight, the next request that fails gets no retry.
        """
        from tests.memory import Connection

        first_tries: set = set()

        def first_fails_retries_hang(request: IRequest) -> Any:
            if request.path not in first_tries:
                first_tries.add(request.path)
                request.setResponseCode(503)
                return b"busy"
            return NOT_DONE_YET

        made = gateway(first_fails_retries_hang, RETRY_MAX="3")
        connections = []
        for n in range(10):
            connection = Connection(made.gateway.site)
            connection.send(get(b"/api/v1/users/%d" % (n,)))
            connections.append(connection)
            made.agent.flush()
            made.clock.advance(0.3)  # past any backoff: the retry is sent
            made.agent.flush()
        self.assertEqual(len(made.upstream.seen), 10 + 3)
        answered = [c.response().code for c in connections if c.transport.value()]
        self.assertEqual(answered, [503] * 7)

    def test_least_request_sends_a_slow_instance_less(self) -> None:
        from tests.memory import Connection

        def slow_a(request: IRequest) -> Any:
            if host_of(request) == "a.test":
                return NOT_DONE_YET  # never answers: its requests stay in flight
            return b"ok"

        made = gateway(slow_a, BALANCER="least_request")
        for _ in range(30):
            connection = Connection(made.gateway.site)
            connection.send(get(b"/api/v1/users/1"))
            made.agent.flush()
        hosts = Counter(host_of_seen(seen) for seen in made.upstream.seen)
        self.assertLessEqual(hosts["a.test"], 2)
        self.assertEqual(hosts["b.test"] + hosts["c.test"], 30 - hosts["a.test"])


class InstanceMetricsTests(SynchronousTestCase):
    """
    Retries, ejections and instance states in the metrics.
    """

    def test_counted(self) -> None:
        from prometheus_client import generate_latest
        from prometheus_client.parser import text_string_to_metric_families

        from qeetgw.metrics import Metrics
        from qeetgw.site import build_site

        made = gateway(OUTLIER_CONSECUTIVE_FAILURES="1")
        metrics = Metrics(process=False)
        # The same gateway, built again with metrics on.
        made.gateway = build_site(
            made.config, made.clock, upstreams=made.gateway.upstreams, clock=made.clock, metrics=metrics
        )
        down_agent(made, b"a.test")
        for _ in range(3):
            self.assertEqual(made.send(get(b"/api/v1/users/1"), settle=1).code, 200)
        samples = {}
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        self.assertEqual(samples[("qeetgw_upstream_retries_total", (("service", "user-service"),))], 1)
        self.assertEqual(samples[("qeetgw_upstream_ejections_total", (("service", "user-service"),))], 1)
        self.assertEqual(
            samples[("qeetgw_upstream_instances", (("service", "user-service"), ("state", "ejected")))], 1
        )
        # Never probed (health checks are not started here): unknown.
        self.assertEqual(
            samples[("qeetgw_upstream_instances", (("service", "user-service"), ("state", "unknown")))], 2
        )


class StatusTrafficTests(SynchronousTestCase):
    """
    What the proxy records for the status page as each try ends.
    """

    def test_each_try_is_recorded_on_its_instance(self) -> None:
        def answer(request: IRequest) -> bytes:
            if host_of(request) == "c.test":
                request.setResponseCode(500)
            return b"ok"

        made = gateway(answer, OUTLIER_CONSECUTIVE_FAILURES="100")
        down_agent(made, b"a.test")
        for _ in range(6):
            made.send(get(b"/api/v1/users/1"), settle=1)
        status = made.gateway.status
        assert status is not None
        [users] = [entry for entry in status.report()["services"] if entry["name"] == "user-service"]
        tries = {row["url"]: (row["requests"], row["errorsPerSecond"] > 0) for row in users["instances"]}
        # a refused every try it got (each retried elsewhere); b answered
        # 200, c 500 (an answer: never retried, a 5xx on the page).
        self.assertEqual(tries["http://b.test"][1], False)
        self.assertEqual(tries["http://a.test"][1], True)
        self.assertEqual(tries["http://c.test"][1], True)
        self.assertEqual(sum(count for count, _ in tries.values()), 6 + tries["http://a.test"][0])
        self.assertEqual(users["requests"], 6 + tries["http://a.test"][0])
        self.assertIsNotNone(users["p50Ms"])
