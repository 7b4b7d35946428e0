"""
WebSocket handshakes, as the gateway sees them.

The gateway proxies a WebSocket as a tunnel: it checks the handshake (an
HTTP GET asking to upgrade) like any request, forwards it, and once the
upstream answers 101 relays bytes both ways without decoding a frame
(L{qeetgw.upstream.tunnel}).  This module recognises a handshake, and takes
a token out of its query string (JWT_QUERY_PARAM).
"""

from __future__ import annotations

from typing import FrozenSet, List, Optional, Tuple
from urllib.parse import unquote_to_bytes

import attrs
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from qeetgw.paths import BadTarget
from qeetgw.requeststate import state_of, target_of


def header_tokens(headers: Headers, name: bytes) -> FrozenSet[bytes]:
    """
    The comma-separated tokens of every C{name} field of C{headers}, lower
    cased (the tokens of Connection and Upgrade are case-insensitive, RFC
    9110 section 7.6.1 and 7.8).
    """
    return frozenset(
        token.strip().lower()
        for value in headers.getRawHeaders(name, [])
        for token in value.split(b",")
        if token.strip()
    )


def is_websocket_handshake(request: IRequest) -> bool:
    """
    Whether C{request} is a WebSocket opening handshake (RFC 6455 section
    4.1): an HTTP/1.1 GET without a body whose Connection field has the
    token C{upgrade} and whose Upgrade field has C{websocket}.  A handshake
    with a body is not one: nothing may come between it and the tunnel.
    """
    headers = request.requestHeaders
    # Every proxied request asks this: the field almost none has, first.
    if not headers.hasHeader(b"upgrade") or request.method != b"GET":
        return False
    if getattr(request, "clientproto", b"HTTP/1.1") != b"HTTP/1.1":
        return False
    if headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding"):
        length = headers.getRawHeaders(b"content-length", [b"0"])[0].strip()
        if length != b"0" or headers.hasHeader(b"transfer-encoding"):
            return False
    if b"upgrade" not in header_tokens(headers, b"connection"):
        return False
    return b"websocket" in header_tokens(headers, b"upgrade")


def without_parameter(query: Optional[bytes], name: bytes) -> Tuple[Optional[bytes], Optional[bytes]]:
    """
    C{query} (a raw query string) without its parameters named C{name}
    (compared after percent-decoding), and the first one's value,
    percent-decoded; the other parameters are kept byte for byte, in order.
    A query left empty is L{None} (no C{?} at all).
    """
    if query is None:
        return None, None
    kept: List[bytes] = []
    value: Optional[bytes] = None
    for part in query.split(b"&"):
        key, _, raw = part.partition(b"=")
        if unquote_to_bytes(key) == name:
            if value is None:
                value = unquote_to_bytes(raw)
            continue
        kept.append(part)
    if value is None:
        return query, None
    return (b"&".join(kept) if kept else None), value


def take_query_token(request: IRequest, name: bytes) -> None:
    """
    For a WebSocket handshake, take the parameter C{name} (JWT_QUERY_PARAM)
    out of C{request}'s target, so it is never forwarded, and keep its
    value as the request's bearer token when it has no Authorization: a
    browser cannot set a header on a WebSocket.  Other requests are left as
    they are (a token in a URL ends up in histories and logs).
    """
    if not is_websocket_handshake(request):
        return
    try:
        target = target_of(request)
    except BadTarget:
        return  # refused where the target is read
    query, value = without_parameter(target.query, name)
    if value is None:
        return
    state = state_of(request)
    state.target = attrs.evolve(target, query=query)
    try:
        state.query_token = value.decode("ascii") or None
    except UnicodeDecodeError:
        state.query_token = None
