"""
The metrics of a group of workers, in memory: two gateways in this process
play two workers, each counting into its own files in one directory (as
two worker processes would), and the supervisor's registry sums them.
"""

from __future__ import annotations

import os
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple

from prometheus_client import generate_latest, values
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase
from twisted.web.server import NOT_DONE_YET

from qeetgw.groupmetrics import SUPERVISOR, GroupMetrics, WorkerProcesses
from qeetgw.metricfiles import DIRECTORY_VARIABLE, MetricDirectory, MetricFiles
from qeetgw.metrics import Metrics
from qeetgw.process.supervisor import Supervisor
from qeetgw.process.worker import worker_metrics
from tests.gateway import MemoryGateway, token
from tests.memory import Connection, get
from tests.test_metrics import SERVICE_SERIES

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]

#: What the gateways of these tests are configured with.
ENV = {"RATE_LIMIT_MAX": "1000", "HEALTH_CHECK_INTERVAL_MS": "0"}


def parse(text: str) -> Samples:
    """
    Every sample of an exposition, by name and labels.
    """
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(group: GroupMetrics) -> Samples:
    """
    The group's registry as one scrape of METRICS_PORT would read it.
    """
    return parse(generate_latest(group.registry).decode("utf-8"))


def value(samples: Samples, name: str, **labels: str) -> Optional[float]:
    """
    The sample C{name} with exactly C{labels}, or L{None}.
    """
    return samples.get((name, frozenset(labels.items())))


def counts(samples: Samples) -> Samples:
    """
    The counter and histogram samples (the ones that never go down).
    """
    return {
        key: v for key, v in samples.items()
        if key[0].endswith(("_total", "_bucket", "_count", "_sum"))
    }


def instances(samples: Samples, service: str, worker: str) -> float:
    """
    How many instances of C{service} worker C{worker} reports, in any state.
    """
    return sum(
        v for (name, labels), v in samples.items()
        if name == "qeetgw_upstream_instances"
        and dict(labels).get("service") == service
        and dict(labels).get("worker") == worker
    )


def bearer() -> bytes:
    return b"Authorization: Bearer " + token().encode() + b"\r\n"


class FakeWorker:
    """
    A gateway in this process that counts into C{directory} as worker
    C{index} with pid C{pid}, as a worker process would.
    """

    def __init__(self, test: TestCase, directory: str, pid: int, index: str, answer: Any = None) -> None:
        self.files = MetricFiles(directory, str(pid), index)
        test.addCleanup(self.files.close)
        self.memory = MemoryGateway(ENV, answer=answer, metrics=Metrics(files=self.files))
        gauge = self.memory.gateway.instance_gauge
        assert gauge is not None
        gauge.startService()
        test.addCleanup(gauge.stopService)

    def users(self, count: int) -> None:
        """
        C{count} GETs to the user-service, answered 200.
        """
        for n in range(count):
            assert self.memory.send(get(b"/api/v1/users/%d" % (n,), bearer())).code == 200

    def health(self, count: int) -> None:
        """
        C{count} GETs of /health, answered 200.
        """
        for _ in range(count):
            assert self.memory.send(get(b"/health")).code == 200


class GroupTests(TestCase):
    """
    Two workers' files, one scrape.
    """

    def setUp(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        self.directory = MetricDirectory(path)
        self.group = GroupMetrics(self.directory, dict, process=False)

    def test_summed(self) -> None:
        """
        Counters and histograms are the sum of the workers'; connections
        open are the live workers' sum; instance states are per worker.
        """
        one = FakeWorker(self, self.directory.path, 101, "0")
        two = FakeWorker(self, self.directory.path, 102, "1")
        one.users(3)
        one.health(2)
        two.users(4)
        assert two.memory.send(get(b"/api/v1/products/1")).code == 401
        samples = scrape(self.group)
        user_2xx = dict(service="user-service", method="GET", status_class="2xx")
        self.assertEqual(value(samples, "qeetgw_requests_total", **user_2xx), 7)
        self.assertEqual(
            value(samples, "qeetgw_requests_total", service="gateway", method="GET", status_class="2xx"), 2
        )
        self.assertEqual(
            value(samples, "qeetgw_requests_total", service="product-service", method="GET", status_class="4xx"), 1
        )
        self.assertEqual(value(samples, "qeetgw_request_duration_seconds_count", service="user-service"), 7)
        self.assertEqual(
            value(samples, "qeetgw_request_duration_seconds_bucket", service="user-service", le="+Inf"), 7
        )
        self.assertEqual(value(samples, "qeetgw_upstream_time_to_first_byte_seconds_count", service="user-service"), 7)
        self.assertEqual(value(samples, "qeetgw_auth_failures_total", reason="missing"), 1)
        # Made at start, counted nowhere: still a series, at 0.
        self.assertEqual(value(samples, "qeetgw_auth_failures_total", reason="expired"), 0)
        self.assertEqual(value(samples, "qeetgw_upstream_requests_in_flight", service="user-service"), 0)
        # Every send above left its connection open.
        self.assertEqual(
            value(samples, "qeetgw_client_connections_open"),
            len(one.memory.gateway.site.channels) + len(two.memory.gateway.site.channels),
        )
        self.assertEqual(value(samples, "qeetgw_client_connections_open"), 10)
        # One series per worker, never summed: each worker has its own view
        # of the user-service's one instance.
        for worker in ("0", "1"):
            self.assertEqual(instances(samples, "user-service", worker), 1)
        self.assertFalse([key for key in samples if dict(key[1]).get("pid")])
        # The scrape adds the workers' files and nothing else of this process.
        self.assertIs(values.ValueClass, values.MutexValue)

    def test_in_flight_and_connections_of_a_dead_worker(self) -> None:
        """
        A dead worker's requests in flight and connections leave the sums;
        its counts stay.
        """
        held = FakeWorker(self, self.directory.path, 101, "0", answer=lambda request: NOT_DONE_YET)
        other = FakeWorker(self, self.directory.path, 102, "1")
        Connection(held.memory.gateway.site).send(get(b"/api/v1/orders/1", bearer()))
        held.memory.agent.flush()
        other.users(2)
        samples = scrape(self.group)
        self.assertEqual(value(samples, "qeetgw_upstream_requests_in_flight", service="order-service"), 1)
        self.assertEqual(value(samples, "qeetgw_client_connections_open"), 3)

        self.directory.worker_ended(101)
        samples = scrape(self.group)
        # The live worker's series, made at 0 at its start, is all that is left.
        self.assertEqual(value(samples, "qeetgw_upstream_requests_in_flight", service="order-service"), 0)
        self.assertEqual(value(samples, "qeetgw_client_connections_open"), 2)
        self.assertEqual(instances(samples, "user-service", "0"), 0)
        self.assertEqual(instances(samples, "user-service", "1"), 1)
        self.assertEqual(
            value(samples, "qeetgw_requests_total", service="user-service", method="GET", status_class="2xx"), 2
        )

    def test_restart_never_goes_backwards(self) -> None:
        """
        A worker that dies and is replaced by a new pid: every counter and
        histogram sample is the same right after the death (folded into the
        archive), and the successor's counts add to it.
        """
        one = FakeWorker(self, self.directory.path, 101, "0")
        two = FakeWorker(self, self.directory.path, 102, "1")
        one.users(3)
        one.health(1)
        two.users(2)
        before = counts(scrape(self.group))

        self.directory.worker_ended(101)
        self.assertEqual(counts(scrape(self.group)), before)
        self.assertNotIn("counter_101.db", self.directory.files())
        self.assertNotIn("histogram_101.db", self.directory.files())
        self.assertNotIn("gauge_livesum_101.db", self.directory.files())
        self.assertIn("counter_dead.db", self.directory.files())

        successor = FakeWorker(self, self.directory.path, 103, "0")
        successor.users(5)
        after = counts(scrape(self.group))
        for key, counted in before.items():
            self.assertGreaterEqual(after[key], counted, key)
        user_2xx = dict(service="user-service", method="GET", status_class="2xx")
        self.assertEqual(value(after, "qeetgw_requests_total", **user_2xx), 10)
        self.assertEqual(value(after, "qeetgw_request_duration_seconds_count", service="user-service"), 10)

        # A second death folds into the same archive, exactly.
        before = counts(scrape(self.group))
        self.directory.worker_ended(102)
        self.directory.worker_ended(103)
        self.assertEqual(counts(scrape(self.group)), before)
        self.assertEqual(self.directory.files(), ["counter_dead.db", "histogram_dead.db"])

    def test_zero_series_at_start(self) -> None:
        """
        The series a gateway makes at 0 when it is built (every configured
        service's, every budget's) are in the workers' files from the
        start, so the group's first scrape has them too.
        """
        one = FakeWorker(self, self.directory.path, 101, "0")
        FakeWorker(self, self.directory.path, 102, "1")
        samples = scrape(self.group)
        services = [service.name for service in one.memory.config.services]
        self.assertEqual(len(services), 6)
        for service in services:
            for name, labels in SERVICE_SERIES:
                self.assertEqual(value(samples, name, service=service, **labels), 0, (name, service, labels))
        self.assertEqual(value(samples, "qeetgw_rate_limited_total", budget="default"), 0)
        self.assertIn("histogram_101.db", self.directory.files())

    def test_remove(self) -> None:
        FakeWorker(self, self.directory.path, 101, "0").users(1)
        self.directory.remove()
        self.assertFalse(os.path.exists(self.directory.path))

    def test_created_private(self) -> None:
        parent = self.mktemp()
        os.makedirs(parent)
        directory = MetricDirectory.create(parent)
        self.addCleanup(directory.remove)
        self.assertEqual(os.path.dirname(directory.path), parent)
        self.assertEqual(os.stat(directory.path).st_mode & 0o777, 0o700)
        self.assertEqual(os.listdir(directory.path), [])


class OneProcessTests(TestCase):
    """
    Without files nothing changes: values in memory, a registry of its own.
    """

    def test_in_memory(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        files = MetricFiles(path, "101", "0")
        self.addCleanup(files.close)
        Metrics(process=False, files=files)
        plain = Metrics(process=False)
        plain.request_done("user-service", b"GET", "2xx", 0.1)
        self.assertIsInstance(
            plain.requests.labels("user-service", "GET", "2xx")._value, values.MutexValue
        )
        self.assertEqual(sorted(os.listdir(path)), ["counter_101.db", "gauge_livesum_101.db"])


class ProcessFiguresTests(TestCase):
    """
    Each process's own figures, labelled by worker.
    """

    def test_labelled(self) -> None:
        me = os.getpid()
        collector = WorkerProcesses(lambda: {"0": me, "1": me, SUPERVISOR: me})
        rss = [m for m in collector.collect() if m.name == "process_resident_memory_bytes"]
        self.assertEqual(len(rss), 1)
        self.assertEqual(
            sorted(sample.labels["worker"] for sample in rss[0].samples), ["0", "1", SUPERVISOR]
        )
        self.assertTrue(all(sample.value > 0 for sample in rss[0].samples))

    def test_gone(self) -> None:
        """
        A process that exited between the list and the read is left out,
        not an error.
        """
        collector = WorkerProcesses(lambda: {"0": 2**22 + 1}, proc="/proc")
        self.assertEqual(list(collector.collect()), [])


class _Address:
    host = "127.0.0.1"
    port = 4000


class _SpawningReactor(MemoryReactorClock):
    """
    A fake reactor that records the processes it is asked to start.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list = []

    def spawnProcess(self, protocol: Any, executable: str, args: Any, env: Mapping[str, str], **kwargs: Any) -> None:
        self.spawned.append(env)


class SupervisorTests(TestCase):
    """
    The supervisor's handling of the directory: handed to workers, a dead
    worker forgotten before its successor starts, removed on stop.
    """

    def supervisor(self) -> Tuple[Supervisor, _SpawningReactor, str]:
        reactor = _SpawningReactor()
        parent = self.mktemp()
        os.makedirs(parent)
        supervisor = Supervisor(
            "tcp:0", 1, {DIRECTORY_VARIABLE: "/inherited"}, grace=1.0, reactor=reactor,
            metrics_port="tcp:0:interface=127.0.0.1", metrics_parent=parent,
        )
        # What startService does once the socket is open, without sockets.
        supervisor._address = _Address()
        supervisor.metrics = GroupMetrics(MetricDirectory.create(parent), supervisor.processes, process=False)
        self.addCleanup(supervisor.metrics.directory.remove)
        return supervisor, reactor, supervisor.metrics.directory.path

    def test_dead_worker(self) -> None:
        supervisor, reactor, path = self.supervisor()
        supervisor._spawn(0)
        self.assertEqual(reactor.spawned[0][DIRECTORY_VARIABLE], path)
        worker = supervisor.workers[0]
        worker.pid = 101
        # The worker counted a request and holds a connection.
        files = MetricFiles(path, "101", "0")
        self.addCleanup(files.close)
        metrics = Metrics(files=files)
        metrics.request_done("user-service", b"GET", "2xx", 0.01)
        assert metrics.connections_open is not None
        metrics.connections_open.set(1)
        assert supervisor.metrics is not None
        samples = scrape(supervisor.metrics)
        self.assertEqual(value(samples, "qeetgw_client_connections_open"), 1)

        worker.processEnded(_killed())
        # Forgotten at once, before the successor is even scheduled to start.
        self.assertEqual(len(reactor.spawned), 1)
        samples = scrape(supervisor.metrics)
        self.assertEqual(value(samples, "qeetgw_client_connections_open"), None)
        self.assertEqual(
            value(samples, "qeetgw_requests_total", service="user-service", method="GET", status_class="2xx"), 1
        )
        self.assertEqual(value(samples, "qeetgw_worker_restarts_total"), 1)
        reactor.advance(60)
        self.assertEqual(len(reactor.spawned), 2)
        self.assertEqual(reactor.spawned[1][DIRECTORY_VARIABLE], path)

    def test_processes(self) -> None:
        supervisor, _, _ = self.supervisor()
        supervisor._spawn(0)
        supervisor.workers[0].pid = 101
        self.assertEqual(supervisor.processes(), {"0": 101, SUPERVISOR: os.getpid()})

    def test_stop_removes(self) -> None:
        supervisor, _, path = self.supervisor()
        supervisor.running = True
        self.successResultOf(supervisor.stopService())
        self.assertFalse(os.path.exists(path))

    def test_without_metrics(self) -> None:
        reactor = _SpawningReactor()
        supervisor = Supervisor("tcp:0", 1, {DIRECTORY_VARIABLE: "/inherited"}, grace=1.0, reactor=reactor)
        supervisor._address = _Address()
        supervisor._spawn(0)
        self.assertNotIn(DIRECTORY_VARIABLE, reactor.spawned[0])


def _killed() -> Any:
    from twisted.internet.error import ProcessTerminated
    from twisted.python.failure import Failure

    return Failure(ProcessTerminated(signal=9))


class WorkerTests(TestCase):
    """
    A worker counts into the directory it is given, as its pid.
    """

    def test_given(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        metrics = worker_metrics({DIRECTORY_VARIABLE: path}, "1")
        assert metrics is not None and metrics.files is not None
        self.addCleanup(metrics.files.close)
        self.assertEqual(metrics.files.identifier, str(os.getpid()))
        self.assertEqual(metrics.files.worker, "1")
        self.assertIn(f"counter_{os.getpid()}.db", os.listdir(path))

    def test_not_given(self) -> None:
        self.assertIsNone(worker_metrics({}, "1"))
