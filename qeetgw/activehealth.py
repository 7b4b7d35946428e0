"""
Active health checks: every instance of every service probed in the
background (HEALTH_CHECK_INTERVAL_MS), the outcomes fed to its
L{qeetgw.balancing.InstanceSet} so that balancing skips an instance that
fails HEALTH_UNHEALTHY_THRESHOLD probes in a row until it passes
HEALTH_HEALTHY_THRESHOLD in a row.

C{/health/services} then answers at once from that state: a public endpoint
that probed every upstream on each call (as the Express gateway does) would
let anyone turn their requests into a storm of probes.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from qeetgw.balancing import Instance
from qeetgw.health import (
    HealthReport,
    InstanceHealth,
    ProbeClient,
    ProbeResult,
    ServiceHealth,
    probe,
)
from qeetgw.upstreams import ServiceUpstream

_log = Logger()


class ActiveHealthChecker:
    """
    Probes every instance's health path every C{interval_ms}, concurrently,
    and records each outcome into the instance's L{InstanceSet}.

    One round at a time: a tick that comes while the previous round is still
    waiting for a slow instance is skipped, so a hung upstream never piles
    up probes.  Each probe is bounded by its service's proxy timeout.

    Started and stopped with the gateway (one of L{qeetgw.site.Gateway}'s
    workers).  Its L{check_all} is what C{/health/services} asks, and
    answers without probing.
    """

    def __init__(
        self,
        upstreams: Mapping[str, ServiceUpstream],
        http_client: ProbeClient,
        clock: IReactorTime,
        interval_ms: int,
    ) -> None:
        """
        @param upstreams: every service's upstream, by name, in report
            order: the same objects the proxy balances over, so that what
            the probes find steers the traffic.
        @param http_client: a treq-like client; see
            L{qeetgw.health.make_probe_client}.
        @param clock: the clock that schedules rounds and times probes.
        @param interval_ms: time between the starts of two rounds; at least 1.
        """
        if interval_ms < 1:
            raise ValueError("the interval must be at least 1 ms")
        self._upstreams = dict(upstreams)
        self._client = http_client
        self._clock = clock
        self._interval = interval_ms / 1000
        # The last probe's error of each instance (None when it passed), by
        # service name and instance URL: shown by /health/services.
        self._errors: Dict[str, Dict[str, Optional[str]]] = {
            name: {} for name in self._upstreams
        }
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._round: Optional["Deferred[None]"] = None
        self._probes: List["Deferred[ProbeResult]"] = []
        #: Rounds completed, for tests and the curious.
        self.rounds = 0

    def start(self) -> None:
        """
        Start probing: the first round one interval from now, since every
        instance starts healthy (and passive outlier ejection already
        catches one that is down at start-up).
        """
        if not self._loop.running:
            self._loop.start(self._interval, now=False)

    def stop(self) -> "Deferred[None]":
        """
        Stop probing and give up the round in flight, so that a hung probe
        holds neither the shutdown nor a connection.  Fires once that round
        has ended.
        """
        if self._loop.running:
            self._loop.stop()
        in_flight = self._round
        if in_flight is None:
            return succeed(None)
        done: "Deferred[None]" = Deferred()
        in_flight.addBoth(lambda _: done.callback(None))
        for probing in list(self._probes):
            probing.cancel()
        return done

    def _tick(self) -> None:
        """
        The loop's tick: start a round unless one is still running.
        """
        if self._round is not None:
            _log.debug("health check round still running; tick skipped")
            return
        # The round's Deferred is not returned to the loop: LoopingCall would
        # then wait for it and realign its schedule, while skipping the tick
        # keeps rounds on the interval's grid.
        self.run_round()

    def run_round(self) -> "Deferred[None]":
        """
        Probe every instance once, concurrently; fire when every probe has
        been recorded.  Joins the round in flight if there is one.
        """
        if self._round is not None:
            joined: "Deferred[None]" = Deferred()
            self._round.addBoth(lambda _: joined.callback(None))
            return joined
        for name, upstream in self._upstreams.items():
            # Forget the errors of instances DNS no longer lists.
            current = {instance.url for instance in upstream.instances.instances}
            errors = self._errors.setdefault(name, {})
            for url in set(errors) - current:
                del errors[url]
        checks = [
            self._check(name, upstream, instance)
            for name, upstream in self._upstreams.items()
            for instance in upstream.instances.instances
        ]
        round_: "Deferred[None]" = Deferred()
        self._round = round_

        def ended(_: object) -> None:
            self._round = None
            self._probes = []
            self.rounds += 1
            round_.callback(None)

        # Each check records its own outcome and never fails.
        gatherResults(checks, consumeErrors=True).addBoth(ended)
        return round_

    def _check(
        self, name: str, upstream: ServiceUpstream, instance: Instance
    ) -> "Deferred[None]":
        """
        Probe C{instance} of service C{name} and record the outcome.
        """
        url = instance.url + upstream.service.health_path
        timeout_ms = max(1, round(upstream.timeout * 1000))
        probing = probe(self._client, url, self._clock, timeout_ms)
        self._probes.append(probing)

        def record(result: ProbeResult) -> None:
            if result.cancelled:
                # Given up by stop(): says nothing about the instance.
                return
            errors = self._errors.setdefault(name, {})
            errors[instance.url] = result.error
            changed = upstream.instances.record_check(instance, result.ok, result.latency_ms)
            if changed:
                self._log_change(name, instance, result)

        # A probe given up before its client noticed fails with
        # CancelledError: nothing to record either.
        return probing.addCallback(record).addErrback(lambda failure: failure.trap(CancelledError))

    def _log_change(self, name: str, instance: Instance, result: ProbeResult) -> None:
        """
        Log that C{instance} of service C{name} just changed state.
        """
        fields = dict(
            service=name,
            url=instance.url,
            healthy=instance.healthy,
            error=result.error,
            latency_ms=round(result.latency_ms),
            ejections=instance.ejections,
        )
        if instance.healthy:
            _log.info(
                "instance {url} of {service} is healthy again", state="healthy", **fields
            )
        else:
            _log.warn(
                "instance {url} of {service} is unhealthy: {error}",
                state="unhealthy",
                **fields,
            )

    def report(self) -> HealthReport:
        """
        Every service's health as the probes so far found it, now.
        """
        services = []
        for name, upstream in self._upstreams.items():
            errors = self._errors.get(name, {})
            instances: List[InstanceHealth] = []
            for snapshot in upstream.instances.snapshot():
                instances.append(
                    InstanceHealth(
                        url=snapshot.url,
                        state=snapshot.status,
                        last_check=snapshot.last_check,
                        latency_ms=None
                        if snapshot.latency_ms is None
                        else round(snapshot.latency_ms),
                        ejections=snapshot.ejections,
                        error=errors.get(snapshot.url),
                    )
                )
            services.append(ServiceHealth.of_instances(name, instances))
        return HealthReport(services, self._clock.seconds())

    def check_all(self) -> "Deferred[HealthReport]":
        """
        The L{report}, at once: C{/health/services} never waits for a probe.
        """
        return succeed(self.report())

