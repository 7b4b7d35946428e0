"""
When a failed try may be tried again, and how many retries a service may
have going at once.
"""

from __future__ import annotations

from typing import Callable, FrozenSet, Optional, Union

from qeetgw.upstream.balancing.outcomes import Outcome

#: The methods retried after the request may have reached the upstream:
#: the issue's list, RFC 9110's idempotent methods less TRACE.
IDEMPOTENT_METHODS: FrozenSet[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

#: The failures after which an idempotent request is retried: each means no
#: response reached the client yet, and another instance may well answer.
_RETRIED_WHEN_IDEMPOTENT: FrozenSet[Outcome] = frozenset(
    {Outcome.CONNECT_FAILURE, Outcome.RESET, Outcome.TIMEOUT, Outcome.GATEWAY_ERROR}
)

#: The first retry's backoff bound, as Envoy's default base interval.
BACKOFF_BASE_MS = 25.0
#: The bound's cap, ten times the base, as Envoy's default max interval.
BACKOFF_MAX_MS = 250.0


def is_retryable(
    method: Union[str, bytes], body_kept: bool, failure_kind: Outcome, bytes_sent: bool
) -> bool:
    """
    Whether a try that failed with C{failure_kind} may be tried again on
    another instance (RETRY_MAX and the budget permitting).

    - A connection that failed before any byte was sent: yes, whatever the
      method, since the upstream saw nothing.
    - GET, HEAD, OPTIONS, PUT and DELETE, after a connect failure, a reset
      before the response began, a 502/503/504 or a per-try timeout: yes
      when the body can be sent again (C{body_kept}: empty, or within
      RETRY_BUFFER_BYTES and kept); a larger body already streamed is never
      sent twice.
    - Anything else: no.  A POST or PATCH may have taken effect once any
      byte went out, and a plain 500 (or a success) is the answer.

    @param method: the request method, as sent (methods are case-sensitive:
        C{"get"} is not GET).
    @param body_kept: whether the request body is empty or was kept whole.
    @param failure_kind: how the try ended.
    @param bytes_sent: whether any byte of the request went out.
    """
    if isinstance(method, bytes):
        method = method.decode("latin-1")
    if failure_kind is Outcome.CONNECT_FAILURE and not bytes_sent:
        return True
    return (
        method in IDEMPOTENT_METHODS
        and body_kept
        and failure_kind in _RETRIED_WHEN_IDEMPOTENT
    )


def body_is_kept(length: Optional[int], retry_buffer_bytes: int) -> bool:
    """
    Whether a request body of C{length} bytes (L{None}: not known in
    advance) is small enough to keep for a retry.
    """
    return length is not None and 0 <= length <= retry_buffer_bytes


def backoff(
    attempt: int,
    random: Callable[[], float],
    base_ms: float = BACKOFF_BASE_MS,
    max_ms: float = BACKOFF_MAX_MS,
) -> float:
    """
    How many seconds to wait before retry number C{attempt} (1 for the
    first): exponential with full jitter, uniform in [0, bound) where the
    bound is C{base_ms} doubled for each retry after the first, capped at
    C{max_ms}.  Full jitter spreads the retries of many clients that failed
    at once, so they do not hit the next instance together.

    @param random: a source of floats in [0, 1), like L{random.random}.
    @raise ValueError: when C{attempt} is below 1.
    """
    if attempt < 1:
        raise ValueError(f"retry attempts count from 1, not {attempt}")
    # The exponent is capped so a large attempt does not build a huge int.
    bound_ms = min(max_ms, base_ms * 2 ** min(attempt - 1, 32))
    return random() * bound_ms / 1000


class RetryBudget:
    """
    Envoy's retry_budget for one service: retries in flight stay below
    max(C{min_retries}, C{percent} of the tries in flight), so that when
    every instance fails, retries add a bounded share of load rather than
    multiplying it.
    """

    def __init__(
        self, in_flight: Callable[[], int], percent: float = 20.0, min_retries: int = 3
    ) -> None:
        """
        @param in_flight: the service's tries in flight, retries included, as
            Envoy counts its active requests (L{InstanceSet.in_flight}).
        @param percent: the share of those that may be retries.
        @param min_retries: retries always allowed, so a quiet service can
            still retry.
        """
        self._in_flight = in_flight
        self._percent = percent
        self._min_retries = min_retries
        self.retries_in_flight = 0

    def limit(self) -> int:
        """
        How many retries may be in flight now.
        """
        # Rounded down, as Envoy's integer arithmetic does.
        share = int(self._in_flight() * self._percent / 100)
        return max(self._min_retries, share)

    def can_retry(self, ending: int = 0) -> bool:
        """
        Whether one more retry may start now.

        @param ending: retries counted now whose tries are ending as this is
            asked (the asker's own, about to be replaced by the next).
        """
        return self.retries_in_flight - ending < self.limit()

    def retry_started(self) -> None:
        """
        A retry was granted: it counts until its try ends, however it ends
        (call L{retry_finished} then), as Envoy counts active retries.
        """
        self.retries_in_flight += 1

    def retry_finished(self) -> None:
        """
        A retry's try ended (answered, failed, timed out, or given up).
        """
        # Never below zero: a doubled call must not grant extra retries.
        self.retries_in_flight = max(0, self.retries_in_flight - 1)
