"""
The bytes on the wire of the gateway's everyday answers — a proxied 200, a
401, a 429, 404s, a 400, a CORS preflight, draft-8 rate-limit headers with
any origin — pinned whole, head and body: the fields encoded once
(L{qeetgw.fields}) and the envelope built from its parts must give exactly
the bytes C{setRawHeaders} and the general JSON encoder gave.  (The pins
were taken from the gateway before those changes; only the Date field and
made correlation ids are masked.)
"""

from __future__ import annotations

import re
from typing import Dict

from twisted.trial.unittest import SynchronousTestCase

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


_GOLDEN = {
    'ok': (
        b'HTTP/1.1 200 OK\r\n'
        b'Date: (masked)\r\n'
        b'X-Correlation-Id: wire-test-1\r\n'
        b"Content-Security-Policy: default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests\r\n"
        b'Cross-Origin-Opener-Policy: same-origin\r\n'
        b'Cross-Origin-Resource-Policy: same-origin\r\n'
        b'Origin-Agent-Cluster: ?1\r\n'
        b'Referrer-Policy: no-referrer\r\n'
        b'Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n'
        b'X-Content-Type-Options: nosniff\r\n'
        b'X-Dns-Prefetch-Control: off\r\n'
        b'X-Download-Options: noopen\r\n'
        b'X-Frame-Options: SAMEORIGIN\r\n'
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
        b"Content-Security-Policy: default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests\r\n"
        b'Cross-Origin-Opener-Policy: same-origin\r\n'
        b'Cross-Origin-Resource-Policy: same-origin\r\n'
        b'Origin-Agent-Cluster: ?1\r\n'
        b'Referrer-Policy: no-referrer\r\n'
        b'Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n'
        b'X-Content-Type-Options: nosniff\r\n'
        b'X-Dns-Prefetch-Control: off\r\n'
        b'X-Download-Options: noopen\r\n'
        b'X-Frame-Options: SAMEORIGIN\r\n'
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
        b'HTTP/1.1 429 Unknown Status\r\n'
        b'Date: (masked)\r\n'
        b'X-Correlation-Id: wire-test-1\r\n'
        b"Content-Security-Policy: default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests\r\n"
        b'Cross-Origin-Opener-Policy: same-origin\r\n'
        b'Cross-Origin-Resource-Policy: same-origin\r\n'
        b'Origin-Agent-Cluster: ?1\r\n'
        b'Referrer-Policy: no-referrer\r\n'
        b'Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n'
        b'X-Content-Type-Options: nosniff\r\n'
        b'X-Dns-Prefetch-Control: off\r\n'
        b'X-Download-Options: noopen\r\n'
        b'X-Frame-Options: SAMEORIGIN\r\n'
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
        b"Content-Security-Policy: default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests\r\n"
        b'Cross-Origin-Opener-Policy: same-origin\r\n'
        b'Cross-Origin-Resource-Policy: same-origin\r\n'
        b'Origin-Agent-Cluster: ?1\r\n'
        b'Referrer-Policy: no-referrer\r\n'
        b'Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n'
        b'X-Content-Type-Options: nosniff\r\n'
        b'X-Dns-Prefetch-Control: off\r\n'
        b'X-Download-Options: noopen\r\n'
        b'X-Frame-Options: SAMEORIGIN\r\n'
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
        b"Content-Security-Policy: default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests\r\n"
        b'Cross-Origin-Opener-Policy: same-origin\r\n'
        b'Cross-Origin-Resource-Policy: same-origin\r\n'
        b'Origin-Agent-Cluster: ?1\r\n'
        b'Referrer-Policy: no-referrer\r\n'
        b'Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n'
        b'X-Content-Type-Options: nosniff\r\n'
        b'X-Dns-Prefetch-Control: off\r\n'
        b'X-Download-Options: noopen\r\n'
        b'X-Frame-Options: SAMEORIGIN\r\n'
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
        b"Content-Security-Policy: default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests\r\n"
        b'Cross-Origin-Opener-Policy: same-origin\r\n'
        b'Cross-Origin-Resource-Policy: same-origin\r\n'
        b'Origin-Agent-Cluster: ?1\r\n'
        b'Referrer-Policy: no-referrer\r\n'
        b'Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n'
        b'X-Content-Type-Options: nosniff\r\n'
        b'X-Dns-Prefetch-Control: off\r\n'
        b'X-Download-Options: noopen\r\n'
        b'X-Frame-Options: SAMEORIGIN\r\n'
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
        b"Content-Security-Policy: default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests\r\n"
        b'Cross-Origin-Opener-Policy: same-origin\r\n'
        b'Cross-Origin-Resource-Policy: same-origin\r\n'
        b'Origin-Agent-Cluster: ?1\r\n'
        b'Referrer-Policy: no-referrer\r\n'
        b'Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n'
        b'X-Content-Type-Options: nosniff\r\n'
        b'X-Dns-Prefetch-Control: off\r\n'
        b'X-Download-Options: noopen\r\n'
        b'X-Frame-Options: SAMEORIGIN\r\n'
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


class WireBytesTests(SynchronousTestCase):
    """
    Each everyday answer is byte for byte what it was.
    """

    def test_every_answer_is_unchanged(self) -> None:
        answers = _exchanges()
        self.assertEqual(sorted(answers), sorted(_GOLDEN))
        for name, expected in _GOLDEN.items():
            self.assertEqual(answers[name], expected, name)
