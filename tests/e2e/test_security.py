"""
The security chain on real loopback sockets.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.e2e.support import fetch, gateway_environment, listen_upstream, request, start_gateway
from tests.e2e.upstreams import ScriptedUpstream
from tests.gateway import ISSUER, KEY, SECRET
from tests.test_headers import EXPECTED as HELMET


def live_token(**claims: Any) -> str:
    """
    A token valid now, by the wall clock the gateway uses in service.
    """
    now = int(time.time())
    payload = {"sub": "bob@example.com", "userId": 7, "role": "ADMIN", "tokenType": "access",
               "iss": ISSUER, "iat": now, "exp": now + 900, **claims}
    return jwt.encode(payload, KEY, algorithm="HS256")


class SecurityEndToEndTests(TestCase):
    """
    JWT, CORS and security headers through real sockets.
    """

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.upstream = ScriptedUpstream()
        env = gateway_environment(listen_upstream(self, self.upstream), REQUIRE_AUTH="true", JWT_SECRET=SECRET)
        _, self.port = yield start_gateway(self, env)

    @inlineCallbacks
    def test_token_checked_and_identity_forwarded(self) -> Any:
        refused = yield fetch(self.port, request(b"GET", b"/api/v1/orders/echo"))
        self.assertEqual((refused.code, refused.header(b"www-authenticate")), (401, b"Bearer"))
        headers = b"Authorization: Bearer " + live_token().encode() + b"\r\nX-User-Role: USER\r\n"
        allowed = yield fetch(self.port, request(b"GET", b"/api/v1/orders/echo", headers=headers))
        self.assertEqual(allowed.code, 200)
        seen = allowed.json()["headers"]
        self.assertEqual((seen["x-user-id"], seen["x-user-email"], seen["x-user-role"]),
                         (["7"], ["bob@example.com"], ["ADMIN"]))
        expired = yield fetch(self.port, request(
            b"GET", b"/api/v1/orders/echo",
            headers=b"Authorization: Bearer " + live_token(exp=int(time.time()) - 5).encode() + b"\r\n"))
        self.assertEqual(expired.header(b"www-authenticate"), b'Bearer error="invalid_token"')

    @inlineCallbacks
    def test_preflight_and_headers(self) -> Any:
        preflight = yield fetch(self.port, request(
            b"OPTIONS", b"/api/v1/orders",
            headers=b"Origin: http://localhost:3001\r\nAccess-Control-Request-Method: DELETE\r\n"))
        self.assertEqual(preflight.code, 204)
        self.assertEqual(preflight.header(b"access-control-allow-origin"), b"http://localhost:3001")
        self.assertEqual(self.upstream.seen, [])
        proxied = yield fetch(self.port, request(
            b"GET", b"/api/v1/auth/login", headers=b"Origin: https://evil.example\r\n"))
        self.assertEqual(proxied.code, 200)
        got = {name.lower(): value for name, value in proxied.raw_headers}
        for name, value in HELMET.items():
            self.assertEqual(got.get(name), value, name)
        self.assertNotIn(b"access-control-allow-origin", got)
        self.assertNotIn(b"server", got)
