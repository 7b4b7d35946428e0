"""
The security chain end to end in memory: JWT, public paths, identity
headers, CORS, security headers, trusted proxies.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.cors import EXPOSED_HEADERS
from tests.gateway import MemoryGateway, token
from tests.memory import get, with_body
from tests.test_headers import EXPECTED as HELMET


def bearer(value: str, scheme: str = "Bearer") -> bytes:
    return b"Authorization: " + scheme.encode() + b" " + value.encode() + b"\r\n"


class JWTTests(SynchronousTestCase):
    """
    /api/* asks for a valid token.
    """

    def setUp(self) -> None:
        self.gateway = MemoryGateway()

    def test_no_token_is_401_with_bearer_challenge(self) -> None:
        response = self.gateway.send(get(b"/api/v1/users/me", b"X-Correlation-ID: t-1\r\n"))
        self.assertEqual(response.code, 401)
        self.assertEqual(response.header(b"www-authenticate"), b"Bearer")
        self.assertEqual(
            response.json(),
            {"success": False, "error": {"message": "Authentication required", "code": "UNAUTHORIZED", "correlationId": "t-1"}},
        )
        self.assertEqual(self.gateway.upstream.seen, [])

    def test_bad_token_is_401_invalid_token(self) -> None:
        for bad in [token(key=b"x" * 32), token({"exp": 1_700_000_000}), "not.a.token", token({"iss": "http://evil"})]:
            response = self.gateway.send(get(b"/api/v1/users/me", bearer(bad)))
            self.assertEqual(response.code, 401, bad)
            self.assertEqual(response.header(b"www-authenticate"), b'Bearer error="invalid_token"')
            self.assertEqual(response.json()["error"]["message"], "Invalid or expired token")
        self.assertEqual(self.gateway.upstream.seen, [])

    def test_refresh_token_refused(self) -> None:
        response = self.gateway.send(get(b"/api/v1/orders", bearer(token({"tokenType": "refresh"}))))
        self.assertEqual(response.code, 401)

    def test_valid_token_passes_with_identity(self) -> None:
        good = token()
        response = self.gateway.send(get(b"/api/v1/users/me", bearer(good)))
        self.assertEqual(response.code, 200)
        headers = self.gateway.upstream.seen[0].headers
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer " + good.encode()])
        self.assertEqual(headers.getRawHeaders(b"x-user-id"), [b"42"])
        self.assertEqual(headers.getRawHeaders(b"x-user-email"), [b"alice@example.com"])
        self.assertEqual(headers.getRawHeaders(b"x-user-role"), [b"USER"])

    def test_bearer_scheme_case_insensitive(self) -> None:
        for scheme in ["bearer", "BEARER", "BeArEr"]:
            self.assertEqual(self.gateway.send(get(b"/api/v1/users/me", bearer(token(), scheme))).code, 200)

    def test_other_schemes_are_no_token(self) -> None:
        response = self.gateway.send(get(b"/api/v1/users/me", bearer("dXNlcjpwYXNz", "Basic")))
        self.assertEqual((response.code, response.header(b"www-authenticate")), (401, b"Bearer"))

    def test_spoofed_identity_headers_removed_everywhere(self) -> None:
        spoof = b"X-User-Id: 1\r\nX-User-Role: ADMIN\r\nX-User-Email: boss@example.com\r\n"
        self.gateway.send(get(b"/api/v1/auth/login", spoof))
        self.gateway.send(get(b"/api/v1/users/me", spoof + bearer(token({"role": None, "userId": None}))))
        first, second = self.gateway.upstream.seen
        for name in [b"x-user-id", b"x-user-role", b"x-user-email"]:
            self.assertIsNone(first.headers.getRawHeaders(name), name)
        self.assertIsNone(second.headers.getRawHeaders(b"x-user-role"))
        self.assertEqual(second.headers.getRawHeaders(b"x-user-id"), [b"alice@example.com"])

    def test_public_paths_need_no_token(self) -> None:
        for path in [b"/api/v1/auth/login", b"/api/v1/auth/login/", b"/api/v1/auth/register",
                     b"/api/v1/auth/refresh-token", b"/api/v1/auth/logout", b"/api/v1/auth/login?next=/x"]:
            self.assertEqual(self.gateway.send(get(path, method=b"POST")).code, 200, path)

    def test_lookalike_paths_are_not_public(self) -> None:
        for path in [b"/api/v1/auth/loginX", b"/api/v1/auth/login-anything", b"/api/v1/auth/login/x",
                     b"/api/v1/auth/login%2Fme", b"/api/v1/auth//login", b"/api/v1/auth/%6Cogin"]:
            self.assertEqual(self.gateway.send(get(path)).code, 401, path)

    def test_dot_segment_tricks_are_400(self) -> None:
        for path in [b"/api/v1/auth/login/../me", b"/api/v1/auth/login%2F..%2Fme", b"/api/v1/auth/login/%2e%2e/me"]:
            response = self.gateway.send(get(path))
            self.assertEqual((path, response.code), (path, 400))
        self.assertEqual(self.gateway.upstream.seen, [])


class OptionalAuthTests(SynchronousTestCase):
    """
    REQUIRE_AUTH=false.
    """

    def setUp(self) -> None:
        self.gateway = MemoryGateway({"REQUIRE_AUTH": "false"})

    def test_tokenless_passes(self) -> None:
        self.assertEqual(self.gateway.send(get(b"/api/v1/products")).code, 200)

    def test_a_sent_token_is_still_verified(self) -> None:
        response = self.gateway.send(get(b"/api/v1/products", bearer(token(key=b"y" * 32))))
        self.assertEqual(response.code, 401)
        self.assertEqual(self.gateway.send(get(b"/api/v1/products", bearer(token()))).code, 200)


ALLOWED = b"Origin: http://localhost:3000\r\n"


class CORSChainTests(SynchronousTestCase):
    """
    CORS in the chain: above the JWT guard.
    """

    def setUp(self) -> None:
        self.gateway = MemoryGateway({"CORS_CREDENTIALS": "true"})

    def test_preflight_needs_no_token_and_is_not_forwarded(self) -> None:
        response = self.gateway.send(
            get(b"/api/v1/orders", ALLOWED + b"Access-Control-Request-Method: POST\r\n"
                b"Access-Control-Request-Headers: authorization,content-type\r\n", method=b"OPTIONS")
        )
        self.assertEqual(response.code, 204)
        self.assertEqual(response.header(b"access-control-allow-origin"), b"http://localhost:3000")
        self.assertEqual(response.header(b"access-control-allow-credentials"), b"true")
        self.assertEqual(response.header(b"access-control-allow-methods"), b"GET,HEAD,PUT,PATCH,POST,DELETE")
        self.assertEqual(response.header(b"access-control-allow-headers"), b"authorization,content-type")
        self.assertEqual(response.header(b"access-control-max-age"), b"600")
        self.assertEqual(self.gateway.upstream.seen, [])

    def test_errors_carry_cors_headers_for_allowed_origins(self) -> None:
        response = self.gateway.send(get(b"/api/v1/orders", ALLOWED))
        self.assertEqual(response.code, 401)
        self.assertEqual(response.header(b"access-control-allow-origin"), b"http://localhost:3000")
        self.assertIn(b"X-Correlation-ID", response.header(b"access-control-expose-headers"))

    def test_disallowed_origin_is_served_without_cors_headers(self) -> None:
        response = self.gateway.send(get(b"/api/v1/orders", b"Origin: https://evil.example\r\n" + bearer(token())))
        self.assertEqual(response.code, 200)
        self.assertFalse([name for name, _ in response.raw_headers if name.lower().startswith(b"access-control-")])

    def test_vary_joined_with_the_upstreams(self) -> None:
        def varying(request: Any) -> bytes:
            request.setHeader(b"vary", b"Accept-Encoding")
            return b"{}"

        gateway = MemoryGateway({"REQUIRE_AUTH": "false"}, answer=varying)
        response = gateway.send(get(b"/api/v1/products", ALLOWED))
        self.assertEqual(response.headers.getRawHeaders(b"vary"), [b"Origin, Accept-Encoding"])

    def test_vary_origin_is_merged_not_repeated(self) -> None:
        def varying(request: Any) -> bytes:
            request.setHeader(b"vary", b"origin, Accept")
            return b"{}"

        gateway = MemoryGateway({"REQUIRE_AUTH": "false"}, answer=varying)
        response = gateway.send(get(b"/api/v1/products", ALLOWED))
        self.assertEqual(response.headers.getRawHeaders(b"vary"), [b"Origin, Accept"])


def permissive(request: Any) -> bytes:
    """
    An upstream with CORS of its own: any origin, with credentials.
    """
    request.setHeader(b"access-control-allow-origin", b"*")
    request.setHeader(b"access-control-allow-credentials", b"true")
    request.setHeader(b"Access-Control-Expose-Headers", b"X-Secret")
    request.setHeader(b"vary", b"Accept-Encoding")
    return b"{}"


class GatewayOwnsCORSTests(SynchronousTestCase):
    """
    An upstream's Access-Control-* fields never reach the client: the
    gateway's answer for the request's Origin stands.
    """

    def setUp(self) -> None:
        self.gateway = MemoryGateway({"REQUIRE_AUTH": "false"}, answer=permissive)

    def cors_fields(self, response: Any) -> list:
        return sorted(
            (name.lower(), value)
            for name, value in response.raw_headers
            if name.lower().startswith(b"access-control-")
        )

    def test_refused_origin_gets_no_cors_field(self) -> None:
        response = self.gateway.send(get(b"/api/v1/products", b"Origin: https://evil.example\r\n"))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.cors_fields(response), [])
        self.assertEqual(response.headers.getRawHeaders(b"vary"), [b"Origin, Accept-Encoding"])

    def test_allowed_origin_gets_the_gateways_answer(self) -> None:
        response = self.gateway.send(get(b"/api/v1/products", ALLOWED))
        self.assertEqual(
            self.cors_fields(response),
            [
                (b"access-control-allow-origin", b"http://localhost:3000"),
                (b"access-control-expose-headers", EXPOSED_HEADERS),
            ],
        )

    def test_no_origin_gets_no_cors_field(self) -> None:
        response = self.gateway.send(get(b"/api/v1/products"))
        self.assertEqual(self.cors_fields(response), [])

    def test_any_origin_configured_is_still_the_gateways_answer(self) -> None:
        gateway = MemoryGateway({"REQUIRE_AUTH": "false", "CORS_ORIGINS": "*"}, answer=permissive)
        response = gateway.send(get(b"/api/v1/products", b"Origin: https://shop.example\r\n"))
        # "*" without credentials: the upstream's Allow-Credentials is gone.
        self.assertEqual(
            self.cors_fields(response),
            [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-expose-headers", EXPOSED_HEADERS),
            ],
        )


class SecurityHeaderChainTests(SynchronousTestCase):
    """
    helmet's headers on every kind of response, and nothing naming the
    server.
    """

    def check(self, response: Any) -> None:
        got = {name.lower(): value for name, value in response.raw_headers}
        for name, value in HELMET.items():
            self.assertEqual(got.get(name), value, name)
        self.assertNotIn(b"server", got)
        self.assertNotIn(b"x-powered-by", got)

    def test_everywhere(self) -> None:
        gateway = MemoryGateway({"REQUIRE_AUTH": "false", "JSON_BODY_LIMIT": "10b"})
        for raw, code in [
            (get(b"/api/v1/products"), 200),
            (get(b"/health"), 200),
            (get(b"/nothing"), 404),
            (get(b"/api/v1/nothing"), 404),
            (get(b"/api/v1/a/../b"), 400),
            (with_body(b"POST", b"/api/v1/orders", b"x" * 11), 413),
        ]:
            response = gateway.send(raw)
            self.assertEqual(response.code, code, raw)
            self.check(response)

    def test_on_401(self) -> None:
        self.check(MemoryGateway().send(get(b"/api/v1/products")))


class TrustedProxyTests(SynchronousTestCase):
    """
    TRUST_PROXY decides the client address and what X-Forwarded-* go on.
    """

    def test_untrusted_forwarded_for_is_extended_not_believed(self) -> None:
        gateway = MemoryGateway({"REQUIRE_AUTH": "false"})
        gateway.send(get(b"/api/v1/products", b"X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"))
        headers = gateway.upstream.seen[0].headers
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-for"), [b"1.2.3.4, 203.0.113.9"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"http"])

    def test_trusted_ingress_passes_proto_on(self) -> None:
        gateway = MemoryGateway({"REQUIRE_AUTH": "false", "TRUST_PROXY": "10.0.0.0/8"})
        ingress = IPv4Address("TCP", "10.1.1.1", 4444)
        gateway.send(get(b"/api/v1/products", b"X-Forwarded-For: 198.51.100.2\r\nX-Forwarded-Proto: https\r\n"), ingress)
        headers = gateway.upstream.seen[0].headers
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"https"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-for"), [b"198.51.100.2, 10.1.1.1"])

    def test_access_log_names_the_resolved_client(self) -> None:
        from twisted.logger import globalLogPublisher

        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        gateway = MemoryGateway({"REQUIRE_AUTH": "false", "TRUST_PROXY": "1"})
        gateway.send(get(b"/api/v1/products", b"X-Forwarded-For: 1.2.3.4, 198.51.100.2\r\n"),
                     IPv4Address("TCP", "10.1.1.1", 4444))
        access = [event for event in events if event.get("log_namespace") == "qeetgw.access"]
        self.assertEqual([event["client_ip"] for event in access], ["198.51.100.2"])
