"""
The settings of balancing, outlier ejection, health thresholds and retries,
as one value with issue 8's defaults, for the configuration to fill in.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators

Balancer = Literal["round_robin", "least_request"]

_at_least_one = [validators.instance_of(int), validators.ge(1)]
_not_negative = [validators.instance_of(int), validators.ge(0)]


@attrs.frozen
class BalancingSettings:
    """
    How one service's instances are chosen, ejected and retried.  Each field
    is named after its environment variable, lower case.

    @ivar balancer: BALANCER: C{"round_robin"} or C{"least_request"}.
    @ivar outlier_consecutive_failures: OUTLIER_CONSECUTIVE_FAILURES:
        failed tries in a row that eject an instance.
    @ivar outlier_base_ejection_ms: OUTLIER_BASE_EJECTION_MS: the first
        ejection's length; the Nth lasts N times as long.
    @ivar outlier_max_ejection_percent: OUTLIER_MAX_EJECTION_PERCENT: the
        share of a service's instances that may be ejected at once (one
        always may, as in Envoy).
    @ivar outlier_max_ejection_multiplier: the cap on that N: with the
        defaults an ejection lasts at most 10 x 30 s = 300 s, Envoy's default
        C{max_ejection_time}.  Not a variable of its own.
    @ivar health_unhealthy_threshold: HEALTH_UNHEALTHY_THRESHOLD: failed
        probes in a row that make a healthy instance unhealthy.
    @ivar health_healthy_threshold: HEALTH_HEALTHY_THRESHOLD: passed probes
        in a row that make an unhealthy instance healthy again.
    @ivar retry_max: RETRY_MAX: tries after the first, at most.
    @ivar retry_buffer_bytes: RETRY_BUFFER_BYTES: the largest request body
        kept so that it can be sent again.
    """

    balancer: Balancer = attrs.field(
        default="round_robin",
        validator=validators.in_(("round_robin", "least_request")),
    )
    outlier_consecutive_failures: int = attrs.field(default=5, validator=_at_least_one)
    outlier_base_ejection_ms: int = attrs.field(default=30_000, validator=_not_negative)
    outlier_max_ejection_percent: int = attrs.field(
        default=50,
        validator=[validators.instance_of(int), validators.ge(0), validators.le(100)],
    )
    outlier_max_ejection_multiplier: int = attrs.field(default=10, validator=_at_least_one)
    health_unhealthy_threshold: int = attrs.field(default=3, validator=_at_least_one)
    health_healthy_threshold: int = attrs.field(default=2, validator=_at_least_one)
    retry_max: int = attrs.field(default=1, validator=_not_negative)
    retry_buffer_bytes: int = attrs.field(default=65_536, validator=_not_negative)
