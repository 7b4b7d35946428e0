"""
Window arithmetic and the rate-limit response headers: pure functions on
plain values, tested with plain asserts.
"""

from __future__ import annotations

import math
from typing import List, Literal, Tuple

import attrs

from qeetgw.ratelimit.store import Budget, Count

HeaderStyle = Literal["draft-6", "draft-8", "none"]


@attrs.frozen
class Decision:
    """
    What the limiter decided for one request.

    @ivar allowed: whether the request may go on.
    @ivar limit: the budget's limit.
    @ivar remaining: requests left in the window (never negative).
    @ivar reset_s: whole seconds until the window ends (rounded up).
    @ivar retry_after_s: for a refused request, whole seconds (rounded up)
        until one would be allowed again; 0 when allowed.
    @ivar budget: the budget decided against.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int
    budget: Budget


def _ceil_s(ms: float) -> int:
    """
    Milliseconds as whole seconds, rounded up, never negative.
    """
    # Whole milliseconds first, so float noise (18000.000000000004) does not
    # add a second.
    return max(0, math.ceil(round(ms) / 1000))


def decide_fixed(count: Count, budget: Budget) -> Decision:
    """
    The decision for a fixed-window count (express-rate-limit's): allowed
    while the hits in the key's window are within the limit.
    """
    left_ms = count.window_ms - count.elapsed_ms
    allowed = count.current <= budget.limit
    return Decision(
        allowed=allowed,
        limit=budget.limit,
        remaining=max(0, budget.limit - count.current),
        reset_s=_ceil_s(left_ms),
        retry_after_s=0 if allowed else _ceil_s(left_ms),
        budget=budget,
    )


def sliding_estimate(count: Count) -> float:
    """
    The requests seen in the last window: this window's hits plus the
    previous window's, weighted by how much of it still overlaps.
    """
    overlap = 1 - count.elapsed_ms / count.window_ms
    return count.previous * overlap + count.current


def _sliding_wait_ms(count: Count, limit: int) -> float:
    """
    How long until one more request (counted, like every refused one)
    would fit: until C{estimate + 1 <= limit}.
    """
    window = count.window_ms
    room = limit - 1  # what the estimate may be for one more to fit
    if count.current <= room and count.previous > 0:
        # Within this window: previous * (1 - t / window) + current <= room.
        moment = window * (1 - (room - count.current) / count.previous)
        if moment < window:
            return max(0.0, moment - count.elapsed_ms)
    # In the next window this window's hits become the weighted previous:
    # current * (1 - t / window) <= room, t measured from the next window.
    wait_next = window * max(0.0, 1 - room / count.current) if count.current else 0.0
    return window - count.elapsed_ms + wait_next


def decide_sliding(count: Count, budget: Budget) -> Decision:
    """
    The decision for a sliding-window count: allowed while the estimate of
    the last window's requests is within the limit.
    """
    estimate = sliding_estimate(count)
    allowed = estimate <= budget.limit
    left_ms = count.window_ms - count.elapsed_ms
    return Decision(
        allowed=allowed,
        limit=budget.limit,
        remaining=max(0, budget.limit - math.ceil(estimate)),
        reset_s=_ceil_s(left_ms),
        retry_after_s=0 if allowed else max(1, _ceil_s(_sliding_wait_ms(count, budget.limit))),
        budget=budget,
    )


def window_text(window_ms: int) -> str:
    """
    A window as express-rate-limit names it in draft-8 policy names
    (C{60000} -> C{"1min"}).
    """
    for unit_ms, unit in ((86_400_000, "day"), (3_600_000, "hr"), (60_000, "min"), (1000, "sec")):
        if window_ms % unit_ms == 0:
            return f"{window_ms // unit_ms}{unit}"
    return f"{window_ms}ms"


def rate_limit_headers(decision: Decision, style: HeaderStyle) -> List[Tuple[bytes, bytes]]:
    """
    The rate-limit response headers of C{decision}.

    - C{draft-6} (express-rate-limit's C{standardHeaders: true}, the Express
      gateway's): RateLimit-Policy C{1000;w=60}, RateLimit-Limit,
      RateLimit-Remaining, RateLimit-Reset (seconds left in the window).
    - C{draft-8}: RateLimit-Policy C{"1000-in-1min"; q=1000; w=60} and
      RateLimit C{"1000-in-1min"; r=999; t=60}.
    - C{none}: nothing.
    """
    if style == "none":
        return []
    budget = decision.budget
    window_s = budget.window_ms // 1000 if budget.window_ms % 1000 == 0 else budget.window_ms / 1000
    if style == "draft-8":
        name = f'"{budget.limit}-in-{window_text(budget.window_ms)}"'
        return [
            (b"RateLimit-Policy", f"{name}; q={budget.limit}; w={window_s}".encode("ascii")),
            (b"RateLimit", f"{name}; r={decision.remaining}; t={decision.reset_s}".encode("ascii")),
        ]
    return [
        (b"RateLimit-Policy", f"{budget.limit};w={window_s}".encode("ascii")),
        (b"RateLimit-Limit", b"%d" % (budget.limit,)),
        (b"RateLimit-Remaining", b"%d" % (decision.remaining,)),
        (b"RateLimit-Reset", b"%d" % (decision.reset_s,)),
    ]
