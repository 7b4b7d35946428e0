"""
The seam between the rate limiter and where counts live: an interface with
a memory and a Redis implementation.
"""

from __future__ import annotations

from typing import Literal

import attrs
from twisted.application.service import IService
from twisted.internet.defer import Deferred

Algorithm = Literal["fixed", "sliding"]


@attrs.frozen
class Budget:
    """
    How many requests a key may make per window.

    @ivar name: the budget's name, part of every counter's key (C{"default"},
        or a route prefix such as C{"/api/v1/auth/login"}), so budgets never
        share counters.
    @ivar limit: requests allowed per window.
    @ivar window_ms: the window, in milliseconds.
    """

    name: str
    limit: int
    window_ms: int


@attrs.frozen
class Count:
    """
    A key's counters right after a hit.

    Fixed window (the Express gateway's: each key's window starts at its
    first request): C{current} is the hits in the key's window, C{previous}
    is 0 and C{elapsed_ms} is how long ago the window started.

    Sliding window (windows aligned to the clock, the previous one weighted
    by how much of it still overlaps the last C{window_ms}): C{current} and
    C{previous} are the hits in this and the previous aligned window and
    C{elapsed_ms} is how far into this window we are.
    """

    current: int
    previous: int
    elapsed_ms: int
    window_ms: int


class StoreUnavailable(Exception):
    """
    The store could not count this hit in time (down, slow, or failing).
    """


@attrs.frozen
class StoreState:
    """
    What /health/services reports about a store.

    @ivar store: C{"memory"} or C{"redis"}.
    @ivar healthy: whether it is counting.
    @ivar detail: a short note (the error of an outage, the key count).
    """

    store: str
    healthy: bool
    detail: str = ""


class IRateLimitStore(IService):
    """
    Counts hits per key and budget.

    A Twisted service, started and stopped with the gateway: its background
    work (Redis's connection) runs while it runs, and its C{stopService}
    fires once its connections are closed.
    """

    def hit(key: str, budget: Budget, algorithm: Algorithm) -> "Deferred[Count]":
        """
        Count one hit (allowed or not: refused requests count too, as in
        express-rate-limit) for C{key} under C{budget}; fire with the
        counters after it, or fail with L{StoreUnavailable}.
        """

    def state() -> StoreState:
        """
        The store's state now.
        """
