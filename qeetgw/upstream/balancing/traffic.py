"""
An instance's recent traffic: requests, failures and latency percentiles
over the last minute, for the status page (C{/status}).

Recorded where a try at an instance ends, so the cost is per try and must
be tiny.  Why this design is cheap:

- The minute is 60 slots of one second each, in one preallocated
  C{array} of unsigned 32-bit counters: a try adds 1 to three cells
  (requests, failures when it failed, one latency bucket) and allocates
  nothing that lives on (no list, no tuple, no object per try).
- A slot is zeroed when the first try of a new second lands in it (one
  slice copy from a zero array, at most once a second), so nothing runs on
  a timer and an idle instance costs nothing.
- Latencies go into fixed buckets spaced by a factor of 2^(1/3) (0.5 ms to
  65 s), found by C{bisect} in C: percentiles are read from the summed
  buckets, never from kept samples, so memory is fixed (60 x 55 counters,
  13 KiB an instance) whatever the load, with an error within one bucket
  (under 26%, less with the interpolation inside it).
- No locks: the reactor thread is the only writer and reader.

Reading (a status request, about once a second per open page) sums the
slots of the last 60 seconds: 3,300 additions, paid by the reader.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from typing import Optional, Sequence, Tuple

import attrs

#: The window, in one-second slots.
WINDOW_S = 60

#: The latency buckets' upper bounds, in seconds: 0.5 ms times 2^(k/3), to
#: about 65 s.  A latency above the last falls in one more bucket.
BOUNDS_S: Tuple[float, ...] = tuple(0.0005 * 2 ** (k / 3) for k in range(52))

_BUCKETS = len(BOUNDS_S) + 1
# Cells of a slot: requests, failures, then the latency buckets.
_STRIDE = 2 + _BUCKETS
_ZERO_SLOT = array("I", bytes(4 * _STRIDE))


@attrs.frozen
class TrafficReading:
    """
    What a window (or several, merged) saw over its last minute.

    @ivar requests: tries that ended.
    @ivar failures: tries that ended with a 5xx answer, or failed (refused,
        reset, timed out: what the gateway answers with 502 or 504).
    @ivar seconds: the time the figures cover: the window's minute, or less
        when the gateway started less than a minute ago.
    @ivar latencies: the tries counted per latency bucket (L{BOUNDS_S}).
    """

    requests: int
    failures: int
    seconds: float
    latencies: Tuple[int, ...]

    @classmethod
    def empty(cls, seconds: float) -> "TrafficReading":
        """
        A reading of no traffic over C{seconds}.
        """
        return cls(0, 0, seconds, (0,) * _BUCKETS)

    def merged(self, other: "TrafficReading") -> "TrafficReading":
        """
        The two readings added up (a service's instances; a group's
        workers).  The figures' span is the longer of the two.
        """
        return TrafficReading(
            self.requests + other.requests,
            self.failures + other.failures,
            max(self.seconds, other.seconds),
            tuple(a + b for a, b in zip(self.latencies, other.latencies)),
        )

    @property
    def requests_per_second(self) -> float:
        """
        Tries per second over the reading's span.
        """
        return self.requests / self.seconds

    @property
    def failures_per_second(self) -> float:
        """
        Failed tries (5xx answers and failures) per second over the span.
        """
        return self.failures / self.seconds

    def percentile_ms(self, fraction: float) -> Optional[float]:
        """
        The latency below which C{fraction} of the tries fell, in
        milliseconds, interpolated inside its bucket as Prometheus's
        C{histogram_quantile} does; L{None} without a try.  Above the last
        bound it is that bound (the figure is "at least").
        """
        return percentile_ms(self.latencies, fraction)


def percentile_ms(latencies: Sequence[int], fraction: float) -> Optional[float]:
    """
    The C{fraction} percentile of the bucket counts C{latencies}, in
    milliseconds (see L{TrafficReading.percentile_ms}).
    """
    total = sum(latencies)
    if total == 0:
        return None
    rank = fraction * total
    below = 0
    for index, count in enumerate(latencies):
        if count and below + count >= rank:
            if index >= len(BOUNDS_S):
                return BOUNDS_S[-1] * 1000
            lower = BOUNDS_S[index - 1] if index else 0.0
            upper = BOUNDS_S[index]
            return (lower + (upper - lower) * (rank - below) / count) * 1000
        below += count
    return BOUNDS_S[-1] * 1000  # unreachable: the counts add up to total


class RecentTraffic:
    """
    One instance's tries over the last L{WINDOW_S} seconds (see the module
    docstring for why recording is cheap).
    """

    __slots__ = ("_cells", "_seconds")

    def __init__(self) -> None:
        self._cells = array("I", bytes(4 * WINDOW_S * _STRIDE))
        # The whole second each slot holds; -1: none yet.
        self._seconds = array("q", [-1]) * WINDOW_S

    def record(self, now: float, failed: bool, latency_s: float) -> None:
        """
        A try ended at C{now} (the clock's seconds), C{failed} or not,
        C{latency_s} seconds after it was sent.
        """
        second = int(now)
        slot = second % WINDOW_S
        base = slot * _STRIDE
        cells = self._cells
        if self._seconds[slot] != second:
            cells[base:base + _STRIDE] = _ZERO_SLOT
            self._seconds[slot] = second
        cells[base] += 1
        if failed:
            cells[base + 1] += 1
        cells[base + 2 + bisect_left(BOUNDS_S, latency_s)] += 1

    def reading(self, now: float, since: float) -> TrafficReading:
        """
        The last minute at C{now}: the current second and the 59 before it.

        @param since: when counting began (the gateway's start): the span
            the rates are over is the minute, or the time since then when
            shorter (at least a second, so a first try is not a thousand a
            second).
        """
        second = int(now)
        oldest = second - WINDOW_S + 1
        requests = failures = 0
        latencies = [0] * _BUCKETS
        cells = self._cells
        for slot in range(WINDOW_S):
            held = self._seconds[slot]
            if held < oldest or held > second:
                continue
            base = slot * _STRIDE
            requests += cells[base]
            failures += cells[base + 1]
            first = base + 2
            for index in range(_BUCKETS):
                latencies[index] += cells[first + index]
        return TrafficReading(requests, failures, span(now, since), tuple(latencies))


def span(now: float, since: float) -> float:
    """
    The seconds a reading at C{now} covers when counting began at C{since}:
    from the start of the oldest second of the window, or from C{since}
    when later; at least one second.
    """
    oldest = int(now) - WINDOW_S + 1
    return max(1.0, now - max(float(oldest), since))
