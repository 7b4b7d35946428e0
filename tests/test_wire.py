"""
The bytes on the wire of the gateway's everyday answers — a proxied 200, a
401, a 429, 404s, a 400, a CORS preflight, draft-8 rate-limit headers with
any origin — pinned whole, head and body: the fields encoded once
(L{qeetgw.fields}) and the envelope built from its parts must give exactly
the bytes C{setRawHeaders} and the general JSON encoder gave; and so must
the fields of a proxied exchange, both ways.  (The pins
were taken from the gateway before those changes; only the Date field and
made correlation ids are masked.)
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from tests.gateway import MemoryGateway, token
from tests.memory import Connection, get


def _raw(gateway: MemoryGateway, request: bytes) -> bytes:
    """
    The raw bytes C{gateway} answers C{request} with, Date and made ids masked.
    """
    connection = Connection(gateway.gateway.site)
    connection.send(request)
    gateway.agent.flush()
    value = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: (masked)", connection.transport.value())
    return re.sub(rb"req-[0-9a-f-]{36}", b"req-(masked)", value)


def _exchanges() -> Dict[str, bytes]:
    cid = b"X-Correlation-ID: wire-test-1\r\n"
    origin = b"Origin: http://localhost:3000\r\n"
    auth = b"Authorization: Bearer " + token().encode() + b"\r\n"
    out = {}
    gw = MemoryGateway({"RATE_LIMIT_MAX": "2"})
    out["ok"] = _raw(gw, get(b"/api/v1/users/1", cid + origin + auth))
    out["unauthorized"] = _raw(gw, get(b"/api/v1/users/1", cid + origin))
    out["limited"] = _raw(gw, get(b"/api/v1/users/1", cid + auth))
    gw = MemoryGateway()
    out["not_found"] = _raw(gw, get(b"/nowhere/a%22b", cid + b"Origin: http://evil.test\r\n"))
    out["bad_target"] = _raw(gw, get(b"/nowhere/\xe9\"x", cid))
    out["api_not_found"] = _raw(gw, get(b"/api/v1/nothing", origin + auth))
    out["preflight"] = _raw(
        gw,
        get(
            b"/api/v1/users/1",
            cid + origin + b"Access-Control-Request-Method: PUT\r\n"
            b"Access-Control-Request-Headers: authorization, x-custom\r\n",
            method=b"OPTIONS",
        ),
    )
    gw = MemoryGateway({"RATE_LIMIT_HEADERS": "draft-8", "CORS_ORIGINS": "*", "CORS_CREDENTIALS": "false"})
    out["draft8_any_origin"] = _raw(gw, get(b"/api/v1/products/2?q=1", origin + auth))
    return out


#: The helmet fields every answer carries, up to X-Frame-Options (whose
#: value differs between the gateway's own answers and proxied ones).
_HELMET_FIELDS = (
        b"Content-Security-Policy: default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests\r\n"
        b'Cross-Origin-Opener-Policy: same-origin\r\n'
        b'Cross-Origin-Resource-Policy: same-origin\r\n'
        b'Origin-Agent-Cluster: ?1\r\n'
        b'Referrer-Policy: no-referrer\r\n'
        b'Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n'
        b'X-Content-Type-Options: nosniff\r\n'
        b'X-Dns-Prefetch-Control: off\r\n'
        b'X-Download-Options: noopen\r\n'
)


_GOLDEN = {
    'ok': (
        b'HTTP/1.1 200 OK\r\n'
        b'Date: (masked)\r\n'
        b'X-Correlation-Id: wire-test-1\r\n'
        + _HELMET_FIELDS
        + b'X-Frame-Options: SAMEORIGIN\r\n'
        b'X-Permitted-Cross-Domain-Policies: none\r\n'
        b'X-XSS-Protection: 0\r\n'
        b'Vary: Origin\r\n'
        b'Access-Control-Allow-Origin: http://localhost:3000\r\n'
        b'Access-Control-Expose-Headers: X-Correlation-ID, RateLimit, RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After\r\n'
        b'Ratelimit-Policy: 2;w=60\r\n'
        b'Ratelimit-Limit: 2\r\n'
        b'Ratelimit-Remaining: 1\r\n'
        b'Ratelimit-Reset: 60\r\n'
        b'Content-Type: application/json\r\n'
        b'Content-Length: 11\r\n'
        b'\r\n'
        b'{"ok":true}'
    ),
    'unauthorized': (
        b'HTTP/1.1 401 Unauthorized\r\n'
        b'Date: (masked)\r\n'
        b'X-Correlation-Id: wire-test-1\r\n'
        + _HELMET_FIELDS
        + b'X-Frame-Options: SAMEORIGIN\r\n'
        b'X-Permitted-Cross-Domain-Policies: none\r\n'
        b'X-XSS-Protection: 0\r\n'
        b'Vary: Origin\r\n'
        b'Access-Control-Allow-Origin: http://localhost:3000\r\n'
        b'Access-Control-Expose-Headers: X-Correlation-ID, RateLimit, RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After\r\n'
        b'Ratelimit-Policy: 2;w=60\r\n'
        b'Ratelimit-Limit: 2\r\n'
        b'Ratelimit-Remaining: 0\r\n'
        b'Ratelimit-Reset: 60\r\n'
        b'WWW-Authenticate: Bearer\r\n'
        b'Content-Type: application/json; charset=utf-8\r\n'
        b'Content-Length: 115\r\n'
        b'\r\n'
        b'{"success":false,"error":{"message":"Authentication required","code":"UNAUTHORIZED","correlationId":"wire-test-1"}}'
    ),
    'limited': (
        b'HTTP/1.1 429 Too Many Requests\r\n'
        b'Date: (masked)\r\n'
        b'X-Correlation-Id: wire-test-1\r\n'
        + _HELMET_FIELDS
        + b'X-Frame-Options: SAMEORIGIN\r\n'
        b'X-Permitted-Cross-Domain-Policies: none\r\n'
        b'X-XSS-Protection: 0\r\n'
        b'Vary: Origin\r\n'
        b'Ratelimit-Policy: 2;w=60\r\n'
        b'Ratelimit-Limit: 2\r\n'
        b'Ratelimit-Remaining: 0\r\n'
        b'Ratelimit-Reset: 60\r\n'
        b'Retry-After: 60\r\n'
        b'Content-Type: application/json; charset=utf-8\r\n'
        b'Content-Length: 152\r\n'
        b'\r\n'
        b'{"success":false,"error":{"message":"Too many requests from this IP, please try again later.","code":"TOO_MANY_REQUESTS","correlationId":"wire-test-1"}}'
    ),
    'not_found': (
        b'HTTP/1.1 404 Not Found\r\n'
        b'Date: (masked)\r\n'
        b'X-Correlation-Id: wire-test-1\r\n'
        + _HELMET_FIELDS
        + b'X-Frame-Options: SAMEORIGIN\r\n'
        b'X-Permitted-Cross-Domain-Policies: none\r\n'
        b'X-XSS-Protection: 0\r\n'
        b'Vary: Origin\r\n'
        b'Content-Type: application/json; charset=utf-8\r\n'
        b'Content-Length: 123\r\n'
        b'\r\n'
        b'{"success":false,"error":{"message":"Route GET /nowhere/a%22b not found","code":"NOT_FOUND","correlationId":"wire-test-1"}}'
    ),
    'bad_target': (
        b'HTTP/1.1 400 Bad Request\r\n'
        b'Date: (masked)\r\n'
        b'Content-Type: application/json; charset=utf-8\r\n'
        b'Content-Length: 155\r\n'
        b'Connection: close\r\n'
        b'X-Correlation-ID: req-(masked)\r\n'
        b"Content-Security-Policy: default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests\r\n"
        b'Cross-Origin-Opener-Policy: same-origin\r\n'
        b'Cross-Origin-Resource-Policy: same-origin\r\n'
        b'Origin-Agent-Cluster: ?1\r\n'
        b'Referrer-Policy: no-referrer\r\n'
        b'Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n'
        b'X-Content-Type-Options: nosniff\r\n'
        b'X-DNS-Prefetch-Control: off\r\n'
        b'X-Download-Options: noopen\r\n'
        b'X-Frame-Options: SAMEORIGIN\r\n'
        b'X-Permitted-Cross-Domain-Policies: none\r\n'
        b'X-XSS-Protection: 0\r\n'
        b'\r\n'
        b'{"success":false,"error":{"message":"Bad request: malformed request line","code":"BAD_REQUEST","correlationId":"req-(masked)"}}'
    ),
    'api_not_found': (
        b'HTTP/1.1 404 Not Found\r\n'
        b'Date: (masked)\r\n'
        b'X-Correlation-Id: req-(masked)\r\n'
        + _HELMET_FIELDS
        + b'X-Frame-Options: SAMEORIGIN\r\n'
        b'X-Permitted-Cross-Domain-Policies: none\r\n'
        b'X-XSS-Protection: 0\r\n'
        b'Vary: Origin\r\n'
        b'Access-Control-Allow-Origin: http://localhost:3000\r\n'
        b'Access-Control-Expose-Headers: X-Correlation-ID, RateLimit, RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After\r\n'
        b'Ratelimit-Policy: 1000;w=60\r\n'
        b'Ratelimit-Limit: 1000\r\n'
        b'Ratelimit-Remaining: 999\r\n'
        b'Ratelimit-Reset: 60\r\n'
        b'Content-Type: application/json; charset=utf-8\r\n'
        b'Content-Length: 153\r\n'
        b'\r\n'
        b'{"success":false,"error":{"message":"Route GET /api/v1/nothing not found","code":"NOT_FOUND","correlationId":"req-(masked)"}}'
    ),
    'preflight': (
        b'HTTP/1.1 204 No Content\r\n'
        b'Date: (masked)\r\n'
        b'X-Correlation-Id: wire-test-1\r\n'
        + _HELMET_FIELDS
        + b'X-Frame-Options: SAMEORIGIN\r\n'
        b'X-Permitted-Cross-Domain-Policies: none\r\n'
        b'X-XSS-Protection: 0\r\n'
        b'Vary: Origin\r\n'
        b'Vary: Access-Control-Request-Headers\r\n'
        b'Access-Control-Allow-Origin: http://localhost:3000\r\n'
        b'Access-Control-Allow-Methods: GET,HEAD,PUT,PATCH,POST,DELETE\r\n'
        b'Access-Control-Allow-Headers: authorization, x-custom\r\n'
        b'Access-Control-Max-Age: 600\r\n'
        b'Content-Length: 0\r\n'
        b'\r\n'
        b''
    ),
    'draft8_any_origin': (
        b'HTTP/1.1 200 OK\r\n'
        b'Date: (masked)\r\n'
        b'X-Correlation-Id: req-(masked)\r\n'
        + _HELMET_FIELDS
        + b'X-Frame-Options: SAMEORIGIN\r\n'
        b'X-Permitted-Cross-Domain-Policies: none\r\n'
        b'X-XSS-Protection: 0\r\n'
        b'Access-Control-Allow-Origin: *\r\n'
        b'Access-Control-Expose-Headers: X-Correlation-ID, RateLimit, RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After\r\n'
        b'Ratelimit-Policy: "1000-in-1min"; q=1000; w=60\r\n'
        b'Ratelimit: "1000-in-1min"; r=999; t=60\r\n'
        b'Content-Type: application/json\r\n'
        b'Content-Length: 11\r\n'
        b'\r\n'
        b'{"ok":true}'
    ),
}


def _answer(request: IRequest) -> bytes:
    """
    An upstream answer with fields the gateway drops, merges and keeps.
    """
    headers = request.responseHeaders
    headers.addRawHeader(b"set-cookie", b"a=1")
    headers.addRawHeader(b"Set-Cookie", b"b=2")
    headers.setRawHeaders(b"server", [b"upstream/1"])
    headers.setRawHeaders(b"access-control-allow-origin", [b"*"])
    headers.setRawHeaders(b"vary", [b"Accept-Encoding"])
    headers.setRawHeaders(b"x-frame-options", [b"DENY"])
    headers.setRawHeaders(b"content-type", [b"text/plain; charset=\xe9"])
    headers.setRawHeaders(b"etag", [b'"v1"'])
    return b"hello"


def _proxied() -> Tuple[bytes, List[Tuple[bytes, List[bytes]]]]:
    """
    A proxied exchange: what the client receives, and the fields the
    upstream receives (the gateway's span id masked).
    """
    gateway = MemoryGateway(answer=_answer)
    credentials = token({"sub": "al\u00e9x@example.com", "role": "ADMIN", "userId": None})
    raw = _raw(
        gateway,
        get(
            b"/api/v1/users/1?x=1",
            b"X-Correlation-ID: wire-test-2\r\nOrigin: http://localhost:3000\r\n"
            b"Authorization: Bearer " + credentials.encode() + b"\r\n"
            b"Connection: keep-alive, x-hop\r\nX-Hop: 1\r\nCookie: c=1\r\n"
            b"X-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n"
            b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n",
        ),
    )
    (seen,) = gateway.upstream.seen
    span = re.compile(rb"(00-0af7651916cd43dd8448eb211c80319c-)[0-9a-f]{16}(-01)")
    fields = [
        (name, [span.sub(rb"\1(span)\2", value) for value in values])
        for name, values in seen.headers.getAllRawHeaders()
    ]
    return raw, fields


_PROXIED_RAW = b'HTTP/1.1 200 OK\r\nDate: (masked)\r\nX-Correlation-Id: wire-test-2\r\nContent-Security-Policy: default-src \'self\';base-uri \'self\';font-src \'self\' https: data:;form-action \'self\';frame-ancestors \'self\';img-src \'self\' data:;object-src \'none\';script-src \'self\';script-src-attr \'none\';style-src \'self\' https: \'unsafe-inline\';upgrade-insecure-requests\r\nCross-Origin-Opener-Policy: same-origin\r\nCross-Origin-Resource-Policy: same-origin\r\nOrigin-Agent-Cluster: ?1\r\nReferrer-Policy: no-referrer\r\nStrict-Transport-Security: max-age=31536000; includeSubDomains\r\nX-Content-Type-Options: nosniff\r\nX-Dns-Prefetch-Control: off\r\nX-Download-Options: noopen\r\nX-Frame-Options: DENY\r\nX-Permitted-Cross-Domain-Policies: none\r\nX-XSS-Protection: 0\r\nVary: Origin, Accept-Encoding\r\nAccess-Control-Allow-Origin: http://localhost:3000\r\nAccess-Control-Expose-Headers: X-Correlation-ID, RateLimit, RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After\r\nRatelimit-Policy: 1000;w=60\r\nRatelimit-Limit: 1000\r\nRatelimit-Remaining: 999\r\nRatelimit-Reset: 60\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Type: text/plain; charset=\xe9\r\nETag: "v1"\r\nContent-Length: 5\r\n\r\nhello'

# The upstream client (qeetgw/upstream/client.py) writes Host first, as RFC 9112
# 3.2 asks of a user agent, and keeps the connection alive (no Connection).
_UPSTREAM_FIELDS = [(b'Host', [b'upstream.test']), (b'Origin', [b'http://localhost:3000']), (b'Authorization', [b'Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbFx1MDBlOXhAZXhhbXBsZS5jb20iLCJyb2xlIjoiQURNSU4iLCJ0b2tlblR5cGUiOiJhY2Nlc3MiLCJpc3MiOiJodHRwOi8vbG9jYWxob3N0OjQwMDEiLCJpYXQiOjE3OTk5OTk5OTAsImV4cCI6MTgwMDAwMDkwMH0.tbJK6QjkPVA-lqKVE2se3iRh_b3fzx11IdTZtnqfIv8']), (b'Cookie', [b'c=1']), (b'X-Forwarded-For', [b'10.0.0.1, 203.0.113.9']), (b'Accept', [b'*/*']), (b'Traceparent', [b'00-0af7651916cd43dd8448eb211c80319c-(span)-01']), (b'X-User-Id', [b'al\xc3\xa9x@example.com']), (b'X-User-Email', [b'al\xc3\xa9x@example.com']), (b'X-User-Role', [b'ADMIN']), (b'X-Correlation-Id', [b'wire-test-2']), (b'X-Request-Id', [b'wire-test-2']), (b'X-Forwarded-Proto', [b'http']), (b'X-Forwarded-Host', [b'gateway.test'])]


class WireBytesTests(SynchronousTestCase):
    """
    Each everyday answer is byte for byte what it was.
    """

    def test_every_answer_is_unchanged(self) -> None:
        answers = _exchanges()
        self.assertEqual(sorted(answers), sorted(_GOLDEN))
        for name, expected in _GOLDEN.items():
            self.assertEqual(answers[name], expected, name)

    def test_proxied_exchange_is_unchanged(self) -> None:
        """
        Both ways: the fields the upstream receives (identity fields from
        the token, forwarded fields, the trace) and the response the client
        receives from the upstream's (software and CORS fields dropped,
        Vary merged, repeated fields kept).
        """
        raw, fields = _proxied()
        self.assertEqual(raw, _PROXIED_RAW)
        self.assertEqual(fields, _UPSTREAM_FIELDS)
