"""
The gateway's configuration: one immutable value, built once at start-up.

Everything the gateway reads from its environment, its ``.env`` file and its
``twistd qeetgw`` options ends up in a L{Config}.  Nothing else in qeetgw
reads the environment; nothing changes a L{Config} after it is built.

This module imports nothing of qeetgw's but L{qeetgw.twistedcompat} (which
imports nothing of ours), so every other module may use it.
"""

from __future__ import annotations

import os
import re
import struct
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

import attrs
from cryptography import x509
from twisted.internet.endpoints import quoteStringArgument, serverFromString
from twisted.internet.testing import MemoryReactor

from qeetgw.twistedcompat import server_endpoint_port

IPNetwork = Union[IPv4Network, IPv6Network]


@attrs.frozen
class TrustProxy:
    """
    Which peers may tell us the client's address through X-Forwarded-For.

    @ivar mode: C{"none"} (TRUST_PROXY=false: the peer is the client),
        C{"all"} (TRUST_PROXY=true, Express's meaning: the leftmost entry),
        C{"hops"} (a hop count: trust that many proxies from the right) or
        C{"cidrs"} (trust peers inside C{networks}).
    @ivar hops: the hop count, for C{"hops"}.
    @ivar networks: the trusted networks, for C{"cidrs"}.
    """

    mode: Literal["none", "all", "hops", "cidrs"] = "none"
    hops: int = 0
    networks: Tuple[IPNetwork, ...] = ()


@attrs.frozen
class ServiceConfig:
    """
    One upstream service and the client paths routed to it.

    @ivar name: the service's name, as /health/services and errors spell it
        (C{"user-service"}).
    @ivar client_prefix: the client path that routes here (C{"/api/v1/users"}).
    @ivar upstream_prefix: what replaces C{client_prefix} upstream
        (C{"/users"}).
    @ivar url: the service's base URL, scheme and authority and an optional
        path prefix, without a trailing slash
        (C{"http://localhost:8082"}, C{"http://host:8080/inventory-api"}).
    @ivar health_path: the path probed by /health/services
        (C{"/actuator/health"}).
    @ivar url_variable: the environment variable that sets C{url}, for
        messages (C{"USER_SERVICE_URL"}).
    """

    name: str
    client_prefix: str
    upstream_prefix: str
    url: str
    health_path: str
    url_variable: str
    #: Every instance's base URL (the same path prefix on each); C{url} is
    #: the first.  Empty means C{(url,)}.
    urls: Tuple[str, ...] = ()
    #: <SERVICE>_TIMEOUT_MS: this service's own proxy timeout, or None for
    #: GATEWAY_PROXY_TIMEOUT_MS.
    timeout_ms: Optional[int] = None

    @property
    def instances(self) -> Tuple[str, ...]:
        """
        The base URL of every instance of the service.
        """
        return self.urls or (self.url,)


#: SPEC.md's public paths: the gateway's own endpoints, and the four
#: auth-service endpoints that take no access token (logout takes the
#: refresh token in its body).
DEFAULT_PUBLIC_PATHS: Tuple[str, ...] = (
    "/health",
    "/health/services",
    "/info",
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh-token",
    "/api/v1/auth/logout",
)

#: The JWT algorithms keyed by a shared secret: only ever verified with
#: JWT_SECRET's key.
HMAC_ALGORITHMS: Tuple[str, ...] = ("HS256", "HS384", "HS512")

#: The JWT algorithms keyed by a public key: only ever verified with a key
#: from JWT_JWKS_URL.  Keeping the two families apart is what prevents key
#: confusion (a public key used as an HMAC secret, or the reverse).
ASYMMETRIC_ALGORITHMS: Tuple[str, ...] = (
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "ES256", "ES256K", "ES384", "ES512",
    "EdDSA",
)

#: The shortest HMAC key jjwt accepts (256 bits, RFC 7518 section 3.2).
MINIMUM_HMAC_KEY_BYTES = 32

#: The shortest key each HMAC algorithm may be used with: the size of its
#: hash (RFC 7518 section 3.2), which jjwt enforces when signing and parsing.
HMAC_KEY_BYTES: Mapping[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}

# ---------------------------------------------------------------------------
# JWT_SECRET: read exactly as the auth-service reads it
# ---------------------------------------------------------------------------
#
# The auth-service (jjwt 0.12.6) keys with Decoders.BASE64.decode(secret), and
# with the secret's UTF-8 bytes only when that throws.  Decoders.BASE64 is an
# ExceptionPropagatingDecoder around Base64Decoder, which calls
# io.jsonwebtoken.io.Base64.DEFAULT.decodeFast(CharSequence): in
# github:jwtk/jjwt at tag 0.12.6, api/src/main/java/io/jsonwebtoken/io/
# Base64.java lines 238-297 (the same from 0.12.0 to 0.12.7).  The wrapper
# turns every exception decodeFast raises (its own DecodingException, but also
# an index out of bounds or a negative array size) into a DecodingException,
# so "throws" means any of them.  The port below follows decodeFast statement
# by statement, Java quirks included; the comments give the lines of
# Base64.java each part ports.

#: Base64.BASE64_IALPHABET (lines 48-55): the value of each of the 256 chars
#: the table covers, -1 outside the alphabet.  "=" is 0, so a "=" that is not
#: one of the last two chars decodes as "A" would.
_JJWT_VALUES: Tuple[int, ...] = tuple(
    0 if code == ord("=")
    else "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".find(chr(code))
    for code in range(256)
)

_EQUALS = ord("=")
_CARRIAGE_RETURN = ord("\r")

#: decodeFast's line-break rule: RFC 2045 lines of 76 chars (19 groups of 4),
#: each followed by 2 chars ("\r\n") that are skipped unread.
_JJWT_LINE = 76
_JJWT_GROUPS_PER_LINE = 19


class _JJWTThrows(Exception):
    """
    Where decodeFast would throw; Decoders.BASE64 makes any such exception a
    DecodingException, so which one it was does not matter.
    """


def _utf16_units(text: str) -> List[int]:
    """
    C{text} as the Java String the auth-service holds: UTF-16 code units.
    decodeFast indexes code units, so a character outside the BMP counts
    twice (a surrogate pair), which changes its length arithmetic.
    """
    data = text.encode("utf-16-le", "surrogatepass")
    return list(struct.unpack(f"<{len(data) // 2}H", data))


def _char_at(units: List[int], index: int) -> int:
    """
    C{String.charAt}: an index out of range throws (a negative one too,
    which Python would count from the end).
    """
    if not 0 <= index < len(units):
        raise _JJWTThrows("StringIndexOutOfBoundsException")
    return units[index]


def _jjwt_value(unit: int) -> int:
    """
    C{IALPHABET[c]} as decodeFast's trimming loops read it (lines 249 and
    254): unchecked, so a char past 255 throws
    ArrayIndexOutOfBoundsException.
    """
    if unit > 255:
        raise _JJWTThrows("ArrayIndexOutOfBoundsException")
    return _JJWT_VALUES[unit]


def _jjwt_ctoi(unit: int) -> int:
    """
    Base64.ctoi (lines 217-224): a char's value, or DecodingException
    ("Illegal base64 character") outside the alphabet and "=".
    """
    value = _JJWT_VALUES[unit] if unit <= 255 else -1
    if value < 0:
        raise _JJWTThrows("DecodingException")
    return value


def _java_int(value: int) -> int:
    """
    C{value} wrapped to a Java C{int} (32-bit two's complement).
    """
    return (value + 2**31) % 2**32 - 2**31


def _java_divide(dividend: int, divisor: int) -> int:
    """
    Java's integer C{/}: rounded toward zero (Python's C{//} floors).
    """
    quotient = abs(dividend) // abs(divisor)
    return quotient if (dividend < 0) == (divisor < 0) else -quotient


@attrs.frozen
class _JJWTLayout:
    """
    What decodeFast works out before decoding (lines 246-264).

    @ivar start: the first char after trimming (C{sIx}).
    @ivar end: the last char after trimming (C{eIx}).
    @ivar pad: the C{=} counted as padding (C{pad}: 0, 1 or 2).
    @ivar separators: the line-break chars it will skip (C{sepCnt}).
    @ivar length: the number of bytes it returns (C{len}, never negative).
    """

    start: int
    end: int
    pad: int
    separators: int
    length: int


def _jjwt_layout(units: List[int]) -> _JJWTLayout:
    """
    Lines 246-264 of decodeFast for non-empty C{units}.

    @raise _JJWTThrows: where decodeFast would.
    """
    # 246-256: trim chars outside the alphabet from the start, then from the
    # end.  The end loop is not bounded by the start: text without a legal
    # char ends with end < start, a negative length, and a throw.
    start, end = 0, len(units) - 1
    while start < end and _jjwt_value(units[start]) < 0:
        start += 1
    while end > 0 and _jjwt_value(units[end]) < 0:
        end -= 1
    # 259: only the last two chars count as padding; charAt(end - 1) throws
    # when "=" is the first char and the last legal one.
    pad = 0
    if units[end] == _EQUALS:
        pad = 2 if _char_at(units, end - 1) == _EQUALS else 1
    count = end - start + 1
    # 261: line breaks are assumed when the untrimmed char 76 is "\r".
    separators = 0
    if len(units) > _JJWT_LINE and units[_JJWT_LINE] == _CARRIAGE_RETURN:
        separators = _java_divide(count, _JJWT_LINE + 2) << 1
    # 263-264: 6 bits a char, less a byte per "=", whatever the last group
    # holds: a last group of one char adds no byte (it is never read).
    length = ((count - separators) * 6 >> 3) - pad
    if length < 0:
        raise _JJWTThrows("NegativeArraySizeException")
    return _JJWTLayout(start, end, pad, separators, length)


def _jjwt_decode_fast(units: List[int]) -> bytes:
    """
    Base64.decodeFast(CharSequence) of jjwt 0.12.6 on UTF-16 C{units}.

    @raise _JJWTThrows: where decodeFast would.
    """
    if not units:  # 241-244
        return b""
    layout = _jjwt_layout(units)
    decoded = bytearray()
    index = layout.start
    # 267-283: whole groups of 4 chars into 3 bytes.
    groups = 0
    while len(decoded) < layout.length // 3 * 3:
        value = 0
        for shift in (18, 12, 6, 0):
            value |= _jjwt_ctoi(_char_at(units, index)) << shift
            index += 1
        decoded += bytes([(value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF])
        if layout.separators > 0:
            groups += 1
            if groups == _JJWT_GROUPS_PER_LINE:
                index += 2  # Whatever the two chars are.
                groups = 0
    if len(decoded) < layout.length:
        # 285-296: the last 1 or 2 bytes, from every char left before the
        # padding; past the fourth, Java masks the shift count to 5 bits.
        value = 0
        j = 0
        while index <= layout.end - layout.pad:
            char_value = _jjwt_ctoi(_char_at(units, index))
            value = _java_int(value | char_value << ((18 - j * 6) & 31))
            index += 1
            j += 1
        shift = 16
        while len(decoded) < layout.length:
            decoded.append((value >> shift) & 0xFF)
            shift -= 8
    return bytes(decoded)


def jjwt_base64_decode(text: str) -> Optional[bytes]:
    """
    The bytes jjwt's C{Decoders.BASE64.decode(text)} returns (jjwt 0.12.6,
    C{io.jsonwebtoken.io.Base64.decodeFast}), or L{None} where it throws.

    Neither RFC 4648 nor Python's base64: chars outside C{A-Z a-z 0-9 + /
    =} are skipped at both ends (a trailing newline, spaces); padding may be
    missing; only the last two chars count as padding, and a C{=} before
    them decodes as C{A}; each C{=} counted as padding takes a byte off the
    length, even where nothing was missing (C{"QUJD="} is two bytes, not
    three); a last group of one char is dropped; any other
    char outside the alphabet between the first and the last legal one
    throws (a base64url C{-} or C{_}, a space), except the two chars after
    each 76 when char 76 is C{"\\r"} (RFC 2045 lines).  An empty C{text} is
    no bytes.
    """
    try:
        return _jjwt_decode_fast(_utf16_units(text))
    except _JJWTThrows:
        return None


@attrs.frozen
class HMACKey:
    """
    The HMAC key JWT_SECRET stands for, and how it was read.

    @ivar key: the key's bytes; kept out of the repr so that it never
        reaches a log.
    @ivar reading: C{"base64"} when the key is the secret's decoding,
        C{"text"} when it is the secret's UTF-8 bytes.
    """

    key: bytes = attrs.field(repr=False)
    reading: Literal["base64", "text"]


def read_hmac_key(secret: str, encoding: str = "auto") -> HMACKey:
    """
    The HMAC key the auth-service derives from C{secret}, and how.

    With C{"auto"}, as the auth-service does: its decoding by jjwt's
    C{Decoders.BASE64} (see L{jjwt_base64_decode}), else, when that throws,
    its UTF-8 bytes.  C{"base64"} is the same decoding, required to succeed;
    C{"raw"} is always the UTF-8 bytes.

    @raise ValueError: when C{encoding} is C{"base64"} and jjwt cannot
        decode C{secret} (the message never includes the secret), when
        C{secret} cannot be UTF-8 encoded, or when C{encoding} is none of
        the three.
    """
    if encoding not in ("auto", "base64", "raw"):
        raise ValueError(f"unknown secret encoding {encoding!r}")
    if encoding != "raw":
        decoded = jjwt_base64_decode(secret)
        if decoded is not None:
            return HMACKey(decoded, "base64")
        if encoding == "base64":
            raise ValueError(
                "is not base64 as the auth-service's jjwt reads it (JWT_SECRET_ENCODING=base64 "
                "needs A-Z a-z 0-9 + / and = padding, other characters only at the ends)"
            )
    return HMACKey(secret.encode("utf-8"), "text")


def derive_hmac_key(secret: str, encoding: str = "auto") -> bytes:
    """
    The HMAC key the auth-service derives from C{secret}: see
    L{read_hmac_key}.

    @raise ValueError: as L{read_hmac_key}.
    """
    return read_hmac_key(secret, encoding).key


@attrs.frozen
class Config:
    """
    Everything qeetgw is configured with.  See SPEC.md and the README for the
    meaning and default of each variable.

    @ivar listen: the Twisted endpoint description to listen on
        (C{"tcp:4000:interface=0.0.0.0"}); built from PORT and HOST, or given
        whole with C{--port}.
    """

    listen: str = "tcp:4000:interface=0.0.0.0"
    trust_proxy: TrustProxy = TrustProxy()
    cors_origins: Tuple[str, ...] = ("http://localhost:3000", "http://localhost:3001")
    cors_credentials: bool = False
    #: CORS_MAX_AGE: seconds a browser may cache a preflight's answer.
    cors_max_age: int = 600
    #: CORS_METHODS: the methods a preflight allows, upper case.
    cors_methods: Tuple[str, ...] = ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE")
    require_auth: bool = True
    #: PUBLIC_PATHS: paths no token is asked for, without a trailing slash.
    public_paths: Tuple[str, ...] = DEFAULT_PUBLIC_PATHS
    jwt_secret: Optional[str] = None
    #: JWT_SECRET_ENCODING: how JWT_SECRET becomes the HMAC key; see
    #: L{read_hmac_key}.
    jwt_secret_encoding: Literal["auto", "base64", "raw"] = "auto"
    jwt_issuer: str = "http://localhost:4001"
    jwt_audience: Optional[str] = None
    #: JWT_ALGORITHMS: the token algorithms accepted, canonical spelling;
    #: never C{none}.
    jwt_algorithms: Tuple[str, ...] = ("HS256", "HS384", "HS512")
    #: JWT_LEEWAY_S: clock skew tolerated on exp, nbf and iat, in seconds.
    jwt_leeway_s: float = 0.0
    #: JWT_TOKEN_TYPE_CLAIM / JWT_TOKEN_TYPE: a token whose claim of that name
    #: is present must have this value (refresh tokens are refused).
    jwt_token_type_claim: str = "tokenType"
    jwt_token_type: str = "access"
    #: JWT_JWKS_URL: where the asymmetric verification keys are published.
    jwt_jwks_url: Optional[str] = None
    #: JWT_JWKS_REFRESH_MS: the shortest time between two JWKS fetches that a
    #: token with an unknown key id may cause.
    jwt_jwks_refresh_ms: int = 60000
    #: JWT_CACHE_SIZE: verified tokens remembered until they expire; 0 is off.
    jwt_cache_size: int = 10000
    rate_limit_window_ms: int = 60000
    rate_limit_max: int = 1000
    rate_limit_message: str = "Too many requests from this IP, please try again later."
    #: RATE_LIMIT_KEY: what a client is, for counting: its address, the
    #: verified token's subject, or both.
    rate_limit_key: Literal["ip", "user", "ip+user"] = "ip"
    #: RATE_LIMIT_ALGORITHM: the Express gateway's fixed window, or a sliding
    #: window without the double burst at a window's edge.
    rate_limit_algorithm: Literal["fixed", "sliding"] = "fixed"
    #: RATE_LIMIT_HEADERS: which rate-limit headers responses carry.
    rate_limit_headers: Literal["draft-6", "draft-8", "none"] = "draft-6"
    #: RATE_LIMIT_ROUTES: budgets of their own for path prefixes, as
    #: (prefix, max, window in ms) — the window defaults to RATE_LIMIT_WINDOW_MS.
    rate_limit_routes: Tuple[Tuple[str, int, Optional[int]], ...] = ()
    #: RATE_LIMIT_STORE: where counters live.
    rate_limit_store: Literal["memory", "redis"] = "memory"
    #: RATE_LIMIT_MEMORY_MAX_KEYS: the most clients the memory store tracks.
    rate_limit_memory_max_keys: int = 100_000
    #: REDIS_URL: the Redis of RATE_LIMIT_STORE=redis.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: RATE_LIMIT_REDIS_PREFIX: the namespace of the counters' keys.
    rate_limit_redis_prefix: str = "qeetgw:ratelimit:"
    #: RATE_LIMIT_REDIS_TIMEOUT_MS: the longest a request waits for Redis.
    rate_limit_redis_timeout_ms: int = 100
    #: RATE_LIMIT_FAIL: when the store cannot count, let requests through
    #: ("open") or refuse them with 503 ("closed").
    rate_limit_fail: Literal["open", "closed"] = "open"
    #: GATEWAY_PROXY_TIMEOUT_MS: how long an upstream may take to start answering.
    proxy_timeout_ms: int = 5000
    #: JSON_BODY_LIMIT, in bytes: the largest request body accepted.
    body_limit: int = 1024 * 1024
    services: Tuple[ServiceConfig, ...] = ()
    #: UPSTREAM_POOL_SIZE: persistent connections kept per upstream host.
    upstream_pool_size: int = 128
    #: UPSTREAM_KEEPALIVE_TIMEOUT_MS: how long an idle upstream connection is
    #: kept; shorter than the upstream's own keep-alive timeout (Node's is 5 s).
    upstream_keepalive_timeout_ms: int = 4000
    #: UPSTREAM_CA_FILE: a PEM file of extra CA certificates for https upstreams.
    upstream_ca_file: Optional[str] = None
    #: LOG_FORMAT: C{"text"} for people, C{"json"} for one JSON object a line.
    log_format: Literal["text", "json"] = "text"
    #: SHUTDOWN_GRACE_MS: how long in-flight requests may finish on SIGTERM.
    shutdown_grace_ms: int = 10000
    #: WORKERS: gateway processes sharing the listening socket (1: this one).
    workers: int = 1
    #: SHUTDOWN_DELAY_MS: how long to keep serving after SIGTERM, not ready,
    #: before listening stops (so load balancers notice first).
    shutdown_delay_ms: int = 0
    #: CLIENT_HEADER_TIMEOUT_MS: a request's headers must be complete this
    #: long after its first byte.
    client_header_timeout_ms: int = 10000
    #: CLIENT_BODY_TIMEOUT_MS: the longest a request body may stall.
    client_body_timeout_ms: int = 30000
    #: KEEPALIVE_TIMEOUT_MS: idle keep-alive client connections are closed
    #: after this long.
    keepalive_timeout_ms: int = 65000
    #: CLIENT_MAX_HEADER_BYTES: the largest request header block.
    client_max_header_bytes: int = 16384
    #: MAX_CONNECTIONS: open client connections at most.
    max_connections: int = 10000
    #: CLIENT_LINGER_TIMEOUT_MS: after an early refusal, how long the
    #: gateway waits for more of the client's bytes before it closes.
    client_linger_timeout_ms: int = 5000
    #: CLIENT_LINGER_TIME_MS: after an early refusal, the longest the
    #: gateway reads and discards what the client still sends; 0 closes at
    #: once.
    client_linger_time_ms: int = 30000
    #: CLIENT_LINGER_MAX_BYTES: the most it reads and discards.
    client_linger_max_bytes: int = 64 * 1024 * 1024
    #: SERVICE_DISCOVERY: C{"static"} (the configured URLs are the
    #: instances) or C{"dns"} (each address a host name resolves to is one,
    #: re-resolved every DNS_REFRESH_MS; see L{qeetgw.upstream.discovery}).
    service_discovery: Literal["static", "dns"] = "static"
    #: DNS_REFRESH_MS: how often dns discovery re-resolves the host names.
    dns_refresh_ms: int = 5000
    #: BALANCER: how an instance is chosen among several.
    balancer: Literal["round_robin", "least_request"] = "round_robin"
    #: OUTLIER_CONSECUTIVE_FAILURES: failures in a row that eject an instance.
    outlier_consecutive_failures: int = 5
    #: OUTLIER_BASE_EJECTION_MS: how long a first ejection lasts.
    outlier_base_ejection_ms: int = 30000
    #: OUTLIER_MAX_EJECTION_PERCENT: the most of a service's instances out at once.
    outlier_max_ejection_percent: int = 50
    #: RETRY_MAX: tries after the first, on another instance.
    retry_max: int = 1
    #: RETRY_BUFFER_BYTES: the largest body an idempotent request is retried with.
    retry_buffer_bytes: int = 65536
    #: UPSTREAM_MAX_IN_FLIGHT: requests in flight per service at most.
    upstream_max_in_flight: int = 1024
    #: HEALTH_CHECK_INTERVAL_MS: how often every instance's health path is
    #: probed in the background; 0 turns it off.
    health_check_interval_ms: int = 10000
    #: HEALTH_UNHEALTHY_THRESHOLD: failed checks in a row that make an
    #: instance unhealthy.
    health_unhealthy_threshold: int = 3
    #: HEALTH_HEALTHY_THRESHOLD: passed checks in a row that make it healthy.
    health_healthy_threshold: int = 2
    #: METRICS_PORT: where Prometheus metrics are served (an endpoint
    #: description), or None for no metrics.
    metrics_port: Optional[str] = None

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
            not base64 (L{load_config} refuses that configuration).
        """
        read = self.read_hmac_key()
        return None if read is None else read.key

    def read_hmac_key(self) -> Optional[HMACKey]:
        """
        The HMAC key JWT_SECRET stands for and how it was read (see
        L{read_hmac_key}), or L{None} when no secret is set.

        @raise ValueError: as L{hmac_key}.
        """
        if self.jwt_secret is None:
            return None
        return read_hmac_key(self.jwt_secret, self.jwt_secret_encoding)


# ---------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------


class ConfigError(Exception):
    """
    The configuration cannot be used.

    @ivar problems: one line per bad variable (or bad C{.env} line), each
        naming the variable, the value given and what is allowed, such as
        C{"RATE_LIMIT_MAX='abc': must be a whole number of at least 1"}.
    """

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems: List[str] = list(problems)


class _Invalid(Exception):
    """
    Raised by a value parser; its text says what is allowed, and becomes the
    part of a problem line after the variable's name and value.

    @ivar hide_value: the value may hold a secret (a password in a URL), so
        the problem line must not repeat it.
    """

    def __init__(self, message: str, hide_value: bool = False) -> None:
        super().__init__(message)
        self.hide_value = hide_value


_Parser = Callable[[str], Any]


@attrs.frozen
class Variable:
    """
    One configuration variable: where it comes from, how it is checked, and
    how C{twistd qeetgw --help} describes it.

    @ivar name: the environment variable (and override key), C{"RATE_LIMIT_MAX"}.
    @ivar default: the default, written as the variable would be (SPEC.md's
        spelling); L{None} when the variable is unset by default.
    @ivar parse: turns the text into the value, or raises L{_Invalid}.
    @ivar field: the L{Config} field set from the parsed value; L{None} for a
        variable that is combined with others (PORT and HOST into C{listen},
        the service variables into C{services}).
    @ivar help: one sentence for C{--help}, without the C{[env: ...]} suffix.
    @ivar aliases: older names read when C{name} is not set (C{CORS_ORIGIN}).
    @ivar option: the C{twistd qeetgw} option that overrides it, without the
        dashes; L{None} for none.
    @ivar environment: whether the environment and C{.env} may set it;
        C{False} for an override key only options give (C{LISTEN}).
    @ivar label: how problem lines name it; the variable's name unless given.
    """

    name: str
    default: Optional[str]
    parse: _Parser
    field: Optional[str]
    help: str
    aliases: Tuple[str, ...] = ()
    option: Optional[str] = attrs.field(
        default=attrs.Factory(
            lambda self: self.name.lower().replace("_", "-"), takes_self=True
        )
    )
    environment: bool = True
    label: str = attrs.field(
        default=attrs.Factory(lambda self: self.name, takes_self=True)
    )

    @property
    def usage_help(self) -> str:
        """
        The help text of this variable's option: its sentence, then which
        variable it overrides and the default.
        """
        if not self.environment:
            # An override-only key explains itself in its own sentence.
            return self.help
        names = " or ".join((self.name,) + self.aliases)
        default = "unset" if self.default is None else self.default
        return f"{self.help} [env: {names}, default: {default}]"


# -- value parsers ----------------------------------------------------------
# Each takes the text as given and returns the value, or raises _Invalid
# saying what is allowed.  Structured values are stripped of surrounding
# whitespace (a trailing newline from a Kubernetes secret or ConfigMap is a
# common accident); free text (the JWT secret, the 429 message) is kept as
# given, since it must match the auth-service's byte for byte.

_DIGITS = re.compile(r"[0-9]+\Z")


def _whole_number(minimum: int, maximum: Optional[int] = None) -> _Parser:
    """
    A parser of whole numbers from C{minimum} (to C{maximum}), digits only:
    no sign, no decimal point, no C{1_000} or C{1e3}.
    """
    if maximum is None:
        allowed = f"must be a whole number of at least {minimum}"
    else:
        allowed = f"must be a whole number from {minimum} to {maximum}"

    def parse(text: str) -> int:
        digits = text.strip()
        if not _DIGITS.match(digits):
            raise _Invalid(allowed)
        number = int(digits)
        if number < minimum or (maximum is not None and number > maximum):
            raise _Invalid(allowed)
        return number

    return parse


def _boolean(text: str) -> bool:
    """
    C{true} or C{false}, in any case; nothing else (no C{1}, C{yes}): SPEC.md
    allows only those, and a typo must not silently mean C{false}.
    """
    word = text.strip().lower()
    if word == "true":
        return True
    if word == "false":
        return False
    raise _Invalid("must be true or false")


def _choice(*choices: str) -> _Parser:
    """
    A parser of one word among C{choices}, in any case.
    """

    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in choices:
            raise _Invalid(f"must be one of: {', '.join(choices)}")
        return word

    return parse


def _text(text: str) -> str:
    """
    Free text, kept exactly as given.
    """
    return text


def _optional_text(text: str) -> Optional[str]:
    """
    Text, where a blank value means unset (C{JWT_AUDIENCE=} in a C{.env}).
    """
    text = text.strip()
    return text or None


def _required_text(text: str) -> str:
    """
    Text that must not be blank.
    """
    text = text.strip()
    if not text:
        raise _Invalid("must not be empty")
    return text


def _secret(text: str) -> Optional[str]:
    """
    A secret: kept byte for byte (it must equal the auth-service's), but a
    blank value means unset.
    """
    return text if text.strip() else None


_BYTE_UNITS: Mapping[str, int] = {
    "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50,
}
_BYTE_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) *([a-z]*)\Z", re.IGNORECASE)


def _byte_size(text: str) -> int:
    """
    A size in the npm C{bytes} library's syntax, as body-parser's C{limit}
    reads it: C{1mb}, C{100kb}, C{1.5mb}, C{512b} or a plain number of bytes;
    units are 1024-based and case-insensitive, fractions are rounded down.
    """
    allowed = (
        "must be a size such as 1mb, 100kb, 1.5mb, 512b or a number of bytes "
        "(units b, kb, mb, gb, tb, pb), of at least 1 byte"
    )
    match = _BYTE_SIZE.match(text.strip())
    if match is None:
        raise _Invalid(allowed)
    number, unit = match.group(1), (match.group(2).lower() or "b")
    if unit not in _BYTE_UNITS:
        raise _Invalid(allowed)
    # Exact arithmetic, so 1.1mb is the same whole number bytes computes.
    whole, _, fraction = number.partition(".")
    scale = 10 ** len(fraction)
    size = (int(whole + fraction) * _BYTE_UNITS[unit]) // scale
    if size < 1:
        raise _Invalid(allowed)
    return size


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")


def _is_host(host: str) -> bool:
    """
    Whether C{host} is an IP address or a DNS name.  Underscores are allowed
    in names because Docker Compose service names may have them.
    """
    try:
        ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    # An all-digit last label is a mistyped IPv4 address (999.1.1.1), not a name.
    if not name or len(name) > 253 or name.rsplit(".", 1)[-1].isdigit():
        return False
    return all(_HOST_LABEL.match(label) for label in name.split("."))


def _listen_host(text: str) -> str:
    """
    The interface to listen on: an IP address (an IPv6 one with or without
    brackets) or a host name.
    """
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not _is_host(host):
        raise _Invalid("must be an IP address (0.0.0.0, ::, 127.0.0.1, ::1) or a host name")
    return host


_ENDPOINT_EXAMPLES = "tcp:4000:interface=0.0.0.0 or ssl:4443:privateKey=key.pem:certKey=cert.pem"


def _one_line(error: BaseException) -> str:
    """
    An exception's text on one short line, for a problem line.
    """
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _endpoint(text: str) -> str:
    """
    A whole Twisted server endpoint description, such as twistd's own
    C{--port} takes.

    It is checked by building the endpoint against a memory reactor: that
    parses every kind (plugins included) without listening, and for C{ssl:}
    loads the key and certificate, so a missing or bad file is a problem
    line at start-up rather than a traceback when listening.
    """
    description = text.strip()
    try:
        endpoint = serverFromString(MemoryReactor(), description)
    # Endpoint parsers raise anything: ValueError, TypeError, OSError, SSL errors.
    except Exception as error:
        if description.startswith("systemd:"):
            raise _Invalid(
                "systemd passed no socket there (LISTEN_FDS, LISTEN_PID): start the "
                "gateway through its .socket unit (see contrib/systemd/)"
            )
        raise _Invalid(
            f"must be a Twisted endpoint description such as {_ENDPOINT_EXAMPLES} "
            f"({_one_line(error)})"
        )
    # Twisted does not range-check a TCP port until it listens.
    port = server_endpoint_port(endpoint)
    if port is not None and not 0 <= port <= 65535:
        raise _Invalid("must have a port from 0 to 65535")
    return description


def _optional_endpoint(text: str) -> Optional[str]:
    """
    An endpoint description, or nothing when blank.
    """
    return _endpoint(text) if text.strip() else None


_PROXY_PRESETS: Mapping[str, Tuple[str, ...]] = {
    # proxy-addr's names, which Express's "trust proxy" setting understands.
    "loopback": ("127.0.0.0/8", "::1/128"),
    "linklocal": ("169.254.0.0/16", "fe80::/10"),
    "uniquelocal": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
}


def _trust_proxy(text: str) -> TrustProxy:
    """
    C{true}, C{false}, a hop count, or a comma list of IP addresses and
    CIDRs (and proxy-addr's C{loopback}, C{linklocal}, C{uniquelocal}).
    A hop count of 0 trusts nobody, the same as C{false}.
    """
    allowed = (
        "must be true, false, a hop count (0 or more) or a comma list of IP "
        "addresses and CIDRs (loopback, linklocal, uniquelocal allowed)"
    )
    value = text.strip()
    if value.lower() == "true":
        return TrustProxy(mode="all")
    if value.lower() == "false":
        return TrustProxy(mode="none")
    if _DIGITS.match(value):
        hops = int(value)
        return TrustProxy(mode="hops", hops=hops) if hops else TrustProxy(mode="none")
    networks: List[IPNetwork] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        for spelling in _PROXY_PRESETS.get(item.lower(), (item,)):
            try:
                # strict=False: 10.1.2.3/8 means 10.0.0.0/8, as proxy-addr reads it.
                network = ip_network(spelling, strict=False)
            except ValueError:
                raise _Invalid(f"{item!r} is not an IP address or CIDR; {allowed}")
            if network not in networks:
                networks.append(network)
    if not networks:
        raise _Invalid(allowed)
    return TrustProxy(mode="cidrs", networks=tuple(networks))


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _has_control_or_space(text: str) -> bool:
    """
    Whether C{text} holds whitespace or a control character, which no URL,
    origin or path may.
    """
    return any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in text)


def _netloc(host: str, port: Optional[int]) -> str:
    """
    C{host[:port]}, with an IPv6 address in brackets.
    """
    netloc = f"[{host}]" if ":" in host else host
    return netloc if port is None else f"{netloc}:{port}"


def _origin(item: str) -> str:
    """
    One CORS origin, normalised as browsers send it: scheme and host in
    lower case, no default port, no trailing slash.
    """
    bad = _Invalid(
        f"{item!r} is not an origin; each entry must be scheme://host[:port] "
        "(no path) or *"
    )
    if _has_control_or_space(item) or any(char in item for char in "?#@"):
        raise bad
    try:
        parts = urlsplit(item)
        port = parts.port
    except ValueError:
        raise bad
    scheme, host = parts.scheme.lower(), parts.hostname
    # A lone trailing slash is a common slip that the Express gateway's cors
    # silently never matched; a real path is refused.
    if not _SCHEME.match(scheme) or not host or not _is_host(host) or parts.path not in ("", "/"):
        raise bad
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return f"{scheme}://{_netloc(host, port)}"


def _origins(text: str) -> Tuple[str, ...]:
    """
    A comma list of CORS origins, trimmed, empty entries dropped, duplicates
    dropped; C{*} allows any origin.  An empty list allows none.
    """
    origins: List[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        origin = "*" if item == "*" else _origin(item)
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def _service_url(text: str) -> str:
    """
    An upstream's base URL: http or https, a host, an optional port and path
    prefix; no query, fragment or user info.  Normalised: scheme and host in
    lower case, no trailing slash.
    """
    allowed = (
        "must be an http:// or https:// URL with a host, an optional port and "
        "path, and no query, fragment or user info"
    )
    url = text.strip()
    if not url or _has_control_or_space(url):
        raise _Invalid(allowed)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urlsplit refuses a bad port or IPv6 literal.
        raise _Invalid(f"has no valid host and port; {allowed}")
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https"):
        raise _Invalid(allowed)
    if "@" in parts.netloc:
        raise _Invalid(f"has user info; {allowed}")
    if "?" in url or "#" in url:
        raise _Invalid(f"has a query or fragment; {allowed}")
    if not host or not _is_host(host):
        raise _Invalid(f"has no valid host; {allowed}")
    if port == 0:
        raise _Invalid(f"port must be from 1 to 65535; {allowed}")
    return f"{scheme}://{_netloc(host, port)}{parts.path.rstrip('/')}"


def _service_urls(text: str) -> Tuple[str, ...]:
    """
    One base URL, or a comma list of instances with the same path prefix.
    """
    if not text.strip():
        return (_service_url(text),)  # says what a URL must be
    urls = tuple(_service_url(part) for part in text.split(",") if part.strip())
    paths = {urlsplit(url).path for url in urls}
    if len(paths) > 1:
        raise _Invalid("every instance must have the same path prefix")
    if len(set(urls)) != len(urls):
        raise _Invalid("lists an instance twice")
    return urls


def _optional_positive(text: str) -> Optional[int]:
    """
    A whole number of at least 1, or nothing when blank.
    """
    return _whole_number(1)(text) if text.strip() else None


def _health_path(text: str) -> str:
    """
    The path a service's health is probed at: it starts with one C{/}
    (C{//host} would name another host) and has no whitespace or fragment.
    """
    path = text.strip()
    if (
        not path.startswith("/")
        or path.startswith("//")
        or "#" in path
        or _has_control_or_space(path)
    ):
        raise _Invalid("must be a path starting with / (such as /health), without spaces or #")
    return path


def _ca_file(text: str) -> Optional[str]:
    """
    A PEM file of CA certificates, checked now so that a bad file stops
    start-up instead of failing the first https request.  Blank means unset.
    The path is made absolute, as twistd may change directory later.
    """
    path = text.strip()
    if not path:
        return None
    allowed = "must be a readable PEM file with at least one CA certificate"
    try:
        with open(path, "rb") as pem:
            data = pem.read()
    except OSError as error:
        raise _Invalid(f"{allowed} ({error.strerror or _one_line(error)})")
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _Invalid(f"{allowed} (no certificate found in it)")
    return os.path.abspath(path)


def _comma_list(text: str) -> List[str]:
    """
    The trimmed, non-empty entries of a comma list, duplicates dropped.
    """
    items: List[str] = []
    for item in (part.strip() for part in text.split(",")):
        if item and item not in items:
            items.append(item)
    return items


_ALGORITHMS_BY_UPPER: Mapping[str, str] = {
    name.upper(): name for name in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS
}


def _jwt_algorithms(text: str) -> Tuple[str, ...]:
    """
    A comma list of JWT algorithm names (any case; kept in their canonical
    spelling).  C{none} is refused outright: an unsigned token must never be
    accepted, whatever the configuration says.
    """
    allowed = f"allowed: {', '.join(HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS)}"
    algorithms: List[str] = []
    for item in _comma_list(text):
        if item.lower() == "none":
            raise _Invalid(f"none is never accepted (it means an unsigned token); {allowed}")
        name = _ALGORITHMS_BY_UPPER.get(item.upper())
        if name is None:
            raise _Invalid(f"{item!r} is not a supported JWT algorithm; {allowed}")
        if name not in algorithms:
            algorithms.append(name)
    if not algorithms:
        raise _Invalid(f"must list at least one algorithm; {allowed}")
    return tuple(algorithms)


_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")

#: The largest JWT_LEEWAY_S: leeway is for clock skew between hosts; more
#: than a few minutes would quietly extend every token's life.
MAXIMUM_JWT_LEEWAY_S = 300


def _leeway(text: str) -> float:
    """
    A number of seconds from 0 to L{MAXIMUM_JWT_LEEWAY_S}, whole or
    decimal (C{0}, C{5}, C{1.5}).
    """
    value = text.strip()
    if not _SECONDS.match(value) or float(value) > MAXIMUM_JWT_LEEWAY_S:
        raise _Invalid(
            f"must be a number of seconds from 0 to {MAXIMUM_JWT_LEEWAY_S} (such as 0, 5 or 1.5)"
        )
    return float(value)


def _jwks_url(text: str) -> Optional[str]:
    """
    The JWKS URL: http or https, a host, an optional port, path and query;
    no user info or fragment.  Blank means unset.
    """
    url = text.strip()
    if not url:
        return None
    allowed = "must be an http:// or https:// URL with a host, and no user info or fragment"
    if _has_control_or_space(url) or "#" in url:
        raise _Invalid(allowed)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _Invalid(allowed)
    host = parts.hostname
    if (
        parts.scheme.lower() not in ("http", "https")
        or "@" in parts.netloc
        or not host
        or not _is_host(host)
        or port == 0
    ):
        raise _Invalid(allowed)
    return url


# RFC 3986 pchar without percent-encoding: a public path is written as the
# decoded path it matches, so "%" would only be ambiguous.
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+\Z")


def _public_path(item: str) -> str:
    """
    One public path: C{/} then segments that are neither empty, C{.} nor
    C{..}, without a trailing slash (C{/a/} means C{/a}).
    """
    bad = _Invalid(
        f"{item!r} is not a public path; each entry must start with / and have "
        "segments of letters, digits and -._~!$&'()*+,;=:@ that are not empty, . or .. "
        "(such as /api/v1/auth/login)"
    )
    if not item.startswith("/"):
        raise bad
    trimmed = item[:-1] if item.endswith("/") else item
    segments = trimmed.split("/")[1:]
    if not trimmed:
        raise _Invalid(f"{item!r} would make every path public; set REQUIRE_AUTH=false instead")
    for segment in segments:
        if segment in (".", "..") or not _PATH_SEGMENT.match(segment):
            raise bad
    return trimmed


def _public_paths(text: str) -> Tuple[str, ...]:
    """
    A comma list of public paths (see L{_public_path}); empty entries and
    duplicates dropped.  An empty list makes no path public.
    """
    paths: List[str] = []
    for item in _comma_list(text):
        path = _public_path(item)
        if path not in paths:
            paths.append(path)
    return tuple(paths)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def _methods(text: str) -> Tuple[str, ...]:
    """
    A comma list of HTTP methods, upper-cased: browsers compare a preflight's
    method case-sensitively and upper-case only some (not PATCH), so
    C{patch} would silently never match.
    """
    methods: List[str] = []
    for item in _comma_list(text):
        if not _TOKEN.match(item):
            raise _Invalid(f"{item!r} is not an HTTP method; must be a comma list such as GET,POST")
        method = item.upper()
        if method not in methods:
            methods.append(method)
    if not methods:
        raise _Invalid("must list at least one method, such as GET,POST")
    return tuple(methods)


# -- the variables ----------------------------------------------------------

#: The six services: name, client prefix, upstream prefix, default URL,
#: default health path.  Their variables are derived from the name:
#: C{AUTH_SERVICE_URL}, C{AUTH_SERVICE_HEALTH_PATH}.
_ROUTE_PREFIX = re.compile(r"/[A-Za-z0-9._~!$&'()*+;:@/-]*\Z")


def _rate_limit_routes(text: str) -> Tuple[Tuple[str, int, Optional[int]], ...]:
    """
    C{PREFIX=MAX[/WINDOW_MS]} entries, comma-separated; empty for none.
    """
    allowed = "must be PREFIX=MAX[/WINDOW_MS],... with PREFIX a path such as /api/v1/auth/login"
    routes: List[Tuple[str, int, Optional[int]]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        prefix, equals, budget = item.partition("=")
        prefix = prefix.strip().rstrip("/")
        limit_text, slash, window_text = budget.strip().partition("/")
        if (
            not equals
            or not _ROUTE_PREFIX.match(prefix + "/")
            or "//" in prefix + "/"
            or not _DIGITS.match(limit_text)
            or int(limit_text) < 1
            or (slash and (not _DIGITS.match(window_text) or int(window_text) < 1))
        ):
            raise _Invalid(f"{item!r}: {allowed}")
        if prefix in [route[0] for route in routes]:
            raise _Invalid(f"{prefix!r} is listed twice")
        routes.append((prefix, int(limit_text), int(window_text) if slash else None))
    return tuple(routes)


REDIS_DEFAULT_PORT = 6379


@attrs.frozen
class RedisURL:
    """
    Where the Redis server is and how to log in: a parsed C{REDIS_URL}.

    @ivar host: a host name or IP address (IPv6 without brackets).
    @ivar port: the TCP port.
    @ivar db: the database number, sent with C{SELECT} when not 0.
    @ivar username: an ACL user (Redis 6+), or C{None} for the default user.
    @ivar password: sent with C{AUTH} when not C{None}; never in C{repr} or
        C{str}, so it cannot reach a log.
    """

    host: str
    port: int = REDIS_DEFAULT_PORT
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisURL:
    """
    Parse C{redis://[[user]:password@]host[:port][/db]} (user and password
    percent-encoded; port 6379 and database 0 by default).

    @raise ValueError: naming what is wrong, without echoing the password.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise ValueError(f"REDIS_URL is not a valid URL: {error}") from None
    if parts.scheme.lower() != "redis":
        hint = " (TLS, rediss://, is not supported)" if parts.scheme.lower() == "rediss" else ""
        raise ValueError(f"REDIS_URL must start with redis://{hint}")
    if not parts.hostname:
        raise ValueError("REDIS_URL has no host: redis://host[:port][/db]")
    if port == 0:
        raise ValueError("REDIS_URL's port must be 1 to 65535")
    if parts.query or parts.fragment:
        raise ValueError("REDIS_URL takes no query or fragment: redis://host[:port][/db]")
    path = parts.path.strip("/")
    if not path:
        db = 0
    elif path.isdigit():
        db = int(path)
    else:
        raise ValueError(f"REDIS_URL's database must be a number, not {path!r}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username is not None and password is None:
        raise ValueError("REDIS_URL has a user but no password: redis://user:password@host")
    return RedisURL(
        host=parts.hostname,
        port=REDIS_DEFAULT_PORT if port is None else port,
        db=db,
        username=username,
        password=password,
    )


def _redis_url(text: str) -> str:
    """
    A C{redis://} URL; the value is kept as text, L{parse_redis_url} splits it.
    """
    value = text.strip()
    try:
        parse_redis_url(value)
    except ValueError as error:
        # the URL may carry a password: the problem line does not repeat it
        raise _Invalid(str(error), hide_value=True)
    return value


def _workers(text: str) -> int:
    """
    A number of worker processes, or C{auto} for one per core.
    """
    value = text.strip().lower()
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if not _DIGITS.match(value) or not 1 <= int(value) <= 64:
        raise _Invalid("must be auto or a whole number from 1 to 64")
    return int(value)


_SERVICE_TABLE: Tuple[Tuple[str, str, str, str, str], ...] = (
    ("auth-service", "/api/v1/auth", "/auth", "http://localhost:4001", "/actuator/health"),
    ("user-service", "/api/v1/users", "/users", "http://localhost:8082", "/actuator/health"),
    ("product-service", "/api/v1/products", "/products", "http://localhost:8083",
     "/actuator/health"),
    ("order-service", "/api/v1/orders", "/orders", "http://localhost:8084", "/health"),
    ("payment-service", "/api/v1/payments", "/payments", "http://localhost:8085", "/health"),
    ("inventory-service", "/api/v1/inventory", "/inventory", "http://localhost:8080", "/health"),
)


def _service_variable_prefix(name: str) -> str:
    """
    C{"user-service"} -> C{"USER_SERVICE"}.
    """
    return name.upper().replace("-", "_")


def _service_variables() -> Tuple[Variable, ...]:
    """
    The URL and health-path variables of every service, in table order.
    """
    variables: List[Variable] = []
    for name, _, _, url, health in _SERVICE_TABLE:
        prefix = _service_variable_prefix(name)
        variables.append(
            Variable(
                f"{prefix}_URL", url, _service_urls, None,
                f"Base URL of the {name}; a comma list for several instances",
            )
        )
        short = prefix[: -len("_SERVICE")]
        variables.append(
            Variable(
                f"{short}_TIMEOUT_MS", None, _optional_positive, None,
                f"The {name}'s own proxy timeout, over GATEWAY_PROXY_TIMEOUT_MS",
            )
        )
        variables.append(
            Variable(
                f"{prefix}_HEALTH_PATH", health, _health_path, None,
                f"Path probed for the {name}'s health",
            )
        )
    return tuple(variables)


#: Every configuration variable, in the order --help lists them.  Adding a
#: variable is one line here (and a field on L{Config}).
VARIABLES: Tuple[Variable, ...] = (
    Variable(
        "LISTEN", None, _endpoint, None,
        "Where to listen: a port number (sets PORT), or a Twisted endpoint "
        f"description such as {_ENDPOINT_EXAMPLES}, which replaces PORT and "
        "HOST [env: PORT and HOST, default: tcp:4000:interface=0.0.0.0]",
        option="port", environment=False, label="--port",
    ),
    # PORT has no option of its own: --port takes a port number too.
    Variable(
        "PORT", "4000", _whole_number(0, 65535), None,
        "Port to listen on", option=None,
    ),
    Variable(
        "HOST", "0.0.0.0", _listen_host, None,
        "Interface (IP address or host name) to listen on",
    ),
    Variable(
        "TRUST_PROXY", "false", _trust_proxy, "trust_proxy",
        "Trust X-Forwarded-For: true (its leftmost entry, forgeable), false, a "
        "hop count (the safe choice) or a comma list of proxy CIDRs",
    ),
    Variable(
        "CORS_ORIGINS", "http://localhost:3000,http://localhost:3001", _origins, "cors_origins",
        "Comma list of allowed CORS origins; * allows any", aliases=("CORS_ORIGIN",),
    ),
    Variable(
        "CORS_CREDENTIALS", "false", _boolean, "cors_credentials",
        "Send Access-Control-Allow-Credentials: true (true/false)",
    ),
    Variable(
        "CORS_MAX_AGE", "600", _whole_number(0), "cors_max_age",
        "Seconds a browser may cache a preflight's answer (Access-Control-Max-Age)",
    ),
    Variable(
        "CORS_METHODS", "GET,HEAD,PUT,PATCH,POST,DELETE", _methods, "cors_methods",
        "Comma list of methods a preflight allows (Access-Control-Allow-Methods)",
    ),
    Variable(
        "REQUIRE_AUTH", "true", _boolean, "require_auth",
        "Enforce JWT on /api/*, public paths aside (true/false)",
    ),
    Variable(
        "PUBLIC_PATHS", ",".join(DEFAULT_PUBLIC_PATHS), _public_paths, "public_paths",
        "Comma list of paths that need no token, matched on whole segments",
    ),
    Variable(
        "JWT_SECRET", None, _secret, "jwt_secret",
        "HMAC key shared with the auth-service, at least 32 bytes; required when "
        "REQUIRE_AUTH=true unless JWT_JWKS_URL is set (prefer the environment: "
        "options show in ps)",
    ),
    Variable(
        "JWT_SECRET_ENCODING", "auto", _choice("auto", "base64", "raw"), "jwt_secret_encoding",
        "How JWT_SECRET becomes the key: auto (as the auth-service: decoded by jjwt's "
        "Decoders.BASE64, else, when that fails, its UTF-8 bytes), base64 (that decoding, "
        "required) or raw (always its UTF-8 bytes)",
    ),
    Variable(
        "JWT_ISSUER", "http://localhost:4001", _required_text, "jwt_issuer",
        "Expected iss claim",
    ),
    Variable(
        "JWT_AUDIENCE", None, _optional_text, "jwt_audience",
        "When set, the aud claim must contain it",
    ),
    Variable(
        "JWT_ALGORITHMS", ",".join(HMAC_ALGORITHMS), _jwt_algorithms, "jwt_algorithms",
        "Comma list of accepted token algorithms; HS* use JWT_SECRET, RS*/PS*/ES*/EdDSA "
        "use JWT_JWKS_URL; none is never accepted",
    ),
    Variable(
        "JWT_LEEWAY_S", "0", _leeway, "jwt_leeway_s",
        f"Clock skew tolerated on exp, nbf and iat, in seconds (0 to {MAXIMUM_JWT_LEEWAY_S})",
    ),
    Variable(
        "JWT_TOKEN_TYPE_CLAIM", "tokenType", _required_text, "jwt_token_type_claim",
        "Claim naming the token's type; a token that has it must have JWT_TOKEN_TYPE",
    ),
    Variable(
        "JWT_TOKEN_TYPE", "access", _required_text, "jwt_token_type",
        "The only token type accepted (refresh tokens are refused)",
    ),
    Variable(
        "JWT_JWKS_URL", None, _jwks_url, "jwt_jwks_url",
        "URL of a JSON Web Key Set with the auth-service's public keys, for "
        "RS*/PS*/ES*/EdDSA tokens",
    ),
    Variable(
        "JWT_JWKS_REFRESH_MS", "60000", _whole_number(1000), "jwt_jwks_refresh_ms",
        "Shortest time between two JWKS fetches caused by unknown key ids, in milliseconds",
    ),
    Variable(
        "JWT_CACHE_SIZE", "10000", _whole_number(0), "jwt_cache_size",
        "Verified tokens remembered until they expire (0 turns the cache off)",
    ),
    Variable(
        "RATE_LIMIT_WINDOW_MS", "60000", _whole_number(1), "rate_limit_window_ms",
        "Rate-limit window, in milliseconds",
    ),
    Variable(
        "RATE_LIMIT_MAX", "1000", _whole_number(1), "rate_limit_max",
        "Maximum requests per window",
    ),
    Variable(
        "RATE_LIMIT_MESSAGE", "Too many requests from this IP, please try again later.", _text,
        "rate_limit_message", "Message of the 429 answer",
    ),
    Variable(
        "RATE_LIMIT_KEY", "ip", _choice("ip", "user", "ip+user"), "rate_limit_key",
        "What a client is, for counting: ip, user (the verified token's subject, "
        "else the address) or ip+user",
    ),
    Variable(
        "RATE_LIMIT_ALGORITHM", "fixed", _choice("fixed", "sliding"), "rate_limit_algorithm",
        "fixed (each client's window starts at its first request, as the Express "
        "gateway) or sliding (no double burst at a window's edge)",
    ),
    Variable(
        "RATE_LIMIT_HEADERS", "draft-6", _choice("draft-6", "draft-8", "none"),
        "rate_limit_headers",
        "Rate-limit headers: draft-6 (RateLimit-Policy/-Limit/-Remaining/-Reset, as "
        "the Express gateway), draft-8 (RateLimit and RateLimit-Policy) or none",
    ),
    Variable(
        "RATE_LIMIT_ROUTES", "", _rate_limit_routes, "rate_limit_routes",
        "Budgets of their own for path prefixes: PREFIX=MAX[/WINDOW_MS],... "
        "(e.g. /api/v1/auth/login=10/60000)",
    ),
    Variable(
        "RATE_LIMIT_STORE", "memory", _choice("memory", "redis"), "rate_limit_store",
        "Where counters live: memory (this process) or redis (one limit across replicas)",
    ),
    Variable(
        "RATE_LIMIT_MEMORY_MAX_KEYS", "100000", _whole_number(1), "rate_limit_memory_max_keys",
        "The most clients the memory store tracks at once",
    ),
    Variable(
        "REDIS_URL", "redis://127.0.0.1:6379/0", _redis_url, "redis_url",
        "Redis for RATE_LIMIT_STORE=redis: redis://[[user]:password@]host[:port][/db]",
    ),
    Variable(
        "RATE_LIMIT_REDIS_PREFIX", "qeetgw:ratelimit:", _required_text, "rate_limit_redis_prefix",
        "Prefix of the rate-limit keys in Redis",
    ),
    Variable(
        "RATE_LIMIT_REDIS_TIMEOUT_MS", "100", _whole_number(1, 10000), "rate_limit_redis_timeout_ms",
        "The longest a request waits for Redis, in milliseconds",
    ),
    Variable(
        "RATE_LIMIT_FAIL", "open", _choice("open", "closed"), "rate_limit_fail",
        "When the store cannot count: open (let requests through, warn once per "
        "outage) or closed (refuse them with 503)",
    ),
    Variable(
        "GATEWAY_PROXY_TIMEOUT_MS", "5000", _whole_number(1), "proxy_timeout_ms",
        "How long an upstream may take to answer, in milliseconds",
    ),
    Variable(
        "JSON_BODY_LIMIT", "1mb", _byte_size, "body_limit",
        "Largest request body accepted (1mb, 100kb, 512b, bytes)",
    ),
    *_service_variables(),
    Variable(
        "UPSTREAM_POOL_SIZE", "128", _whole_number(1), "upstream_pool_size",
        "Persistent connections kept per upstream",
    ),
    Variable(
        "UPSTREAM_KEEPALIVE_TIMEOUT_MS", "4000", _whole_number(1), "upstream_keepalive_timeout_ms",
        "How long an idle upstream connection is kept, in milliseconds; keep it "
        "below the upstreams' own keep-alive timeout",
    ),
    Variable(
        "UPSTREAM_CA_FILE", None, _ca_file, "upstream_ca_file",
        "PEM file of extra CA certificates for https upstreams",
    ),
    Variable(
        "WORKERS", "1", _workers, "workers",
        "Gateway processes sharing the listening socket: a number, or auto for one "
        "per core (rate limits across workers need RATE_LIMIT_STORE=redis)",
    ),
    Variable(
        "SHUTDOWN_DELAY_MS", "0", _whole_number(0), "shutdown_delay_ms",
        "After SIGTERM, keep serving (with /ready answering 503) this long before "
        "listening stops; about 5000 in Kubernetes, so endpoints update first",
    ),
    Variable(
        "CLIENT_HEADER_TIMEOUT_MS", "10000", _whole_number(1), "client_header_timeout_ms",
        "A request's headers must be complete this long after its first byte (else 408)",
    ),
    Variable(
        "CLIENT_BODY_TIMEOUT_MS", "30000", _whole_number(1), "client_body_timeout_ms",
        "The longest a request body may stall (else 408)",
    ),
    Variable(
        "KEEPALIVE_TIMEOUT_MS", "65000", _whole_number(1), "keepalive_timeout_ms",
        "Idle keep-alive client connections are closed after this long",
    ),
    Variable(
        "CLIENT_MAX_HEADER_BYTES", "16384", _whole_number(1024, 1048576), "client_max_header_bytes",
        "The largest request header block (else 431)",
    ),
    Variable(
        "MAX_CONNECTIONS", "10000", _whole_number(1), "max_connections",
        "Open client connections at most; past it new connections are closed at once",
    ),
    Variable(
        "CLIENT_LINGER_TIMEOUT_MS", "5000", _whole_number(1), "client_linger_timeout_ms",
        "After an early refusal (413, 400, 408, 414, 431), close when the client "
        "sends nothing for this long",
    ),
    Variable(
        "CLIENT_LINGER_TIME_MS", "30000", _whole_number(0), "client_linger_time_ms",
        "After an early refusal, read and discard what the client still sends for "
        "at most this long, so it can read the answer; 0 closes at once",
    ),
    Variable(
        "CLIENT_LINGER_MAX_BYTES", "64mb", _byte_size, "client_linger_max_bytes",
        "After an early refusal, read and discard at most this much (64mb, 1gb, bytes)",
    ),
    Variable(
        "SERVICE_DISCOVERY", "static", _choice("static", "dns"), "service_discovery",
        "static: the service URLs are the instances; dns: every address a service "
        "URL's host name resolves to is an instance (http:// upstreams only)",
    ),
    Variable(
        "DNS_REFRESH_MS", "5000", _whole_number(100), "dns_refresh_ms",
        "How often dns discovery re-resolves the service host names",
    ),
    Variable(
        "BALANCER", "round_robin", _choice("round_robin", "least_request"), "balancer",
        "How an instance is chosen among a service's several: round_robin or "
        "least_request (the less busy of two random ones)",
    ),
    Variable(
        "OUTLIER_CONSECUTIVE_FAILURES", "5", _whole_number(1), "outlier_consecutive_failures",
        "Connect failures, timeouts or 5xx answers in a row that eject an instance",
    ),
    Variable(
        "OUTLIER_BASE_EJECTION_MS", "30000", _whole_number(1), "outlier_base_ejection_ms",
        "How long an ejection lasts, times the number of ejections (capped at 10x)",
    ),
    Variable(
        "OUTLIER_MAX_EJECTION_PERCENT", "50", _whole_number(0, 100), "outlier_max_ejection_percent",
        "The most of a service's instances ejected at once (one is always allowed)",
    ),
    Variable(
        "RETRY_MAX", "1", _whole_number(0, 10), "retry_max",
        "Tries after the first, each on another instance, within the retry budget",
    ),
    Variable(
        "RETRY_BUFFER_BYTES", "65536", _whole_number(0), "retry_buffer_bytes",
        "The largest request body an idempotent request is retried with",
    ),
    Variable(
        "UPSTREAM_MAX_IN_FLIGHT", "1024", _whole_number(1), "upstream_max_in_flight",
        "Requests in flight per service at most; past it, 503 at once",
    ),
    Variable(
        "HEALTH_CHECK_INTERVAL_MS", "10000", _whole_number(0), "health_check_interval_ms",
        "How often every instance's health path is probed in the background "
        "(/health/services answers from that); 0 turns it off",
    ),
    Variable(
        "HEALTH_UNHEALTHY_THRESHOLD", "3", _whole_number(1), "health_unhealthy_threshold",
        "Failed health checks in a row that take an instance out",
    ),
    Variable(
        "HEALTH_HEALTHY_THRESHOLD", "2", _whole_number(1), "health_healthy_threshold",
        "Passed health checks in a row that bring it back",
    ),
    Variable(
        "METRICS_PORT", None, _optional_endpoint, "metrics_port",
        "Serve Prometheus metrics on this endpoint description (e.g. "
        "tcp:9464:interface=127.0.0.1); off when unset, never the public port; "
        "with WORKERS > 1 one port serves the whole group",
    ),
    Variable(
        "LOG_FORMAT", "text", _choice("text", "json"), "log_format",
        "Log format: text or json (one object a line)",
    ),
    Variable(
        "SHUTDOWN_GRACE_MS", "10000", _whole_number(0), "shutdown_grace_ms",
        "How long in-flight requests may finish on SIGTERM, in milliseconds",
    ),
)

_BY_NAME: Mapping[str, Variable] = {variable.name: variable for variable in VARIABLES}
_ALIASES: Mapping[str, Variable] = {
    alias: variable for variable in VARIABLES for alias in variable.aliases
}

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _given(
    environ: Mapping[str, str], dotenv: Mapping[str, str], overrides: Mapping[str, str]
) -> Dict[str, Tuple[str, str]]:
    """
    The text given for each variable, by precedence, as C{name -> (the
    name it was given under, text)}: the name matters for an alias, whose
    problem line must name what the user wrote.

    Within one source a variable beats its alias; across sources the higher
    source wins, whichever name it uses (an override's C{CORS_ORIGIN} beats
    the environment's C{CORS_ORIGINS}).
    """
    given: Dict[str, Tuple[str, str]] = {}
    sources = ((dotenv, False), (environ, False), (overrides, True))
    for source, is_overrides in sources:
        for variable in VARIABLES:
            if not (variable.environment or is_overrides):
                continue
            names = (variable.name,) + variable.aliases
            present = [name for name in names if name in source]
            # A blank variable does not hide a set alias (CORS_ORIGINS= with
            # CORS_ORIGIN=x means x), as JavaScript's || would have it.
            filled = [name for name in present if source[name].strip()]
            chosen = next(iter(filled or present), None)
            if chosen is not None:
                given[variable.name] = (chosen, source[chosen])
    return given


def _check_overrides(overrides: Mapping[str, str]) -> None:
    """
    Refuse override keys that name no variable: a typo in a caller would
    otherwise be silently ignored.
    """
    unknown = sorted(key for key in overrides if key not in _BY_NAME and key not in _ALIASES)
    if unknown:
        raise ValueError(f"unknown override keys: {', '.join(unknown)}")


def _parse_all(given: Mapping[str, Tuple[str, str]], problems: List[str]) -> Dict[str, Any]:
    """
    Parse every variable from its given text or its default, collecting one
    problem line per bad value.  Bad variables are left out of the result.
    """
    values: Dict[str, Any] = {}
    for variable in VARIABLES:
        spelled, text = given.get(variable.name, (variable.name, variable.default))
        if text is None:
            values[variable.name] = None
            continue
        try:
            values[variable.name] = variable.parse(text)
        except _Invalid as invalid:
            label = variable.label if spelled == variable.name else spelled
            shown = "(value hidden)" if invalid.hide_value else repr(text)
            problems.append(f"{label}={shown}: {invalid}")
    return values


def _listen(
    values: Mapping[str, Any], overrides: Mapping[str, str], problems: List[str]
) -> Optional[str]:
    """
    The endpoint description: C{--port}'s whole description, else
    C{tcp:PORT:interface=HOST}.  Giving both C{--port DESCRIPTION} and a
    PORT or HOST override is refused: one of them would be ignored.
    """
    listen = values.get("LISTEN")
    if listen is not None:
        for name in ("PORT", "HOST"):
            if name in overrides:
                problems.append(
                    f"{name}={overrides[name]!r}: cannot be combined with --port {listen!r}; "
                    "give the interface and port in the endpoint description"
                )
        return listen
    if "PORT" not in values or "HOST" not in values:
        return None  # Already a problem line.
    # The interface is an endpoint argument: an IPv6 address's colons must be
    # escaped, or they would split the description.
    return f"tcp:{values['PORT']}:interface={quoteStringArgument(values['HOST'])}"


def _services(values: Mapping[str, Any]) -> Tuple[ServiceConfig, ...]:
    """
    The six services, in table order, with their configured URL and health
    path.  Only called when every value parsed.
    """
    services: List[ServiceConfig] = []
    for name, client_prefix, upstream_prefix, _, _ in _SERVICE_TABLE:
        prefix = _service_variable_prefix(name)
        urls = values[f"{prefix}_URL"]
        services.append(
            ServiceConfig(
                name=name,
                client_prefix=client_prefix,
                upstream_prefix=upstream_prefix,
                url=urls[0],
                health_path=values[f"{prefix}_HEALTH_PATH"],
                url_variable=f"{prefix}_URL",
                urls=urls if len(urls) > 1 else (),
                timeout_ms=values[f"{prefix[: -len('_SERVICE')]}_TIMEOUT_MS"],
            )
        )
    return tuple(services)


def _check_discovery(values: Mapping[str, Any], problems: List[str]) -> None:
    """
    dns discovery connects to the addresses a name resolves to, and TLS
    verifies the certificate against the host connected to: an https://
    service URL cannot be discovered by DNS (it is for http:// upstreams
    inside the cluster).
    """
    if values.get("SERVICE_DISCOVERY") != "dns":
        return
    for name, _, _, _, _ in _SERVICE_TABLE:
        variable = f"{_service_variable_prefix(name)}_URL"
        urls = values.get(variable)
        if isinstance(urls, tuple) and any(url.startswith("https://") for url in urls):
            problems.append(
                f"SERVICE_DISCOVERY=dns: {variable} is https://, but dns discovery connects "
                "to the resolved addresses and TLS verifies the host name; use dns discovery "
                "for http:// upstreams inside the cluster, or SERVICE_DISCOVERY=static"
            )


def _check_jwt(
    values: Mapping[str, Any], given: Mapping[str, Tuple[str, str]], problems: List[str]
) -> None:
    """
    The checks that span the JWT variables: a key source when REQUIRE_AUTH
    needs one, a key the auth-service could sign with, and algorithms that
    match the key sources.  A problem line never shows a set secret.
    """
    secret = values.get("JWT_SECRET")
    if values.get("REQUIRE_AUTH") is True and secret is None and values.get("JWT_JWKS_URL") is None:
        # Only reached for an unset or blank secret, so echoing it leaks nothing.
        given_secret = given.get("JWT_SECRET")
        shown = (
            "JWT_SECRET is not set" if given_secret is None else f"JWT_SECRET={given_secret[1]!r}"
        )
        problems.append(
            f"{shown}: must be the auth-service's secret when REQUIRE_AUTH=true "
            "(set REQUIRE_AUTH=false only for development)"
        )
    key = _check_hmac_key(secret, values.get("JWT_SECRET_ENCODING"), problems)
    _check_jwt_algorithms(values, given, key, problems)


def _check_hmac_key(
    secret: Optional[str], encoding: Optional[str], problems: List[str]
) -> Optional[bytes]:
    """
    The HMAC key of a set C{secret}, when the auth-service could use it;
    else L{None}, with a problem line when it is set but unusable.
    """
    if secret is None or encoding is None:
        return None  # Unset, or JWT_SECRET_ENCODING has its own line.
    try:
        read = read_hmac_key(secret, encoding)
    except ValueError as error:
        problems.append(f"JWT_SECRET: {error}")
        return None
    if len(read.key) < MINIMUM_HMAC_KEY_BYTES:
        how = (
            "after base64 decoding" if read.reading == "base64"
            else "(its UTF-8 text, not base64)"
        )
        problems.append(
            f"JWT_SECRET: the key is {len(read.key)} bytes {how}; the auth-service "
            f"(jjwt) needs at least {MINIMUM_HMAC_KEY_BYTES}"
        )
        return None
    return read.key


def _check_jwt_algorithms(
    values: Mapping[str, Any],
    given: Mapping[str, Tuple[str, str]],
    key: Optional[bytes],
    problems: List[str],
) -> None:
    """
    Each algorithm family listed needs its key source, and the JWKS needs
    an algorithm: otherwise the setting silently refuses every token.
    """
    algorithms = values.get("JWT_ALGORITHMS")
    if algorithms is None:
        return  # Already a problem line.
    jwks_url = values.get("JWT_JWKS_URL")
    # The default algorithms fit any usable key and list no asymmetric
    # one, so a line about them is always about a given value.
    spelled = given.get("JWT_ALGORITHMS", ("", ",".join(algorithms)))[1]
    hmac_algorithms = [name for name in algorithms if name in HMAC_ALGORITHMS]
    if key is not None and hmac_algorithms and all(
        len(key) < HMAC_KEY_BYTES[name] for name in hmac_algorithms
    ):
        problems.append(
            f"JWT_ALGORITHMS={spelled!r}: the JWT_SECRET key is {len(key)} bytes, too short "
            f"for {', '.join(hmac_algorithms)} (HS256 needs 32 bytes, HS384 48, HS512 64)"
        )
    asymmetric = [name for name in algorithms if name in ASYMMETRIC_ALGORITHMS]
    if asymmetric and jwks_url is None:
        problems.append(
            f"JWT_ALGORITHMS={spelled!r}: {', '.join(asymmetric)} "
            f"{'needs' if len(asymmetric) == 1 else 'need'} JWT_JWKS_URL "
            "(public keys come only from a JWKS)"
        )
    if jwks_url is not None and not asymmetric:
        problems.append(
            f"JWT_JWKS_URL={jwks_url!r}: JWT_ALGORITHMS lists no asymmetric algorithm "
            "(RS256, ES256, ...), so no key of the JWKS would ever be used"
        )


def load_config(
    environ: Mapping[str, str],
    dotenv: Mapping[str, str] = _EMPTY,
    overrides: Mapping[str, str] = _EMPTY,
) -> Config:
    """
    Build the L{Config} from its sources, checking every variable.

    Precedence: C{overrides} (the command-line options, keyed by variable
    name, plus C{LISTEN} for C{--port}) > C{environ} (the real environment) >
    C{dotenv} (the C{.env} file's variables) > the defaults of L{VARIABLES}.
    A C{LISTEN} that is only a port number sets PORT instead.

    This reads no configuration source itself (not C{os.environ}, not
    C{.env}); it only opens the files a value names (C{UPSTREAM_CA_FILE}, an
    C{ssl:} endpoint's key and certificate) to check them.

    @raise ConfigError: listing every bad variable, one line each.
    @raise ValueError: when C{overrides} has a key that names no variable.
    """
    _check_overrides(overrides)
    listen_override = overrides.get("LISTEN")
    if listen_override is not None and _DIGITS.match(listen_override.strip()):
        # `--port 8080`: the port alone, on HOST, as Express's PORT would be.
        overrides = {key: value for key, value in overrides.items() if key != "LISTEN"}
        overrides["PORT"] = listen_override

    problems: List[str] = []
    given = _given(environ, dotenv, overrides)
    values = _parse_all(given, problems)
    listen = _listen(values, overrides, problems)
    _check_jwt(values, given, problems)
    _check_discovery(values, problems)
    workers = values.get("WORKERS")
    if (
        isinstance(workers, int)
        and workers > 1
        and listen is not None
        and not listen.startswith(("tcp", "systemd:"))
    ):
        problems.append(
            f"WORKERS={workers}: workers share a plain TCP socket (tcp:... or systemd:...); "
            "for TLS (ssl:...) or other endpoints run one worker, or terminate TLS in front"
        )
    if problems:
        raise ConfigError(problems)

    fields = {
        variable.field: values[variable.name]
        for variable in VARIABLES
        if variable.field is not None
    }
    return Config(listen=listen, services=_services(values), **fields)


# -- the .env file -----------------------------------------------------------

_DOTENV_ASSIGNMENT = re.compile(
    r"\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*=(?P<rest>.*)\Z", re.DOTALL
)
_AFTER_QUOTE = re.compile(r"\s*(?:#.*)?\Z", re.DOTALL)
_INLINE_COMMENT = re.compile(r"\s#")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _double_quoted(rest: str) -> Tuple[str, str]:
    """
    The value of C{"..."} at the start of C{rest}, with its escapes
    (C{\\n}, C{\\r}, C{\\t}, C{\\"}, C{\\\\}; any other backslash is kept),
    and what follows the closing quote.

    @raise _Invalid: when the quote is not closed on this line.
    """
    value: List[str] = []
    index = 1
    while index < len(rest):
        char = rest[index]
        if char == '"':
            return "".join(value), rest[index + 1:]
        if char == "\\" and index + 1 < len(rest):
            following = rest[index + 1]
            value.append(_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        value.append(char)
        index += 1
    raise _Invalid(
        "unterminated double-quoted value (a value must fit on one line; write \\n for a newline)"
    )


def _dotenv_value(rest: str) -> str:
    """
    The value of one C{KEY=...} line, from what follows the C{=}.

    @raise _Invalid: for an unterminated quote or text after a closing quote.
    """
    stripped = rest.lstrip()
    if stripped[:1] == '"':
        value, after = _double_quoted(stripped)
    elif stripped[:1] in ("'", "`"):
        # Single quotes (and dotenv's backticks) are literal: no escapes.
        quote = stripped[0]
        end = stripped.find(quote, 1)
        if end < 0:
            raise _Invalid("unterminated quoted value (a value must fit on one line)")
        value, after = stripped[1:end], stripped[end + 1:]
    else:
        # An unquoted value ends at " #" (the blank after "=" counts): a '#'
        # with no blank before it (a password, KEY=#x) is part of the value.
        comment = _INLINE_COMMENT.search(rest)
        return (rest if comment is None else rest[: comment.start()]).strip()
    if not _AFTER_QUOTE.match(after):
        raise _Invalid("unexpected text after the closing quote")
    return value


def read_dotenv(path: str) -> Dict[str, str]:
    """
    The variables of a C{.env} file, as the npm C{dotenv} package reads the
    common cases: C{KEY=VALUE} lines, blank lines and C{#} comments, an
    optional C{export } prefix, single- or double-quoted values (double
    quotes understand C{\\n}), and C{ #} comments after unquoted values.  A
    later line for the same key wins.

    A missing file is no error: a C{.env} is optional.

    @raise ConfigError: naming the file and line of every malformed line
        (without echoing the line, which may hold a secret).
    """
    try:
        with open(path, "rb") as dotenv:
            data = dotenv.read()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError([f"{path}: cannot be read ({error.strerror or _one_line(error)})"])
    try:
        # utf-8-sig: an editor's byte-order mark must not become part of the first key.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: is not UTF-8 text (byte {error.start})"])

    variables: Dict[str, str] = {}
    problems: List[str] = []
    # Only \n ends a line: str.splitlines would also split at \x0c, \u2028...
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _DOTENV_ASSIGNMENT.match(line)
        if match is None:
            problems.append(f"{path}:{number}: expected KEY=VALUE")
            continue
        key = match.group("key")
        try:
            variables[key] = _dotenv_value(match.group("rest"))
        except _Invalid as invalid:
            problems.append(f"{path}:{number}: {key}: {invalid}")
    if problems:
        raise ConfigError(problems)
    return variables
