"""
Tests for L{qeetgw.ratelimit.windows}: decisions and headers.
"""

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.ratelimit.store import Budget, Count
from qeetgw.ratelimit.windows import (
    decide_fixed,
    decide_sliding,
    rate_limit_headers,
    sliding_estimate,
    window_text,
)

BUDGET = Budget("default", 1000, 60_000)


class FixedWindowTests(SynchronousTestCase):
    """
    The Express gateway's fixed window.
    """

    def test_first_request(self) -> None:
        decision = decide_fixed(Count(1, 0, 0, 60_000), BUDGET)
        self.assertEqual((decision.allowed, decision.remaining, decision.reset_s), (True, 999, 60))

    def test_last_allowed_and_first_refused(self) -> None:
        self.assertTrue(decide_fixed(Count(1000, 0, 10_000, 60_000), BUDGET).allowed)
        refused = decide_fixed(Count(1001, 0, 10_000, 60_000), BUDGET)
        self.assertEqual((refused.allowed, refused.remaining, refused.retry_after_s), (False, 0, 50))

    def test_retry_after_rounds_up(self) -> None:
        refused = decide_fixed(Count(1001, 0, 58_001, 60_000), BUDGET)
        self.assertEqual((refused.retry_after_s, refused.reset_s), (2, 2))


class SlidingWindowTests(SynchronousTestCase):
    """
    The sliding window: the previous window weighted by its overlap.
    """

    def test_estimate(self) -> None:
        self.assertEqual(sliding_estimate(Count(10, 100, 15_000, 60_000)), 85.0)

    def test_no_double_burst_at_the_edge(self) -> None:
        # A full window just ended: one second into the next, about 17 more
        # fit (1000 * 59/60 = 983.3), not another 1000.
        self.assertTrue(decide_sliding(Count(16, 1000, 1000, 60_000), BUDGET).allowed)
        self.assertFalse(decide_sliding(Count(18, 1000, 1000, 60_000), BUDGET).allowed)
        # half way through, half of the previous window still counts
        self.assertTrue(decide_sliding(Count(500, 1000, 30_000, 60_000), BUDGET).allowed)
        self.assertFalse(decide_sliding(Count(501, 1000, 30_000, 60_000), BUDGET).allowed)

    def test_retry_after_when_the_previous_window_must_fade(self) -> None:
        budget = Budget("b", 10, 60_000)
        count = Count(current=2, previous=10, elapsed_ms=6_000, window_ms=60_000)
        decision = decide_sliding(count, budget)
        self.assertFalse(decision.allowed)  # 10 * 0.9 + 2 = 11 > 10
        # one more fits when 10 * (1 - t/60) + 2 <= 9, t = 18 s: 12 s from now
        self.assertEqual(decision.retry_after_s, 12)

    def test_retry_after_when_this_window_is_full(self) -> None:
        budget = Budget("b", 10, 60_000)
        decision = decide_sliding(Count(current=11, previous=0, elapsed_ms=30_000, window_ms=60_000), budget)
        # next window starts in 30 s; then 11 * (1 - t/60) <= 9 at t = 60 * 2/11
        self.assertEqual(decision.retry_after_s, 30 + 11)


class HeaderTests(SynchronousTestCase):
    """
    The rate-limit headers, as express-rate-limit sends them.
    """

    def test_draft_6(self) -> None:
        decision = decide_fixed(Count(1, 0, 0, 60_000), BUDGET)
        self.assertEqual(
            rate_limit_headers(decision, "draft-6"),
            [(b"RateLimit-Policy", b"1000;w=60"), (b"RateLimit-Limit", b"1000"),
             (b"RateLimit-Remaining", b"999"), (b"RateLimit-Reset", b"60")],
        )

    def test_draft_8(self) -> None:
        decision = decide_fixed(Count(5, 0, 30_000, 60_000), BUDGET)
        self.assertEqual(
            rate_limit_headers(decision, "draft-8"),
            [(b"RateLimit-Policy", b'"1000-in-1min"; q=1000; w=60'),
             (b"RateLimit", b'"1000-in-1min"; r=995; t=30')],
        )

    def test_none(self) -> None:
        self.assertEqual(rate_limit_headers(decide_fixed(Count(1, 0, 0, 60_000), BUDGET), "none"), [])

    def test_window_text(self) -> None:
        self.assertEqual(
            [window_text(ms) for ms in (60_000, 3_600_000, 86_400_000, 15_000, 1500)],
            ["1min", "1hr", "1day", "15sec", "1500ms"],
        )
