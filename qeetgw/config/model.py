"""
The gateway's configuration: one immutable value, built once at start-up.

Everything the gateway reads from its environment, its C{.env} file and its
C{twistd qeetgw} options ends up in a L{Config}.  Nothing else in qeetgw
reads the environment; nothing changes a L{Config} after it is built.

Each variable is declared once, here, on the field it sets: the field's
type, then L{setting} with the variable's name, its default as the variable
would be written (SPEC.md's spelling), its parser and its C{--help}
sentence.  The field's default is that text parsed, and the table of
variables (L{qeetgw.config.table.VARIABLES}) is read back from the fields,
in their order, which is the order of C{--help} and of problem lines.  The
declaration sits on the class rather than in a table that makes the class
(C{attrs.make_class}) so that each field's type stays written out, where a
reader and a type checker see it; L{setting} is typed as its parser's
value, so a type checker also compares the parser with the field.
"""

from __future__ import annotations

from typing import Literal, Optional, Tuple

import attrs

from qeetgw.config.endpoints import optional_endpoint
from qeetgw.config.hosts import trusted_proxies
from qeetgw.config.jwtkeys import HMAC_ALGORITHMS, HMACKey, read_hmac_key
from qeetgw.config.listen import DEFAULT_LISTEN, LISTEN_VARIABLES
from qeetgw.config.parsers import (
    boolean,
    byte_size,
    ca_file,
    choice,
    free_text,
    optional_text,
    required_text,
    secret,
    secret_list,
    whole_number,
    worker_count,
)
from qeetgw.config.paths import DEFAULT_PUBLIC_PATHS, methods, public_path_list, route_budgets
from qeetgw.config.services import SERVICE_VARIABLES
from qeetgw.config.tokens import MAXIMUM_JWT_LEEWAY_S, algorithm_list, leeway
from qeetgw.config.urls import checked_redis_url, jwks_url, origins
from qeetgw.config.values import ServiceConfig, TrustProxy
from qeetgw.config.variable import combined, setting


@attrs.frozen
class Config:
    """
    Everything qeetgw is configured with.  Each field names the variable
    that sets it, its default and what it accepts; SPEC.md and the README
    say more.

    @ivar listen: the Twisted endpoint description to listen on
        (C{"tcp:4000:interface=0.0.0.0"}); built from PORT and HOST, or given
        whole with C{--port}.
    @ivar services: the upstream services, built from their URL, timeout and
        health-path variables.  Empty by default, unlike a loaded
        configuration's six: a L{Config} built in code names the services
        it routes to.
    """

    listen: str = combined(LISTEN_VARIABLES, DEFAULT_LISTEN)
    trust_proxy: TrustProxy = setting(
        "TRUST_PROXY", "false", trusted_proxies,
        "Trust X-Forwarded-For: true (its leftmost entry, forgeable), false, a "
        "hop count (the safe choice) or a comma list of proxy CIDRs",
    )
    #: CORS_ORIGINS: normalised as browsers send them; C{*} for any.
    cors_origins: Tuple[str, ...] = setting(
        "CORS_ORIGINS", "http://localhost:3000,http://localhost:3001", origins,
        "Comma list of allowed CORS origins; * allows any", aliases=("CORS_ORIGIN",),
    )
    cors_credentials: bool = setting(
        "CORS_CREDENTIALS", "false", boolean,
        "Send Access-Control-Allow-Credentials: true (true/false)",
    )
    #: CORS_MAX_AGE: seconds a browser may cache a preflight's answer.
    cors_max_age: int = setting(
        "CORS_MAX_AGE", "600", whole_number(0),
        "Seconds a browser may cache a preflight's answer (Access-Control-Max-Age)",
    )
    #: CORS_METHODS: the methods a preflight allows, upper case.
    cors_methods: Tuple[str, ...] = setting(
        "CORS_METHODS", "GET,HEAD,PUT,PATCH,POST,DELETE", methods,
        "Comma list of methods a preflight allows (Access-Control-Allow-Methods)",
    )
    require_auth: bool = setting(
        "REQUIRE_AUTH", "true", boolean,
        "Enforce JWT on /api/*, public paths aside (true/false)",
    )
    #: PUBLIC_PATHS: paths no token is asked for, without a trailing slash.
    public_paths: Tuple[str, ...] = setting(
        "PUBLIC_PATHS", ",".join(DEFAULT_PUBLIC_PATHS), public_path_list,
        "Comma list of paths that need no token, matched on whole segments",
    )
    jwt_secret: Optional[str] = setting(
        "JWT_SECRET", None, secret,
        "HMAC key shared with the auth-service, at least 32 bytes; required when "
        "REQUIRE_AUTH=true unless JWT_JWKS_URL is set (prefer the environment: "
        "options show in ps)",
        hidden=True,
    )
    #: JWT_SECRET_ENCODING: how JWT_SECRET becomes the HMAC key; see
    #: L{read_hmac_key}.
    jwt_secret_encoding: Literal["auto", "base64", "raw"] = setting(
        "JWT_SECRET_ENCODING", "auto", choice("auto", "base64", "raw"),
        "How JWT_SECRET becomes the key: auto (as the auth-service: decoded by jjwt's "
        "Decoders.BASE64, else, when that fails, its UTF-8 bytes), base64 (that decoding, "
        "required) or raw (always its UTF-8 bytes)",
    )
    #: JWT_PREVIOUS_SECRETS: secrets JWT_SECRET had before a key rotation,
    #: in order, each read as JWT_SECRET is; see L{read_previous_hmac_keys}.
    jwt_previous_secrets: Tuple[str, ...] = setting(
        "JWT_PREVIOUS_SECRETS", "", secret_list,
        "Comma list of earlier JWT_SECRET values whose tokens are still accepted during "
        "a key rotation, each read as JWT_SECRET is (JWT_SECRET_ENCODING) and stripped "
        "of surrounding whitespace; a secret that contains a comma cannot be listed",
        hidden=True,
    )
    jwt_issuer: str = setting(
        "JWT_ISSUER", "http://localhost:4001", required_text,
        "Expected iss claim",
    )
    jwt_audience: Optional[str] = setting(
        "JWT_AUDIENCE", None, optional_text,
        "When set, the aud claim must contain it",
    )
    jwt_query_param: Optional[str] = setting(
        "JWT_QUERY_PARAM", None, optional_text,
        "When set, a WebSocket handshake may carry its token in this query parameter "
        "(taken out of the target before forwarding, never logged)",
    )
    #: JWT_ALGORITHMS: the token algorithms accepted, canonical spelling;
    #: never C{none}.
    jwt_algorithms: Tuple[str, ...] = setting(
        "JWT_ALGORITHMS", ",".join(HMAC_ALGORITHMS), algorithm_list,
        "Comma list of accepted token algorithms; HS* use JWT_SECRET, RS*/PS*/ES*/EdDSA "
        "use JWT_JWKS_URL; none is never accepted",
    )
    #: JWT_LEEWAY_S: clock skew tolerated on exp, nbf and iat, in seconds.
    jwt_leeway_s: float = setting(
        "JWT_LEEWAY_S", "0", leeway,
        f"Clock skew tolerated on exp, nbf and iat, in seconds (0 to {MAXIMUM_JWT_LEEWAY_S})",
    )
    #: JWT_TOKEN_TYPE_CLAIM / JWT_TOKEN_TYPE: a token whose claim of that name
    #: is present must have this value (refresh tokens are refused).
    jwt_token_type_claim: str = setting(
        "JWT_TOKEN_TYPE_CLAIM", "tokenType", required_text,
        "Claim naming the token's type; a token that has it must have JWT_TOKEN_TYPE",
    )
    jwt_token_type: str = setting(
        "JWT_TOKEN_TYPE", "access", required_text,
        "The only token type accepted (refresh tokens are refused)",
    )
    #: JWT_JWKS_URL: where the asymmetric verification keys are published.
    jwt_jwks_url: Optional[str] = setting(
        "JWT_JWKS_URL", None, jwks_url,
        "URL of a JSON Web Key Set with the auth-service's public keys, for "
        "RS*/PS*/ES*/EdDSA tokens",
    )
    #: JWT_JWKS_REFRESH_MS: the shortest time between two JWKS fetches that a
    #: token with an unknown key id may cause.
    jwt_jwks_refresh_ms: int = setting(
        "JWT_JWKS_REFRESH_MS", "60000", whole_number(1000),
        "Shortest time between two JWKS fetches caused by unknown key ids, in milliseconds",
    )
    #: JWT_CACHE_SIZE: verified tokens remembered until they expire; 0 is off.
    jwt_cache_size: int = setting(
        "JWT_CACHE_SIZE", "10000", whole_number(0),
        "Verified tokens remembered until they expire (0 turns the cache off)",
    )
    rate_limit_window_ms: int = setting(
        "RATE_LIMIT_WINDOW_MS", "60000", whole_number(1),
        "Rate-limit window, in milliseconds",
    )
    rate_limit_max: int = setting(
        "RATE_LIMIT_MAX", "1000", whole_number(1),
        "Maximum requests per window",
    )
    rate_limit_message: str = setting(
        "RATE_LIMIT_MESSAGE", "Too many requests from this IP, please try again later.",
        free_text, "Message of the 429 answer",
    )
    #: RATE_LIMIT_KEY: what a client is, for counting: its address, the
    #: verified token's subject, or both.
    rate_limit_key: Literal["ip", "user", "ip+user"] = setting(
        "RATE_LIMIT_KEY", "ip", choice("ip", "user", "ip+user"),
        "What a client is, for counting: ip, user (the verified token's subject, "
        "else the address) or ip+user",
    )
    #: RATE_LIMIT_ALGORITHM: the Express gateway's fixed window, or a sliding
    #: window without the double burst at a window's edge.
    rate_limit_algorithm: Literal["fixed", "sliding"] = setting(
        "RATE_LIMIT_ALGORITHM", "fixed", choice("fixed", "sliding"),
        "fixed (each client's window starts at its first request, as the Express "
        "gateway) or sliding (no double burst at a window's edge)",
    )
    #: RATE_LIMIT_HEADERS: which rate-limit headers responses carry.
    rate_limit_headers: Literal["draft-6", "draft-8", "none"] = setting(
        "RATE_LIMIT_HEADERS", "draft-6", choice("draft-6", "draft-8", "none"),
        "Rate-limit headers: draft-6 (RateLimit-Policy/-Limit/-Remaining/-Reset, as "
        "the Express gateway), draft-8 (RateLimit and RateLimit-Policy) or none",
    )
    #: RATE_LIMIT_ROUTES: budgets of their own for path prefixes, as
    #: (prefix, max, window in ms) — the window defaults to RATE_LIMIT_WINDOW_MS.
    rate_limit_routes: Tuple[Tuple[str, int, Optional[int]], ...] = setting(
        "RATE_LIMIT_ROUTES", "", route_budgets,
        "Budgets of their own for path prefixes: PREFIX=MAX[/WINDOW_MS],... "
        "(e.g. /api/v1/auth/login=10/60000)",
    )
    #: RATE_LIMIT_STORE: where counters live.
    rate_limit_store: Literal["memory", "redis"] = setting(
        "RATE_LIMIT_STORE", "memory", choice("memory", "redis"),
        "Where counters live: memory (this process) or redis (one limit across replicas)",
    )
    rate_limit_memory_max_keys: int = setting(
        "RATE_LIMIT_MEMORY_MAX_KEYS", "100000", whole_number(1),
        "The most clients the memory store tracks at once",
    )
    #: REDIS_URL: the Redis of RATE_LIMIT_STORE=redis, as text;
    #: L{qeetgw.config.urls.parse_redis_url} splits it.
    redis_url: str = setting(
        "REDIS_URL", "redis://127.0.0.1:6379/0", checked_redis_url,
        "Redis for RATE_LIMIT_STORE=redis: redis://[[user]:password@]host[:port][/db]",
        hidden=True,
    )
    rate_limit_redis_prefix: str = setting(
        "RATE_LIMIT_REDIS_PREFIX", "qeetgw:ratelimit:", required_text,
        "Prefix of the rate-limit keys in Redis",
    )
    rate_limit_redis_timeout_ms: int = setting(
        "RATE_LIMIT_REDIS_TIMEOUT_MS", "100", whole_number(1, 10000),
        "The longest a request waits for Redis, in milliseconds",
    )
    #: RATE_LIMIT_FAIL: when the store cannot count, let requests through
    #: ("open") or refuse them with 503 ("closed").
    rate_limit_fail: Literal["open", "closed"] = setting(
        "RATE_LIMIT_FAIL", "open", choice("open", "closed"),
        "When the store cannot count: open (let requests through, warn once per "
        "outage) or closed (refuse them with 503)",
    )
    #: GATEWAY_PROXY_TIMEOUT_MS: how long an upstream may take to start answering.
    proxy_timeout_ms: int = setting(
        "GATEWAY_PROXY_TIMEOUT_MS", "5000", whole_number(1),
        "How long an upstream may take to answer, in milliseconds",
    )
    #: JSON_BODY_LIMIT, in bytes: the largest request body accepted.
    body_limit: int = setting(
        "JSON_BODY_LIMIT", "1mb", byte_size,
        "Largest request body accepted (1mb, 100kb, 512b, bytes)",
    )
    services: Tuple[ServiceConfig, ...] = combined(SERVICE_VARIABLES, ())
    upstream_pool_size: int = setting(
        "UPSTREAM_POOL_SIZE", "128", whole_number(1),
        "Persistent connections kept per upstream",
    )
    #: UPSTREAM_KEEPALIVE_TIMEOUT_MS: shorter than the upstream's own
    #: keep-alive timeout (Node's is 5 s).
    upstream_keepalive_timeout_ms: int = setting(
        "UPSTREAM_KEEPALIVE_TIMEOUT_MS", "4000", whole_number(1),
        "How long an idle upstream connection is kept, in milliseconds; keep it "
        "below the upstreams' own keep-alive timeout",
    )
    #: UPSTREAM_CA_FILE: an absolute path, checked at start-up.
    upstream_ca_file: Optional[str] = setting(
        "UPSTREAM_CA_FILE", None, ca_file,
        "PEM file of extra CA certificates for https upstreams",
    )
    #: WORKERS: gateway processes sharing the listening socket (1: this one).
    workers: int = setting(
        "WORKERS", "1", worker_count,
        "Gateway processes sharing the listening socket: a number, or auto for one "
        "per core (rate limits across workers need RATE_LIMIT_STORE=redis)",
    )
    #: SHUTDOWN_DELAY_MS: how long to keep serving after SIGTERM, not ready,
    #: before listening stops (so load balancers notice first).
    shutdown_delay_ms: int = setting(
        "SHUTDOWN_DELAY_MS", "0", whole_number(0),
        "After SIGTERM, keep serving (with /ready answering 503) this long before "
        "listening stops; about 5000 in Kubernetes, so endpoints update first",
    )
    client_header_timeout_ms: int = setting(
        "CLIENT_HEADER_TIMEOUT_MS", "10000", whole_number(1),
        "A request's headers must be complete this long after its first byte (else 408)",
    )
    client_body_timeout_ms: int = setting(
        "CLIENT_BODY_TIMEOUT_MS", "30000", whole_number(1),
        "The longest a request body may stall (else 408)",
    )
    keepalive_timeout_ms: int = setting(
        "KEEPALIVE_TIMEOUT_MS", "65000", whole_number(1),
        "Idle keep-alive client connections are closed after this long",
    )
    client_max_header_bytes: int = setting(
        "CLIENT_MAX_HEADER_BYTES", "16384", whole_number(1024, 1048576),
        "The largest request header block (else 431)",
    )
    max_connections: int = setting(
        "MAX_CONNECTIONS", "10000", whole_number(1),
        "Open client connections at most; past it new connections are closed at once",
    )
    client_linger_timeout_ms: int = setting(
        "CLIENT_LINGER_TIMEOUT_MS", "5000", whole_number(1),
        "After an early refusal (413, 400, 408, 414, 431), close when the client "
        "sends nothing for this long",
    )
    client_linger_time_ms: int = setting(
        "CLIENT_LINGER_TIME_MS", "30000", whole_number(0),
        "After an early refusal, read and discard what the client still sends for "
        "at most this long, so it can read the answer; 0 closes at once",
    )
    client_linger_max_bytes: int = setting(
        "CLIENT_LINGER_MAX_BYTES", "64mb", byte_size,
        "After an early refusal, read and discard at most this much (64mb, 1gb, bytes)",
    )
    websocket_idle_timeout_ms: int = setting(
        "WEBSOCKET_IDLE_TIMEOUT_MS", "3600000", whole_number(0),
        "A WebSocket tunnel with no byte either way for this long is closed; 0: never",
    )
    websocket_max_tunnels: int = setting(
        "WEBSOCKET_MAX_TUNNELS", "10000", whole_number(0),
        "WebSocket tunnels open at most; past it a handshake gets 503",
    )
    #: SERVICE_DISCOVERY: see L{qeetgw.upstream.discovery} for dns.
    service_discovery: Literal["static", "dns"] = setting(
        "SERVICE_DISCOVERY", "static", choice("static", "dns"),
        "static: the service URLs are the instances; dns: every address a service "
        "URL's host name resolves to is an instance (http:// upstreams only)",
    )
    dns_refresh_ms: int = setting(
        "DNS_REFRESH_MS", "5000", whole_number(100),
        "How often dns discovery re-resolves the service host names",
    )
    balancer: Literal["round_robin", "least_request"] = setting(
        "BALANCER", "round_robin", choice("round_robin", "least_request"),
        "How an instance is chosen among a service's several: round_robin or "
        "least_request (the less busy of two random ones)",
    )
    outlier_consecutive_failures: int = setting(
        "OUTLIER_CONSECUTIVE_FAILURES", "5", whole_number(1),
        "Connect failures, timeouts or 5xx answers in a row that eject an instance",
    )
    outlier_base_ejection_ms: int = setting(
        "OUTLIER_BASE_EJECTION_MS", "30000", whole_number(1),
        "How long an ejection lasts, times the number of ejections (capped at 10x)",
    )
    outlier_max_ejection_percent: int = setting(
        "OUTLIER_MAX_EJECTION_PERCENT", "50", whole_number(0, 100),
        "The most of a service's instances ejected at once (one is always allowed)",
    )
    retry_max: int = setting(
        "RETRY_MAX", "1", whole_number(0, 10),
        "Tries after the first, each on another instance, within the retry budget",
    )
    retry_buffer_bytes: int = setting(
        "RETRY_BUFFER_BYTES", "65536", whole_number(0),
        "The largest request body an idempotent request is retried with",
    )
    upstream_max_in_flight: int = setting(
        "UPSTREAM_MAX_IN_FLIGHT", "1024", whole_number(1),
        "Requests in flight per service at most; past it, 503 at once",
    )
    health_check_interval_ms: int = setting(
        "HEALTH_CHECK_INTERVAL_MS", "10000", whole_number(0),
        "How often every instance's health path is probed in the background "
        "(/health/services answers from that); 0 turns it off",
    )
    health_unhealthy_threshold: int = setting(
        "HEALTH_UNHEALTHY_THRESHOLD", "3", whole_number(1),
        "Failed health checks in a row that take an instance out",
    )
    health_healthy_threshold: int = setting(
        "HEALTH_HEALTHY_THRESHOLD", "2", whole_number(1),
        "Passed health checks in a row that bring it back",
    )
    #: METRICS_PORT: an endpoint description, or None for no metrics.
    metrics_port: Optional[str] = setting(
        "METRICS_PORT", None, optional_endpoint,
        "Serve Prometheus metrics on this endpoint description (e.g. "
        "tcp:9464:interface=127.0.0.1); off when unset, never the public port; "
        "with WORKERS > 1 one port serves the whole group",
    )
    log_format: Literal["text", "json"] = setting(
        "LOG_FORMAT", "text", choice("text", "json"),
        "Log format: text or json (one object a line)",
    )
    shutdown_grace_ms: int = setting(
        "SHUTDOWN_GRACE_MS", "10000", whole_number(0),
        "How long in-flight requests may finish on SIGTERM, in milliseconds",
    )

    def service_named(self, name: str) -> ServiceConfig:
        """
        The service called C{name}.

        @raise KeyError: when there is none.
        """
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def hmac_key(self) -> Optional[bytes]:
        """
        The HMAC key JWT_SECRET stands for (see L{read_hmac_key}), or
        L{None} when no secret is set.

        @raise ValueError: when JWT_SECRET_ENCODING=base64 and the secret is
            not base64 (L{qeetgw.config.load.load_config} refuses that
            configuration).
        """
        read = self.read_hmac_key()
        return None if read is None else read.key

    def read_hmac_key(self) -> Optional[HMACKey]:
        """
        The HMAC key JWT_SECRET stands for and how it was read (see
        L{qeetgw.config.jwtkeys.read_hmac_key}), or L{None} when no secret
        is set.

        @raise ValueError: as L{hmac_key}.
        """
        if self.jwt_secret is None:
            return None
        return read_hmac_key(self.jwt_secret, self.jwt_secret_encoding)

    def read_previous_hmac_keys(self) -> Tuple[HMACKey, ...]:
        """
        The HMAC keys JWT_PREVIOUS_SECRETS stands for, in its order, each
        read as JWT_SECRET is (see L{read_hmac_key}); empty when it is not
        set.

        @raise ValueError: as L{hmac_key}, for an item
            (L{qeetgw.config.load.load_config} refuses that configuration).
        """
        return tuple(
            read_hmac_key(secret, self.jwt_secret_encoding)
            for secret in self.jwt_previous_secrets
        )
