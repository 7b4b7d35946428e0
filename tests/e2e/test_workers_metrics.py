"""
C{twistd qeetgw --workers 2} with METRICS_PORT: one scrape of the
supervisor's port sums both workers exactly, and a killed worker's counts
stay in the totals after it is started again.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Dict, FrozenSet, List, Tuple

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    JSONUpstream,
    fetch,
    gateway_environment,
    is_worker,
    listen_upstream,
    request,
    spawn_gateway,
    stop_workers_at_cleanup,
    wait_for,
    worker_pids,
)

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]

USERS_2XX = frozenset({("service", "user-service"), ("method", "GET"), ("status_class", "2xx")})
HEALTH_2XX = frozenset({("service", "gateway"), ("method", "GET"), ("status_class", "2xx")})
USER_SERVICE = frozenset({("service", "user-service")})



def parse(body: bytes) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


class WorkersMetricsTests(TestCase):
    """
    The group's metrics on the supervisor's one port.
    """

    timeout = 120

    @inlineCallbacks
    def scrape(self, port: int) -> Any:
        response = yield fetch(port, request(b"GET", b"/metrics"))
        self.assertEqual(response.code, 200)
        return parse(response.body)

    @inlineCallbacks
    def send(self, port: int, path: bytes, count: int) -> Any:
        for _ in range(count):
            response = yield fetch(port, request(b"GET", path))
            self.assertEqual(response.code, 200, path)

    @inlineCallbacks
    def test_summed_and_kept_over_a_restart(self) -> Any:
        upstream = listen_upstream(self, JSONUpstream())
        env = gateway_environment(
            upstream, METRICS_PORT="tcp:0:interface=127.0.0.1", HEALTH_CHECK_INTERVAL_MS="0"
        )
        process = spawn_gateway(self, env, "--workers", "2")
        stop_workers_at_cleanup(self, process)
        port = yield process.port
        yield wait_for(lambda: process.logged("qeetgw.metrics", "metrics on"), "the metrics port", within=30)
        [listening] = process.logged("qeetgw.metrics", "metrics on")
        metrics_port = listening["port"]
        [created] = process.logged("qeetgw.metricfiles", "metric files")
        directory = created["directory"]
        self.assertEqual(os.stat(directory).st_mode & 0o777, 0o700)
        yield wait_for(lambda: len(process.logged("qeetgw.process.worker", "worker")) == 2, "two workers serving", within=30)

        # Known traffic, on a new connection each, so both workers get some.
        yield self.send(port, b"/api/v1/users/1", 30)
        yield self.send(port, b"/health", 10)
        yield wait_for(lambda: len(process.logged("qeetgw.access")) == 40, "40 access events", within=30)
        access = process.logged("qeetgw.access")
        self.assertEqual({event["worker"] for event in access}, {"0", "1"})
        # Worker 0, killed below, served some of the requests counted.
        self.assertTrue([e for e in access if e["worker"] == "0" and e["path"].startswith("/api/v1/users")])

        first = yield self.scrape(metrics_port)
        self.assertEqual(first[("qeetgw_requests_total", USERS_2XX)], 30)
        self.assertEqual(first[("qeetgw_requests_total", HEALTH_2XX)], 10)
        self.assertEqual(first[("qeetgw_request_duration_seconds_count", USER_SERVICE)], 30)
        self.assertEqual(first[("qeetgw_upstream_time_to_first_byte_seconds_count", USER_SERVICE)], 30)
        self.assertEqual(first[("qeetgw_upstream_requests_in_flight", USER_SERVICE)], 0)
        self.assertEqual(first[("qeetgw_worker_restarts_total", frozenset())], 0)
        # Each process's own figures, by worker; no pid labels anywhere.
        workers = {
            dict(labels)["worker"] for name, labels in first if name == "process_resident_memory_bytes"
        }
        self.assertEqual(workers, {"0", "1", "supervisor"})
        self.assertFalse([key for key in first if "pid" in dict(key[1])])

        # Kill worker 0; the supervisor starts another.
        pids = worker_pids(process)
        os.kill(pids[0], signal.SIGKILL)
        yield wait_for(lambda: worker_pids(process).get(0) not in (None, pids[0]), "worker 0 restarted", within=30)
        yield wait_for(lambda: len(process.logged("qeetgw.process.worker", "worker")) == 3, "worker 0 serving", within=30)
        self.assertFalse(os.path.exists(f"{directory}/counter_{pids[0]}.db"))

        yield self.send(port, b"/api/v1/users/2", 20)
        second = yield self.scrape(metrics_port)
        # The dead worker's counts are still in the totals, the new ones added.
        self.assertEqual(second[("qeetgw_requests_total", USERS_2XX)], 50)
        self.assertEqual(second[("qeetgw_requests_total", HEALTH_2XX)], 10)
        self.assertEqual(second[("qeetgw_request_duration_seconds_count", USER_SERVICE)], 50)
        self.assertEqual(second[("qeetgw_worker_restarts_total", frozenset())], 1)
        for key, counted in first.items():
            if key[0].endswith(("_total", "_count", "_bucket")) and not key[0].startswith("process_"):
                self.assertGreaterEqual(second[key], counted, key)
        # Every client connection said Connection: close: none stays open.
        # (Polled: a worker sees a connection close just after the client.)
        closed: List[float] = []

        @inlineCallbacks
        def none_open() -> Any:
            samples = yield self.scrape(metrics_port)
            closed.append(samples[("qeetgw_client_connections_open", frozenset())])

        for _ in range(100):
            yield none_open()
            if closed[-1] == 0:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(closed[-1], 0)

        # SIGTERM: every worker drains and exits, the directory is removed.
        process.terminate()
        code = yield process.ended
        self.assertEqual(code, 0, process.text())
        for pid in worker_pids(process).values():
            self.assertFalse(is_worker(pid), f"worker {pid} still running")
        self.assertFalse(os.path.exists(directory))
