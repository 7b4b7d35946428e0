"""
Tests for L{qeetgw.config.variable} and L{qeetgw.config.table}: each
variable is declared once, on the L{Config} field it sets, and the table of
variables is read back from the fields.
"""

from __future__ import annotations

from typing import Optional

import attrs
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.config import VARIABLES, Config, load_config
from qeetgw.config.listen import HOST, PORT, tcp_description
from qeetgw.config.parsers import whole_number
from qeetgw.config.variable import Variable, combined, declared_variables, setting

#: The order of --help and of problem lines: Config's fields, in order.
HELP_ORDER = [
    "LISTEN", "PORT", "HOST", "TRUST_PROXY", "CORS_ORIGINS", "CORS_CREDENTIALS",
    "CORS_MAX_AGE", "CORS_METHODS", "REQUIRE_AUTH", "PUBLIC_PATHS", "JWT_SECRET",
    "JWT_SECRET_ENCODING", "JWT_PREVIOUS_SECRETS", "JWT_ISSUER", "JWT_AUDIENCE",
    "JWT_QUERY_PARAM", "JWT_ALGORITHMS", "JWT_LEEWAY_S",
    "JWT_TOKEN_TYPE_CLAIM", "JWT_TOKEN_TYPE", "JWT_JWKS_URL", "JWT_JWKS_REFRESH_MS",
    "JWT_CACHE_SIZE", "RATE_LIMIT_WINDOW_MS", "RATE_LIMIT_MAX", "RATE_LIMIT_MESSAGE",
    "RATE_LIMIT_KEY", "RATE_LIMIT_ALGORITHM", "RATE_LIMIT_HEADERS", "RATE_LIMIT_ROUTES",
    "RATE_LIMIT_STORE", "RATE_LIMIT_MEMORY_MAX_KEYS", "REDIS_URL", "RATE_LIMIT_REDIS_PREFIX",
    "RATE_LIMIT_REDIS_TIMEOUT_MS", "RATE_LIMIT_FAIL", "GATEWAY_PROXY_TIMEOUT_MS",
    "JSON_BODY_LIMIT",
    "AUTH_SERVICE_URL", "AUTH_TIMEOUT_MS", "AUTH_SERVICE_HEALTH_PATH",
    "USER_SERVICE_URL", "USER_TIMEOUT_MS", "USER_SERVICE_HEALTH_PATH",
    "PRODUCT_SERVICE_URL", "PRODUCT_TIMEOUT_MS", "PRODUCT_SERVICE_HEALTH_PATH",
    "ORDER_SERVICE_URL", "ORDER_TIMEOUT_MS", "ORDER_SERVICE_HEALTH_PATH",
    "PAYMENT_SERVICE_URL", "PAYMENT_TIMEOUT_MS", "PAYMENT_SERVICE_HEALTH_PATH",
    "INVENTORY_SERVICE_URL", "INVENTORY_TIMEOUT_MS", "INVENTORY_SERVICE_HEALTH_PATH",
    "UPSTREAM_POOL_SIZE", "UPSTREAM_KEEPALIVE_TIMEOUT_MS", "UPSTREAM_CA_FILE", "WORKERS",
    "SHUTDOWN_DELAY_MS", "CLIENT_HEADER_TIMEOUT_MS", "CLIENT_BODY_TIMEOUT_MS",
    "KEEPALIVE_TIMEOUT_MS", "CLIENT_MAX_HEADER_BYTES", "MAX_CONNECTIONS",
    "CLIENT_LINGER_TIMEOUT_MS", "CLIENT_LINGER_TIME_MS", "CLIENT_LINGER_MAX_BYTES",
    "WEBSOCKET_IDLE_TIMEOUT_MS", "WEBSOCKET_MAX_TUNNELS",
    "SERVICE_DISCOVERY", "DNS_REFRESH_MS", "BALANCER", "OUTLIER_CONSECUTIVE_FAILURES",
    "OUTLIER_BASE_EJECTION_MS", "OUTLIER_MAX_EJECTION_PERCENT", "RETRY_MAX",
    "RETRY_BUFFER_BYTES", "UPSTREAM_MAX_IN_FLIGHT", "HEALTH_CHECK_INTERVAL_MS",
    "HEALTH_UNHEALTHY_THRESHOLD", "HEALTH_HEALTHY_THRESHOLD", "METRICS_PORT", "LOG_FORMAT",
    "SHUTDOWN_GRACE_MS",
]


class ConfigDeclaresTheTableTests(SynchronousTestCase):
    """
    L{VARIABLES} is what L{Config}'s fields declare, and nothing else.
    """

    def test_table_is_read_from_config(self) -> None:
        self.assertEqual(VARIABLES, declared_variables(Config))

    def test_table_order_is_help_order(self) -> None:
        self.assertEqual([variable.name for variable in VARIABLES], HELP_ORDER)

    def test_each_variable_is_declared_once(self) -> None:
        names = [variable.name for variable in VARIABLES]
        self.assertEqual(sorted(names), sorted(set(names)))

    def test_each_field_but_the_combined_ones_is_set_by_exactly_one_variable(self) -> None:
        fields = [variable.field for variable in VARIABLES if variable.field is not None]
        self.assertEqual(len(fields), len(set(fields)))
        self.assertEqual(
            set(fields) | {"listen", "services"}, {field.name for field in attrs.fields(Config)}
        )

    def test_every_default_is_text_or_unset_and_parses(self) -> None:
        for variable in VARIABLES:
            self.assertIsInstance(variable.default, (str, type(None)), variable.name)
            variable.default_value()  # raises Invalid for a default it refuses

    def test_config_defaults_equal_the_table_defaults(self) -> None:
        config = Config()
        for variable in VARIABLES:
            if variable.field is not None:
                self.assertEqual(
                    getattr(config, variable.field), variable.default_value(), variable.name
                )

    def test_listen_default_is_port_and_host_defaults(self) -> None:
        self.assertEqual(
            Config().listen, tcp_description(PORT.default_value(), HOST.default_value())
        )
        self.assertEqual(Config().listen, load_config({"REQUIRE_AUTH": "false"}).listen)

    def test_services_default_to_none_in_code(self) -> None:
        """
        A L{Config} built in code routes to the services it names; loading
        gives the six, from their variables' defaults.
        """
        self.assertEqual(Config().services, ())
        self.assertEqual(len(load_config({"REQUIRE_AUTH": "false"}).services), 6)


@attrs.frozen
class _Example:
    """
    A class declared as L{Config} is.
    """

    count: int = setting("EXAMPLE_COUNT", "7", whole_number(1), "A count")
    unset: Optional[int] = setting("EXAMPLE_UNSET", None, whole_number(1), "Unset")
    pair: str = combined(
        (Variable("EXAMPLE_A", "a", str, "A"), Variable("EXAMPLE_B", "b", str, "B")), "a+b"
    )


class DeclarationTests(SynchronousTestCase):
    """
    L{setting} and L{combined} declare fields; L{declared_variables} reads
    them back.
    """

    def test_setting_default_is_its_text_parsed(self) -> None:
        self.assertEqual((_Example().count, _Example().unset), (7, None))

    def test_setting_names_its_field(self) -> None:
        count, unset, _, _ = declared_variables(_Example)
        self.assertEqual((count.name, count.field, count.default), ("EXAMPLE_COUNT", "count", "7"))
        self.assertEqual((unset.field, unset.default), ("unset", None))
        self.assertEqual(count.option, "example-count")

    def test_combined_variables_keep_their_order_and_set_no_field(self) -> None:
        _, _, a, b = declared_variables(_Example)
        self.assertEqual(
            [(a.name, a.field), (b.name, b.field)], [("EXAMPLE_A", None), ("EXAMPLE_B", None)]
        )
        self.assertEqual(_Example().pair, "a+b")

    def test_field_without_a_variable_is_refused(self) -> None:
        @attrs.frozen
        class Undeclared:
            declared: int = setting("DECLARED", "1", whole_number(1), "Declared")
            plain: int = 0

        error = self.assertRaises(TypeError, declared_variables, Undeclared)
        self.assertEqual(str(error), "Undeclared.plain declares no variable")
