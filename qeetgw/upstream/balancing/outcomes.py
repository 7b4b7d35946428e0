"""
How one try at an upstream instance ended, as both outlier ejection and the
retry rules need to know it.
"""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """
    How a try ended.

    Every member but C{SUCCESS} is a failure for outlier ejection (the
    issue's "connect failures, timeouts or 5xx answers"; a reset is a
    connection failure that came later).  The retry rules tell them apart:
    only C{CONNECT_FAILURE} may repeat a POST, and a plain 500
    (C{SERVER_ERROR}) is an answer, never retried.
    """

    #: Any answer below 500, client errors included: the instance works.
    SUCCESS = "success"
    #: The connection could not be made (refused, unreachable, DNS).
    CONNECT_FAILURE = "connect_failure"
    #: The connection was lost before the response began.
    RESET = "reset"
    #: No response began within the per-try timeout.
    TIMEOUT = "timeout"
    #: A 502, 503 or 504: the instance (or a proxy in front of it) is
    #: failing, and another instance may well answer.
    GATEWAY_ERROR = "gateway_error"
    #: Any other 5xx: the request reached the application and failed there.
    SERVER_ERROR = "server_error"

    @property
    def failed(self) -> bool:
        """
        Whether this outcome counts towards ejecting the instance.
        """
        return self is not Outcome.SUCCESS


def outcome_of_status(status: int) -> Outcome:
    """
    The outcome of a try that got a response with C{status}.
    """
    if status in (502, 503, 504):
        return Outcome.GATEWAY_ERROR
    if 500 <= status <= 599:
        return Outcome.SERVER_ERROR
    return Outcome.SUCCESS
