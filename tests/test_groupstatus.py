"""
Tests for L{qeetgw.statusfiles} and L{qeetgw.groupstatus}: the workers'
status reports written to files on a fake clock, and the supervisor's
merge of them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.errors import GatewayError
from qeetgw.groupstatus import GroupStatus, merge_reports
from qeetgw.statusfiles import StatusFileWriter, read_reports, status_path
from qeetgw.upstream.balancing import Outcome
from tests.test_statusreport import START, service, source


class StatusFilesTests(SynchronousTestCase):
    def test_written_at_start_and_every_second(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        clock = Clock()
        reports = [{"n": 1}]
        writer = StatusFileWriter(lambda: reports[-1], status_path(directory, 123), "0", clock)
        writer.startService()
        self.addCleanup(writer.stopService)
        self.assertEqual(read_reports(directory, {"0": 123}), {"0": {"n": 1}})
        reports.append({"n": 2})
        clock.advance(1)
        self.assertEqual(read_reports(directory, {"0": 123}), {"0": {"n": 2}})
        # Written whole under another name, then renamed: nothing else left.
        self.assertEqual(os.listdir(directory), ["status_123.json"])
        with open(status_path(directory, 123)) as written:
            self.assertEqual(json.load(written), {"worker": "0", "report": {"n": 2}})

    def test_only_live_workers_are_read(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        for pid in (1, 2):
            StatusFileWriter(lambda: {"pid": pid}, status_path(directory, pid), str(pid), Clock()).write()
        with open(status_path(directory, 3), "w") as broken:
            broken.write("{half")
        # 2 has exited; 3's file is unreadable; 4 has not written yet.
        self.assertEqual(read_reports(directory, {"0": 1, "1": 3, "2": 4}), {"0": {"pid": 1}})

    def test_a_failed_write_is_logged_once_and_never_raised(self) -> None:
        missing = os.path.join(self.mktemp(), "nowhere", "status_1.json")
        writer = StatusFileWriter(lambda: {}, missing, "0", Clock())
        writer.write()
        writer.write()
        self.assertEqual(len(self.flushLoggedErrors(FileNotFoundError)), 1)


def two_workers() -> Dict[str, Dict[str, Any]]:
    """
    The raw reports of two workers over the same configuration: worker 0
    found user-service's second instance refused, worker 1 has not checked
    it yet; both forwarded traffic.
    """
    first, second = source(), source()
    for status in (first, second):
        a, _ = status.upstreams["user-service"].instances.instances
        status.upstreams["user-service"].instances.record_check(a, True, 2.0)
    b0 = first.upstreams["user-service"].instances.instances[1]
    first.upstreams["user-service"].instances.record_check(b0, False, 1.0, "connection refused")
    a0 = first.upstreams["user-service"].instances.instances[0]
    a1 = second.upstreams["user-service"].instances.instances[0]
    for tick in range(10):
        a0.traffic.record(START + tick, False, 0.010)
        a1.traffic.record(START + tick, tick < 5, 0.500)
    a1.in_flight = 2
    for status in (first, second):
        status.clock.advance(10)  # type: ignore[attr-defined]
    return {"0": first.report(raw=True), "1": second.report(raw=True)}


class MergeTests(SynchronousTestCase):
    def test_gateway_figures_of_the_group(self) -> None:
        reports = two_workers()
        reports["1"]["gateway"]["readiness"] = "draining"
        merged = merge_reports(reports, START + 30, START - 5, 2)
        gateway = merged["gateway"]
        self.assertEqual(gateway["connections"], 4)
        self.assertEqual(gateway["tunnels"], 2)
        self.assertEqual(gateway["readiness"], "draining")
        self.assertEqual((gateway["workers"], gateway["workersConfigured"]), (2, 2))
        self.assertEqual(gateway["uptimeSeconds"], 35)
        self.assertEqual(gateway["startedAt"], "2027-01-15T07:59:55.000Z")
        self.assertEqual(len(merged["routes"]), 6)
        self.assertEqual(len(merged["services"]), 6)

    def test_instances_summed_and_seen_by_each_worker(self) -> None:
        merged = merge_reports(two_workers(), START + 10, START, 2)
        users = service(merged, "user-service")
        a, b = users["instances"]
        self.assertEqual((a["state"], a["reason"]), ("healthy", None))
        self.assertEqual((a["requests"], a["requestsPerSecond"], a["errorsPerSecond"]), (20, 2.0, 0.5))
        self.assertEqual(a["inFlight"], 2)
        # Half of the tries took 10 ms, half 500 ms: the buckets were added.
        self.assertTrue(a["p50Ms"] <= 12.6, a["p50Ms"])
        self.assertTrue(a["p99Ms"] >= 400, a["p99Ms"])
        self.assertEqual([view["worker"] for view in a["workers"]], ["0", "1"])
        # The workers disagree on b: the more serious state, and who says what.
        self.assertEqual(b["state"], "unhealthy")
        self.assertEqual(
            b["reason"],
            "worker 0: unhealthy (connection refused); worker 1: unknown (no health check result yet)",
        )
        self.assertEqual(b["lastCheck"], "2027-01-15T08:00:00.000Z")
        self.assertEqual(b["checkError"], "connection refused")
        self.assertEqual([view["state"] for view in b["workers"]], ["unhealthy", "unknown"])
        self.assertNotIn("latencyBuckets", b)
        self.assertEqual((users["state"], users["requests"], users["inFlight"]), ("healthy", 20, 2))

    def test_ejections_summed(self) -> None:
        reports = {}
        for worker in ("0", "1"):
            status = source(OUTLIER_CONSECUTIVE_FAILURES="1")
            instances = status.upstreams["user-service"].instances
            a = instances.instances[0]
            instances.started(a)
            instances.finished(a, Outcome.TIMEOUT)
            reports[worker] = status.report(raw=True)
        a = service(merge_reports(reports, START, START, 2), "user-service")["instances"][0]
        self.assertEqual((a["state"], a["ejections"]), ("ejected", 2))


class GroupStatusTests(SynchronousTestCase):
    def test_no_report_yet_is_a_503(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        group = GroupStatus(directory, lambda: {"0": 1}, Clock(), 0.0, 2)
        error = self.assertRaises(GatewayError, group.report)
        self.assertEqual((error.status, error.code), (503, "SERVICE_UNAVAILABLE"))

    def test_reads_and_merges_the_live_workers(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        reports = two_workers()
        for worker, pid in (("0", 10), ("1", 11)):
            StatusFileWriter(lambda w=worker: reports[w], status_path(directory, pid), worker, Clock()).write()
        clock = Clock()
        clock.advance(START + 10)
        merged = GroupStatus(directory, lambda: {"0": 10, "1": 11}, clock, START, 2).report()
        self.assertEqual(merged["gateway"]["workers"], 2)
        self.assertEqual(service(merged, "user-service")["requests"], 20)
        # Worker 1 exited: only worker 0's report is read.
        alone = GroupStatus(directory, lambda: {"0": 10}, clock, START, 2).report()
        self.assertEqual(alone["gateway"]["workers"], 1)
        self.assertEqual(service(alone, "user-service")["requests"], 10)
