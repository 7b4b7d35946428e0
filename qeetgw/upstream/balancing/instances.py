"""
The instances of one service: which one the next try goes to, and how
outcomes (passive health) and probes (active health) take one out of the
rotation and bring it back.
"""

from __future__ import annotations

import random as _random
from typing import Callable, Iterable, List, Literal, Optional, Sequence, Tuple

import attrs
from twisted.internet.interfaces import IReactorTime

from qeetgw.upstream.balancing.outcomes import Outcome
from qeetgw.upstream.balancing.settings import BalancingSettings
from qeetgw.upstream.balancing.traffic import RecentTraffic

#: A source of floats in [0, 1), like L{random.random}; injected so tests
#: can say which instances least_request compares.
RandomSource = Callable[[], float]

#: What the health checks found of an instance: nothing yet (C{unknown}),
#: or C{healthy} / C{unhealthy} by actual results.
Health = Literal["unknown", "healthy", "unhealthy"]

#: An instance's state as reported: its L{Health}, or C{ejected} while
#: outlier ejection keeps it out (which says the most: it comes back on its
#: own).
Status = Literal["unknown", "healthy", "unhealthy", "ejected"]


@attrs.define(eq=False)
class Instance:
    """
    The mutable state of one upstream instance.  Compared by identity, so it
    can be kept in sets (a request's already-tried instances).

    @ivar url: its base URL, scheme, authority and the service's path
        prefix, without a trailing slash (C{"http://10.0.0.7:8082"}).
    @ivar in_flight: tries started and not yet finished.
    @ivar consecutive_failures: failed tries since its last success or
        ejection.
    @ivar ejected_until: the clock's seconds when its latest ejection ends
        (or ended); L{None} before the first.  It is ejected while the clock
        is before this, and back, without anyone acting, once it is not.
    @ivar ejections: how many times it was ejected, ever (for
        /health/services and the metrics).
    @ivar ejection_multiplier: how many base ejection times the next
        ejection lasts, less one; it grows with each ejection and shrinks
        while the instance stays in (see L{InstanceSet.finished}).
    @ivar health: its active-health state: C{unknown} until its first
        probe result, which alone decides (as Envoy's first check does);
        after that the thresholds apply.  An C{unknown} instance gets
        traffic, so a service routes at start-up and when probes are off;
        only an C{unhealthy} one is skipped.
    @ivar check_successes: passed probes in a row.
    @ivar check_failures: failed probes in a row.
    @ivar last_check: the clock's seconds at its last probe, or L{None}.
    @ivar last_latency_ms: how long its last probe took, or L{None}.
    @ivar last_error: why its last probe failed, short and for people;
        L{None} when it passed or there was none.
    @ivar traffic: its tries over the last minute, for the status page
        (recorded by the proxy as each try ends).
    """

    url: str
    in_flight: int = 0
    consecutive_failures: int = 0
    ejected_until: Optional[float] = None
    ejections: int = 0
    ejection_multiplier: int = 0
    health: Health = "unknown"
    check_successes: int = 0
    check_failures: int = 0
    last_check: Optional[float] = None
    last_latency_ms: Optional[float] = None
    last_error: Optional[str] = None
    traffic: RecentTraffic = attrs.field(factory=RecentTraffic, repr=False)

    def ejected(self, now: float) -> bool:
        """
        Whether it is ejected at C{now}.
        """
        return self.ejected_until is not None and now < self.ejected_until

    def available(self, now: float) -> bool:
        """
        Whether balancing may choose it at C{now} outside panic mode.
        """
        return self.health != "unhealthy" and not self.ejected(now)


@attrs.frozen
class InstanceSnapshot:
    """
    One instance's state as /health/services and the metrics show it.

    @ivar url: its base URL.
    @ivar status: C{"ejected"} while ejected (it says the most: it comes
        back at C{ejected_until}), else its L{Health}.
    @ivar health: the active-health state alone.
    @ivar ejected_until: the clock's seconds when the ejection ends, while
        ejected; L{None} otherwise.
    @ivar ejections: times ejected, ever.
    @ivar in_flight: tries in flight.
    @ivar last_check: the clock's seconds at the last probe (the endpoint
        writes it with L{qeetgw.upstream.health.iso_timestamp}), or L{None}.
    @ivar latency_ms: the last probe's latency, or L{None}.
    @ivar error: why the last probe failed, or L{None}.
    @ivar check_failures: failed probes in a row.
    @ivar check_successes: passed probes in a row.
    """

    url: str
    status: Status
    health: Health
    ejected_until: Optional[float]
    ejections: int
    in_flight: int
    last_check: Optional[float]
    latency_ms: Optional[float]
    error: Optional[str] = None
    check_failures: int = 0
    check_successes: int = 0


class InstanceSet:
    """
    The instances of one service and the decisions about them.

    The proxy calls L{pick} for each try, L{started} when the try begins and
    L{finished} with its outcome; the health checker calls L{record_check}
    after each probe.
    """

    def __init__(
        self,
        urls: Iterable[str],
        settings: BalancingSettings,
        clock: IReactorTime,
        random: RandomSource = _random.random,
    ) -> None:
        """
        @param urls: the instances' base URLs, at least one, no repeats.
        @param settings: the service's balancing settings.
        @param clock: the clock ejections are timed on.
        @param random: the source of least_request's choices.
        @raise ValueError: for no URLs or a repeated one.
        """
        self._settings = settings
        self._clock = clock
        self._random = random
        self._instances: List[Instance] = []
        # Instances dropped by update() while tries to them were still in
        # flight: they are draining until those end (the status page shows
        # them); pruned as they are read or the instances change again.
        self._departed: List[Instance] = []
        # Where round robin looks next, as an index into _instances; kept
        # over all instances (not the available ones) so the spread stays
        # even while instances leave and return.
        self._cursor = 0
        self.update(urls)

    @property
    def settings(self) -> BalancingSettings:
        """
        The service's balancing settings (its health thresholds included).
        """
        return self._settings

    @property
    def instances(self) -> Tuple[Instance, ...]:
        """
        The instances, in the order given.
        """
        return tuple(self._instances)

    def update(self, urls: Iterable[str]) -> None:
        """
        Make C{urls} the instances (after a DNS answer changed, say): a URL
        already known keeps its instance and its state, a new one starts
        fresh, a missing one is dropped (its tries in flight still finish).

        @raise ValueError: for no URLs or a repeated one.
        """
        wanted = list(urls)
        if not wanted:
            raise ValueError("a service needs at least one instance")
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"an instance is listed twice in {wanted!r}")
        known = {instance.url: instance for instance in self._instances}
        kept = set(wanted)
        self._departed = [
            instance
            for instance in self._departed + self._instances
            if instance.in_flight > 0 and instance.url not in kept
        ]
        self._instances = [known.get(url) or Instance(url) for url in wanted]
        self._cursor %= len(self._instances)

    def draining(self) -> Tuple[Instance, ...]:
        """
        The instances L{update} dropped (DNS discovery no longer lists them)
        whose tries are still in flight: draining, out of balancing, until
        the last ends.
        """
        if self._departed:
            listed = {instance.url for instance in self._instances}
            self._departed = [
                instance
                for instance in self._departed
                if instance.in_flight > 0 and instance.url not in listed
            ]
        return tuple(self._departed)

    def in_flight(self) -> int:
        """
        Tries in flight to all instances (what L{RetryBudget} is a share of).
        """
        return sum(instance.in_flight for instance in self._instances)

    def panicking(self) -> bool:
        """
        Whether every instance is ejected or unhealthy, so that L{pick}
        chooses among all of them.
        """
        now = self._clock.seconds()
        return not any(instance.available(now) for instance in self._instances)

    def pick(self, exclude: Iterable[Instance] = ()) -> Instance:
        """
        The instance the next try goes to, by the configured balancer, among
        the healthy instances that are not ejected.

        When there is none (panic mode), it is chosen round robin among all
        of them: trying an instance that may have recovered beats failing
        without trying, and round robin (rather than least_request, even when
        configured) keeps an instance that fails fast, and so has few tries
        in flight, from drawing most of the load.

        @param exclude: instances to avoid if another will do (those this
            request already tried); one of them is still chosen when every
            candidate is excluded, as with a single instance.
        """
        now = self._clock.seconds()
        candidates = [i for i in self._instances if i.available(now)]
        panic = not candidates
        if panic:
            candidates = list(self._instances)
        avoided = set(exclude)
        preferred = [i for i in candidates if i not in avoided] or candidates
        if panic or self._settings.balancer == "round_robin":
            return self._round_robin(preferred)
        return self._least_request(preferred)

    def _round_robin(self, candidates: Sequence[Instance]) -> Instance:
        """
        The first of C{candidates} at or after the cursor, moving it past.
        """
        count = len(self._instances)
        for step in range(count):
            index = (self._cursor + step) % count
            if self._instances[index] in candidates:
                self._cursor = (index + 1) % count
                return self._instances[index]
        # Unreachable while candidates are drawn from _instances.
        return candidates[0]

    def _least_request(self, candidates: Sequence[Instance]) -> Instance:
        """
        Envoy's least_request: the less loaded of two instances drawn at
        random.  Two random choices avoid both the herd that always choosing
        the least loaded one causes and the cost of scanning every instance.
        """
        if len(candidates) == 1:
            return candidates[0]
        # Two different instances: the second index is drawn from the others.
        first = int(self._random() * len(candidates))
        second = int(self._random() * (len(candidates) - 1))
        if second >= first:
            second += 1
        a, b = candidates[first], candidates[second]
        return b if b.in_flight < a.in_flight else a

    def started(self, instance: Instance) -> None:
        """
        A try to C{instance} began.
        """
        instance.in_flight += 1

    def cancelled(self, instance: Instance) -> None:
        """
        A try to C{instance} was abandoned (the client went away): it no
        longer counts as in flight, and says nothing about the instance.
        """
        instance.in_flight = max(0, instance.in_flight - 1)

    def finished(self, instance: Instance, outcome: Outcome) -> bool:
        """
        A try to C{instance} ended with C{outcome}: count it, and eject the
        instance after OUTLIER_CONSECUTIVE_FAILURES failures in a row.

        @return: whether this outcome ejected the instance (for the log and
            the metrics).
        """
        # Never below zero, even if the caller finishes a try twice: a
        # negative count would make least_request favour the instance.
        instance.in_flight = max(0, instance.in_flight - 1)
        now = self._clock.seconds()
        if instance.ejected(now):
            # Tries sent before the ejection, or in panic mode: the instance
            # is out already, and they should not count against its return.
            return False
        if not outcome.failed:
            instance.consecutive_failures = 0
            return False
        instance.consecutive_failures += 1
        if instance.consecutive_failures < self._settings.outlier_consecutive_failures:
            return False
        if not self._may_eject(now):
            # The failures stay counted: the next one ejects it once
            # another instance is back.
            return False
        self._eject(instance, now)
        return True

    def _may_eject(self, now: float) -> bool:
        """
        Whether one more instance may be ejected: the first always may (as in
        Envoy, so a lone failing instance is still marked and shown), others
        while at most OUTLIER_MAX_EJECTION_PERCENT would then be out.
        """
        ejected = sum(1 for instance in self._instances if instance.ejected(now))
        if ejected == 0:
            return True
        allowed = self._settings.outlier_max_ejection_percent * len(self._instances)
        return (ejected + 1) * 100 <= allowed

    def _eject(self, instance: Instance, now: float) -> None:
        """
        Take C{instance} out for the base ejection time times its multiplier.
        """
        settings = self._settings
        base_s = settings.outlier_base_ejection_ms / 1000
        if instance.ejected_until is not None and base_s > 0:
            # As Envoy does, the multiplier shrinks while the instance stays
            # in: by one for each base ejection time since it came back, so an
            # instance that fails once a day is not out for the cap each time.
            quiet = int((now - instance.ejected_until) // base_s)
            instance.ejection_multiplier = max(0, instance.ejection_multiplier - quiet)
        instance.ejection_multiplier = min(
            instance.ejection_multiplier + 1, settings.outlier_max_ejection_multiplier
        )
        instance.ejections += 1
        instance.ejected_until = now + base_s * instance.ejection_multiplier
        # It comes back with a clean slate: as many failures again to leave.
        instance.consecutive_failures = 0

    def record_check(
        self, instance: Instance, ok: bool, latency_ms: float, error: Optional[str] = None
    ) -> bool:
        """
        An active health probe of C{instance} passed (C{ok}) or failed (for
        C{error}), and took C{latency_ms}.

        The first result decides at once, as in Envoy: an instance nothing
        was known of is healthy after one pass, unhealthy after one failure.
        After that, HEALTH_UNHEALTHY_THRESHOLD failures in a row make it
        unhealthy, HEALTH_HEALTHY_THRESHOLD passes in a row healthy again.

        @return: whether its state changed (for the log).
        """
        instance.last_check = self._clock.seconds()
        instance.last_latency_ms = latency_ms
        instance.last_error = None if ok else error
        if ok:
            instance.check_successes += 1
            instance.check_failures = 0
            threshold = self._settings.health_healthy_threshold
            becomes: Health = "healthy"
        else:
            instance.check_failures += 1
            instance.check_successes = 0
            threshold = self._settings.health_unhealthy_threshold
            becomes = "unhealthy"
        if instance.health == becomes:
            return False
        streak = instance.check_successes if ok else instance.check_failures
        if instance.health == "unknown" or streak >= threshold:
            instance.health = becomes
            return True
        return False

    def snapshot(self) -> Tuple[InstanceSnapshot, ...]:
        """
        Every instance's state now, in order, for /health/services.
        """
        now = self._clock.seconds()
        return tuple(_snapshot_of(instance, now) for instance in self._instances)


def _snapshot_of(instance: Instance, now: float) -> InstanceSnapshot:
    """
    C{instance}'s state at C{now}.
    """
    ejected = instance.ejected(now)
    status: Status = "ejected" if ejected else instance.health
    return InstanceSnapshot(
        url=instance.url,
        status=status,
        health=instance.health,
        ejected_until=instance.ejected_until if ejected else None,
        ejections=instance.ejections,
        in_flight=instance.in_flight,
        last_check=instance.last_check,
        latency_ms=instance.last_latency_ms,
        error=instance.last_error,
        check_failures=instance.check_failures,
        check_successes=instance.check_successes,
    )
