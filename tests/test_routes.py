"""
Tests for L{qeetgw.upstream.routes}: the route table and the path rewrite.
"""

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.config import ServiceConfig
from qeetgw.upstream.routes import Route, RouteTable


def service(name: str, prefix: str, upstream: str, url: str) -> ServiceConfig:
    return ServiceConfig(
        name=name,
        client_prefix=prefix,
        upstream_prefix=upstream,
        url=url,
        health_path="/health",
        url_variable="X_URL",
    )


USERS = service("user-service", "/api/v1/users", "/users", "http://localhost:8082")
INVENTORY = service(
    "inventory-service", "/api/v1/inventory", "/inventory", "http://inv:8080/inventory-api"
)
TABLE = RouteTable.from_services([USERS, INVENTORY])


class RouteMatchTests(SynchronousTestCase):
    """
    Prefixes match on a segment boundary only.
    """

    def test_exact_prefix(self) -> None:
        route, rest = TABLE.match(b"/api/v1/users")
        self.assertEqual((route.service, rest), (USERS, b""))

    def test_below_prefix(self) -> None:
        route, rest = TABLE.match(b"/api/v1/users/7/orders")
        self.assertEqual((route.service, rest), (USERS, b"/7/orders"))

    def test_trailing_slash(self) -> None:
        self.assertEqual(TABLE.match(b"/api/v1/users/")[1], b"/")

    def test_not_on_a_boundary(self) -> None:
        self.assertIsNone(TABLE.match(b"/api/v1/usersX"))
        self.assertIsNone(TABLE.match(b"/api/v1/users%2F7"))

    def test_no_route(self) -> None:
        for path in [b"/api/v1/nothing", b"/api/v1", b"/api/v2/users", b"/api/v1//users", b"/API/v1/users"]:
            with self.subTest(path=path):
                self.assertIsNone(TABLE.match(path))


class UpstreamUrlTests(SynchronousTestCase):
    """
    The rewrite keeps the path's bytes and the query exactly.
    """

    def test_prefix_rewritten(self) -> None:
        route, rest = TABLE.match(b"/api/v1/users/7")
        self.assertEqual(route.upstream_url(rest, None), b"http://localhost:8082/users/7")

    def test_raw_bytes_and_query_kept(self) -> None:
        route, rest = TABLE.match(b"/api/v1/users/a%20b/%C3%A9%2F")
        self.assertEqual(
            route.upstream_url(rest, b"q=%41+b&&x"),
            b"http://localhost:8082/users/a%20b/%C3%A9%2F?q=%41+b&&x",
        )

    def test_empty_query_kept(self) -> None:
        route, rest = TABLE.match(b"/api/v1/users")
        self.assertEqual(route.upstream_url(rest, b""), b"http://localhost:8082/users?")

    def test_service_url_path_prefix(self) -> None:
        route, rest = TABLE.match(b"/api/v1/inventory/items/3")
        self.assertEqual(
            route.upstream_url(rest, b"a=1"),
            b"http://inv:8080/inventory-api/inventory/items/3?a=1",
        )

    def test_route_for_service(self) -> None:
        self.assertEqual(
            Route.for_service(USERS),
            Route(USERS, b"/api/v1/users", b"http://localhost:8082/users"),
        )
