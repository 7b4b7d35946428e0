"""
Tests for L{qeetgw.upstream.balancing.traffic}: an instance's last minute,
on a fake clock (plain seconds).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.upstream.balancing.traffic import (
    BOUNDS_S,
    WINDOW_S,
    RecentTraffic,
    TrafficReading,
    percentile_ms,
    span,
)

START = 1_800_000_000.0


class RecentTrafficTests(SynchronousTestCase):
    def test_nothing_recorded_reads_zero_and_no_percentile(self) -> None:
        reading = RecentTraffic().reading(START + 90, START)
        self.assertEqual((reading.requests, reading.failures), (0, 0))
        self.assertEqual(reading.requests_per_second, 0.0)
        self.assertIsNone(reading.percentile_ms(0.5))
        self.assertIsNone(reading.percentile_ms(0.99))

    def test_rates_over_the_last_minute(self) -> None:
        traffic = RecentTraffic()
        # Two tries a second for two minutes, one in four failing.
        for tick in range(240):
            traffic.record(START + tick * 0.5, tick % 4 == 0, 0.010)
        now = START + 119.75
        reading = traffic.reading(now, START)
        # The current second (119) and the 59 before it: 120 tries, 30 failed.
        self.assertEqual(reading.requests, 120)
        self.assertEqual(reading.failures, 30)
        self.assertEqual(reading.seconds, 59.75)
        self.assertAlmostEqual(reading.requests_per_second, 120 / 59.75)
        self.assertAlmostEqual(reading.failures_per_second, 30 / 59.75)

    def test_old_seconds_leave_the_window(self) -> None:
        traffic = RecentTraffic()
        traffic.record(START, True, 0.001)
        self.assertEqual(traffic.reading(START + WINDOW_S - 1, START).requests, 1)
        self.assertEqual(traffic.reading(START + WINDOW_S, START).requests, 0)

    def test_a_reused_slot_starts_from_zero(self) -> None:
        traffic = RecentTraffic()
        for _ in range(5):
            traffic.record(START, True, 0.001)
        # The same slot a minute later: the old counts are gone.
        traffic.record(START + WINDOW_S, False, 0.002)
        reading = traffic.reading(START + WINDOW_S, START)
        self.assertEqual((reading.requests, reading.failures), (1, 0))
        self.assertEqual(sum(reading.latencies), 1)

    def test_rates_since_a_recent_start(self) -> None:
        traffic = RecentTraffic()
        for tick in range(10):
            traffic.record(START + tick, False, 0.001)
        reading = traffic.reading(START + 10, START)
        self.assertEqual(reading.seconds, 10)
        self.assertEqual(reading.requests_per_second, 1.0)
        # A first try at once is not a thousand a second: at least 1 s.
        self.assertEqual(span(START + 0.001, START), 1.0)

    def test_percentiles_within_a_bucket(self) -> None:
        traffic = RecentTraffic()
        # 98 fast tries, two slow ones.
        for _ in range(98):
            traffic.record(START, False, 0.004)
        traffic.record(START, False, 0.800)
        traffic.record(START, False, 0.900)
        reading = traffic.reading(START + 1, START)
        p50 = reading.percentile_ms(0.5)
        p99 = reading.percentile_ms(0.99)
        assert p50 is not None and p99 is not None
        # Within one bucket's width (2^(1/3)) of the true values.
        self.assertTrue(4 / 1.26 <= p50 <= 4 * 1.26, p50)
        self.assertTrue(800 / 1.26 <= p99 <= 900 * 1.26, p99)

    def test_a_latency_past_the_last_bound_reads_as_that_bound(self) -> None:
        traffic = RecentTraffic()
        traffic.record(START, False, 500.0)
        self.assertEqual(traffic.reading(START, START).percentile_ms(0.99), BOUNDS_S[-1] * 1000)

    def test_readings_merge(self) -> None:
        first, second = RecentTraffic(), RecentTraffic()
        first.record(START, False, 0.001)
        second.record(START, True, 1.0)
        second.record(START, True, 1.0)
        merged = first.reading(START + 1, START).merged(second.reading(START + 1, START))
        self.assertEqual((merged.requests, merged.failures), (3, 2))
        self.assertEqual(sum(merged.latencies), 3)
        p99 = merged.percentile_ms(0.99)
        assert p99 is not None
        self.assertTrue(800 <= p99 <= 1260, p99)

    def test_empty_reading(self) -> None:
        empty = TrafficReading.empty(60.0)
        self.assertEqual((empty.requests, empty.seconds), (0, 60.0))
        self.assertIsNone(percentile_ms(empty.latencies, 0.5))
