"""
In-memory plumbing for gateway tests: a client that speaks raw HTTP bytes to
a site over a StringTransport, a parser for what comes back, and upstream
resources that record what they were sent.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional, Tuple

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from qeetgw.config import ServiceConfig

PEER = IPv4Address("TCP", "203.0.113.9", 50000)
HOST = IPv4Address("TCP", "127.0.0.1", 4000)

#: SPEC's six routes, every service on one in-memory upstream host.
SERVICES = tuple(
    ServiceConfig(
        name=name,
        client_prefix="/api/v1/" + segment,
        upstream_prefix="/" + segment,
        url="http://upstream.test",
        health_path="/health",
        url_variable=variable,
    )
    for name, segment, variable in [
        ("auth-service", "auth", "AUTH_SERVICE_URL"),
        ("user-service", "users", "USER_SERVICE_URL"),
        ("product-service", "products", "PRODUCT_SERVICE_URL"),
        ("order-service", "orders", "ORDER_SERVICE_URL"),
        ("payment-service", "payments", "PAYMENT_SERVICE_URL"),
        ("inventory-service", "inventory", "INVENTORY_SERVICE_URL"),
    ]
)


@attrs.define
class RawResponse:
    """
    One HTTP response parsed from raw bytes.
    """

    version: bytes
    code: int
    phrase: bytes
    headers: Headers
    body: bytes
    complete: bool
    raw_headers: List[Tuple[bytes, bytes]]

    def header(self, name: bytes) -> Optional[bytes]:
        """
        The single value of C{name}, or L{None}.
        """
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self) -> Any:
        """
        The body as JSON.
        """
        return json.loads(self.body)


def parse_response(data: bytes, head: bool = False) -> Tuple[RawResponse, bytes]:
    """
    Parse one response off the front of C{data}; return it and what follows.
    """
    head_end = data.index(b"\r\n\r\n")
    lines = data[:head_end].split(b"\r\n")
    version, code, phrase = (lines[0].split(b" ", 2) + [b""])[:3]
    headers = Headers()
    raw_headers = []
    for line in lines[1:]:
        name, value = line.split(b":", 1)
        headers.addRawHeader(name, value.strip())
        raw_headers.append((name, value.strip()))
    rest = data[head_end + 4 :]
    status = int(code)
    if head or status in (204, 304) or 100 <= status < 200:
        return RawResponse(version, status, phrase, headers, b"", True, raw_headers), rest
    if headers.getRawHeaders(b"transfer-encoding") == [b"chunked"]:
        body = b""
        while True:
            if b"\r\n" not in rest:
                return RawResponse(version, status, phrase, headers, body, False, raw_headers), b""
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                complete = rest.startswith(b"\r\n")
                return RawResponse(version, status, phrase, headers, body, complete, raw_headers), rest[2:]
            if len(rest) < size + 2:
                body += rest[:size]
                return RawResponse(version, status, phrase, headers, body, False, raw_headers), b""
            body += rest[:size]
            rest = rest[size + 2 :]
    length = headers.getRawHeaders(b"content-length")
    if length is not None:
        size = int(length[0])
        return (
            RawResponse(version, status, phrase, headers, rest[:size], len(rest) >= size, raw_headers),
            rest[size:],
        )
    return RawResponse(version, status, phrase, headers, rest, True, raw_headers), b""


class Connection:
    """
    A client connection to C{site}, in memory.
    """

    def __init__(self, site: Site, peer: IPv4Address = PEER) -> None:
        self.transport = StringTransport(peerAddress=peer, hostAddress=HOST)
        self.channel = site.buildProtocol(peer)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        """
        Deliver C{data} as if it arrived from the client.
        """
        self.channel.dataReceived(data)

    def response(self, head: bool = False) -> RawResponse:
        """
        The first response written so far.
        """
        return parse_response(self.transport.value(), head)[0]

    def close(self) -> None:
        """
        The client goes away.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.channel.connectionLost(Failure(ConnectionDone()))


def get(path: bytes, headers: bytes = b"", method: bytes = b"GET") -> bytes:
    """
    The raw bytes of a bodiless request.
    """
    return method + b" " + path + b" HTTP/1.1\r\nHost: gateway.test\r\n" + headers + b"\r\n"


def with_body(method: bytes, path: bytes, body: bytes, headers: bytes = b"") -> bytes:
    """
    The raw bytes of a request with a Content-Length body.
    """
    return (
        method + b" " + path + b" HTTP/1.1\r\nHost: gateway.test\r\n"
        + b"Content-Length: %d\r\n" % (len(body),) + headers + b"\r\n" + body
    )


@attrs.define
class Seen:
    """
    What an upstream received.
    """

    method: bytes
    uri: bytes
    headers: Headers
    body: bytes


class RecordingUpstream(Resource):
    """
    An upstream that records each request and answers with C{answer}, a
    function of the request returning bytes or NOT_DONE_YET.
    """

    isLeaf = True

    def __init__(self, answer: Any = None) -> None:
        super().__init__()
        self.seen: List[Seen] = []
        self.pending: List[IRequest] = []
        self._answer = answer

    def render(self, request: IRequest) -> Any:
        self.seen.append(
            Seen(request.method, request.uri, request.requestHeaders.copy(), request.content.read())
        )
        if self._answer is None:
            request.setHeader(b"content-type", b"application/json")
            return b'{"ok":true}'
        result = self._answer(request)
        if result is NOT_DONE_YET:
            self.pending.append(request)
        return result
