"""
WebSocket handshakes, as the gateway sees them.

The gateway proxies a WebSocket as a tunnel: it checks the handshake (an
HTTP GET asking to upgrade) like any request, forwards it, and once the
upstream answers 101 relays bytes both ways without reading a frame
(L{qeetgw.upstream.tunnel}).  This module only recognises a handshake.
"""

from __future__ import annotations

from typing import FrozenSet

from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest


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
    4.1): a GET without a body whose Connection field has the token
    C{upgrade} and whose Upgrade field has C{websocket}.  A handshake with a
    body is not one: nothing may come between it and the tunnel.
    """
    if request.method != b"GET":
        return False
    headers = request.requestHeaders
    if headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding"):
        length = headers.getRawHeaders(b"content-length", [b"0"])[0].strip()
        if length != b"0" or headers.hasHeader(b"transfer-encoding"):
            return False
    if b"upgrade" not in header_tokens(headers, b"connection"):
        return False
    return b"websocket" in header_tokens(headers, b"upgrade")
