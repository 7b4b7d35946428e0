"""
Active health checks: every instance of every service probed in the
background (HEALTH_CHECK_INTERVAL_MS), the outcomes fed to its
L{qeetgw.upstream.balancing.InstanceSet} so that balancing skips an instance that
fails HEALTH_UNHEALTHY_THRESHOLD probes in a row until it passes
HEALTH_HEALTHY_THRESHOLD in a row.

C{/health/services} answers from that state, and it is true when it
answers: an instance with no result yet, or only a stale one, is probed
then and there (one probe per instance, shared by every request that
waits for it), and one never checked is C{unknown}, never C{healthy}.  A
recent result is answered at once: a public endpoint that probed every
upstream on each call (as the Express gateway does) would let anyone turn
their requests into a storm of probes.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Tuple

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qeetgw.upstream.balancing import Instance
from qeetgw.upstream.health import (
    HealthReport,
    IHealthSource,
    InstanceHealth,
    ProbeClient,
    ProbeResult,
    ServiceHealth,
    probe,
)
from qeetgw.upstream.services import ServiceUpstream

_log = Logger()


@implementer(IHealthSource)
class ActiveHealthChecker(Service):
    """
    Probes every instance's health path every C{interval_ms}, concurrently,
    and records each outcome into the instance's L{InstanceSet}.

    One round at a time: a tick that comes while the previous round is still
    waiting for a slow instance is skipped, so a hung upstream never piles
    up probes.  Each probe is bounded by its service's proxy timeout, and an
    instance has at most one probe in flight, whoever asked for it.

    A Twisted service, started and stopped with the gateway (one of
    L{qeetgw.site.Gateway}'s parts); the first round starts at once.  Its
    L{check_all} is what C{/health/services} asks.
    """

    name = "health-checks"

    def __init__(
        self,
        upstreams: Mapping[str, ServiceUpstream],
        http_client: ProbeClient,
        clock: IReactorTime,
        interval_ms: int,
        answer_within_ms: int = 5000,
    ) -> None:
        """
        @param upstreams: every service's upstream, by name, in report
            order: the same objects the proxy balances over, so that what
            the probes find steers the traffic.
        @param http_client: a treq-like client; see
            L{qeetgw.upstream.health.ProbeClient}.
        @param clock: the clock that schedules rounds and times probes.
        @param interval_ms: time between the starts of two rounds; at least 1.
        @param answer_within_ms: the longest L{check_all} waits for the
            probes it needs (GATEWAY_PROXY_TIMEOUT_MS); an instance still
            without a result then is reported C{unknown}.
        """
        if interval_ms < 1:
            raise ValueError("the interval must be at least 1 ms")
        self._upstreams = dict(upstreams)
        self._client = http_client
        self._clock = clock
        self._interval = interval_ms / 1000
        self._answer_within = answer_within_ms / 1000
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._round: Optional["Deferred[None]"] = None
        # The probe in flight of each instance, fired once its outcome is
        # recorded: a round and any number of /health/services requests
        # share it.
        self._probing: Dict[Instance, "Deferred[None]"] = {}
        #: Rounds completed, for tests and the curious.
        self.rounds = 0

    def startService(self) -> None:
        """
        Start probing, with a first round now: until an instance has a
        result, it is C{unknown}.
        """
        super().startService()
        if not self._loop.running:
            self._loop.start(self._interval, now=True)

    def stopService(self) -> "Deferred[None]":
        """
        Stop probing and give up the probes in flight, so that a hung probe
        holds neither the shutdown nor a connection.  Fires once they have
        ended.
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        probes = list(self._probing.values())
        if not probes:
            return succeed(None)
        done: "Deferred[None]" = gatherResults(
            [_follow(probing) for probing in probes], consumeErrors=True
        ).addBoth(lambda _: None)
        for probing in probes:
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
        Probe every instance once, concurrently (joining a probe already in
        flight); fire when every probe has been recorded.  Joins the round
        in flight if there is one.
        """
        if self._round is not None:
            return _follow(self._round)
        checks = [self._probe(name, upstream, instance) for name, upstream, instance in self._all()]
        round_: "Deferred[None]" = Deferred()
        self._round = round_

        def ended(_: object) -> None:
            self._round = None
            self.rounds += 1
            round_.callback(None)

        # Each probe records its own outcome; the round waits without
        # taking their results (others may be waiting on them too).
        gatherResults([_follow(check) for check in checks], consumeErrors=True).addBoth(ended)
        return round_

    def _all(self) -> List[Tuple[str, ServiceUpstream, Instance]]:
        """
        Every instance of every service, with its service's name and upstream.
        """
        return [
            (name, upstream, instance)
            for name, upstream in self._upstreams.items()
            for instance in upstream.instances.instances
        ]

    def _probe(self, name: str, upstream: ServiceUpstream, instance: Instance) -> "Deferred[None]":
        """
        The probe of C{instance} of service C{name} in flight, started now
        if there is none; it fires once the outcome is recorded.  Wait on it
        through L{_follow}, never directly: its callbacks are shared.
        """
        in_flight = self._probing.get(instance)
        if in_flight is not None:
            return in_flight
        url = instance.url + upstream.service.health_path
        timeout_ms = max(1, round(upstream.timeout * 1000))
        probing = probe(self._client, url, self._clock, timeout_ms)
        self._probing[instance] = probing

        def record(result: ProbeResult) -> None:
            if result.cancelled:
                # Given up by stopService(): says nothing about the instance.
                return
            changed = upstream.instances.record_check(
                instance, result.ok, result.latency_ms, result.error
            )
            if changed:
                self._log_change(name, instance, result)

        def done(outcome: object) -> None:
            del self._probing[instance]
            # A probe given up before its client noticed fails with
            # CancelledError: nothing to record.  Anything else is a bug.
            if isinstance(outcome, Failure) and not outcome.check(CancelledError):
                _log.failure(
                    "recording the health probe of {url} failed", outcome,
                    service=name, url=instance.url,
                )

        probing.addCallback(record)
        probing.addBoth(done)
        return probing

    def _log_change(self, name: str, instance: Instance, result: ProbeResult) -> None:
        """
        Log that C{instance} of service C{name} just changed state.
        """
        fields = dict(
            service=name,
            url=instance.url,
            state=instance.health,
            error=result.error,
            latency_ms=round(result.latency_ms),
            ejections=instance.ejections,
        )
        if instance.health == "healthy":
            _log.info("instance {url} of {service} is healthy", **fields)
        else:
            _log.warn("instance {url} of {service} is unhealthy: {error}", **fields)

    def report(self) -> HealthReport:
        """
        Every service's health as the probes so far found it, now.
        """
        services = []
        for name, upstream in self._upstreams.items():
            settings = upstream.instances.settings
            instances = [
                InstanceHealth.of_snapshot(snapshot, settings)
                for snapshot in upstream.instances.snapshot()
            ]
            services.append(ServiceHealth.of_instances(name, instances))
        return HealthReport(services, self._clock.seconds())

    def _needing_a_probe(self) -> List[Tuple[str, ServiceUpstream, Instance]]:
        """
        The instances whose state cannot be answered from: no result yet, or
        only one older than the interval plus their probe timeout (the
        background checks are not keeping up, or have stopped).
        """
        now = self._clock.seconds()
        return [
            (name, upstream, instance)
            for name, upstream, instance in self._all()
            if instance.last_check is None
            or now - instance.last_check > self._interval + upstream.timeout
        ]

    def check_all(self) -> "Deferred[HealthReport]":
        """
        The L{report}: at once when every instance has a recent result,
        else after probing those that have none (sharing any probe already
        in flight), within C{answer_within_ms}.  Never fails; cancelling it
        only stops waiting (the probes go on and are recorded).
        """
        needed = self._needing_a_probe()
        if not needed:
            return succeed(self.report())
        # Cancelling the answer (the client left) only stops this wait.
        answer: "Deferred[HealthReport]" = Deferred()
        remaining = len(needed)

        def deliver() -> None:
            if not answer.called:
                answer.callback(self.report())

        def probed(result: object) -> object:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                deliver()
            return result

        # Past the bound, answer with what is known: an instance still
        # without a result is reported unknown, and its service unhealthy.
        timer = self._clock.callLater(self._answer_within, deliver)
        for each in needed:
            self._probe(*each).addBoth(probed)

        def stop_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return answer.addBoth(stop_timer)


def _follow(shared: "Deferred[object]") -> "Deferred[None]":
    """
    A new Deferred that fires (with L{None}) when C{shared} does, leaving
    C{shared}'s result untouched; cancelling it stops only this wait.
    """
    follower: "Deferred[None]" = Deferred()

    def fire(result: object) -> object:
        if not follower.called:
            follower.callback(None)
        return result

    shared.addBoth(fire)
    return follower
