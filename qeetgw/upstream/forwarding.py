"""
Header rules for forwarding: what goes upstream, what comes back.

Pure functions from one L{Headers} to another, so each rule is tested on
plain values.
"""

from __future__ import annotations

from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

from twisted.web.http_headers import Headers

from qeetgw.fields import copy_field
from qeetgw.tracecontext import TRACEPARENT, TRACESTATE, TraceContext

#: Hop-by-hop fields (RFC 9110 section 7.6.1): they describe one connection
#: and are never forwarded, in either direction.
HOP_BY_HOP: FrozenSet[bytes] = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Request fields we drop because the gateway sets its own: the Agent writes
# Host for the upstream and a Content-Length for the body it sends (never a
# framing the client chose); Expect was already answered by twisted.web.
_REPLACED_UPSTREAM: FrozenSet[bytes] = frozenset(
    {
        b"host",
        b"content-length",
        b"expect",
        b"x-correlation-id",
        b"x-request-id",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)


def connection_named(headers: Headers) -> FrozenSet[bytes]:
    """
    The lower-cased field names listed in C{headers}' Connection fields,
    which are hop-by-hop for this message too.
    """
    names = set()
    for value in headers.getRawHeaders(b"connection", []):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return frozenset(names)


def _copy_end_to_end(
    source: Headers, also_drop: FrozenSet[bytes], drop_prefix: Optional[bytes] = None
) -> Headers:
    """
    A copy of C{source} without hop-by-hop fields, fields named in its
    Connection header, C{also_drop}, and the fields whose lower-cased name
    starts with C{drop_prefix}.  Repeated fields stay repeated.
    """
    drop = HOP_BY_HOP | connection_named(source) | also_drop
    copied = Headers()
    for name, values in source.getAllRawHeaders():
        lowered = name.lower()
        if lowered in drop or (drop_prefix is not None and lowered.startswith(drop_prefix)):
            continue
        # Already as a Headers keeps them: copied as they are.
        copy_field(copied, name, values)
    return copied


def upstream_request_headers(
    client: Headers,
    *,
    peer_ip: Optional[str],
    proto: bytes,
    correlation_id: str,
    peer_trusted: bool = False,
    trace: Optional[TraceContext] = None,
) -> Headers:
    """
    The headers to send upstream for a client request with headers
    C{client}, received from C{peer_ip} over C{proto}.

    Authorization and every other end-to-end field go as sent.  The
    correlation id goes as both x-correlation-id and x-request-id.  The
    peer's address is appended to X-Forwarded-For (whether or not we
    believed what came before it).  X-Forwarded-Proto and X-Forwarded-Host
    are the scheme and Host the peer used — or, when the peer is a trusted
    proxy (C{peer_trusted}), the values it passed on from its own client.
    With C{trace}, C{traceparent} names the gateway's span as the parent
    and C{tracestate} goes as received only when the trace was continued
    (L{qeetgw.tracecontext}); without it both go as the client sent them.
    """
    headers = _copy_end_to_end(client, _REPLACED_UPSTREAM)
    cid = correlation_id.encode("ascii")
    headers.setRawHeaders(b"x-correlation-id", [cid])
    headers.setRawHeaders(b"x-request-id", [cid])
    if peer_ip is not None:
        earlier = client.getRawHeaders(b"x-forwarded-for")
        peer = peer_ip.encode("ascii")
        headers.setRawHeaders(b"x-forwarded-for", [b", ".join(earlier + [peer]) if earlier else peer])
    forwarded_proto = client.getRawHeaders(b"x-forwarded-proto") if peer_trusted else None
    headers.setRawHeaders(b"x-forwarded-proto", [forwarded_proto[0] if forwarded_proto else proto])
    forwarded_host = client.getRawHeaders(b"x-forwarded-host") if peer_trusted else None
    host = forwarded_host or client.getRawHeaders(b"host")
    if host:
        headers.setRawHeaders(b"x-forwarded-host", [host[0]])
    if trace is not None:
        headers.setRawHeaders(TRACEPARENT, [trace.traceparent()])
        if trace.tracestate:
            headers.setRawHeaders(TRACESTATE, list(trace.tracestate))
        else:
            # A tracestate without a valid traceparent belongs to no trace.
            headers.removeHeader(TRACESTATE)
    return headers


# Response fields that name the upstream's software: the gateway's
# responses name none (SPEC, "Headers").
_SOFTWARE_NAMING: FrozenSet[bytes] = frozenset({b"server", b"x-powered-by"})


#: The prefix of the CORS response fields (Access-Control-Allow-Origin,
#: -Allow-Credentials, -Expose-Headers, ...), lower-cased.
CORS_PREFIX = b"access-control-"


def client_response_headers(upstream: Headers) -> Headers:
    """
    The upstream response's headers as the client gets them: everything but
    hop-by-hop fields, the fields that name server software, and the CORS
    fields; repeated fields (Set-Cookie) kept repeated.

    The gateway owns CORS: its CORS wrapper answers for every response, by
    CORS_ORIGINS.  An upstream's C{Access-Control-Allow-Origin: *} passed on
    would let any origin read what the allow-list refuses.
    """
    return _copy_end_to_end(upstream, _SOFTWARE_NAMING, CORS_PREFIX)


def merge_vary(ours: Sequence[bytes], theirs: Sequence[bytes]) -> bytes:
    """
    One Vary value listing every field in C{ours} (the gateway's, such as
    C{Origin}) and C{theirs} (the upstream's), each once (compared without
    case), in that order; C{*} alone when either says C{*}.
    """
    fields: List[bytes] = []
    seen = set()
    for value in (*ours, *theirs):
        for token in value.split(b","):
            token = token.strip()
            lowered = token.lower()
            if lowered == b"*":
                return b"*"
            if token and lowered not in seen:
                seen.add(lowered)
                fields.append(token)
    return b", ".join(fields)


#: A header field as sent on the wire: (name, value), name in its own case.
Field = Tuple[bytes, bytes]


def connection_named_fields(fields: Sequence[Field]) -> FrozenSet[bytes]:
    """
    The lower-cased field names listed in the Connection fields of
    C{fields}, which are hop-by-hop for that message (RFC 9110 7.6.1).
    """
    names = set()
    for name, value in fields:
        if name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    names.add(token)
    return frozenset(names)


#: The response fields the gateway never passes on: hop-by-hop fields, and
#: those naming the upstream's software.
_DROPPED_FROM_RESPONSES: FrozenSet[bytes] = HOP_BY_HOP | _SOFTWARE_NAMING


def client_response_fields(upstream: Sequence[Field]) -> Dict[bytes, Tuple[bytes, List[bytes]]]:
    """
    The upstream response's fields (as the upstream sent them) as the client
    gets them, grouped by lower-cased name: (the name as first sent, its
    values in order).  Dropped, as by L{client_response_headers}: hop-by-hop
    fields, fields the response's Connection field names, the fields that
    name server software and the CORS fields.  Content-Length is kept: the
    proxy decides on it.
    """
    named = connection_named_fields(upstream)
    kept: Dict[bytes, Tuple[bytes, List[bytes]]] = {}
    for name, value in upstream:
        lowered = name.lower()
        if lowered in _DROPPED_FROM_RESPONSES or lowered in named or lowered.startswith(CORS_PREFIX):
            continue
        entry = kept.get(lowered)
        if entry is None:
            kept[lowered] = (name, [value])
        else:
            entry[1].append(value)
    return kept


def header_lines(headers: Headers) -> bytes:
    """
    C{headers} as request header lines (each ending in CRLF), for a head
    sent as bytes.  The values came from a request twisted.web parsed line
    by line, or were made by the gateway: none holds a line break.
    """
    return b"".join(
        name + b": " + value + b"\r\n"
        for name, values in headers.getAllRawHeaders()
        for value in values
    )
