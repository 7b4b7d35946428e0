"""
Tests for L{qeetgw.upstream.balancing}: balancing, outlier ejection, active health
state and the retry rules, on a fake clock with injected randomness.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable, Iterable, List, Optional, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.upstream.balancing import (
    BalancingSettings,
    Instance,
    InstanceSet,
    Outcome,
    RetryBudget,
    backoff,
    body_is_kept,
    is_retryable,
    outcome_of_status,
)

URLS = ("http://a:1", "http://b:1", "http://c:1")
IDEMPOTENT = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
NOT_IDEMPOTENT = ("POST", "PATCH")
LATE_FAILURES = (Outcome.RESET, Outcome.TIMEOUT, Outcome.GATEWAY_ERROR)


def sequence(*values: float) -> Callable[[], float]:
    """
    A random source that gives C{values} in turn.
    """
    items = iter(values)
    return lambda: next(items)


def make_set(
    urls: Iterable[str] = URLS,
    random: Optional[Callable[[], float]] = None,
    **settings: object,
) -> Tuple[InstanceSet, Clock]:
    """
    An instance set over C{urls} on a fresh fake clock.
    """
    clock = Clock()
    kwargs = {} if random is None else {"random": random}
    chosen = BalancingSettings(**settings)  # type: ignore[arg-type]
    return InstanceSet(urls, chosen, clock, **kwargs), clock


def fail(
    instances: InstanceSet,
    instance: Instance,
    times: int,
    outcome: Outcome = Outcome.CONNECT_FAILURE,
) -> List[bool]:
    """
    C{times} failed tries to C{instance}; whether each ejected it.
    """
    ejected = []
    for _ in range(times):
        instances.started(instance)
        ejected.append(instances.finished(instance, outcome))
    return ejected


def urls_picked(instances: InstanceSet, count: int) -> List[str]:
    """
    The URLs of the next C{count} picks.
    """
    return [instances.pick().url for _ in range(count)]


class SettingsTests(SynchronousTestCase):
    """
    The settings value and its defaults.
    """

    def test_defaults_are_the_issues(self) -> None:
        settings = BalancingSettings()
        self.assertEqual(
            (
                settings.balancer,
                settings.outlier_consecutive_failures,
                settings.outlier_base_ejection_ms,
                settings.outlier_max_ejection_percent,
                settings.health_unhealthy_threshold,
                settings.health_healthy_threshold,
                settings.retry_max,
                settings.retry_buffer_bytes,
            ),
            ("round_robin", 5, 30_000, 50, 3, 2, 1, 65_536),
        )

    def test_bad_values_are_refused(self) -> None:
        self.assertRaises(ValueError, BalancingSettings, balancer="random")
        self.assertRaises(ValueError, BalancingSettings, outlier_consecutive_failures=0)
        self.assertRaises(ValueError, BalancingSettings, outlier_max_ejection_percent=101)

    def test_an_instance_set_needs_distinct_instances(self) -> None:
        self.assertRaises(ValueError, make_set, urls=())
        self.assertRaises(ValueError, make_set, urls=("http://a:1", "http://a:1"))


class RoundRobinTests(SynchronousTestCase):
    """
    BALANCER=round_robin.
    """

    def test_spread_over_three_instances(self) -> None:
        instances, _ = make_set()
        picked = urls_picked(instances, 9)
        self.assertEqual(picked[:3], list(URLS))
        self.assertEqual(Counter(picked), {url: 3 for url in URLS})

    def test_one_instance_is_always_picked(self) -> None:
        instances, _ = make_set(urls=["http://only:1"])
        self.assertEqual(urls_picked(instances, 3), ["http://only:1"] * 3)

    def test_excluded_instances_are_avoided(self) -> None:
        instances, _ = make_set()
        a, b, c = instances.instances
        self.assertEqual({instances.pick(exclude=[a]).url for _ in range(4)}, {b.url, c.url})

    def test_excluded_instance_is_picked_when_it_is_the_only_one(self) -> None:
        instances, _ = make_set(urls=["http://only:1"])
        only = instances.instances[0]
        self.assertIs(instances.pick(exclude=[only]), only)

    def test_unhealthy_instance_is_skipped(self) -> None:
        instances, _ = make_set()
        a, b, c = instances.instances
        for _ in range(3):
            instances.record_check(b, False, 5.0)
        self.assertEqual(set(urls_picked(instances, 6)), {a.url, c.url})


class LeastRequestTests(SynchronousTestCase):
    """
    BALANCER=least_request: the less loaded of two random choices.
    """

    def test_the_less_loaded_of_the_two_is_picked(self) -> None:
        # 0.0 draws a first, 0.99 then draws c among the other two.
        instances, _ = make_set(random=sequence(0.0, 0.99, 0.0, 0.99), balancer="least_request")
        a, b, c = instances.instances
        instances.started(a)
        instances.started(a)
        instances.started(c)
        self.assertIs(instances.pick(), c)
        instances.started(c)
        instances.started(c)
        self.assertIs(instances.pick(), a)

    def test_the_two_choices_differ(self) -> None:
        # The same draw twice still compares two different instances.
        instances, _ = make_set(random=sequence(0.5, 0.5), balancer="least_request")
        a, b, c = instances.instances
        instances.started(b)
        self.assertIs(instances.pick(), c)

    def test_a_tie_goes_to_the_first_choice(self) -> None:
        instances, _ = make_set(random=sequence(0.9, 0.0), balancer="least_request")
        self.assertEqual(instances.pick().url, "http://c:1")

    def test_a_loaded_instance_gets_less(self) -> None:
        instances, _ = make_set(random=random.Random(8).random, balancer="least_request")
        a, b, c = instances.instances
        for _ in range(5):
            instances.started(a)  # a is slow: its tries pile up
        picked = Counter(urls_picked(instances, 300))
        self.assertEqual(picked[a.url], 0)
        self.assertEqual(picked[b.url] + picked[c.url], 300)

    def test_ejected_instances_are_not_drawn(self) -> None:
        instances, _ = make_set(random=random.Random(3).random, balancer="least_request")
        a, b, c = instances.instances
        fail(instances, b, 5)
        self.assertNotIn(b.url, urls_picked(instances, 50))


class OutlierEjectionTests(SynchronousTestCase):
    """
    Passive health: consecutive failures eject an instance for a while.
    """

    def test_five_failures_in_a_row_eject(self) -> None:
        instances, _ = make_set()
        a, b, c = instances.instances
        self.assertEqual(fail(instances, b, 5), [False] * 4 + [True])
        self.assertEqual((b.ejections, b.in_flight), (1, 0))
        self.assertNotIn(b.url, urls_picked(instances, 6))

    def test_every_failure_kind_counts_and_a_success_resets(self) -> None:
        instances, _ = make_set()
        b = instances.instances[1]
        for outcome in LATE_FAILURES + (Outcome.CONNECT_FAILURE,):
            fail(instances, b, 1, outcome)
        instances.started(b)
        instances.finished(b, Outcome.SUCCESS)
        self.assertEqual(fail(instances, b, 4, Outcome.SERVER_ERROR), [False] * 4)
        self.assertEqual(fail(instances, b, 1, Outcome.SERVER_ERROR), [True])

    def test_ejected_instance_is_back_after_its_time(self) -> None:
        instances, clock = make_set()
        b = instances.instances[1]
        fail(instances, b, 5)
        clock.advance(29.999)
        self.assertNotIn(b.url, urls_picked(instances, 6))
        clock.advance(0.001)
        self.assertIn(b.url, urls_picked(instances, 3))
        # back with a clean slate: five more failures to leave again
        self.assertEqual(fail(instances, b, 5), [False] * 4 + [True])

    def test_ejection_time_grows_with_the_count_and_is_capped(self) -> None:
        instances, clock = make_set()
        b = instances.instances[1]
        lengths = []
        for _ in range(12):
            fail(instances, b, 5)
            assert b.ejected_until is not None
            lengths.append(b.ejected_until - clock.seconds())
            clock.advance(lengths[-1])  # fails again as soon as it is back
        self.assertEqual(lengths, [30.0 * n for n in range(1, 11)] + [300.0, 300.0])
        self.assertEqual(b.ejections, 12)

    def test_the_multiplier_shrinks_while_the_instance_stays_in(self) -> None:
        instances, clock = make_set()
        b = instances.instances[1]
        for _ in range(3):
            fail(instances, b, 5)
            clock.advance(b.ejected_until - clock.seconds())  # type: ignore[operator]
        clock.advance(60)  # two base ejection times without trouble
        fail(instances, b, 5)
        self.assertEqual(b.ejected_until - clock.seconds(), 60.0)  # type: ignore[operator]

    def test_failures_while_ejected_do_not_count(self) -> None:
        instances, clock = make_set()
        b = instances.instances[1]
        for _ in range(7):
            instances.started(b)  # sent before the ejection
        for _ in range(7):
            instances.finished(b, Outcome.TIMEOUT)
        self.assertEqual((b.ejections, b.ejected_until, b.in_flight), (1, 30.0, 0))
        clock.advance(30)
        self.assertEqual(fail(instances, b, 4), [False] * 4)

    def test_at_most_the_max_ejection_percent_is_out(self) -> None:
        instances, _ = make_set(urls=[f"http://i{n}:1" for n in range(4)])
        first, second, third, fourth = instances.instances
        self.assertEqual(fail(instances, first, 5)[-1], True)
        self.assertEqual(fail(instances, second, 5)[-1], True)  # 2 of 4: 50%
        self.assertEqual(fail(instances, third, 5), [False] * 5)  # 3 of 4 would be 75%
        self.assertEqual(set(urls_picked(instances, 4)), {third.url, fourth.url})

    def test_a_refused_ejection_happens_once_there_is_room(self) -> None:
        instances, clock = make_set(urls=["http://a:1", "http://b:1"])
        a, b = instances.instances
        fail(instances, a, 5)
        clock.advance(1)
        self.assertEqual(fail(instances, b, 5), [False] * 5)
        clock.advance(29)  # a is back
        self.assertEqual(fail(instances, b, 1), [True])

    def test_a_single_instance_may_be_ejected(self) -> None:
        # As in Envoy, one ejection is always allowed, so the lone instance's
        # trouble shows; panic mode still sends it every request.
        instances, _ = make_set(urls=["http://only:1"])
        only = instances.instances[0]
        self.assertEqual(fail(instances, only, 5)[-1], True)
        self.assertEqual(instances.snapshot()[0].status, "ejected")
        self.assertIs(instances.pick(), only)

    def test_one_ejection_is_allowed_even_at_zero_percent(self) -> None:
        instances, _ = make_set(outlier_max_ejection_percent=0)
        a, b, c = instances.instances
        self.assertEqual(fail(instances, a, 5)[-1], True)
        self.assertEqual(fail(instances, b, 5)[-1], False)


class PanicModeTests(SynchronousTestCase):
    """
    When no instance is available, one is still tried.
    """

    def test_all_out_picks_round_robin_over_all(self) -> None:
        instances, _ = make_set(outlier_max_ejection_percent=100)
        a, b, c = instances.instances
        fail(instances, a, 5)
        fail(instances, b, 5)
        for _ in range(3):
            instances.record_check(c, False, 1.0)
        self.assertTrue(instances.panicking())
        self.assertEqual(Counter(urls_picked(instances, 6)), {url: 2 for url in URLS})

    def test_panic_is_round_robin_even_with_least_request(self) -> None:
        instances, _ = make_set(random=sequence(), balancer="least_request")
        for instance in instances.instances:
            for _ in range(3):
                instances.record_check(instance, False, 1.0)
        # sequence() has no values: drawing one would raise StopIteration
        self.assertEqual(Counter(urls_picked(instances, 3)), {url: 1 for url in URLS})

    def test_panic_ends_when_an_instance_returns(self) -> None:
        instances, _ = make_set()
        for instance in instances.instances:
            for _ in range(3):
                instances.record_check(instance, False, 1.0)
        b = instances.instances[1]
        instances.record_check(b, True, 1.0)
        instances.record_check(b, True, 1.0)
        self.assertFalse(instances.panicking())
        self.assertEqual(urls_picked(instances, 3), [b.url] * 3)


class ActiveHealthTests(SynchronousTestCase):
    """
    Probe results and the thresholds.
    """

    def test_the_first_result_decides(self) -> None:
        instances, _ = make_set()
        a, b, _c = instances.instances
        self.assertEqual((a.health, b.health), ("unknown", "unknown"))
        self.assertTrue(instances.record_check(a, True, 1.0))
        self.assertTrue(instances.record_check(b, False, 1.0, "HTTP 503"))
        self.assertEqual((a.health, b.health, b.last_error), ("healthy", "unhealthy", "HTTP 503"))

    def test_unhealthy_after_three_failures_healthy_after_two_passes(self) -> None:
        instances, _ = make_set()
        b = instances.instances[1]
        instances.record_check(b, True, 1.0)
        checks = [instances.record_check(b, False, 9.0, "HTTP 503") for _ in range(3)]
        self.assertEqual(checks, [False, False, True])
        self.assertEqual(b.health, "unhealthy")
        self.assertEqual([instances.record_check(b, True, 3.0) for _ in range(2)], [False, True])
        self.assertEqual((b.health, b.last_error), ("healthy", None))

    def test_counts_are_consecutive(self) -> None:
        instances, _ = make_set()
        b = instances.instances[1]
        for ok in (True, False, False, True, False, False):
            instances.record_check(b, ok, 1.0)
        self.assertEqual(b.health, "healthy")
        instances.record_check(b, False, 1.0)
        for ok in (True, False, True):
            instances.record_check(b, ok, 1.0)
        self.assertEqual(b.health, "unhealthy")

    def test_thresholds_are_settings(self) -> None:
        instances, _ = make_set(health_unhealthy_threshold=1, health_healthy_threshold=1)
        b = instances.instances[1]
        self.assertTrue(instances.record_check(b, True, 1.0))
        self.assertTrue(instances.record_check(b, False, 1.0))
        self.assertTrue(instances.record_check(b, True, 1.0))

    def test_unknown_instances_get_traffic_unhealthy_ones_do_not(self) -> None:
        instances, _ = make_set()
        a, b, c = instances.instances
        instances.record_check(b, False, 1.0)
        self.assertEqual({instances.pick() for _ in range(4)}, {a, c})

    def test_snapshot(self) -> None:
        instances, clock = make_set()
        a, b, c = instances.instances
        clock.advance(1000)
        instances.record_check(a, True, 12.5)
        instances.record_check(a, False, 20.0, "HTTP 500")
        fail(instances, b, 5)
        instances.record_check(c, False, 5000.0, "timeout after 5000 ms")
        instances.record_check(c, True, 5.0)
        instances.started(a)
        snapshot = instances.snapshot()
        self.assertEqual([s.url for s in snapshot], list(URLS))
        self.assertEqual(
            [(s.status, s.health, s.ejected_until, s.ejections, s.in_flight) for s in snapshot],
            [
                ("healthy", "healthy", None, 0, 1),
                ("ejected", "unknown", 1030.0, 1, 0),
                ("unhealthy", "unhealthy", None, 0, 0),
            ],
        )
        self.assertEqual(
            [(s.last_check, s.latency_ms, s.error, s.check_failures, s.check_successes) for s in snapshot],
            [(1000.0, 20.0, "HTTP 500", 1, 0), (None, None, None, 0, 0), (1000.0, 5.0, None, 0, 1)],
        )
        clock.advance(30)
        self.assertEqual(instances.snapshot()[1].status, "unknown")


class UpdateTests(SynchronousTestCase):
    """
    Changing the instances (DNS discovery) keeps the state of those kept.
    """

    def test_kept_instances_keep_their_state(self) -> None:
        instances, _ = make_set()
        a, b, c = instances.instances
        fail(instances, b, 5)
        instances.update(["http://b:1", "http://d:1"])
        kept, new = instances.instances
        self.assertIs(kept, b)
        self.assertEqual((new.url, new.ejections), ("http://d:1", 0))
        self.assertEqual(urls_picked(instances, 2), ["http://d:1"] * 2)

    def test_a_dropped_instance_drains_while_tries_are_in_flight(self) -> None:
        instances, _ = make_set()
        a, b, c = instances.instances
        instances.started(a)
        instances.started(a)
        instances.update(["http://b:1", "http://c:1"])
        # a is out of balancing, but its two tries are still running.
        self.assertEqual(instances.draining(), (a,))
        self.assertNotIn(a, instances.instances)
        instances.finished(a, Outcome.SUCCESS)
        self.assertEqual(instances.draining(), (a,))
        instances.cancelled(a)
        self.assertEqual(instances.draining(), ())

    def test_an_idle_dropped_instance_is_not_draining(self) -> None:
        instances, _ = make_set()
        instances.update(["http://b:1"])
        self.assertEqual(instances.draining(), ())

    def test_a_returning_address_is_no_longer_draining(self) -> None:
        instances, _ = make_set()
        a = instances.instances[0]
        instances.started(a)
        instances.update(["http://b:1"])
        self.assertEqual(instances.draining(), (a,))
        instances.update(["http://a:1", "http://b:1"])
        self.assertEqual(instances.draining(), ())


class OutcomeTests(SynchronousTestCase):
    """
    Statuses as outcomes.
    """

    def test_statuses(self) -> None:
        self.assertEqual(
            [outcome_of_status(s) for s in (200, 404, 429, 500, 501, 502, 503, 504, 599)],
            [Outcome.SUCCESS] * 3
            + [Outcome.SERVER_ERROR] * 2
            + [Outcome.GATEWAY_ERROR] * 3
            + [Outcome.SERVER_ERROR],
        )


class RetryBudgetTests(SynchronousTestCase):
    """
    Retries in flight at most max(3, 20% of the tries in flight).
    """

    def retries_allowed(self, in_flight: int) -> int:
        budget = RetryBudget(lambda: in_flight)
        while budget.can_retry():
            budget.retry_started()
        return budget.retries_in_flight

    def test_caps(self) -> None:
        self.assertEqual(
            [self.retries_allowed(n) for n in (0, 5, 15, 19, 100, 1000)],
            [3, 3, 3, 3, 20, 200],
        )

    def test_a_finished_retry_frees_room(self) -> None:
        budget = RetryBudget(lambda: 5)
        for _ in range(3):
            budget.retry_started()
        self.assertFalse(budget.can_retry())
        budget.retry_finished()
        self.assertTrue(budget.can_retry())

    def test_a_retry_ending_makes_room_for_the_next(self) -> None:
        budget = RetryBudget(lambda: 5)
        for _ in range(3):
            budget.retry_started()
        self.assertFalse(budget.can_retry())
        self.assertTrue(budget.can_retry(ending=1))

    def test_finishing_more_than_started_does_not_grant_more(self) -> None:
        budget = RetryBudget(lambda: 0)
        budget.retry_finished()
        self.assertEqual(budget.retries_in_flight, 0)
        self.assertEqual(self.retries_allowed(0), 3)

    def test_follows_the_services_tries_in_flight(self) -> None:
        instances, _ = make_set()
        budget = RetryBudget(instances.in_flight)
        for _ in range(50):
            instances.started(instances.pick())
        self.assertEqual(budget.limit(), 10)


class BackoffTests(SynchronousTestCase):
    """
    Exponential backoff with full jitter, from 25 ms.
    """

    def test_bounds(self) -> None:
        highest = 1 - 2 ** -53
        self.assertEqual(
            [round(backoff(n, lambda: highest) * 1000, 6) for n in (1, 2, 3, 4, 5, 10, 1000)],
            [25.0, 50.0, 100.0, 200.0, 250.0, 250.0, 250.0],
        )
        self.assertEqual(backoff(3, lambda: 0.0), 0.0)
        self.assertAlmostEqual(backoff(2, lambda: 0.5), 0.025)

    def test_seeded_values_stay_within_bounds(self) -> None:
        source = random.Random(1).random
        for attempt in (1, 2, 3):
            bound = 0.025 * 2 ** (attempt - 1)
            for _ in range(200):
                self.assertTrue(0 <= backoff(attempt, source) < bound)

    def test_attempts_count_from_one(self) -> None:
        self.assertRaises(ValueError, backoff, 0, lambda: 0.0)


class IsRetryableTests(SynchronousTestCase):
    """
    The issue's retry rules.
    """

    def test_connect_failure_before_any_byte_is_retried_whatever_the_method(self) -> None:
        for method in IDEMPOTENT + NOT_IDEMPOTENT + ("PROPFIND",):
            for body_kept in (True, False):
                retryable = is_retryable(method, body_kept, Outcome.CONNECT_FAILURE, False)
                self.assertTrue(retryable, method)

    def test_idempotent_methods_after_late_failures_when_the_body_was_kept(self) -> None:
        for method in IDEMPOTENT:
            for failure in LATE_FAILURES:
                for bytes_sent in (True, False):
                    retryable = is_retryable(method, True, failure, bytes_sent)
                    self.assertTrue(retryable, (method, failure))

    def test_a_body_that_was_not_kept_is_never_sent_twice(self) -> None:
        for method in IDEMPOTENT:
            for failure in LATE_FAILURES + (Outcome.CONNECT_FAILURE,):
                self.assertFalse(is_retryable(method, False, failure, True), (method, failure))

    def test_post_and_patch_are_never_retried_once_a_byte_went_out(self) -> None:
        for method in NOT_IDEMPOTENT:
            for failure in LATE_FAILURES + (Outcome.CONNECT_FAILURE,):
                self.assertFalse(is_retryable(method, True, failure, True), (method, failure))

    def test_post_is_not_retried_after_a_timeout_or_a_503_even_unsent(self) -> None:
        # Only a connect failure proves the upstream saw nothing.
        for failure in LATE_FAILURES:
            self.assertFalse(is_retryable("POST", True, failure, False), failure)

    def test_answers_are_not_retried(self) -> None:
        for method in IDEMPOTENT + NOT_IDEMPOTENT:
            for outcome in (Outcome.SUCCESS, Outcome.SERVER_ERROR):
                retryable = is_retryable(method, True, outcome, True)
                self.assertFalse(retryable, (method, outcome))

    def test_methods_as_bytes_and_case(self) -> None:
        self.assertTrue(is_retryable(b"GET", True, Outcome.TIMEOUT, True))
        self.assertFalse(is_retryable("get", True, Outcome.TIMEOUT, True))

    def test_body_is_kept(self) -> None:
        self.assertEqual(
            [body_is_kept(n, 65_536) for n in (0, 65_536, 65_537, None)],
            [True, True, False, False],
        )
