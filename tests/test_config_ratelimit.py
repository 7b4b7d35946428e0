"""
Tests for the rate-limit variables of L{qeetgw.config}.
"""

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.config import ConfigError, RedisURL, load_config, parse_redis_url

BASE = {"JWT_SECRET": "a-raw-secret-of-more-than-32-bytes!"}


def problems(**env: str) -> list:
    try:
        load_config({**BASE, **env})
    except ConfigError as error:
        return error.problems
    return []


class RateLimitConfigTests(SynchronousTestCase):
    """
    Defaults, parsing and the one-line problems.
    """

    def test_defaults(self) -> None:
        config = load_config(BASE)
        self.assertEqual(
            (config.rate_limit_key, config.rate_limit_algorithm, config.rate_limit_headers,
             config.rate_limit_routes, config.rate_limit_store, config.redis_url,
             config.rate_limit_redis_prefix, config.rate_limit_redis_timeout_ms,
             config.rate_limit_fail, config.rate_limit_memory_max_keys),
            ("ip", "fixed", "draft-6", (), "memory", "redis://127.0.0.1:6379/0",
             "qeetgw:ratelimit:", 100, "open", 100_000),
        )

    def test_routes(self) -> None:
        config = load_config({**BASE, "RATE_LIMIT_ROUTES": " /api/v1/auth/login/=10/60000 ,/api/v1/payments=100,"})
        self.assertEqual(config.rate_limit_routes, (("/api/v1/auth/login", 10, 60000), ("/api/v1/payments", 100, None)))

    def test_bad_routes(self) -> None:
        for value in ["login=1", "/a=0", "/a=x", "/a=1/0", "/a", "/a=1/x", "/a=1,/a=2", "/a b=1", "//a=1"]:
            with self.subTest(value=value):
                lines = problems(RATE_LIMIT_ROUTES=value)
                self.assertEqual(len(lines), 1, lines)
                self.assertTrue(lines[0].startswith("RATE_LIMIT_ROUTES="), lines)

    def test_choices(self) -> None:
        for name, value in [("RATE_LIMIT_KEY", "cookie"), ("RATE_LIMIT_ALGORITHM", "leaky"),
                            ("RATE_LIMIT_HEADERS", "draft-7"), ("RATE_LIMIT_STORE", "memcached"),
                            ("RATE_LIMIT_FAIL", "maybe")]:
            with self.subTest(name=name):
                self.assertEqual(len([line for line in problems(**{name: value}) if line.startswith(name)]), 1)

    def test_redis_url(self) -> None:
        self.assertEqual(parse_redis_url("redis://:p%40ss@cache:6380/3"),
                         RedisURL(host="cache", port=6380, db=3, username=None, password="p@ss"))
        self.assertEqual(parse_redis_url("redis://u:p@h"), RedisURL("h", 6379, 0, "u", "p"))
        for bad in ["http://h", "redis://", "redis://h:99999", "redis://h/x", "redis://h?db=1"]:
            with self.subTest(url=bad):
                self.assertEqual(len(problems(REDIS_URL=bad)), 1)

    def test_timeout_bounded(self) -> None:
        self.assertEqual(len(problems(RATE_LIMIT_REDIS_TIMEOUT_MS="0")), 1)
        self.assertEqual(len(problems(RATE_LIMIT_REDIS_TIMEOUT_MS="60000")), 1)

    def test_bad_redis_url_is_not_echoed(self) -> None:
        lines = problems(REDIS_URL="redis://:hunter2@cache/notanumber")
        self.assertEqual(len(lines), 1)
        self.assertNotIn("hunter2", lines[0])
        self.assertTrue(lines[0].startswith("REDIS_URL=(value hidden): "), lines[0])


class WorkersConfigTests(SynchronousTestCase):
    """
    WORKERS.
    """

    def test_values(self) -> None:
        import os

        self.assertEqual(load_config(BASE).workers, 1)
        self.assertEqual(load_config({**BASE, "WORKERS": "3"}).workers, 3)
        self.assertEqual(load_config({**BASE, "WORKERS": "auto"}).workers, max(1, os.cpu_count() or 1))
        for bad in ["0", "65", "many", "-1"]:
            self.assertEqual(len(problems(WORKERS=bad)), 1, bad)

    def test_only_tcp_is_shared(self) -> None:
        try:
            load_config({**BASE, "WORKERS": "2"}, {}, {"LISTEN": "unix:/tmp/qeetgw-never.sock"})
        except ConfigError as error:
            self.assertTrue([line for line in error.problems if line.startswith("WORKERS=2")], error.problems)
        else:
            self.fail("accepted")


class DiscoveryConfigTests(SynchronousTestCase):
    """
    SERVICE_DISCOVERY and DNS_REFRESH_MS.
    """

    def test_defaults(self) -> None:
        config = load_config(BASE)
        self.assertEqual(config.service_discovery, "static")
        self.assertEqual(config.dns_refresh_ms, 5000)

    def test_values(self) -> None:
        config = load_config({**BASE, "SERVICE_DISCOVERY": "DNS", "DNS_REFRESH_MS": "1000"})
        self.assertEqual(config.service_discovery, "dns")
        self.assertEqual(config.dns_refresh_ms, 1000)
        for name, bad in [("SERVICE_DISCOVERY", "consul"), ("DNS_REFRESH_MS", "0"),
                          ("DNS_REFRESH_MS", "99"), ("DNS_REFRESH_MS", "soon")]:
            with self.subTest(name=name, value=bad):
                lines = problems(**{name: bad})
                self.assertEqual(len(lines), 1, lines)
                self.assertTrue(lines[0].startswith(f"{name}="), lines)

    def test_https_refused_with_dns(self) -> None:
        lines = problems(SERVICE_DISCOVERY="dns", PAYMENT_SERVICE_URL="http://a:1,https://b:2")
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("SERVICE_DISCOVERY=dns: PAYMENT_SERVICE_URL is https://"), lines)
        self.assertIn("http:// upstreams inside the cluster", lines[0])

    def test_https_fine_when_static(self) -> None:
        self.assertEqual(problems(PAYMENT_SERVICE_URL="https://payments.example"), [])
        self.assertEqual(problems(SERVICE_DISCOVERY="dns", PAYMENT_SERVICE_URL="http://payments:8085"), [])
