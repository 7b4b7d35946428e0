"""
What the status page shows (C{GET /status.json} on the metrics listener):
the gateway's own figures, its routes, and each service with a row per
instance: its state and why, its last health check, and its traffic over
the last minute.

Plain values read from the gateway's parts at the moment of the request;
nothing here is guessed: an instance nobody has checked is C{unknown},
a figure that does not exist yet (a percentile without a request, a check
that never ran) is C{null}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime

from qeetgw.ratelimit.store import StoreState
from qeetgw.readiness import Readiness
from qeetgw.upstream.balancing import BalancingSettings, Instance, InstanceSnapshot
from qeetgw.upstream.balancing.traffic import WINDOW_S, TrafficReading
from qeetgw.upstream.health import InstanceHealth, iso_timestamp
from qeetgw.upstream.routes import RouteTable
from qeetgw.upstream.services import ServiceUpstream

#: The instance states the page shows: the balancing states, and
#: C{draining} for an instance DNS discovery dropped whose requests are
#: still in flight.
STATES = ("unknown", "healthy", "unhealthy", "ejected", "draining")


def _rounded(value: Optional[float], places: int) -> Optional[float]:
    return None if value is None else round(value, places)


def traffic_figures(reading: TrafficReading) -> Dict[str, Any]:
    """
    The traffic fields of a service or an instance: rates per second over
    the reading's span, and the 50th and 99th latency percentiles in
    milliseconds (L{None} without a request).
    """
    return {
        "requests": reading.requests,
        "requestsPerSecond": round(reading.requests_per_second, 2),
        "errorsPerSecond": round(reading.failures_per_second, 2),
        "p50Ms": _rounded(reading.percentile_ms(0.5), 1),
        "p99Ms": _rounded(reading.percentile_ms(0.99), 1),
    }


def raw_traffic(reading: TrafficReading) -> Dict[str, Any]:
    """
    What a worker adds to each instance of the report it writes for the
    supervisor (L{qeetgw.statusfiles}): the reading itself, so that the
    group's figures are computed from the workers' counts and latency
    buckets, not averaged from their percentiles.
    """
    return {
        "failures": reading.failures,
        "seconds": reading.seconds,
        "latencyBuckets": list(reading.latencies),
    }


def reading_of(row: Mapping[str, Any]) -> TrafficReading:
    """
    The reading a row with L{raw_traffic}'s fields was made from.
    """
    return TrafficReading(
        int(row["requests"]), int(row["failures"]), float(row["seconds"]), tuple(row["latencyBuckets"])
    )


def instance_reason(
    health: InstanceHealth, settings: BalancingSettings, checks_on: bool
) -> Optional[str]:
    """
    Why an instance is in its state, for people; L{None} for a healthy
    instance with nothing to add.
    """
    state = health.state
    if state == "unknown":
        if not checks_on:
            return "health checks are off (HEALTH_CHECK_INTERVAL_MS=0)"
        return "no health check result yet"
    if state == "ejected":
        reason = (
            f"ejected by outlier detection after {settings.outlier_consecutive_failures} "
            f"failed requests in a row (ejection {health.ejections})"
        )
        if health.error is not None:
            reason += f"; last check: {health.error}"
        return reason
    if state == "unhealthy":
        reason = health.error if health.error is not None else "last checks failed"
        if health.streak is not None:
            reason += f" (passed {health.streak[0]} of {health.streak[1]} checks to return)"
        return reason
    # healthy
    if health.streak is not None and health.error is not None:
        return f"last check failed: {health.error} ({health.streak[0]} of {health.streak[1]} failures)"
    return None


@attrs.frozen
class StatusSource:
    """
    The gateway's parts the status page reads, and how it reads them.

    @ivar routes: the route table.
    @ivar upstreams: each service's L{ServiceUpstream}, by name, in
        configuration order.
    @ivar clock: the source of every time.
    @ivar started: the clock's seconds when the gateway was built (start-up).
    @ivar version: the gateway's version.
    @ivar connections: the open client connections now.
    @ivar tunnels: the open WebSocket tunnels now.
    @ivar store_state: the rate-limit store's state now.
    @ivar readiness: whether the gateway is draining.
    @ivar health_check_interval_ms: HEALTH_CHECK_INTERVAL_MS (0: off).
    """

    routes: RouteTable
    upstreams: Mapping[str, ServiceUpstream]
    clock: IReactorTime
    started: float
    version: str
    connections: Callable[[], int]
    tunnels: Callable[[], int]
    store_state: Callable[[], StoreState]
    readiness: Readiness
    health_check_interval_ms: int

    def report(self, raw: bool = False) -> Dict[str, Any]:
        """
        The status as C{/status.json} writes it (see the README's draft for
        the shape).

        @param raw: add each instance's L{raw_traffic} (a worker's report
            for the supervisor).
        """
        now = self.clock.seconds()
        return {
            "gateway": self._gateway(now),
            "routes": [
                {
                    "prefix": route.client_prefix.decode("ascii"),
                    "service": route.service.name,
                    "upstreamPrefix": route.service.upstream_prefix,
                }
                for route in self.routes.routes
            ],
            "services": [
                self._service(name, upstream, now, raw) for name, upstream in self.upstreams.items()
            ],
            "timestamp": iso_timestamp(now),
        }

    def _gateway(self, now: float) -> Dict[str, Any]:
        store = self.store_state()
        return {
            "version": self.version,
            "startedAt": iso_timestamp(self.started),
            "uptimeSeconds": round(now - self.started, 3),
            "connections": self.connections(),
            "tunnels": self.tunnels(),
            "readiness": "ready" if self.readiness.ready else "draining",
            "rateLimit": {
                "store": store.store,
                "status": "healthy" if store.healthy else "unhealthy",
                "detail": store.detail,
            },
            "healthCheckIntervalMs": self.health_check_interval_ms,
            "windowSeconds": WINDOW_S,
            "workers": None,
        }

    def _service(self, name: str, upstream: ServiceUpstream, now: float, raw: bool) -> Dict[str, Any]:
        instances = upstream.instances
        settings = instances.settings
        rows = [
            self._instance(instance, snapshot, settings, now)
            for instance, snapshot in zip(instances.instances, instances.snapshot())
        ]
        rows += [self._draining(instance, now) for instance in instances.draining()]
        readings: List[TrafficReading] = [row.pop("_traffic") for row in rows]
        if raw:
            for row, reading in zip(rows, readings):
                row.update(raw_traffic(reading))
        return service_row(name, rows, readings)

    def _instance(
        self,
        instance: Instance,
        snapshot: InstanceSnapshot,
        settings: BalancingSettings,
        now: float,
    ) -> Dict[str, Any]:
        health = InstanceHealth.of_snapshot(snapshot, settings)
        reading = instance.traffic.reading(now, self.started)
        return {
            "url": snapshot.url,
            "state": snapshot.status,
            "reason": instance_reason(health, settings, self.health_check_interval_ms > 0),
            "health": snapshot.health,
            "ejectedUntil": None if snapshot.ejected_until is None else iso_timestamp(snapshot.ejected_until),
            "ejections": snapshot.ejections,
            "lastCheck": None if snapshot.last_check is None else iso_timestamp(snapshot.last_check),
            "checkLatencyMs": _rounded(snapshot.latency_ms, 1),
            "checkError": snapshot.error,
            "inFlight": snapshot.in_flight,
            **traffic_figures(reading),
            "_traffic": reading,
        }

    def _draining(self, instance: Instance, now: float) -> Dict[str, Any]:
        reading = instance.traffic.reading(now, self.started)
        return {
            "url": instance.url,
            "state": "draining",
            "reason": (
                f"no longer listed by DNS discovery; {instance.in_flight} "
                f"request{'s' if instance.in_flight != 1 else ''} still in flight"
            ),
            "health": instance.health,
            "ejectedUntil": None,
            "ejections": instance.ejections,
            "lastCheck": None if instance.last_check is None else iso_timestamp(instance.last_check),
            "checkLatencyMs": _rounded(instance.last_latency_ms, 1),
            "checkError": instance.last_error,
            "inFlight": instance.in_flight,
            **traffic_figures(reading),
            "_traffic": reading,
        }


def service_state(states: Sequence[str]) -> str:
    """
    A service's state from its instances': C{healthy} while one instance
    is healthy (by a check result, and not ejected), else C{unknown} while
    one has no result yet, else C{unhealthy}.
    """
    if "healthy" in states:
        return "healthy"
    if "unknown" in states:
        return "unknown"
    return "unhealthy"


def service_row(name: str, rows: List[Dict[str, Any]], readings: Sequence[TrafficReading]) -> Dict[str, Any]:
    """
    A service's entry: its state, its in-flight requests and traffic summed
    over its C{rows} (one per instance, each read into C{readings}), and
    the rows.
    """
    listed = [row["state"] for row in rows if row["state"] != "draining"]
    state = service_state(listed)
    reason = None
    if state != "healthy":
        reasons = [row["reason"] for row in rows if row["reason"] and row["state"] != "draining"]
        reason = reasons[0] if reasons else None
    total = readings[0] if readings else TrafficReading.empty(float(WINDOW_S))
    for reading in readings[1:]:
        total = total.merged(reading)
    return {
        "name": name,
        "state": state,
        "reason": reason,
        "inFlight": sum(row["inFlight"] for row in rows),
        **traffic_figures(total),
        "instances": rows,
    }
