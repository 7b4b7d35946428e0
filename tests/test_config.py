"""
Tests for L{qeetgw.config}: the variables' defaults, parsing, validation
messages and precedence, and the C{.env} reader.
"""

from __future__ import annotations

import base64
import datetime
import os
from ipaddress import ip_network
from typing import Dict, List, Mapping, Optional, Tuple

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.config import (
    VARIABLES,
    Config,
    ConfigError,
    HMACKey,
    ServiceConfig,
    TrustProxy,
    jjwt_base64_decode,
    load_config,
    read_dotenv,
    read_hmac_key,
)

#: An environment that passes the one cross-variable check (REQUIRE_AUTH
#: needs a secret), so a test sees only the problems it provokes.
NO_AUTH: Mapping[str, str] = {"REQUIRE_AUTH": "false"}

#: A secret the auth-service could use: 37 bytes of text (the "-" keep it
#: from being base64, which would decode to fewer bytes).
SECRET = "test-secret-that-is-at-least-32-bytes"


def problems_of(
    environ: Mapping[str, str],
    dotenv: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, str]] = None,
) -> List[str]:
    """
    The problem lines L{load_config} reports, or C{[]} when it succeeds.
    """
    try:
        load_config(environ, dotenv or {}, overrides or {})
    except ConfigError as error:
        return error.problems
    return []


def make_certificate(directory: str) -> Tuple[str, str]:
    """
    Write a self-signed certificate and its key as PEM files in
    C{directory}, and return their paths (certificate, key).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qeetgw test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class DefaultsTests(SynchronousTestCase):
    """
    With nothing set but the secret, the configuration is SPEC.md's.
    """

    def test_defaults_equal_spec(self) -> None:
        config = load_config({"JWT_SECRET": SECRET})
        self.assertEqual(config.listen, "tcp:4000:interface=0.0.0.0")
        self.assertEqual(config.trust_proxy, TrustProxy(mode="none"))
        self.assertEqual(config.cors_origins, ("http://localhost:3000", "http://localhost:3001"))
        self.assertIs(config.cors_credentials, False)
        self.assertIs(config.require_auth, True)
        self.assertEqual(config.jwt_secret, SECRET)
        self.assertEqual(config.jwt_secret_encoding, "auto")
        self.assertEqual(config.jwt_issuer, "http://localhost:4001")
        self.assertIsNone(config.jwt_audience)
        self.assertEqual(config.jwt_algorithms, ("HS256", "HS384", "HS512"))
        self.assertEqual(config.jwt_leeway_s, 0)
        self.assertEqual(config.jwt_token_type_claim, "tokenType")
        self.assertEqual(config.jwt_token_type, "access")
        self.assertIsNone(config.jwt_jwks_url)
        self.assertEqual(config.jwt_jwks_refresh_ms, 60000)
        self.assertEqual(config.jwt_cache_size, 10000)
        self.assertEqual(
            config.public_paths,
            ("/health", "/health/services", "/info", "/api/v1/auth/register",
             "/api/v1/auth/login", "/api/v1/auth/refresh-token", "/api/v1/auth/logout"),
        )
        self.assertEqual(config.cors_max_age, 600)
        self.assertEqual(config.cors_methods, ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"))
        self.assertEqual(config.rate_limit_window_ms, 60000)
        self.assertEqual(config.rate_limit_max, 1000)
        self.assertEqual(
            config.rate_limit_message, "Too many requests from this IP, please try again later."
        )
        self.assertEqual(config.proxy_timeout_ms, 5000)
        self.assertEqual(config.body_limit, 1048576)
        self.assertEqual(config.upstream_pool_size, 128)
        self.assertEqual(config.upstream_keepalive_timeout_ms, 4000)
        self.assertIsNone(config.upstream_ca_file)
        self.assertEqual(config.log_format, "text")
        self.assertEqual(config.shutdown_grace_ms, 10000)

    def test_default_services_equal_spec(self) -> None:
        config = load_config(NO_AUTH)
        self.assertEqual(
            config.services,
            (
                ServiceConfig("auth-service", "/api/v1/auth", "/auth",
                              "http://localhost:4001", "/actuator/health", "AUTH_SERVICE_URL"),
                ServiceConfig("user-service", "/api/v1/users", "/users",
                              "http://localhost:8082", "/actuator/health", "USER_SERVICE_URL"),
                ServiceConfig("product-service", "/api/v1/products", "/products",
                              "http://localhost:8083", "/actuator/health", "PRODUCT_SERVICE_URL"),
                ServiceConfig("order-service", "/api/v1/orders", "/orders",
                              "http://localhost:8084", "/health", "ORDER_SERVICE_URL"),
                ServiceConfig("payment-service", "/api/v1/payments", "/payments",
                              "http://localhost:8085", "/health", "PAYMENT_SERVICE_URL"),
                ServiceConfig("inventory-service", "/api/v1/inventory", "/inventory",
                              "http://localhost:8080", "/health", "INVENTORY_SERVICE_URL"),
            ),
        )

    def test_loaded_defaults_equal_config_class_defaults(self) -> None:
        """
        The table's defaults and L{Config}'s own agree, so a L{Config()}
        built in a test means the same as an empty environment.
        """
        loaded = load_config({"JWT_SECRET": SECRET})
        expected = attrs.evolve(Config(), jwt_secret=SECRET, services=loaded.services)
        self.assertEqual(loaded, expected)

    def test_service_named(self) -> None:
        config = load_config(NO_AUTH)
        self.assertEqual(config.service_named("order-service").url, "http://localhost:8084")


class TableTests(SynchronousTestCase):
    """
    L{VARIABLES} covers the whole of L{Config}, once.
    """

    def test_names_and_options_are_unique(self) -> None:
        names = [variable.name for variable in VARIABLES]
        options = [variable.option for variable in VARIABLES if variable.option]
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(len(options), len(set(options)))

    def test_every_config_field_is_set_by_a_variable(self) -> None:
        fields = {variable.field for variable in VARIABLES if variable.field}
        combined = {"listen", "services"}
        self.assertEqual(fields | combined, {field.name for field in attrs.fields(Config)})

    def test_spec_variables_are_all_present(self) -> None:
        spec = {
            "PORT": "4000", "HOST": "0.0.0.0", "TRUST_PROXY": "false",
            "CORS_ORIGINS": "http://localhost:3000,http://localhost:3001",
            "CORS_CREDENTIALS": "false", "REQUIRE_AUTH": "true", "JWT_SECRET": None,
            "JWT_ISSUER": "http://localhost:4001", "JWT_AUDIENCE": None,
            "RATE_LIMIT_WINDOW_MS": "60000", "RATE_LIMIT_MAX": "1000",
            "RATE_LIMIT_MESSAGE": "Too many requests from this IP, please try again later.",
            "GATEWAY_PROXY_TIMEOUT_MS": "5000", "JSON_BODY_LIMIT": "1mb",
            "AUTH_SERVICE_URL": "http://localhost:4001",
            "USER_SERVICE_URL": "http://localhost:8082",
            "PRODUCT_SERVICE_URL": "http://localhost:8083",
            "ORDER_SERVICE_URL": "http://localhost:8084",
            "PAYMENT_SERVICE_URL": "http://localhost:8085",
            "INVENTORY_SERVICE_URL": "http://localhost:8080",
        }
        defaults = {variable.name: variable.default for variable in VARIABLES}
        for name, default in spec.items():
            self.assertEqual(defaults[name], default, name)


class ParsingTests(SynchronousTestCase):
    """
    Every variable is read into its field.
    """

    def test_every_variable_parses(self) -> None:
        cert_path, _ = make_certificate(self.mktemp())
        environ = {
            "PORT": "8080",
            "HOST": "127.0.0.1",
            "TRUST_PROXY": "2",
            "CORS_ORIGINS": "https://shop.example",
            "CORS_CREDENTIALS": "true",
            "REQUIRE_AUTH": "true",
            "CORS_MAX_AGE": "60",
            "CORS_METHODS": "GET,POST",
            "PUBLIC_PATHS": "/health,/api/v1/auth/login",
            "JWT_SECRET": SECRET,
            "JWT_SECRET_ENCODING": "raw",
            "JWT_ISSUER": "https://auth.example",
            "JWT_AUDIENCE": "qeetmart",
            "JWT_ALGORITHMS": "HS256,RS256",
            "JWT_LEEWAY_S": "2.5",
            "JWT_TOKEN_TYPE_CLAIM": "typ",
            "JWT_TOKEN_TYPE": "at",
            "JWT_JWKS_URL": "https://auth.example/.well-known/jwks.json",
            "JWT_JWKS_REFRESH_MS": "30000",
            "JWT_CACHE_SIZE": "5",
            "RATE_LIMIT_WINDOW_MS": "1000",
            "RATE_LIMIT_MAX": "5",
            "RATE_LIMIT_MESSAGE": "Slow down",
            "GATEWAY_PROXY_TIMEOUT_MS": "250",
            "JSON_BODY_LIMIT": "100kb",
            "AUTH_SERVICE_URL": "http://auth:1",
            "AUTH_SERVICE_HEALTH_PATH": "/a",
            "USER_SERVICE_URL": "http://user:2",
            "USER_SERVICE_HEALTH_PATH": "/u",
            "PRODUCT_SERVICE_URL": "http://product:3",
            "PRODUCT_SERVICE_HEALTH_PATH": "/p",
            "ORDER_SERVICE_URL": "http://order:4",
            "ORDER_SERVICE_HEALTH_PATH": "/o",
            "PAYMENT_SERVICE_URL": "https://payment:5",
            "PAYMENT_SERVICE_HEALTH_PATH": "/pay",
            "INVENTORY_SERVICE_URL": "http://inventory:6/api",
            "INVENTORY_SERVICE_HEALTH_PATH": "/i?full=1",
            "UPSTREAM_POOL_SIZE": "8",
            "UPSTREAM_KEEPALIVE_TIMEOUT_MS": "3000",
            "UPSTREAM_CA_FILE": cert_path,
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE_MS": "0",
        }
        config = load_config(environ)
        self.assertEqual(
            attrs.evolve(config, services=()),
            Config(
                listen="tcp:8080:interface=127.0.0.1",
                trust_proxy=TrustProxy(mode="hops", hops=2),
                cors_origins=("https://shop.example",),
                cors_credentials=True,
                cors_max_age=60,
                cors_methods=("GET", "POST"),
                require_auth=True,
                public_paths=("/health", "/api/v1/auth/login"),
                jwt_secret=SECRET,
                jwt_secret_encoding="raw",
                jwt_issuer="https://auth.example",
                jwt_audience="qeetmart",
                jwt_algorithms=("HS256", "RS256"),
                jwt_leeway_s=2.5,
                jwt_token_type_claim="typ",
                jwt_token_type="at",
                jwt_jwks_url="https://auth.example/.well-known/jwks.json",
                jwt_jwks_refresh_ms=30000,
                jwt_cache_size=5,
                rate_limit_window_ms=1000,
                rate_limit_max=5,
                rate_limit_message="Slow down",
                proxy_timeout_ms=250,
                body_limit=102400,
                upstream_pool_size=8,
                upstream_keepalive_timeout_ms=3000,
                upstream_ca_file=os.path.abspath(cert_path),
                log_format="json",
                shutdown_grace_ms=0,
            ),
        )
        self.assertEqual(
            [(s.name, s.url, s.health_path) for s in config.services],
            [
                ("auth-service", "http://auth:1", "/a"),
                ("user-service", "http://user:2", "/u"),
                ("product-service", "http://product:3", "/p"),
                ("order-service", "http://order:4", "/o"),
                ("payment-service", "https://payment:5", "/pay"),
                ("inventory-service", "http://inventory:6/api", "/i?full=1"),
            ],
        )

    def test_booleans_ignore_case_and_surrounding_whitespace(self) -> None:
        config = load_config({"REQUIRE_AUTH": "FALSE", "CORS_CREDENTIALS": " True\n"})
        self.assertIs(config.require_auth, False)
        self.assertIs(config.cors_credentials, True)

    def test_numbers_ignore_surrounding_whitespace(self) -> None:
        self.assertEqual(load_config({**NO_AUTH, "RATE_LIMIT_MAX": " 42\n"}).rate_limit_max, 42)

    def test_secret_is_kept_byte_for_byte(self) -> None:
        """
        The secret must equal the auth-service's, so nothing is trimmed.
        """
        secret = f" {SECRET}\n"
        self.assertEqual(load_config({"JWT_SECRET": secret}).jwt_secret, secret)

    def test_blank_optional_values_mean_unset(self) -> None:
        config = load_config(
            {**NO_AUTH, "JWT_AUDIENCE": "", "UPSTREAM_CA_FILE": " ", "JWT_SECRET": ""}
        )
        self.assertIsNone(config.jwt_audience)
        self.assertIsNone(config.upstream_ca_file)
        self.assertIsNone(config.jwt_secret)

    def test_rate_limit_message_is_free_text(self) -> None:
        message = "  Trop de requêtes: #1 "
        config = load_config({**NO_AUTH, "RATE_LIMIT_MESSAGE": message})
        self.assertEqual(config.rate_limit_message, message)

    def test_log_format_ignores_case(self) -> None:
        self.assertEqual(load_config({**NO_AUTH, "LOG_FORMAT": "JSON"}).log_format, "json")

    def test_health_path_override(self) -> None:
        config = load_config({**NO_AUTH, "USER_SERVICE_HEALTH_PATH": "/healthz"})
        self.assertEqual(config.service_named("user-service").health_path, "/healthz")
        self.assertEqual(config.service_named("auth-service").health_path, "/actuator/health")

    def test_ca_file_path_is_made_absolute(self) -> None:
        directory = os.path.abspath(self.mktemp())
        make_certificate(directory)
        cwd = os.getcwd()
        os.chdir(directory)
        self.addCleanup(os.chdir, cwd)
        config = load_config({**NO_AUTH, "UPSTREAM_CA_FILE": "cert.pem"})
        self.assertEqual(config.upstream_ca_file, os.path.join(directory, "cert.pem"))


class ProblemLineTests(SynchronousTestCase):
    """
    Each bad value gives exactly one line: the variable, the value given and
    what is allowed.
    """

    HOST_ALLOWED = "must be an IP address (0.0.0.0, ::, 127.0.0.1, ::1) or a host name"
    TRUST_ALLOWED = (
        "must be true, false, a hop count (0 or more) or a comma list of IP "
        "addresses and CIDRs (loopback, linklocal, uniquelocal allowed)"
    )
    ORIGIN_ALLOWED = "each entry must be scheme://host[:port] (no path) or *"
    AT_LEAST_1 = "must be a whole number of at least 1"
    ALGORITHMS_ALLOWED = (
        "allowed: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, "
        "ES256, ES256K, ES384, ES512, EdDSA"
    )
    NONE_REFUSED = "none is never accepted (it means an unsigned token)"
    LEEWAY_ALLOWED = "must be a number of seconds from 0 to 300 (such as 0, 5 or 1.5)"
    JWKS_ALLOWED = (
        "must be an http:// or https:// URL with a host, and no user info or fragment"
    )
    PATH_ALLOWED = (
        "each entry must start with / and have segments of letters, digits and "
        "-._~!$&'()*+,;=:@ that are not empty, . or .. (such as /api/v1/auth/login)"
    )

    #: (variable, value given, what the line says is allowed).
    CASES: List[Tuple[str, str, str]] = [
        ("PORT", "abc", "must be a whole number from 0 to 65535"),
        ("PORT", "65536", "must be a whole number from 0 to 65535"),
        ("PORT", "-1", "must be a whole number from 0 to 65535"),
        ("HOST", "not a host", HOST_ALLOWED),
        ("HOST", "", HOST_ALLOWED),
        ("HOST", "999.1.1.1", HOST_ALLOWED),
        ("TRUST_PROXY", "yes", f"'yes' is not an IP address or CIDR; {TRUST_ALLOWED}"),
        ("TRUST_PROXY", "-1", f"'-1' is not an IP address or CIDR; {TRUST_ALLOWED}"),
        ("TRUST_PROXY", ",", TRUST_ALLOWED),
        ("CORS_ORIGINS", "http://a.example/app",
         f"'http://a.example/app' is not an origin; {ORIGIN_ALLOWED}"),
        ("CORS_ORIGINS", "null", f"'null' is not an origin; {ORIGIN_ALLOWED}"),
        ("CORS_CREDENTIALS", "1", "must be true or false"),
        ("REQUIRE_AUTH", "yes", "must be true or false"),
        ("JWT_ISSUER", " ", "must not be empty"),
        ("RATE_LIMIT_WINDOW_MS", "0", AT_LEAST_1),
        ("RATE_LIMIT_MAX", "abc", AT_LEAST_1),
        ("RATE_LIMIT_MAX", "1e3", AT_LEAST_1),
        ("RATE_LIMIT_MAX", "1_000", AT_LEAST_1),
        ("RATE_LIMIT_MAX", "+5", AT_LEAST_1),
        ("RATE_LIMIT_MAX", "", AT_LEAST_1),
        ("GATEWAY_PROXY_TIMEOUT_MS", "5s", AT_LEAST_1),
        ("JSON_BODY_LIMIT", "1zb",
         "must be a size such as 1mb, 100kb, 1.5mb, 512b or a number of bytes "
         "(units b, kb, mb, gb, tb, pb), of at least 1 byte"),
        ("ORDER_SERVICE_URL", "ftp://orders",
         "must be an http:// or https:// URL with a host, an optional port and path, "
         "and no query, fragment or user info"),
        ("USER_SERVICE_HEALTH_PATH", "health",
         "must be a path starting with / (such as /health), without spaces or #"),
        ("UPSTREAM_POOL_SIZE", "0", AT_LEAST_1),
        ("UPSTREAM_KEEPALIVE_TIMEOUT_MS", "x", AT_LEAST_1),
        ("LOG_FORMAT", "xml", "must be one of: text, json"),
        ("SHUTDOWN_GRACE_MS", "-5", "must be a whole number of at least 0"),
        ("CORS_MAX_AGE", "-1", "must be a whole number of at least 0"),
        ("CORS_MAX_AGE", "10m", "must be a whole number of at least 0"),
        ("CORS_METHODS", "GET,PO ST",
         "'PO ST' is not an HTTP method; must be a comma list such as GET,POST"),
        ("CORS_METHODS", " , ", "must list at least one method, such as GET,POST"),
        ("JWT_SECRET_ENCODING", "hex", "must be one of: auto, base64, raw"),
        ("JWT_ALGORITHMS", "HS256,none", f"{NONE_REFUSED}; {ALGORITHMS_ALLOWED}"),
        ("JWT_ALGORITHMS", "NONE", f"{NONE_REFUSED}; {ALGORITHMS_ALLOWED}"),
        ("JWT_ALGORITHMS", "HS257",
         f"'HS257' is not a supported JWT algorithm; {ALGORITHMS_ALLOWED}"),
        ("JWT_ALGORITHMS", "ES521",
         f"'ES521' is not a supported JWT algorithm; {ALGORITHMS_ALLOWED}"),
        ("JWT_ALGORITHMS", ",", f"must list at least one algorithm; {ALGORITHMS_ALLOWED}"),
        ("JWT_LEEWAY_S", "-1", LEEWAY_ALLOWED),
        ("JWT_LEEWAY_S", "301", LEEWAY_ALLOWED),
        ("JWT_LEEWAY_S", "1e2", LEEWAY_ALLOWED),
        ("JWT_LEEWAY_S", "5s", LEEWAY_ALLOWED),
        ("JWT_LEEWAY_S", "", LEEWAY_ALLOWED),
        ("JWT_TOKEN_TYPE_CLAIM", " ", "must not be empty"),
        ("JWT_TOKEN_TYPE", "", "must not be empty"),
        ("JWT_JWKS_URL", "ftp://auth/jwks", JWKS_ALLOWED),
        ("JWT_JWKS_URL", "https://user:pw@auth/jwks", JWKS_ALLOWED),
        ("JWT_JWKS_URL", "https://auth/jwks#keys", JWKS_ALLOWED),
        ("JWT_JWKS_URL", "https:///jwks", JWKS_ALLOWED),
        ("JWT_JWKS_URL", "/jwks", JWKS_ALLOWED),
        ("JWT_JWKS_REFRESH_MS", "999", "must be a whole number of at least 1000"),
        ("JWT_CACHE_SIZE", "-1", "must be a whole number of at least 0"),
        ("PUBLIC_PATHS", "/health,info", f"'info' is not a public path; {PATH_ALLOWED}"),
        ("PUBLIC_PATHS", "/", "'/' would make every path public; set REQUIRE_AUTH=false instead"),
    ]

    def test_each_bad_value_gives_its_one_line(self) -> None:
        for name, value, allowed in self.CASES:
            self.assertEqual(
                problems_of({**NO_AUTH, name: value}), [f"{name}={value!r}: {allowed}"], name
            )

    def test_several_bad_values_give_several_lines_in_table_order(self) -> None:
        problems = problems_of(
            {"RATE_LIMIT_MAX": "abc", "PORT": "x", "LOG_FORMAT": "xml", "REQUIRE_AUTH": "true"}
        )
        self.assertEqual(
            problems,
            [
                "PORT='x': must be a whole number from 0 to 65535",
                "RATE_LIMIT_MAX='abc': must be a whole number of at least 1",
                "LOG_FORMAT='xml': must be one of: text, json",
                "JWT_SECRET is not set: must be the auth-service's secret when REQUIRE_AUTH=true "
                "(set REQUIRE_AUTH=false only for development)",
            ],
        )

    def test_error_text_is_the_lines(self) -> None:
        error = self.assertRaises(
            ConfigError, load_config, {"PORT": "x", "HOST": "?"}, {}, {"REQUIRE_AUTH": "false"}
        )
        self.assertEqual(str(error), "\n".join(error.problems))
        self.assertEqual(len(error.problems), 2)

    def test_a_value_with_a_newline_stays_on_one_line(self) -> None:
        [line] = problems_of({**NO_AUTH, "RATE_LIMIT_MAX": "1\n2"})
        self.assertEqual(line, "RATE_LIMIT_MAX='1\\n2': must be a whole number of at least 1")

    def test_ca_file_must_exist(self) -> None:
        missing = os.path.abspath(self.mktemp())
        self.assertEqual(
            problems_of({**NO_AUTH, "UPSTREAM_CA_FILE": missing}),
            [f"UPSTREAM_CA_FILE={missing!r}: must be a readable PEM file with at least one "
             "CA certificate (No such file or directory)"],
        )

    def test_ca_file_must_hold_a_certificate(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        self.assertEqual(
            problems_of({**NO_AUTH, "UPSTREAM_CA_FILE": path}),
            [f"UPSTREAM_CA_FILE={path!r}: must be a readable PEM file with at least one "
             "CA certificate (no certificate found in it)"],
        )

    def test_ca_file_must_not_be_a_key_only(self) -> None:
        _, key_path = make_certificate(self.mktemp())
        [line] = problems_of({**NO_AUTH, "UPSTREAM_CA_FILE": key_path})
        self.assertIn("no certificate found in it", line)


class PrecedenceTests(SynchronousTestCase):
    """
    overrides > environ > dotenv > default.
    """

    def test_default_when_nothing_is_set(self) -> None:
        self.assertEqual(load_config(NO_AUTH).rate_limit_max, 1000)

    def test_dotenv_beats_default(self) -> None:
        self.assertEqual(load_config(NO_AUTH, {"RATE_LIMIT_MAX": "3"}).rate_limit_max, 3)

    def test_environ_beats_dotenv(self) -> None:
        config = load_config({**NO_AUTH, "RATE_LIMIT_MAX": "4"}, {"RATE_LIMIT_MAX": "3"})
        self.assertEqual(config.rate_limit_max, 4)

    def test_overrides_beat_environ(self) -> None:
        config = load_config(
            {**NO_AUTH, "RATE_LIMIT_MAX": "4"}, {"RATE_LIMIT_MAX": "3"}, {"RATE_LIMIT_MAX": "5"}
        )
        self.assertEqual(config.rate_limit_max, 5)

    def test_dotenv_fills_what_environ_lacks(self) -> None:
        config = load_config(
            {"RATE_LIMIT_MAX": "4"}, {"REQUIRE_AUTH": "false", "RATE_LIMIT_MAX": "3"}
        )
        self.assertEqual((config.rate_limit_max, config.require_auth), (4, False))

    def test_only_the_winning_value_is_checked(self) -> None:
        """
        A bad value that an option overrides does not stop start-up.
        """
        config = load_config({**NO_AUTH, "RATE_LIMIT_MAX": "abc"}, {}, {"RATE_LIMIT_MAX": "5"})
        self.assertEqual(config.rate_limit_max, 5)

    def test_an_empty_environment_value_still_overrides(self) -> None:
        """
        Set-but-empty is set: it is what the environment says.
        """
        self.assertEqual(
            problems_of({**NO_AUTH, "RATE_LIMIT_MAX": ""}, {"RATE_LIMIT_MAX": "3"}),
            ["RATE_LIMIT_MAX='': must be a whole number of at least 1"],
        )

    def test_unknown_override_key_is_a_programming_error(self) -> None:
        self.assertRaises(ValueError, load_config, NO_AUTH, {}, {"RATE_LIMT_MAX": "5"})

    def test_unknown_environment_variables_are_ignored(self) -> None:
        self.assertEqual(load_config({**NO_AUTH, "PATH": "/bin", "LISTEN": "garbage"}).listen,
                         "tcp:4000:interface=0.0.0.0")


class RequireAuthTests(SynchronousTestCase):
    """
    REQUIRE_AUTH=true needs a JWT_SECRET.
    """

    LINE = ("must be the auth-service's secret when REQUIRE_AUTH=true "
            "(set REQUIRE_AUTH=false only for development)")

    def test_unset_secret(self) -> None:
        self.assertEqual(problems_of({}), [f"JWT_SECRET is not set: {self.LINE}"])

    def test_blank_secret(self) -> None:
        self.assertEqual(problems_of({"JWT_SECRET": "  "}), [f"JWT_SECRET='  ': {self.LINE}"])

    def test_secret_from_dotenv_is_enough(self) -> None:
        self.assertEqual(load_config({}, {"JWT_SECRET": SECRET}).jwt_secret, SECRET)

    def test_no_secret_needed_without_auth(self) -> None:
        self.assertIsNone(load_config({"REQUIRE_AUTH": "false"}).jwt_secret)

    def test_bad_require_auth_gives_only_its_own_line(self) -> None:
        self.assertEqual(
            problems_of({"REQUIRE_AUTH": "maybe"}), ["REQUIRE_AUTH='maybe': must be true or false"]
        )

    def test_a_set_secret_is_never_echoed(self) -> None:
        problems = problems_of({"JWT_SECRET": "hunter2-secret-hunter2-secret-hunter2", "PORT": "x"})
        self.assertEqual(problems, ["PORT='x': must be a whole number from 0 to 65535"])


class JWTSecretTests(SynchronousTestCase):
    """
    JWT_SECRET must give a key the auth-service (jjwt) could sign with: at
    least 32 bytes once derived, and no problem line ever shows it.
    """

    def test_short_text_secret(self) -> None:
        self.assertEqual(
            problems_of({"JWT_SECRET": "hunter2-short"}),
            ["JWT_SECRET: the key is 13 bytes (its UTF-8 text, not base64); "
             "the auth-service (jjwt) needs at least 32"],
        )

    def test_base64_secret_is_measured_after_decoding(self) -> None:
        """
        32 characters of base64 are 24 bytes: the trap the Express gateway's
        lenient decoding hid.
        """
        self.assertEqual(
            problems_of({"JWT_SECRET": "s" * 32}),
            ["JWT_SECRET: the key is 24 bytes after base64 decoding; "
             "the auth-service (jjwt) needs at least 32"],
        )

    def test_utf8_bytes_are_counted(self) -> None:
        self.assertEqual(load_config({"JWT_SECRET": "é" * 16}).hmac_key(), "é".encode() * 16)

    def test_32_byte_keys_pass(self) -> None:
        encoded = base64.b64encode(bytes(range(32))).decode()
        self.assertEqual(load_config({"JWT_SECRET": encoded}).hmac_key(), bytes(range(32)))
        self.assertEqual(load_config({"JWT_SECRET": "k-" * 16}).hmac_key(), b"k-" * 16)

    def test_short_secret_refused_without_auth_too(self) -> None:
        [line] = problems_of({**NO_AUTH, "JWT_SECRET": "short-secret"})
        self.assertIn("the key is 12 bytes", line)

    def test_problem_lines_never_show_the_secret(self) -> None:
        for environ in [
            {"JWT_SECRET": "hunter2-short"},
            {"JWT_SECRET": "aHVudGVyMg==", "PORT": "x"},
            {"JWT_SECRET": "hunter2!", "JWT_SECRET_ENCODING": "base64"},
        ]:
            text = "\n".join(problems_of(environ))
            self.assertNotIn(environ["JWT_SECRET"], text)
            self.assertNotIn("hunter2", text)

    def test_raw_encoding(self) -> None:
        config = load_config({"JWT_SECRET": "s" * 32, "JWT_SECRET_ENCODING": "raw"})
        self.assertEqual(config.hmac_key(), b"s" * 32)

    def test_raw_encoding_short(self) -> None:
        self.assertEqual(
            problems_of({"JWT_SECRET": "s" * 31, "JWT_SECRET_ENCODING": "RAW"}),
            ["JWT_SECRET: the key is 31 bytes (its UTF-8 text, not base64); "
             "the auth-service (jjwt) needs at least 32"],
        )

    def test_base64_encoding(self) -> None:
        key = bytes(range(64))
        config = load_config(
            {"JWT_SECRET": base64.b64encode(key).decode(), "JWT_SECRET_ENCODING": "base64"}
        )
        self.assertEqual(config.hmac_key(), key)

    def test_base64_encoding_refuses_text(self) -> None:
        self.assertEqual(
            problems_of({"JWT_SECRET": SECRET, "JWT_SECRET_ENCODING": "base64"}),
            ["JWT_SECRET: is not base64 as the auth-service's jjwt reads it "
             "(JWT_SECRET_ENCODING=base64 needs A-Z a-z 0-9 + / and = padding, other "
             "characters only at the ends)"],
        )

    def test_base64_encoding_refuses_what_jjwt_refuses(self) -> None:
        """
        A base64url secret and one with a space inside: jjwt throws, so the
        auth-service would use their text, which JWT_SECRET_ENCODING=base64
        says is a mistake.
        """
        encoded = base64.b64encode(bytes(range(40))).decode()
        for secret in [
            base64.urlsafe_b64encode(b"\xfb\xff" * 24).decode(),
            encoded[:20] + " " + encoded[20:],
        ]:
            [line] = problems_of({"JWT_SECRET": secret, "JWT_SECRET_ENCODING": "base64"})
            self.assertIn("is not base64 as the auth-service's jjwt reads it", line)

    def test_base64_encoding_accepts_what_jjwt_accepts(self) -> None:
        """
        Missing padding and characters outside the alphabet at the ends are
        base64 to jjwt, so to JWT_SECRET_ENCODING=base64 too.
        """
        key = bytes(range(40))
        for secret in [
            base64.b64encode(key).decode().rstrip("="),
            " " + base64.b64encode(key).decode() + "\r\n",
        ]:
            config = load_config({"JWT_SECRET": secret, "JWT_SECRET_ENCODING": "base64"})
            self.assertEqual(config.hmac_key(), key)

    def test_unpadded_base64_with_a_newline_is_its_decoding(self) -> None:
        """
        Issue 11: 32 bytes as 43 characters of unpadded base64 and the
        newline of a Kubernetes secret are the 32 bytes, read as base64.
        """
        secret = base64.b64encode(bytes(range(32))).decode().rstrip("=") + "\n"
        self.assertEqual(len(secret), 44)
        self.assertEqual(
            load_config({"JWT_SECRET": secret}).read_hmac_key(),
            HMACKey(bytes(range(32)), "base64"),
        )

    def test_short_decoding_is_refused_as_base64(self) -> None:
        """
        Base64 once the newline is skipped, so measured after decoding.
        """
        self.assertEqual(
            problems_of({"JWT_SECRET": base64.b64encode(bytes(24)).decode() + "\n"}),
            ["JWT_SECRET: the key is 24 bytes after base64 decoding; "
             "the auth-service (jjwt) needs at least 32"],
        )

    def test_hmac_key_without_secret(self) -> None:
        self.assertIsNone(load_config(NO_AUTH).hmac_key())

    def test_bad_encoding_gives_only_its_own_line(self) -> None:
        self.assertEqual(
            problems_of({"JWT_SECRET": "short", "JWT_SECRET_ENCODING": "hex"}),
            ["JWT_SECRET_ENCODING='hex': must be one of: auto, base64, raw"],
        )


#: 32 bytes as padded base64 (44 characters, one "=").
PADDED_32 = base64.b64encode(bytes(range(32))).decode()

#: The same without its "=": 43 characters, as issue 11's secret.
UNPADDED_32 = PADDED_32.rstrip("=")


class JJWTBase64Tests(SynchronousTestCase):
    """
    L{jjwt_base64_decode} reads as jjwt 0.12.6's C{Decoders.BASE64}:
    C{Base64.decodeFast} in github:jwtk/jjwt,
    api/src/main/java/io/jsonwebtoken/io/Base64.java, whose lines the
    comments cite.  Each expected value was worked out by following that
    code by hand (L{None} where it throws; C{Decoders.BASE64} wraps any
    exception in a DecodingException, and the auth-service then uses the
    secret as text).  "QUJD" is b"ABC".
    """

    def test_padded(self) -> None:
        # 259: pad = 1; 263: len = (44 * 6 >> 3) - 1 = 32.
        self.assertEqual(jjwt_base64_decode(PADDED_32), bytes(range(32)))

    def test_unpadded(self) -> None:
        # 263: len = 43 * 6 >> 3 = 32; 268-283 read 40 chars, 285-296 the last
        # 3 chars: 2 bytes.
        self.assertEqual(len(UNPADDED_32), 43)
        self.assertEqual(jjwt_base64_decode(UNPADDED_32), bytes(range(32)))

    def test_trailing_newline_is_skipped(self) -> None:
        # 254-256: eIx moves back over "\n" (and "\r"), outside the alphabet.
        self.assertEqual(jjwt_base64_decode(UNPADDED_32 + "\n"), bytes(range(32)))
        self.assertEqual(jjwt_base64_decode(PADDED_32 + "\r\n"), bytes(range(32)))

    def test_leading_spaces_are_skipped(self) -> None:
        # 249-251: sIx moves over the spaces and the tab.
        self.assertEqual(jjwt_base64_decode("  " + PADDED_32), bytes(range(32)))
        self.assertEqual(jjwt_base64_decode("\t " + UNPADDED_32 + " \n"), bytes(range(32)))

    def test_url_safe_characters_inside_throw(self) -> None:
        # 271 -> 217-221: ctoi("-") and ctoi("_") throw "Illegal base64 character".
        self.assertIsNone(jjwt_base64_decode("QUJD-QUJD"))
        self.assertIsNone(jjwt_base64_decode("QUJD_QUJD"))
        self.assertIsNone(jjwt_base64_decode(base64.urlsafe_b64encode(b"\xfb\xff" * 24).decode()))

    def test_url_safe_characters_at_the_ends_are_skipped(self) -> None:
        # 249-256: "-" and "_" are outside the alphabet, so trimmed like spaces.
        self.assertEqual(jjwt_base64_decode("QUJD-"), b"ABC")
        self.assertEqual(jjwt_base64_decode("_QUJD"), b"ABC")

    def test_space_inside_throws(self) -> None:
        # 271 -> 217-221: ctoi(" ") throws.
        self.assertIsNone(jjwt_base64_decode("QUJD QUJD"))
        self.assertIsNone(jjwt_base64_decode(UNPADDED_32[:20] + " " + UNPADDED_32[20:]))
        self.assertIsNone(jjwt_base64_decode("correct horse battery staple"))

    def test_last_group_of_one_character_is_dropped(self) -> None:
        # 263: len = 5 * 6 >> 3 = 3; the loop at 268 reads "QUJD"; 285: d == len,
        # so "R" is never read.
        self.assertEqual(jjwt_base64_decode("QUJDR"), b"ABC")
        # 263: len = 6 >> 3 = 0: no byte at all.
        self.assertEqual(jjwt_base64_decode("Q"), b"")

    def test_last_group_of_two_characters(self) -> None:
        # 263: len = 36 >> 3 = 4; 285-296: "RA" gives 1 byte.
        self.assertEqual(jjwt_base64_decode("QUJDRA"), b"ABCD")
        self.assertEqual(jjwt_base64_decode("QQ"), b"A")

    def test_last_group_of_three_characters(self) -> None:
        # 263: len = 42 >> 3 = 5; 285-296: "REU" gives 2 bytes.
        self.assertEqual(jjwt_base64_decode("QUJDREU"), b"ABCDE")
        self.assertEqual(jjwt_base64_decode("QUI"), b"AB")

    def test_padding_need_not_be_complete(self) -> None:
        # 259: one "=" or two; 263: each takes a byte off the length.
        self.assertEqual(jjwt_base64_decode("QQ=="), b"A")
        self.assertEqual(jjwt_base64_decode("QQ="), b"A")
        self.assertEqual(jjwt_base64_decode("QUI="), b"AB")

    def test_padding_after_a_whole_group_loses_a_byte(self) -> None:
        # 259: pad = 1; 263: len = (30 >> 3) - 1 = 2; 288-290 read "QUJD" whole,
        # 292-294 keep 2 bytes of it.
        self.assertEqual(jjwt_base64_decode("QUJD="), b"AB")

    def test_equals_before_the_last_two_characters_is_zero(self) -> None:
        # 54: IALPHABET['='] = 0, so ctoi("=") is 0 ("A") at 271.
        self.assertEqual(jjwt_base64_decode("QU=D"), b"A@\x03")
        self.assertEqual(jjwt_base64_decode("=QUJ"), b"\x01\x05\x09")
        # 259: pad = 2 of "A===" (only the last two count); 263: len = 1.
        self.assertEqual(jjwt_base64_decode("A==="), b"\x00")
        self.assertEqual(jjwt_base64_decode("==="), b"")

    def test_lone_equals_throws(self) -> None:
        # 259: charAt(eIx - 1) with eIx = 0: StringIndexOutOfBoundsException.
        self.assertIsNone(jjwt_base64_decode("="))
        self.assertIsNone(jjwt_base64_decode("=\n"))

    def test_negative_length_throws(self) -> None:
        # 263-264: len = (12 >> 3) - 2 = -1 for "==", (6 >> 3) - 1 = -1 for " =":
        # NegativeArraySizeException.
        self.assertIsNone(jjwt_base64_decode("=="))
        self.assertIsNone(jjwt_base64_decode(" ="))

    def test_empty(self) -> None:
        # 242-244.
        self.assertEqual(jjwt_base64_decode(""), b"")

    def test_no_character_of_the_alphabet(self) -> None:
        # 249-256 leave sIx = sLen - 1 and eIx = 0, so 260: cCnt = 2 - sLen:
        # 1 or 0 char give no byte, 3 and more a negative length (264).
        self.assertEqual(jjwt_base64_decode("!"), b"")
        self.assertEqual(jjwt_base64_decode("!!"), b"")
        self.assertIsNone(jjwt_base64_decode("!!!"))
        self.assertIsNone(jjwt_base64_decode("\u00e9" * 16))

    def test_characters_are_utf16_code_units(self) -> None:
        # 259: "\u20ac" is only compared with "="; len = (36 >> 3) - 1 = 3 is
        # read from "AAAA", so it is never decoded.
        self.assertEqual(jjwt_base64_decode("AAAA\u20ac="), b"\x00\x00\x00")
        # An emoji is two chars to Java: len = (42 >> 3) - 1 = 4, and 289 reads
        # its first surrogate: ctoi throws.
        self.assertIsNone(jjwt_base64_decode("AAAA\U0001f600="))

    def test_crlf_lines_of_76(self) -> None:
        # 261: char 76 is "\r", so sepCnt = 90 / 78 << 1 = 2; 263: len =
        # (88 * 6 >> 3) - 2 = 64; 279-282 jump over the "\r\n" after 19 groups.
        encoded = base64.b64encode(bytes(range(64))).decode()
        wrapped = encoded[:76] + "\r\n" + encoded[76:]
        self.assertEqual(jjwt_base64_decode(wrapped), bytes(range(64)))

    def test_newline_lines_of_76_throw(self) -> None:
        # GNU base64's wrapping: char 76 is "\n", so 261: sepCnt = 0, and 271
        # reaches the "\n": ctoi throws.  The auth-service keys with the text.
        encoded = base64.b64encode(bytes(range(64))).decode()
        self.assertIsNone(jjwt_base64_decode(encoded[:76] + "\n" + encoded[76:]))

    def test_alphanumeric_text_is_base64(self) -> None:
        # Only the alphabet: 44 chars are 33 bytes, whatever was meant.
        decoded = jjwt_base64_decode("thisisnotbase64butjjwtdecodesitanyway1234567")
        self.assertEqual(decoded, base64.b64decode("thisisnotbase64butjjwtdecodesitanyway1234567"))
        self.assertEqual(len(decoded or b""), 33)


class ReadHMACKeyTests(SynchronousTestCase):
    """
    L{read_hmac_key}: the key and whether it is the secret's decoding or its
    text, for each JWT_SECRET_ENCODING.
    """

    def test_auto_decodes_what_jjwt_decodes(self) -> None:
        self.assertEqual(
            read_hmac_key(UNPADDED_32 + "\n"), HMACKey(bytes(range(32)), "base64")
        )

    def test_auto_falls_back_to_the_text(self) -> None:
        secret = "a space-and-dash secret of 38 bytes.."
        self.assertEqual(read_hmac_key(secret), HMACKey(secret.encode(), "text"))

    def test_base64_refuses_what_jjwt_refuses(self) -> None:
        error = self.assertRaises(ValueError, read_hmac_key, "QUJD QUJD", "base64")
        self.assertNotIn("QUJD", str(error))

    def test_raw_is_always_text(self) -> None:
        self.assertEqual(read_hmac_key(PADDED_32, "raw"), HMACKey(PADDED_32.encode(), "text"))

    def test_repr_never_shows_the_key(self) -> None:
        read = read_hmac_key("k" * 40, "raw")
        self.assertNotIn("kkkk", repr(read))
        self.assertNotIn("b'", repr(read))


class JWTAlgorithmAndJWKSTests(SynchronousTestCase):
    """
    JWT_ALGORITHMS and JWT_JWKS_URL: each algorithm family needs its key
    source, and the JWKS can stand in for the secret.
    """

    JWKS = "https://auth.example/.well-known/jwks.json"

    def test_names_are_canonical_and_unique(self) -> None:
        config = load_config({**NO_AUTH, "JWT_JWKS_URL": self.JWKS,
                              "JWT_ALGORITHMS": " rs256, ES256 ,eddsa,RS256,,hs512"})
        self.assertEqual(config.jwt_algorithms, ("RS256", "ES256", "EdDSA", "HS512"))

    def test_jwks_replaces_the_secret_for_require_auth(self) -> None:
        config = load_config({"JWT_JWKS_URL": self.JWKS, "JWT_ALGORITHMS": "RS256"})
        self.assertEqual((config.jwt_jwks_url, config.jwt_secret), (self.JWKS, None))

    def test_jwks_needs_an_asymmetric_algorithm(self) -> None:
        self.assertEqual(
            problems_of({"JWT_JWKS_URL": self.JWKS}),
            [f"JWT_JWKS_URL={self.JWKS!r}: JWT_ALGORITHMS lists no asymmetric algorithm "
             "(RS256, ES256, ...), so no key of the JWKS would ever be used"],
        )

    def test_asymmetric_algorithms_need_a_jwks(self) -> None:
        self.assertEqual(
            problems_of({"JWT_SECRET": SECRET, "JWT_ALGORITHMS": "HS256,RS256,ES256"}),
            ["JWT_ALGORITHMS='HS256,RS256,ES256': RS256, ES256 need JWT_JWKS_URL "
             "(public keys come only from a JWKS)"],
        )
        self.assertEqual(
            problems_of({**NO_AUTH, "JWT_ALGORITHMS": "PS256"}),
            ["JWT_ALGORITHMS='PS256': PS256 needs JWT_JWKS_URL "
             "(public keys come only from a JWKS)"],
        )

    def test_key_too_short_for_every_listed_hmac_algorithm(self) -> None:
        self.assertEqual(
            problems_of({"JWT_SECRET": SECRET, "JWT_ALGORITHMS": "HS384,HS512"}),
            ["JWT_ALGORITHMS='HS384,HS512': the JWT_SECRET key is 37 bytes, too short for "
             "HS384, HS512 (HS256 needs 32 bytes, HS384 48, HS512 64)"],
        )

    def test_key_long_enough_for_one_listed_hmac_algorithm(self) -> None:
        config = load_config({"JWT_SECRET": "k-" * 24, "JWT_ALGORITHMS": "HS384,HS512"})
        self.assertEqual(config.jwt_algorithms, ("HS384", "HS512"))

    def test_secret_and_jwks_together(self) -> None:
        config = load_config(
            {"JWT_SECRET": SECRET, "JWT_JWKS_URL": self.JWKS, "JWT_ALGORITHMS": "HS256,RS256"}
        )
        self.assertEqual(config.jwt_algorithms, ("HS256", "RS256"))

    def test_no_key_source_at_all(self) -> None:
        self.assertEqual(
            problems_of({"JWT_ALGORITHMS": "HS256"}),
            ["JWT_SECRET is not set: must be the auth-service's secret when REQUIRE_AUTH=true "
             "(set REQUIRE_AUTH=false only for development)"],
        )

    def test_jwks_url_forms(self) -> None:
        for url in [
            "http://auth-service:4001/.well-known/jwks.json",
            "https://auth.example/keys?format=jwks",
            "https://[::1]:8443/jwks",
        ]:
            config = load_config({"JWT_JWKS_URL": f" {url}\n", "JWT_ALGORITHMS": "RS256"})
            self.assertEqual(config.jwt_jwks_url, url)

    def test_blank_jwks_url_is_unset(self) -> None:
        self.assertIsNone(load_config({"JWT_SECRET": SECRET, "JWT_JWKS_URL": " "}).jwt_jwks_url)

    def test_leeway_values(self) -> None:
        for text, value in [("0", 0.0), ("5", 5.0), ("1.5", 1.5), (" 300\n", 300.0)]:
            self.assertEqual(load_config({**NO_AUTH, "JWT_LEEWAY_S": text}).jwt_leeway_s, value)

    def test_cache_size_zero_is_allowed(self) -> None:
        self.assertEqual(load_config({**NO_AUTH, "JWT_CACHE_SIZE": "0"}).jwt_cache_size, 0)

    def test_token_type_values_are_trimmed(self) -> None:
        config = load_config(
            {**NO_AUTH, "JWT_TOKEN_TYPE_CLAIM": " token_use ", "JWT_TOKEN_TYPE": "access\n"}
        )
        self.assertEqual(
            (config.jwt_token_type_claim, config.jwt_token_type), ("token_use", "access")
        )

    def test_every_new_variable_has_an_option(self) -> None:
        options = {variable.name: variable.option for variable in VARIABLES}
        for name in [
            "JWT_ALGORITHMS", "JWT_LEEWAY_S", "JWT_SECRET_ENCODING", "JWT_TOKEN_TYPE_CLAIM",
            "JWT_TOKEN_TYPE", "JWT_JWKS_URL", "JWT_JWKS_REFRESH_MS", "JWT_CACHE_SIZE",
            "PUBLIC_PATHS", "CORS_MAX_AGE", "CORS_METHODS",
        ]:
            self.assertEqual(options[name], name.lower().replace("_", "-"))


class PublicPathsTests(SynchronousTestCase):
    """
    PUBLIC_PATHS holds plain, normalised paths.
    """

    def paths(self, text: str) -> Tuple[str, ...]:
        return load_config({**NO_AUTH, "PUBLIC_PATHS": text}).public_paths

    def test_list_is_trimmed_deduplicated_and_trailing_slashes_dropped(self) -> None:
        self.assertEqual(
            self.paths(" /health/ ,, /api/v1/auth/login,/health,/api/v1/auth/login/"),
            ("/health", "/api/v1/auth/login"),
        )

    def test_blank_makes_nothing_public(self) -> None:
        self.assertEqual(self.paths(""), ())

    def test_allowed_characters(self) -> None:
        self.assertEqual(self.paths("/a-b/c.d/_e~/f:g@h"), ("/a-b/c.d/_e~/f:g@h",))

    def test_bad_paths(self) -> None:
        for item in [
            "health", "/a/../b", "/a/./b", "/..", "//a", "/a//b", "/a b", "/a%2Fb", "/a?b",
            "/a#b", "/a\\b", "/\u00e9",
        ]:
            [line] = problems_of({**NO_AUTH, "PUBLIC_PATHS": f"/ok,{item}"})
            self.assertTrue(line.startswith("PUBLIC_PATHS="), line)
            self.assertIn(f"{item!r} is not a public path", line)


class CORSPreflightSettingsTests(SynchronousTestCase):
    """
    CORS_MAX_AGE and CORS_METHODS.
    """

    def test_methods_are_upper_cased_and_deduplicated(self) -> None:
        config = load_config({**NO_AUTH, "CORS_METHODS": "get, patch,GET,PURGE"})
        self.assertEqual(config.cors_methods, ("GET", "PATCH", "PURGE"))

    def test_max_age_zero(self) -> None:
        self.assertEqual(load_config({**NO_AUTH, "CORS_MAX_AGE": "0"}).cors_max_age, 0)


class ByteSizeTests(SynchronousTestCase):
    """
    JSON_BODY_LIMIT reads the npm bytes library's syntax, 1024-based.
    """

    def limit(self, text: str) -> int:
        return load_config({**NO_AUTH, "JSON_BODY_LIMIT": text}).body_limit

    def test_units(self) -> None:
        cases = {
            "1mb": 1048576, "100kb": 102400, "1.5mb": 1572864, "512b": 512, "1gb": 1 << 30,
            "2tb": 2 << 40, "1pb": 1 << 50, "1024": 1024, "1MB": 1048576, "10Kb": 10240,
            "1 mb": 1048576, " 1mb\n": 1048576, "1.1mb": 1153433, "0.5kb": 512, "1.9b": 1,
        }
        for text, size in cases.items():
            self.assertEqual(self.limit(text), size, text)

    def test_bad_sizes(self) -> None:
        bad = ("", "abc", "mb", "-1mb", "1zb", "0", "0kb", "0.0001kb", "1.mb", "1mb2", "1 000")
        for text in bad:
            [line] = problems_of({**NO_AUTH, "JSON_BODY_LIMIT": text})
            self.assertTrue(line.startswith(f"JSON_BODY_LIMIT={text!r}: must be a size"), line)


class ServiceURLTests(SynchronousTestCase):
    """
    Service URLs are http(s) with a host, normalised without a trailing slash.
    """

    def url(self, text: str) -> str:
        return load_config({**NO_AUTH, "USER_SERVICE_URL": text}).service_named("user-service").url

    def test_normalisation(self) -> None:
        cases = {
            "http://user-service:8082/": "http://user-service:8082",
            "HTTP://Users.Example.COM:8082/Api/": "http://users.example.com:8082/Api",
            "https://users.example/v1//": "https://users.example/v1",
            "http://user_service:8082": "http://user_service:8082",
            "http://[::1]:8082/": "http://[::1]:8082",
            "http://10.0.0.7": "http://10.0.0.7",
            " http://users:8082 \n": "http://users:8082",
            "http://users:": "http://users",
            "http://users/a%20b/": "http://users/a%20b",
        }
        for text, url in cases.items():
            self.assertEqual(self.url(text), url, text)

    def test_url_variable_is_recorded(self) -> None:
        service = load_config(NO_AUTH).service_named("user-service")
        self.assertEqual(service.url_variable, "USER_SERVICE_URL")

    def test_bad_urls(self) -> None:
        cases = {
            "ftp://users": "must be an http:// or https:// URL",
            "users:8082": "must be an http:// or https:// URL",
            "http://": "has no valid host",
            "http:///path": "has no valid host",
            "http://bad host": "must be an http:// or https:// URL",
            "http://users:8082?x=1": "has a query or fragment",
            "http://users:8082/#top": "has a query or fragment",
            "http://admin:pw@users:8082": "has user info",
            "http://users:abc": "has no valid host and port",
            "http://users:70000": "has no valid host and port",
            "http://users:0": "port must be from 1 to 65535",
            "http://10.0.0.256:8082": "has no valid host",
            "http://[::1": "has no valid host and port",
            "": "must be an http:// or https:// URL",
        }
        for text, reason in cases.items():
            [line] = problems_of({**NO_AUTH, "USER_SERVICE_URL": text})
            self.assertTrue(line.startswith(f"USER_SERVICE_URL={text!r}: {reason}"), line)

    def test_bad_health_paths(self) -> None:
        for text in ("health", "//evil.example/x", "/a b", "/x#y", ""):
            [line] = problems_of({**NO_AUTH, "ORDER_SERVICE_HEALTH_PATH": text})
            self.assertTrue(
                line.startswith(f"ORDER_SERVICE_HEALTH_PATH={text!r}: must be a path"), line
            )


class TrustProxyTests(SynchronousTestCase):
    """
    TRUST_PROXY: true, false, a hop count, or CIDRs and addresses.
    """

    def trust(self, text: str) -> TrustProxy:
        return load_config({**NO_AUTH, "TRUST_PROXY": text}).trust_proxy

    def test_booleans(self) -> None:
        self.assertEqual(self.trust("true"), TrustProxy(mode="all"))
        self.assertEqual(self.trust("TRUE"), TrustProxy(mode="all"))
        self.assertEqual(self.trust("false"), TrustProxy(mode="none"))

    def test_hop_count(self) -> None:
        self.assertEqual(self.trust("1"), TrustProxy(mode="hops", hops=1))
        self.assertEqual(self.trust(" 3 "), TrustProxy(mode="hops", hops=3))

    def test_zero_hops_trusts_nobody(self) -> None:
        self.assertEqual(self.trust("0"), TrustProxy(mode="none"))

    def test_cidrs_and_addresses(self) -> None:
        self.assertEqual(
            self.trust(" 10.0.0.0/8, 192.168.1.1 ,,2001:db8::/32,::1"),
            TrustProxy(
                mode="cidrs",
                networks=(
                    ip_network("10.0.0.0/8"),
                    ip_network("192.168.1.1/32"),
                    ip_network("2001:db8::/32"),
                    ip_network("::1/128"),
                ),
            ),
        )

    def test_host_bits_are_masked(self) -> None:
        self.assertEqual(self.trust("10.1.2.3/8").networks, (ip_network("10.0.0.0/8"),))

    def test_proxy_addr_names(self) -> None:
        self.assertEqual(
            self.trust("loopback").networks, (ip_network("127.0.0.0/8"), ip_network("::1/128"))
        )
        self.assertEqual(len(self.trust("uniquelocal,linklocal").networks), 6)

    def test_bad_entry_is_named(self) -> None:
        [line] = problems_of({**NO_AUTH, "TRUST_PROXY": "10.0.0.0/8,10.0.0.0/33"})
        self.assertTrue(
            line.startswith(
                "TRUST_PROXY='10.0.0.0/8,10.0.0.0/33': '10.0.0.0/33' is not an IP address or CIDR;"
            ),
            line,
        )


class CORSTests(SynchronousTestCase):
    """
    CORS_ORIGINS, and CORS_ORIGIN as its older alias.
    """

    def origins(
        self,
        environ: Dict[str, str],
        dotenv: Optional[Mapping[str, str]] = None,
        overrides: Optional[Mapping[str, str]] = None,
    ) -> Tuple[str, ...]:
        return load_config({**NO_AUTH, **environ}, dotenv or {}, overrides or {}).cors_origins

    def test_list_is_trimmed_and_empty_entries_dropped(self) -> None:
        self.assertEqual(
            self.origins({"CORS_ORIGINS": " https://a.example , ,https://b.example:8443,"}),
            ("https://a.example", "https://b.example:8443"),
        )

    def test_star(self) -> None:
        self.assertEqual(self.origins({"CORS_ORIGINS": "*"}), ("*",))

    def test_origins_are_normalised_as_browsers_send_them(self) -> None:
        self.assertEqual(
            self.origins({
                "CORS_ORIGINS": "HTTPS://Shop.Example:443/,http://a.example:80,"
                                "capacitor://localhost,https://shop.example"
            }),
            ("https://shop.example", "http://a.example", "capacitor://localhost"),
        )

    def test_empty_list_allows_no_origin(self) -> None:
        self.assertEqual(self.origins({"CORS_ORIGINS": ""}), ())

    def test_alias_when_cors_origins_is_not_set(self) -> None:
        self.assertEqual(
            self.origins({"CORS_ORIGIN": "https://old.example"}), ("https://old.example",)
        )

    def test_alias_when_cors_origins_is_blank(self) -> None:
        self.assertEqual(
            self.origins({"CORS_ORIGINS": " ", "CORS_ORIGIN": "https://old.example"}),
            ("https://old.example",),
        )

    def test_cors_origins_beats_alias(self) -> None:
        self.assertEqual(
            self.origins(
                {"CORS_ORIGINS": "https://new.example", "CORS_ORIGIN": "https://old.example"}
            ),
            ("https://new.example",),
        )

    def test_alias_in_a_higher_source_wins(self) -> None:
        self.assertEqual(
            self.origins(
                {"CORS_ORIGIN": "https://env.example"}, {"CORS_ORIGINS": "https://dotenv.example"}
            ),
            ("https://env.example",),
        )
        self.assertEqual(
            self.origins(
                {"CORS_ORIGINS": "https://env.example"},
                overrides={"CORS_ORIGIN": "https://option.example"},
            ),
            ("https://option.example",),
        )

    def test_alias_problem_names_the_alias(self) -> None:
        self.assertEqual(
            problems_of({**NO_AUTH, "CORS_ORIGIN": "https://a.example/x"}),
            ["CORS_ORIGIN='https://a.example/x': 'https://a.example/x' is not an origin; "
             "each entry must be scheme://host[:port] (no path) or *"],
        )


class ListenTests(SynchronousTestCase):
    """
    PORT and HOST make a TCP endpoint description; --port (LISTEN) may give
    a whole one instead.
    """

    def listen(
        self,
        environ: Optional[Mapping[str, str]] = None,
        overrides: Optional[Mapping[str, str]] = None,
    ) -> str:
        return load_config({**NO_AUTH, **(environ or {})}, {}, overrides or {}).listen

    def test_port_and_host(self) -> None:
        self.assertEqual(
            self.listen({"PORT": "8080", "HOST": "127.0.0.1"}), "tcp:8080:interface=127.0.0.1"
        )

    def test_port_zero_for_any_free_port(self) -> None:
        self.assertEqual(self.listen({"PORT": "0"}), "tcp:0:interface=0.0.0.0")

    def test_host_name(self) -> None:
        self.assertEqual(self.listen({"HOST": "localhost"}), "tcp:4000:interface=localhost")

    def test_ipv6_host_colons_are_escaped(self) -> None:
        listen = self.listen({"HOST": "::"})
        self.assertEqual(listen, "tcp:4000:interface=\\:\\:")
        self.assertEqual(serverFromString(MemoryReactor(), listen)._interface, "::")

    def test_bracketed_ipv6_host(self) -> None:
        listen = self.listen({"HOST": "[::1]", "PORT": "9000"})
        self.assertEqual(listen, "tcp:9000:interface=\\:\\:1")
        endpoint = serverFromString(MemoryReactor(), listen)
        self.assertEqual((endpoint._interface, endpoint._port), ("::1", 9000))

    def test_listen_override_replaces_port_and_host(self) -> None:
        self.assertEqual(
            self.listen(
                {"PORT": "1", "HOST": "127.0.0.1"}, {"LISTEN": "tcp:4000:interface=0.0.0.0"}
            ),
            "tcp:4000:interface=0.0.0.0",
        )

    def test_listen_accepts_other_endpoint_kinds(self) -> None:
        for description in ("tcp6:4000:interface=\\:\\:", "unix:/tmp/qeetgw.sock"):
            self.assertEqual(self.listen(overrides={"LISTEN": description}), description)

    def test_listen_ssl_with_real_files(self) -> None:
        cert_path, key_path = make_certificate(self.mktemp())
        description = f"ssl:4443:privateKey={key_path}:certKey={cert_path}"
        self.assertEqual(self.listen(overrides={"LISTEN": description}), description)

    def test_listen_ssl_with_missing_files(self) -> None:
        missing = os.path.abspath(self.mktemp())
        description = f"ssl:4443:privateKey={missing}"
        [line] = problems_of(NO_AUTH, {}, {"LISTEN": description})
        expected = f"--port={description!r}: must be a Twisted endpoint description"
        self.assertTrue(line.startswith(expected), line)
        self.assertIn("No such file or directory", line)

    def test_listen_garbage(self) -> None:
        self.assertEqual(
            problems_of(NO_AUTH, {}, {"LISTEN": "garbage"}),
            ["--port='garbage': must be a Twisted endpoint description such as "
             "tcp:4000:interface=0.0.0.0 or ssl:4443:privateKey=key.pem:certKey=cert.pem "
             "(Unknown endpoint type: 'garbage')"],
        )

    def test_listen_bad_arguments(self) -> None:
        for description in ("tcp:abc", "tcp:4000:colour=blue", "tcp:"):
            [line] = problems_of(NO_AUTH, {}, {"LISTEN": description})
            self.assertTrue(
                line.startswith(f"--port={description!r}: must be a Twisted endpoint"), line
            )

    def test_listen_port_out_of_range(self) -> None:
        self.assertEqual(
            problems_of(NO_AUTH, {}, {"LISTEN": "tcp:70000"}),
            ["--port='tcp:70000': must have a port from 0 to 65535"],
        )

    def test_listen_port_number_sets_port(self) -> None:
        """
        C{--port 8080} is a port on HOST, as a user of Express's PORT means.
        """
        self.assertEqual(
            self.listen({"PORT": "1", "HOST": "127.0.0.1"}, {"LISTEN": "8080"}),
            "tcp:8080:interface=127.0.0.1",
        )

    def test_listen_port_number_is_checked_as_port(self) -> None:
        self.assertEqual(
            problems_of(NO_AUTH, {}, {"LISTEN": "99999"}),
            ["PORT='99999': must be a whole number from 0 to 65535"],
        )

    def test_listen_description_with_host_option_conflicts(self) -> None:
        self.assertEqual(
            problems_of(NO_AUTH, {}, {"LISTEN": "tcp:4000", "HOST": "127.0.0.1"}),
            ["HOST='127.0.0.1': cannot be combined with --port 'tcp:4000'; "
             "give the interface and port in the endpoint description"],
        )


class ReadDotenvTests(SynchronousTestCase):
    """
    The .env reader.
    """

    def write(self, content: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(content)
        return path

    def test_missing_file_is_empty(self) -> None:
        self.assertEqual(read_dotenv(self.mktemp()), {})

    def test_assignments_comments_and_blank_lines(self) -> None:
        path = self.write(
            "# the gateway\n"
            "\n"
            "PORT=4000\n"
            "   # indented comment\n"
            "HOST = 127.0.0.1  \n"
            "export JWT_SECRET=abc\n"
            "EMPTY=\n"
            "spring.datasource.url=jdbc:x\n"
        )
        self.assertEqual(
            read_dotenv(path),
            {
                "PORT": "4000",
                "HOST": "127.0.0.1",
                "JWT_SECRET": "abc",
                "EMPTY": "",
                "spring.datasource.url": "jdbc:x",
            },
        )

    def test_inline_comments_after_unquoted_values(self) -> None:
        path = self.write("A=value # comment\nB=pass#word\nC= # only a comment\nD=#hash\n")
        self.assertEqual(
            read_dotenv(path), {"A": "value", "B": "pass#word", "C": "", "D": "#hash"}
        )

    def test_single_quotes_are_literal(self) -> None:
        path = self.write("A='a # b \\n c'\nB='  spaced  '  # comment\nC=`tick`\n")
        self.assertEqual(read_dotenv(path), {"A": "a # b \\n c", "B": "  spaced  ", "C": "tick"})

    def test_double_quotes_understand_escapes(self) -> None:
        path = self.write(
            'A="line1\\nline2"\n'
            'B="tab\\there \\"q\\" back\\\\slash \\x"\n'
            'C="# not a comment" # one\n'
        )
        self.assertEqual(
            read_dotenv(path),
            {"A": "line1\nline2", "B": 'tab\there "q" back\\slash \\x', "C": "# not a comment"},
        )

    def test_export_prefix_and_key_named_export(self) -> None:
        path = self.write("export   A=1\nexport=2\n")
        self.assertEqual(read_dotenv(path), {"A": "1", "export": "2"})

    def test_later_line_wins(self) -> None:
        self.assertEqual(read_dotenv(self.write("A=1\nA=2\n")), {"A": "2"})

    def test_crlf_and_byte_order_mark(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xef\xbb\xbfA=1\r\nB='2'\r\n")
        self.assertEqual(read_dotenv(path), {"A": "1", "B": "2"})

    def test_value_may_contain_equals(self) -> None:
        self.assertEqual(read_dotenv(self.write("JWT_SECRET=abc==\n")), {"JWT_SECRET": "abc=="})

    def test_malformed_lines_name_file_and_line(self) -> None:
        path = self.write("A=1\nthis is not an assignment\nB=2\nexport C\n1X=3\n")
        error = self.assertRaises(ConfigError, read_dotenv, path)
        self.assertEqual(
            error.problems,
            [f"{path}:{line}: expected KEY=VALUE" for line in (2, 4, 5)],
        )

    def test_unterminated_quotes(self) -> None:
        path = self.write('A="open\nB=\'open\n')
        error = self.assertRaises(ConfigError, read_dotenv, path)
        self.assertEqual(
            error.problems,
            [
                f"{path}:1: A: unterminated double-quoted value "
                "(a value must fit on one line; write \\n for a newline)",
                f"{path}:2: B: unterminated quoted value (a value must fit on one line)",
            ],
        )

    def test_text_after_closing_quote(self) -> None:
        path = self.write('A="x" y\n')
        error = self.assertRaises(ConfigError, read_dotenv, path)
        self.assertEqual(error.problems, [f"{path}:1: A: unexpected text after the closing quote"])

    def test_malformed_line_is_not_echoed(self) -> None:
        """
        A malformed line may hold a secret; the problem names only its place.
        """
        path = self.write("JWT_SECRET hunter2\n")
        error = self.assertRaises(ConfigError, read_dotenv, path)
        self.assertNotIn("hunter2", str(error))

    def test_directory_is_a_problem(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        error = self.assertRaises(ConfigError, read_dotenv, path)
        [line] = error.problems
        self.assertTrue(line.startswith(f"{path}: cannot be read"), line)

    def test_not_utf8(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"A=\xff\n")
        error = self.assertRaises(ConfigError, read_dotenv, path)
        self.assertEqual(error.problems, [f"{path}: is not UTF-8 text (byte 2)"])

    def test_dotenv_values_feed_load_config(self) -> None:
        path = self.write("REQUIRE_AUTH=false\nRATE_LIMIT_MAX='7'  # per minute\n")
        self.assertEqual(load_config({}, read_dotenv(path)).rate_limit_max, 7)
