"""
Several instances per service: the pure decisions the proxy asks about.

Which instance a try goes to (L{InstanceSet.pick}), what a try's outcome
does to its instance (outlier ejection, L{InstanceSet.finished}), what an
active health probe does to it (L{InstanceSet.record_check}), and whether a
failed try may be tried again (L{is_retryable}, L{RetryBudget},
L{backoff}).  Plain objects on plain values and an injected clock: no
sockets, no Deferreds, tested with a fake clock and injected randomness.
"""

from qeetgw.upstream.balancing.instances import Instance, InstanceSet, InstanceSnapshot
from qeetgw.upstream.balancing.outcomes import Outcome, outcome_of_status
from qeetgw.upstream.balancing.retries import (
    IDEMPOTENT_METHODS,
    RetryBudget,
    backoff,
    body_is_kept,
    is_retryable,
)
from qeetgw.upstream.balancing.settings import BalancingSettings

__all__ = [
    "BalancingSettings",
    "IDEMPOTENT_METHODS",
    "Instance",
    "InstanceSet",
    "InstanceSnapshot",
    "Outcome",
    "RetryBudget",
    "backoff",
    "body_is_kept",
    "is_retryable",
    "outcome_of_status",
]
