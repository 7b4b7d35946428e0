"""
W3C Trace Context (https://www.w3.org/TR/trace-context/): reading the
C{traceparent} and C{tracestate} a client sent, and the context the gateway
forwards upstream.

The gateway is one hop of the trace: a valid incoming C{traceparent} keeps
its trace-id and flags, and the upstream gets the gateway's own span id as
its parent-id; C{tracestate} is passed on as received.  An absent or
malformed C{traceparent} starts a new trace (and any C{tracestate} is
dropped, as the spec asks); the client never gets an error for it.

A new trace is sampled (flags C{01}): the gateway records no spans itself,
so an unsampled root would make every service that samples by its parent
(OpenTelemetry's default) drop the traces of clients that send none.

The parsing functions are pure; L{qeetgw.requeststate.trace_of} keeps a
request's context in its state, like L{qeetgw.correlation.correlation_id}.
"""

from __future__ import annotations

from typing import Optional, Sequence

import attrs

from qeetgw.randomness import random_hex

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"

#: The flags of a trace the gateway starts: sampled (see the module's
#: docstring for why).
NEW_TRACE_FLAGS = "01"

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@attrs.frozen
class Parent:
    """
    A valid incoming C{traceparent}.

    @ivar version: two hex digits (C{00}, or a later version read by its
        first four fields).
    @ivar trace_id: 32 lowercase hex digits, not all zeros.
    @ivar parent_id: 16 lowercase hex digits, not all zeros.
    @ivar flags: two lowercase hex digits.
    """

    version: str
    trace_id: str
    parent_id: str
    flags: str


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in _HEX for c in text)


def parse_traceparent(value: Optional[bytes]) -> Optional[Parent]:
    """
    The parent C{value} describes, or L{None} when it is absent or invalid.

    Version C{00} is exactly 55 characters: C{00-<32 hex>-<16 hex>-<2 hex>}
    in lowercase, neither id all zeros.  A later version (C{01} to C{fe}) is
    read by those first four fields; it may be longer, but only with a
    C{-} after the flags.  Version C{ff} is invalid.
    """
    if value is None:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    if len(text) < 55:
        return None
    version = text[:2]
    if not _is_hex(version, 2) or version == "ff":
        return None
    if version == "00":
        if len(text) != 55:
            return None
    elif len(text) > 55 and text[55] != "-":
        return None
    if text[2] != "-" or text[35] != "-" or text[52] != "-":
        return None
    trace_id, parent_id, flags = text[3:35], text[36:52], text[53:55]
    if not (_is_hex(trace_id, 32) and _is_hex(parent_id, 16) and _is_hex(flags, 2)):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return Parent(version, trace_id, parent_id, flags)


def _nonzero_hex(digits: int) -> str:
    """
    Random hex that is not all zeros (an all-zero id is invalid).
    """
    while True:
        text = random_hex(digits)
        if text.strip("0"):
            return text


def new_trace_id() -> str:
    """
    A random trace-id (16 bytes, hex).
    """
    return _nonzero_hex(32)


def new_span_id() -> str:
    """
    A random span id (8 bytes, hex).
    """
    return _nonzero_hex(16)


@attrs.frozen
class TraceContext:
    """
    The trace a request belongs to, and the gateway's span in it.

    @ivar trace_id: the trace's id (the client's, or new).
    @ivar span_id: the gateway's own span id, the upstream's parent-id.
    @ivar flags: the trace flags (the client's, or L{NEW_TRACE_FLAGS}).
    @ivar tracestate: the client's C{tracestate} values as received, kept
        only when its C{traceparent} was valid.
    @ivar continued: whether the client's trace was continued.
    """

    trace_id: str
    span_id: str
    flags: str
    tracestate: Sequence[bytes] = ()
    continued: bool = False

    def traceparent(self) -> bytes:
        """
        The C{traceparent} to send upstream (always version 00, the only one
        the gateway speaks).
        """
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}".encode("ascii")


def from_headers(
    traceparents: Optional[Sequence[bytes]], tracestates: Optional[Sequence[bytes]]
) -> TraceContext:
    """
    The gateway's trace context for a request whose C{traceparent} and
    C{tracestate} fields are C{traceparents} and C{tracestates} (raw values,
    L{None} when absent).  Several C{traceparent} fields are invalid.
    """
    parent = parse_traceparent(traceparents[0]) if traceparents and len(traceparents) == 1 else None
    if parent is None:
        return TraceContext(new_trace_id(), new_span_id(), NEW_TRACE_FLAGS)
    return TraceContext(
        parent.trace_id,
        new_span_id(),
        parent.flags,
        tuple(tracestates) if tracestates else (),
        continued=True,
    )
