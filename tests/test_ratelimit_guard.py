"""
The rate limiter in the gateway's chain, in memory with a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from qeetgw.ratelimit.guard import RateLimiter, RateLimitGuard
from qeetgw.ratelimit.store import Budget, IRateLimitStore, StoreState, StoreUnavailable
from tests.gateway import MemoryGateway, token
from tests.memory import get

OPEN = {"REQUIRE_AUTH": "false"}


def other_peer(last: int) -> IPv4Address:
    return IPv4Address("TCP", f"198.51.100.{last}", 5000)


class LimitTests(SynchronousTestCase):
    """
    RATE_LIMIT_MAX requests per RATE_LIMIT_WINDOW_MS, then 429.
    """

    def setUp(self) -> None:
        self.gateway = MemoryGateway({**OPEN, "RATE_LIMIT_MAX": "2", "RATE_LIMIT_WINDOW_MS": "10000",
                                      "RATE_LIMIT_MESSAGE": "Slow down."})

    def test_headers_then_429(self) -> None:
        first = self.gateway.send(get(b"/api/v1/products"))
        self.assertEqual(
            [(name, first.header(name)) for name in
             [b"ratelimit-policy", b"ratelimit-limit", b"ratelimit-remaining", b"ratelimit-reset"]],
            [(b"ratelimit-policy", b"2;w=10"), (b"ratelimit-limit", b"2"),
             (b"ratelimit-remaining", b"1"), (b"ratelimit-reset", b"10")],
        )
        self.gateway.clock.advance(3.5)
        second = self.gateway.send(get(b"/api/v1/products"))
        self.assertEqual((second.code, second.header(b"ratelimit-remaining"), second.header(b"ratelimit-reset")),
                         (200, b"0", b"7"))
        third = self.gateway.send(get(b"/api/v1/products", b"X-Correlation-ID: rl-1\r\n"))
        self.assertEqual(third.code, 429)
        self.assertEqual(third.header(b"retry-after"), b"7")
        self.assertEqual(
            third.json(),
            {"success": False, "error": {"message": "Slow down.", "code": "TOO_MANY_REQUESTS", "correlationId": "rl-1"}},
        )
        self.assertEqual(len(self.gateway.upstream.seen), 2)

    def test_window_ends(self) -> None:
        for _ in range(3):
            self.gateway.send(get(b"/api/v1/products"))
        self.gateway.clock.advance(10)
        response = self.gateway.send(get(b"/api/v1/products"))
        self.assertEqual((response.code, response.header(b"ratelimit-remaining")), (200, b"1"))

    def test_refused_requests_count_too(self) -> None:
        for _ in range(4):
            self.gateway.send(get(b"/api/v1/products"))
        self.gateway.clock.advance(9.9)
        self.assertEqual(self.gateway.send(get(b"/api/v1/products")).code, 429)

    def test_clients_counted_apart(self) -> None:
        for _ in range(3):
            self.gateway.send(get(b"/api/v1/products"))
        self.assertEqual(self.gateway.send(get(b"/api/v1/products"), other_peer(2)).code, 200)

    def test_own_endpoints_and_preflights_not_limited(self) -> None:
        for _ in range(5):
            health = self.gateway.send(get(b"/health"))
            preflight = self.gateway.send(get(b"/api/v1/orders", b"Origin: http://localhost:3000\r\n"
                                                 b"Access-Control-Request-Method: POST\r\n", method=b"OPTIONS"))
        self.assertEqual((health.code, preflight.code), (200, 204))
        self.assertIsNone(health.header(b"ratelimit-limit"))
        self.assertEqual(self.gateway.send(get(b"/api/v1/products")).header(b"ratelimit-remaining"), b"1")

    def test_401s_are_counted_and_carry_headers(self) -> None:
        gateway = MemoryGateway({"RATE_LIMIT_MAX": "1"})
        first = gateway.send(get(b"/api/v1/users/me"))
        self.assertEqual((first.code, first.header(b"ratelimit-remaining")), (401, b"0"))
        self.assertEqual(gateway.send(get(b"/api/v1/users/me")).code, 429)


class KeyTests(SynchronousTestCase):
    """
    RATE_LIMIT_KEY.
    """

    def test_user_key_follows_the_subject(self) -> None:
        gateway = MemoryGateway({"RATE_LIMIT_MAX": "1", "RATE_LIMIT_KEY": "user"})
        alice = b"Authorization: Bearer " + token().encode() + b"\r\n"
        bob = b"Authorization: Bearer " + token({"sub": "bob@example.com"}).encode() + b"\r\n"
        self.assertEqual(gateway.send(get(b"/api/v1/orders", alice)).code, 200)
        # same office, another user: a budget of its own
        self.assertEqual(gateway.send(get(b"/api/v1/orders", bob)).code, 200)
        # the same user from elsewhere: the same budget
        self.assertEqual(gateway.send(get(b"/api/v1/orders", alice), other_peer(3)).code, 429)

    def test_without_a_valid_token_the_address_counts(self) -> None:
        gateway = MemoryGateway({**OPEN, "RATE_LIMIT_MAX": "1", "RATE_LIMIT_KEY": "user"})
        self.assertEqual(gateway.send(get(b"/api/v1/orders")).code, 200)
        self.assertEqual(gateway.send(get(b"/api/v1/orders")).code, 429)

    def test_ip_plus_user(self) -> None:
        gateway = MemoryGateway({"RATE_LIMIT_MAX": "1", "RATE_LIMIT_KEY": "ip+user"})
        alice = b"Authorization: Bearer " + token().encode() + b"\r\n"
        self.assertEqual(gateway.send(get(b"/api/v1/orders", alice)).code, 200)
        self.assertEqual(gateway.send(get(b"/api/v1/orders", alice), other_peer(3)).code, 200)
        self.assertEqual(gateway.send(get(b"/api/v1/orders", alice)).code, 429)


class RouteBudgetTests(SynchronousTestCase):
    """
    RATE_LIMIT_ROUTES.
    """

    def test_login_has_its_own_tighter_budget(self) -> None:
        gateway = MemoryGateway({"RATE_LIMIT_ROUTES": "/api/v1/auth/login=1/60000", "RATE_LIMIT_MAX": "5"})
        first = gateway.send(get(b"/api/v1/auth/login", method=b"POST"))
        self.assertEqual((first.code, first.header(b"ratelimit-policy")), (200, b"1;w=60"))
        self.assertEqual(gateway.send(get(b"/api/v1/auth/login/", method=b"POST")).code, 429)
        register = gateway.send(get(b"/api/v1/auth/register", method=b"POST"))
        self.assertEqual((register.code, register.header(b"ratelimit-remaining")), (200, b"4"))


class StyleTests(SynchronousTestCase):
    """
    RATE_LIMIT_HEADERS and RATE_LIMIT_ALGORITHM.
    """

    def test_draft_8(self) -> None:
        response = MemoryGateway({**OPEN, "RATE_LIMIT_HEADERS": "draft-8"}).send(get(b"/api/v1/products"))
        self.assertEqual(response.header(b"ratelimit-policy"), b'"1000-in-1min"; q=1000; w=60')
        self.assertEqual(response.header(b"ratelimit"), b'"1000-in-1min"; r=999; t=60')
        self.assertIsNone(response.header(b"ratelimit-limit"))

    def test_none(self) -> None:
        response = MemoryGateway({**OPEN, "RATE_LIMIT_HEADERS": "none"}).send(get(b"/api/v1/products"))
        self.assertFalse([name for name, _ in response.raw_headers if name.lower().startswith(b"ratelimit")])

    def test_sliding(self) -> None:
        gateway = MemoryGateway({**OPEN, "RATE_LIMIT_ALGORITHM": "sliding", "RATE_LIMIT_MAX": "2",
                                 "RATE_LIMIT_WINDOW_MS": "10000"})
        gateway.clock.advance(10 - gateway.clock.seconds() % 10 + 9)  # late in a window
        for _ in range(2):
            self.assertEqual(gateway.send(get(b"/api/v1/products")).code, 200)
        gateway.clock.advance(1.5)  # just into the next window: the last one still counts
        self.assertEqual(gateway.send(get(b"/api/v1/products")).code, 429)


@implementer(IRateLimitStore)
class DownStore(Service):
    """
    A store that cannot count.
    """

    def hit(self, key: str, budget: Budget, algorithm: Any) -> Deferred:
        return fail(StoreUnavailable("down"))

    def state(self) -> StoreState:
        return StoreState("redis", False, "down")


class Through(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"through"


class FailureModeTests(SynchronousTestCase):
    """
    RATE_LIMIT_FAIL when the store cannot count.
    """

    def guard(self, fail_open: bool) -> RateLimitGuard:
        limiter = RateLimiter(DownStore(), Budget("default", 1, 1000), [], "fixed", "ip")
        return RateLimitGuard(Through(), limiter, "m", "draft-6", fail_open)

    def request(self) -> DummyRequest:
        request = DummyRequest([b"api", b"v1", b"users"])
        request.uri = b"/api/v1/users"
        return request

    def test_open_lets_through_without_headers(self) -> None:
        request = self.request()
        self.assertEqual(self.guard(True).render(request), b"through")
        self.assertIsNone(request.responseHeaders.getRawHeaders(b"ratelimit-limit"))

    def test_closed_refuses_with_503(self) -> None:
        request = self.request()
        body = self.guard(False).render(request)
        self.assertEqual(request.responseCode, 503)
        self.assertIn(b'"SERVICE_UNAVAILABLE"', body)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"1"])

    def test_health_reports_the_store(self) -> None:
        gateway = MemoryGateway(OPEN)
        # the in-memory upstream answers every health path
        response = gateway.send(get(b"/health/services"))
        self.assertEqual(response.json()["rateLimit"], {"store": "memory", "status": "healthy", "detail": "0 keys"})
