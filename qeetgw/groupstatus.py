"""
The group's status page with workers (WORKERS > 1): the supervisor's
C{/status.json} merges the reports its live workers write
(L{qeetgw.statusfiles}).

Each worker balances with its own view of the instances (its own checks
and ejections), so an instance's state is shown per worker, and its
headline state is the workers' common one, else the most serious any
worker sees (an instance one worker finds down is shown down, with which
worker says what).  Requests in flight, connections, tunnels and traffic
are summed; the latency percentiles are read from the workers' latency
buckets added up, never averaged from their percentiles.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import attrs
from twisted.internet.interfaces import IReactorTime

from qeetgw.errors import GatewayError
from qeetgw.statusfiles import read_reports
from qeetgw.statusreport import reading_of, service_row, traffic_figures
from qeetgw.upstream.balancing.traffic import TrafficReading
from qeetgw.upstream.health import iso_timestamp

#: Instance states from the most serious down: the headline state of an
#: instance the workers disagree on.
_SEVERITY = ("unhealthy", "ejected", "draining", "unknown", "healthy")


def _worst(states: List[str]) -> str:
    ranked = [state for state in _SEVERITY if state in states]
    return ranked[0] if ranked else states[0]


def merge_instance(views: List[Tuple[str, Dict[str, Any]]]) -> Tuple[Dict[str, Any], TrafficReading]:
    """
    One instance as the group sees it, from each worker's row C{views}
    (C{(worker, row)}, rows with raw traffic), and its merged reading.
    """
    rows = [row for _, row in views]
    states = [row["state"] for row in rows]
    reasons = [row["reason"] for row in rows]
    if len(set(states)) == 1 and len(set(reasons)) == 1:
        state, reason = states[0], reasons[0]
    else:
        state = _worst(states)
        reason = "; ".join(
            f"worker {worker}: {row['state']}" + (f" ({row['reason']})" if row["reason"] else "")
            for worker, row in views
        )
    checked = [row for row in rows if row["lastCheck"] is not None]
    latest: Optional[Dict[str, Any]] = max(checked, key=lambda row: row["lastCheck"]) if checked else None
    ejected = [row["ejectedUntil"] for row in rows if row["ejectedUntil"] is not None]
    reading = reading_of(rows[0])
    for row in rows[1:]:
        reading = reading.merged(reading_of(row))
    merged = {
        "url": rows[0]["url"],
        "state": state,
        "reason": reason,
        "health": _worst([row["health"] for row in rows]),
        "ejectedUntil": max(ejected) if ejected else None,
        "ejections": sum(row["ejections"] for row in rows),
        "lastCheck": latest["lastCheck"] if latest is not None else None,
        "checkLatencyMs": latest["checkLatencyMs"] if latest is not None else None,
        "checkError": latest["checkError"] if latest is not None else None,
        "inFlight": sum(row["inFlight"] for row in rows),
        **traffic_figures(reading),
        "workers": [
            {
                "worker": worker,
                "state": row["state"],
                "reason": row["reason"],
                "lastCheck": row["lastCheck"],
                "checkLatencyMs": row["checkLatencyMs"],
                "ejectedUntil": row["ejectedUntil"],
                "inFlight": row["inFlight"],
            }
            for worker, row in views
        ],
    }
    return merged, reading


def merge_services(reports: List[Tuple[str, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """
    Every service of the workers' C{reports}, in the first report's order
    (every worker has the same configuration), each instance merged.
    """
    names: List[str] = []
    views: Dict[str, Dict[str, List[Tuple[str, Dict[str, Any]]]]] = {}
    for worker, report in reports:
        for service in report["services"]:
            if service["name"] not in views:
                names.append(service["name"])
                views[service["name"]] = {}
            for row in service["instances"]:
                views[service["name"]].setdefault(row["url"], []).append((worker, row))
    services = []
    for name in names:
        merged = [merge_instance(instance_views) for instance_views in views[name].values()]
        services.append(service_row(name, [row for row, _ in merged], [reading for _, reading in merged]))
    return services


def merge_gateway(
    reports: List[Tuple[str, Dict[str, Any]]], now: float, started: float, configured: int
) -> Dict[str, Any]:
    """
    The group's own figures: the supervisor's start and uptime, the
    workers' connections and tunnels summed, draining when any worker is,
    the rate-limit store as the first worker that finds it unhealthy (else
    the first) reports it, and how many workers reported.
    """
    gateways = [report["gateway"] for _, report in reports]
    first = gateways[0]
    stores = [gateway["rateLimit"] for gateway in gateways]
    unhealthy = [store for store in stores if store["status"] != "healthy"]
    return {
        "version": first["version"],
        "startedAt": iso_timestamp(started),
        "uptimeSeconds": round(now - started, 3),
        "connections": sum(gateway["connections"] for gateway in gateways),
        "tunnels": sum(gateway["tunnels"] for gateway in gateways),
        "readiness": "draining" if any(g["readiness"] == "draining" for g in gateways) else "ready",
        "rateLimit": (unhealthy or stores)[0],
        "healthCheckIntervalMs": first["healthCheckIntervalMs"],
        "windowSeconds": first["windowSeconds"],
        "workers": len(reports),
        "workersConfigured": configured,
    }


def merge_reports(
    reports: Mapping[str, Dict[str, Any]], now: float, started: float, configured: int
) -> Dict[str, Any]:
    """
    The group's report from its workers' C{reports} (by worker number; at
    least one), in C{/status.json}'s shape with C{workers} counted and each
    instance's per-worker views.
    """
    ordered = sorted(reports.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0)
    return {
        "gateway": merge_gateway(ordered, now, started, configured),
        "routes": ordered[0][1]["routes"],
        "services": merge_services(ordered),
        "timestamp": iso_timestamp(now),
    }


@attrs.frozen
class GroupStatus:
    """
    What the supervisor's C{/status.json} serves.

    @ivar directory: the group's metric directory, where workers write.
    @ivar workers: the live workers now, worker number to pid.
    @ivar clock: the source of every time.
    @ivar started: the clock's seconds when the supervisor started.
    @ivar configured: how many workers the group runs (WORKERS).
    """

    directory: str
    workers: Callable[[], Mapping[str, int]]
    clock: IReactorTime
    started: float
    configured: int

    def report(self) -> Dict[str, Any]:
        """
        The merged report of the live workers.

        @raise GatewayError: 503 while no worker has written one (the group
            is starting).
        """
        reports = read_reports(self.directory, self.workers())
        if not reports:
            raise GatewayError(
                "SERVICE_UNAVAILABLE", "No worker has reported its status yet", status=503
            )
        return merge_reports(reports, self.clock.seconds(), self.started, self.configured)
