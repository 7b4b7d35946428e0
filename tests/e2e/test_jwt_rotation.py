"""
A JWT key rotation on a real gateway: C{twistd qeetgw} as a child process
with JWT_SECRET=new and JWT_PREVIOUS_SECRETS=old, on loopback sockets.
Tokens signed with either key reach the upstream, one signed with a third
key is refused; the JSON access lines and a scrape of METRICS_PORT say
which key verified each.
"""

from __future__ import annotations

import base64
import time
from typing import Any, List

import jwt
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from tests.e2e.support import (
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    spawn_gateway,
    wait_for,
)
from tests.e2e.test_metrics import parse
from tests.gateway import ISSUER

#: The key rotated to, given as base64 (JWT_SECRET).
NEW_KEY = bytes(range(7, 55))
NEW_SECRET = base64.b64encode(NEW_KEY).decode("ascii")
#: The key rotated from, given as text (JWT_PREVIOUS_SECRETS).
OLD_SECRET = "the-old-secret-the-auth-service-signed-with"
OLD_KEY = OLD_SECRET.encode("utf-8")
#: A key the gateway does not know.
THIRD_KEY = b"a-key-nobody-gave-the-gateway-at-all!"


def live_token(key: bytes, user: str) -> bytes:
    """
    An Authorization header with a token signed with C{key}, valid now by
    the wall clock the gateway uses in service.
    """
    now = int(time.time())
    claims = {"sub": user, "userId": 7, "role": "USER", "tokenType": "access",
              "iss": ISSUER, "iat": now, "exp": now + 900}
    return b"Authorization: Bearer " + jwt.encode(claims, key, algorithm="HS256").encode() + b"\r\n"


class _Counting(Resource):
    """
    An upstream that answers 200 and remembers who reached it.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.users: List[bytes] = []

    def render(self, request: Any) -> bytes:
        self.users.append(request.getHeader(b"x-user-email") or b"")
        request.setHeader(b"content-type", b"application/json")
        return b'{"ok":true}'


class RotationEndToEndTests(TestCase):
    """
    Both keys accepted during the rotation, and told apart.
    """

    timeout = 60

    @inlineCallbacks
    def test_old_and_new_keys_accepted_and_told_apart(self) -> Any:
        upstream = _Counting()
        env = gateway_environment(
            listen_upstream(self, upstream),
            REQUIRE_AUTH="true",
            JWT_SECRET=NEW_SECRET,
            JWT_PREVIOUS_SECRETS=OLD_SECRET,
            METRICS_PORT="tcp:0:interface=127.0.0.1",
        )
        process = spawn_gateway(self, env)
        port = yield process.port
        yield wait_for(lambda: process.logged("qeetgw.metrics", "metrics on"), "the metrics port")
        [listening] = process.logged("qeetgw.metrics", "metrics on")

        # Every series is there at 0 before any token.
        before = yield fetch(listening["port"], request(b"GET", b"/metrics"))
        samples = parse(before.body)
        for label in ("current", "previous-1"):
            self.assertEqual(samples[("qeetgw_jwt_verified_total", frozenset({("key", label)}))], 0)

        sent = [
            (OLD_KEY, "old@example.com"),
            (NEW_KEY, "new@example.com"),
            (OLD_KEY, "old@example.com"),
            (THIRD_KEY, "third@example.com"),
        ]
        codes = []
        for key, user in sent:
            response = yield fetch(
                port, request(b"GET", b"/api/v1/orders/1", headers=live_token(key, user))
            )
            codes.append(response.code)
        self.assertEqual(codes, [200, 200, 200, 401])
        self.assertEqual(
            upstream.users, [b"old@example.com", b"new@example.com", b"old@example.com"]
        )

        yield wait_for(lambda: len(process.logged("qeetgw.access")) == 4, "4 access lines")
        self.assertEqual(
            [(line["status"], line["jwt_key"]) for line in process.logged("qeetgw.access")],
            [(200, "previous-1"), (200, "current"), (200, "previous-1"), (401, None)],
        )

        scraped = yield fetch(listening["port"], request(b"GET", b"/metrics"))
        samples = parse(scraped.body)
        self.assertEqual(
            samples[("qeetgw_jwt_verified_total", frozenset({("key", "previous-1")}))], 2
        )
        self.assertEqual(samples[("qeetgw_jwt_verified_total", frozenset({("key", "current")}))], 1)
        self.assertEqual(
            samples[("qeetgw_auth_failures_total", frozenset({("reason", "bad_signature")}))], 1
        )

        # The start-up log describes each key, never shows one.
        [previous] = process.logged("qeetgw.site", "JWT_PREVIOUS_SECRETS item 1")
        self.assertEqual(
            (previous["key_label"], previous["reading"], previous["key_bytes"]),
            ("previous-1", "text", len(OLD_KEY)),
        )
        for secret in (NEW_SECRET, OLD_SECRET):
            self.assertNotIn(secret, process.text())
