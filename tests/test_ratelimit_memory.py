"""
Tests for L{qeetgw.ratelimit.memory}: counting, expiry, and the cap.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.ratelimit.memory import MemoryStore
from qeetgw.ratelimit.store import Budget, Count

BUDGET = Budget("default", 3, 1000)


def hit(store: MemoryStore, key: str, budget: Budget = BUDGET, algorithm: str = "fixed") -> Count:
    results: list = []
    store.hit(key, budget, algorithm).addBoth(results.append)  # type: ignore[arg-type]
    return results[0]


class FixedTests(SynchronousTestCase):
    """
    Each key's window starts at its first request.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.store = MemoryStore(self.clock)

    def test_counts_per_key_from_its_first_request(self) -> None:
        self.assertEqual(hit(self.store, "a"), Count(1, 0, 0, 1000))
        self.clock.advance(0.4)
        self.assertEqual(hit(self.store, "a"), Count(2, 0, 400, 1000))
        self.assertEqual(hit(self.store, "b"), Count(1, 0, 0, 1000))
        self.clock.advance(0.6)
        # a's window ended exactly now; b's has 400 ms to go
        self.assertEqual(hit(self.store, "a"), Count(1, 0, 0, 1000))
        self.assertEqual(hit(self.store, "b"), Count(2, 0, 600, 1000))

    def test_budgets_count_apart(self) -> None:
        hit(self.store, "a")
        self.assertEqual(hit(self.store, "a", Budget("/api/v1/auth/login", 1, 1000)).current, 1)

    def test_expired_windows_are_dropped(self) -> None:
        for key in "abc":
            hit(self.store, key)
        self.clock.advance(2)
        hit(self.store, "d")
        self.assertEqual(self.store.state().detail, "1 key")

    def test_capped(self) -> None:
        store = MemoryStore(self.clock, max_keys=2)
        hit(store, "a")
        self.clock.advance(0.1)
        hit(store, "b")
        hit(store, "c")  # a's window ends soonest: a goes
        self.assertEqual(store.evicted, 1)
        self.assertEqual(store.state().detail, "2 keys")
        self.assertEqual(hit(store, "b").current, 2)
        self.assertEqual(hit(store, "a").current, 1)


class SlidingTests(SynchronousTestCase):
    """
    Windows aligned to the clock; the previous one is remembered.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100.25)
        self.store = MemoryStore(self.clock)

    def test_previous_window_carried(self) -> None:
        self.assertEqual(hit(self.store, "a", algorithm="sliding"), Count(1, 0, 250, 1000))
        hit(self.store, "a", algorithm="sliding")
        self.clock.advance(1)
        self.assertEqual(hit(self.store, "a", algorithm="sliding"), Count(1, 2, 250, 1000))
        self.clock.advance(2)
        self.assertEqual(hit(self.store, "a", algorithm="sliding"), Count(1, 0, 250, 1000))
