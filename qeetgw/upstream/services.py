"""
A service's instances and the policies around them, as the proxy uses them:
which instance a try goes to, whether a failed try is tried again, and how
many requests a service may have in flight.  The decisions themselves are
the pure logic of L{qeetgw.upstream.balancing}; this module binds them to a service.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, Optional

import attrs
from twisted.internet.interfaces import IReactorTime

from qeetgw.config import Config, ServiceConfig
from qeetgw.upstream.balancing import BalancingSettings, InstanceSet, RetryBudget


@attrs.define
class ServiceUpstream:
    """
    One service's instances, retry budget and limits.

    @ivar instances: the instances, their load and their ejections.
    @ivar budget: the retries the service may have in flight.
    @ivar timeout: seconds a try may wait for its response to start.
    @ivar retry_max: tries after the first.
    @ivar retry_buffer_bytes: the largest body a request is retried with.
    @ivar max_in_flight: requests in flight at most (the circuit breaker).
    """

    service: ServiceConfig
    instances: InstanceSet
    budget: RetryBudget
    timeout: float
    retry_max: int
    retry_buffer_bytes: int
    max_in_flight: int
    random: Callable[[], float] = random.random

    @property
    def several(self) -> bool:
        """
        Whether there is another instance to retry on.
        """
        return len(self.instances.instances) > 1

    def at_capacity(self) -> bool:
        """
        Whether a new request must be refused rather than queued.
        """
        return self.instances.in_flight() >= self.max_in_flight


def balancing_settings(config: Config) -> BalancingSettings:
    """
    The balancing settings of C{config}.
    """
    return BalancingSettings(
        balancer=config.balancer,
        outlier_consecutive_failures=config.outlier_consecutive_failures,
        outlier_base_ejection_ms=config.outlier_base_ejection_ms,
        outlier_max_ejection_percent=config.outlier_max_ejection_percent,
        retry_max=config.retry_max,
        retry_buffer_bytes=config.retry_buffer_bytes,
        health_unhealthy_threshold=config.health_unhealthy_threshold,
        health_healthy_threshold=config.health_healthy_threshold,
    )


def service_upstreams(
    config: Config, clock: IReactorTime, random_source: Optional[Callable[[], float]] = None
) -> Dict[str, ServiceUpstream]:
    """
    A L{ServiceUpstream} for every service of C{config}, by service name.
    """
    settings = balancing_settings(config)
    chosen = random_source if random_source is not None else random.random
    upstreams: Dict[str, ServiceUpstream] = {}
    for service in config.services:
        instances = InstanceSet(service.instances, settings, clock, chosen)
        timeout_ms = service.timeout_ms if service.timeout_ms is not None else config.proxy_timeout_ms
        upstreams[service.name] = ServiceUpstream(
            service=service,
            instances=instances,
            budget=RetryBudget(instances.in_flight),
            timeout=timeout_ms / 1000,
            retry_max=config.retry_max,
            retry_buffer_bytes=config.retry_buffer_bytes,
            max_in_flight=config.upstream_max_in_flight,
            random=chosen,
        )
    return upstreams
