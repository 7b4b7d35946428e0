"""
JWT verification: which bearer tokens the gateway accepts, and whom they name.

A L{TokenVerifier} checks a token the way the auth-service (Spring and jjwt)
issues it: the signature with pyjwt, for an algorithm on an explicit
allow-list and only with a key of that algorithm's family (the HMAC secret
for HS*, a JWKS public key for RS*/PS*/ES*/EdDSA); then the claims (C{exp}
required, C{nbf}, C{iat}, C{iss}, C{aud}, the token type) against an
injected clock.  Verified tokens are remembered until they expire, so the
hot path is a dictionary lookup and no reactor round trip.

The resource that asks for a token and answers 401 lives elsewhere; it only
sees L{Identity} or L{TokenRejected}.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Tuple,
    Union,
    cast,
)

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IPushProducer, IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from zope.interface import Attribute, Interface, implementer

from qeetgw.config import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    HMAC_KEY_BYTES,
    MINIMUM_HMAC_KEY_BYTES,
    Config,
    derive_hmac_key,
)

if TYPE_CHECKING:
    from jwt.types import Options

__all__ = [
    "ClaimPolicy",
    "HMACKeySource",
    "IKeySource",
    "Identity",
    "JWKSClient",
    "JWKSKeySource",
    "TokenCache",
    "TokenRejected",
    "TokenVerifier",
    "algorithm_for_key",
    "check_claims",
    "derive_hmac_key",
    "identity_from_claims",
    "make_jwks_client",
]

_log = Logger()


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


class TokenRejected(Exception):
    """
    A token is not acceptable.  The client always gets the same generic 401;
    C{reason} is for logs only.

    @ivar reason: a short, log-friendly reason: C{"malformed token"},
        C{"algorithm not allowed"}, C{"unknown key id"},
        C{"keys unavailable"}, C{"bad signature"}, C{"key refused"},
        C{"missing exp"}, C{"malformed exp"} (or nbf, iat), C{"expired"},
        C{"not yet valid"}, C{"issued in the future"}, C{"wrong issuer"},
        C{"wrong audience"}, C{"refresh token"}, C{"wrong token type"}.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class Identity:
    """
    Who a verified token says the caller is.

    @ivar subject: the C{sub} claim (the auth-service puts the email there),
        when it is a string without control characters; else L{None}.
    @ivar user_id: the C{userId} claim as a string (C{"42"}), when it is a
        whole number or a string without control characters; else L{None}.
    @ivar role: the C{role} claim (C{"USER"}, C{"ADMIN"}), when it is a string
        without control characters; else L{None}.
    @ivar claims: every claim of the token, read-only.
    @ivar expires_at: the C{exp} claim, in seconds since the epoch.
    """

    subject: Optional[str]
    user_id: Optional[str]
    role: Optional[str]
    # A read-only mapping is not hashable; the other fields identify enough.
    claims: Mapping[str, Any] = attrs.field(hash=False)
    expires_at: float


def algorithm_for_key(key: bytes) -> str:
    """
    The HMAC algorithm jjwt signs with for C{key}, chosen by its length:
    HS256 for 32 to 47 bytes, HS384 for 48 to 63, HS512 for 64 and more.

    @raise ValueError: for a key shorter than 32 bytes, which jjwt refuses.
    """
    if len(key) >= 64:
        return "HS512"
    if len(key) >= 48:
        return "HS384"
    if len(key) >= MINIMUM_HMAC_KEY_BYTES:
        return "HS256"
    raise ValueError(
        f"the key is {len(key)} bytes; jjwt needs at least {MINIMUM_HMAC_KEY_BYTES}"
    )


# ---------------------------------------------------------------------------
# Claims: pure functions of the claims, the time and the policy
# ---------------------------------------------------------------------------


@attrs.frozen
class ClaimPolicy:
    """
    What the claims of an acceptable token must say.

    @ivar issuer: the exact C{iss} required (JWT_ISSUER).
    @ivar audience: when set, C{aud} (a string or a list) must contain it
        (JWT_AUDIENCE).
    @ivar leeway_s: clock skew tolerated on C{exp}, C{nbf}, C{iat}.
    @ivar token_type_claim: the claim naming the token's type.
    @ivar token_type: the only type accepted when that claim is present.
    """

    issuer: str
    audience: Optional[str] = None
    leeway_s: float = 0.0
    token_type_claim: str = "tokenType"
    token_type: str = "access"

    @classmethod
    def from_config(cls, config: Config) -> "ClaimPolicy":
        """
        The policy C{config} describes.
        """
        return cls(
            issuer=config.jwt_issuer,
            audience=config.jwt_audience,
            leeway_s=config.jwt_leeway_s,
            token_type_claim=config.jwt_token_type_claim,
            token_type=config.jwt_token_type,
        )


def _numeric_date(claims: Mapping[str, Any], name: str) -> Optional[float]:
    """
    The NumericDate claim C{name} (RFC 7519 section 2: seconds, possibly
    fractional), or L{None} when absent.

    @raise TokenRejected: when it is not a finite number.  A boolean is not
        a number here, though Python says it is; and Python's JSON parser
        reads C{Infinity}, which must not mean "never expires".
    """
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenRejected(f"malformed {name}")
    if not math.isfinite(value):
        raise TokenRejected(f"malformed {name}")
    return float(value)


def _not_before(claims: Mapping[str, Any], leeway_s: float) -> float:
    """
    The earliest time C{claims} may be accepted: their C{nbf} and C{iat},
    less the leeway (C{-inf} when they have neither).  Assumes the claims
    passed L{check_claims}.
    """
    times = [
        moment
        for moment in (_numeric_date(claims, "nbf"), _numeric_date(claims, "iat"))
        if moment is not None
    ]
    return max(times) - leeway_s if times else -math.inf


def check_claims(claims: Mapping[str, Any], now: float, policy: ClaimPolicy) -> None:
    """
    Check a signature-verified token's claims at time C{now}, as pyjwt
    would with its time checks done against our clock: C{exp} required and
    past only when C{exp <= now - leeway}; C{nbf} and C{iat} no later than
    C{now + leeway}; then issuer, audience and token type.

    @raise TokenRejected: saying which check failed.
    """
    leeway = policy.leeway_s
    expires = _numeric_date(claims, "exp")
    if expires is None:
        raise TokenRejected("missing exp")
    if expires <= now - leeway:
        raise TokenRejected("expired")
    valid_from = _numeric_date(claims, "nbf")
    if valid_from is not None and valid_from > now + leeway:
        raise TokenRejected("not yet valid")
    issued = _numeric_date(claims, "iat")
    if issued is not None and issued > now + leeway:
        raise TokenRejected("issued in the future")
    if claims.get("iss") != policy.issuer:
        raise TokenRejected("wrong issuer")
    if policy.audience is not None:
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if policy.audience not in audiences:
            raise TokenRejected("wrong audience")
    if policy.token_type_claim in claims:
        token_type = claims[policy.token_type_claim]
        if token_type != policy.token_type:
            # The auth-service's refresh tokens are signed with the same key
            # and live 7 days: the case that matters, so named in the logs.
            raise TokenRejected("refresh token" if token_type == "refresh" else "wrong token type")


def _header_safe(value: Any) -> Optional[str]:
    """
    C{value} when it is a string fit for an HTTP header value (no control
    characters, so no header injection upstream), else L{None}.
    """
    if not isinstance(value, str) or not value:
        return None
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return None
    return value


def _user_id(value: Any) -> Optional[str]:
    """
    The C{userId} claim as text: the auth-service writes a JSON number.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return _header_safe(value)


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    """
    The L{Identity} that checked C{claims} stand for.
    """
    return Identity(
        subject=_header_safe(claims.get("sub")),
        user_id=_user_id(claims.get("userId")),
        role=_header_safe(claims.get("role")),
        claims=MappingProxyType(dict(claims)),
        expires_at=float(claims["exp"]),
    )


# ---------------------------------------------------------------------------
# The cache of verified tokens
# ---------------------------------------------------------------------------


@attrs.frozen
class _CacheEntry:
    """
    A verified token's identity and the times it may be accepted between:
    C{not_before <= now < valid_until}.
    """

    identity: Identity
    not_before: float
    valid_until: float


class TokenCache:
    """
    Verified tokens, by their text, until they expire: a bounded LRU.

    Only tokens that passed every check are stored, so an attacker cannot
    fill it with garbage; each hit still checks the time, so a cached token
    is refused once it expires.
    """

    def __init__(self, max_size: int) -> None:
        """
        @param max_size: the most tokens kept; 0 keeps none.
        """
        self._max_size = max_size
        self._entries: "OrderedDict[str, _CacheEntry]" = OrderedDict()

    def __len__(self) -> int:
        """
        How many tokens are remembered.
        """
        return len(self._entries)

    def get(self, token: str, now: float) -> Optional[Identity]:
        """
        The identity of C{token} when it is remembered and still valid at
        C{now}; L{None} when it must be verified.

        @raise TokenRejected: (C{"expired"}) for a remembered token that has
            expired since; it is forgotten.
        """
        entry = self._entries.get(token)
        if entry is None:
            return None
        if now >= entry.valid_until:
            del self._entries[token]
            raise TokenRejected("expired")
        if now < entry.not_before:
            # Only when the clock went backwards: verify afresh.
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return entry.identity

    def put(self, token: str, identity: Identity, not_before: float, valid_until: float) -> None:
        """
        Remember that C{token} stands for C{identity} from C{not_before}
        until C{valid_until}, forgetting the least recently used token when
        full.
        """
        if self._max_size <= 0:
            return
        self._entries[token] = _CacheEntry(identity, not_before, valid_until)
        self._entries.move_to_end(token)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """
        Forget every token (when a key they may have been signed with is
        withdrawn).
        """
        self._entries.clear()


# ---------------------------------------------------------------------------
# Key sources
# ---------------------------------------------------------------------------


class IKeySource(Interface):
    """
    Where the keys of one family of algorithms come from.  A
    L{TokenVerifier} asks exactly one source per algorithm, so a key of one
    family is never used with an algorithm of another.
    """

    algorithms: FrozenSet[str] = Attribute(
        "The algorithms this source's keys verify; disjoint from other sources'."
    )

    def key_for(algorithm: str, key_id: Optional[str]) -> Any:
        """
        The key to verify a token signed with C{algorithm} (one of
        C{algorithms}) and carrying the key id C{key_id} (L{None} when the
        token has none), or L{None} when this source has none yet.
        """

    def refresh() -> "Optional[Deferred[None]]":
        """
        Look for new keys, if allowed now: a L{Deferred} that fires once the
        keys are fresh (or fails with L{TokenRejected}), or L{None} when no
        look-up may happen now.
        """

    def missing_reason() -> str:
        """
        The L{TokenRejected} reason for a token whose key is not found.
        """

    def start() -> None:
        """
        Begin any background work (fetching keys ahead of the first token).
        """

    def stop() -> None:
        """
        End any background work.
        """


@implementer(IKeySource)
class HMACKeySource:
    """
    The shared HMAC secret of the auth-service, for the HS* algorithms its
    length allows: a 32-byte key verifies HS256 only, as jjwt would.
    """

    def __init__(self, key: bytes, algorithms: Iterable[str]) -> None:
        """
        @param key: the derived key (see L{derive_hmac_key}).
        @param algorithms: the HMAC algorithms allowed; those the key is
            too short for are left out of L{algorithms}.

        @raise ValueError: for a key shorter than jjwt allows, or an
            algorithm that is not HMAC.
        """
        algorithm_for_key(key)  # Raises for a short key.
        allowed = frozenset(algorithms)
        if not allowed <= frozenset(HMAC_ALGORITHMS):
            raise ValueError(f"not HMAC algorithms: {sorted(allowed)}")
        self.algorithms: FrozenSet[str] = frozenset(
            name for name in allowed if len(key) >= HMAC_KEY_BYTES[name]
        )
        self._key = key

    def key_for(self, algorithm: str, key_id: Optional[str]) -> Any:
        """
        The secret: the auth-service has one, whatever the key id says.
        """
        return self._key

    def refresh(self) -> "Optional[Deferred[None]]":
        """
        Never: the secret does not change while we run.
        """
        return None

    def missing_reason(self) -> str:
        """
        Unreachable: the secret is always there.
        """
        return "unknown key id"

    def start(self) -> None:
        """
        Nothing to start.
        """

    def stop(self) -> None:
        """
        Nothing to stop.
        """


class JWKSClient(Protocol):
    """
    What L{JWKSKeySource} needs of an HTTP client: treq's C{get}.
    L{treq.client.HTTPClient} (see L{make_jwks_client}) and
    L{treq.testing.StubTreq} both provide it.
    """

    def get(
        self,
        url: str,
        /,
        *,
        headers: Any = ...,
        allow_redirects: bool = ...,
        unbuffered: bool = ...,
    ) -> "Deferred[Any]":
        """
        Start a GET of C{url}; fire with the L{IResponse} once its headers
        are in.
        """


def make_jwks_client(
    reactor: Any, tls_policy: Optional[IPolicyForHTTPS] = None
) -> HTTPClient:
    """
    A treq client for fetching a JWKS.

    @param reactor: the reactor to connect with (C{IReactorTCP},
        C{IReactorTime} and, for https, C{IReactorSSL}).
    @param tls_policy: how to verify an https JWKS server (for a private
        CA); Twisted's browser-like default when L{None}.
    """
    # Fetches are minutes apart: a connection kept open would only go stale.
    pool = HTTPConnectionPool(reactor, persistent=False)
    if tls_policy is None:
        agent = Agent(reactor, pool=pool)
    else:
        agent = Agent(reactor, contextFactory=tls_policy, pool=pool)
    return HTTPClient(agent)


#: How often the JWKS is fetched in the background, in seconds: a key
#: withdrawn from the set stops verifying (and the tokens it verified are
#: forgotten) within this time.
JWKS_MAX_AGE_S = 300.0

#: The largest JWKS body read: a key set is a few kilobytes.
JWKS_MAX_BYTES = 1024 * 1024

#: The algorithms each kind of public key verifies, when its JWK names none.
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS: Mapping[str, str] = {
    "secp256r1": "ES256",
    "secp384r1": "ES384",
    "secp521r1": "ES512",
    "secp256k1": "ES256K",
}

# A JWK holding any of these holds a private key (RFC 7518 section 6).
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


class _FetchFailed(Exception):
    """
    The JWKS could not be used; the text says why, for the log.
    """


class _FetchTimedOut(Exception):
    """
    The JWKS fetch outlived its timeout.
    """


class _CappedBody(StreamProtocol):
    """
    Reads a response body of at most C{limit} bytes.

    Unlike treq's C{collect}, it can be cancelled (by the fetch's timeout):
    the connection is dropped, and its end is then ignored.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: List[bytes] = []
        self._size = 0
        self.finished: "Deferred[bytes]" = Deferred(self._cancel)

    def _cancel(self, finished: "Deferred[bytes]") -> None:
        # A body we stopped reading leaves its connection unusable.  The
        # transport of a response body is a producer (a TransportProxyProducer).
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def dataReceived(self, data: bytes) -> None:
        """
        Keep a piece of the body, or give up when it is too large.
        """
        if self.finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.finished.errback(_FetchFailed(f"key set larger than {self._limit} bytes"))
            self._cancel(self.finished)
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fire L{finished} with the body when it is complete, fail it
        otherwise; nothing when it has fired already.
        """
        if self.finished.called:
            return
        # PotentialDataLoss: a body delimited by the connection's close.
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)


@attrs.frozen
class _PublicKey:
    """
    One usable key of a JWKS.

    @ivar key_id: its C{kid}, or L{None}.
    @ivar algorithms: the allowed algorithms it verifies.
    @ivar key: the cryptography public key object.
    @ivar fingerprint: its JWK, canonical, to notice a key withdrawn.
    """

    key_id: Optional[str]
    algorithms: FrozenSet[str]
    key: Any
    fingerprint: str


def _key_algorithms(key: Any, declared: Optional[str]) -> FrozenSet[str]:
    """
    The algorithms a public key verifies: those its type and curve allow,
    narrowed to the one its JWK declares, if it declares one (RFC 7517
    section 4.4).
    """
    fitting: FrozenSet[str] = frozenset()
    if isinstance(key, rsa.RSAPublicKey):
        fitting = _RSA_ALGORITHMS
    elif isinstance(key, ec.EllipticCurvePublicKey):
        name = _EC_ALGORITHMS.get(key.curve.name)
        fitting = frozenset({name}) if name else frozenset()
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        fitting = frozenset({"EdDSA"})
    # A declared algorithm that does not fit the key (ES384 on a P-256 key)
    # leaves none.
    return fitting & {declared} if declared is not None else fitting


def _unusable(jwk: Mapping[str, Any]) -> Optional[str]:
    """
    Why the JWK C{jwk} must not verify tokens, or L{None} when it may.
    """
    if jwk.get("kty") == "oct":
        # A symmetric key from a URL would be HMAC with a published secret.
        return "symmetric key (kty oct)"
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        return "it holds private key material"
    if jwk.get("use", "sig") != "sig":
        return f"use is {jwk.get('use')!r}, not 'sig'"
    operations = jwk.get("key_ops")
    if operations is not None and (not isinstance(operations, list) or "verify" not in operations):
        return "key_ops does not allow verify"
    declared = jwk.get("alg")
    if declared is not None and declared not in ASYMMETRIC_ALGORITHMS:
        return f"algorithm {declared!r} is not an asymmetric signature algorithm"
    return None


def _describe_fetch_failure(failure: Failure, timeout_s: float) -> Optional[str]:
    """
    A short reason for the log why a fetch failed, or L{None} when the
    failure is not one we expect (a bug, to be logged with its traceback).
    """
    if failure.check(_FetchFailed):
        return failure.getErrorMessage()
    if failure.check(_FetchTimedOut):
        return f"timeout after {round(timeout_s * 1000)} ms"
    if failure.check(CancelledError):
        return "cancelled"
    if failure.check(DNSLookupError):
        return "host not found"
    if failure.check(ConnectError):
        return "connection failed"
    if failure.check(ResponseFailed, RequestTransmissionFailed, RequestNotSent):
        return "connection closed before the whole key set arrived"
    return None


@implementer(IKeySource)
class JWKSKeySource:
    """
    The public keys a JSON Web Key Set URL publishes, for the asymmetric
    algorithms.

    Keys are fetched at L{start} and every L{JWKS_MAX_AGE_S} seconds.  A
    token whose key id is unknown may cause one more fetch, at most once per
    C{refresh_interval_s} (rotation without a gateway release, but no fetch
    storm from forged key ids); tokens that arrive while a fetch is in
    flight wait for that same fetch.  A failed fetch keeps the keys there
    were.
    """

    def __init__(
        self,
        url: str,
        client: JWKSClient,
        clock: IReactorTime,
        algorithms: Iterable[str],
        refresh_interval_s: float,
        timeout_s: float,
        on_keys_withdrawn: Optional[Callable[[], None]] = None,
        on_fetch: Optional[Callable[[str], None]] = None,
    ) -> None:
        """
        @param url: the JWKS URL.
        @param client: the HTTP client (see L{make_jwks_client}).
        @param clock: the clock that spaces and times out fetches.
        @param algorithms: the asymmetric algorithms allowed.
        @param refresh_interval_s: the shortest time between two fetches
            caused by unknown key ids.
        @param timeout_s: the longest a fetch may take, body included.
        @param on_keys_withdrawn: called when a fetch finds that a key we
            had is gone, so tokens it verified can be forgotten.
        @param on_fetch: called with C{"success"} or C{"failure"} as each
            fetch ends (the metrics count them).
        """
        self.algorithms: FrozenSet[str] = frozenset(algorithms)
        if not self.algorithms <= frozenset(ASYMMETRIC_ALGORITHMS):
            raise ValueError(f"not asymmetric algorithms: {sorted(self.algorithms)}")
        self._url = url
        self._client = client
        self._clock = clock
        self._refresh_interval_s = refresh_interval_s
        self._timeout_s = timeout_s
        self._on_keys_withdrawn = on_keys_withdrawn
        self._on_fetch = on_fetch
        self._keys: Tuple[_PublicKey, ...] = ()
        self._loaded = False
        self._last_attempt: Optional[float] = None
        self._in_flight: "Optional[Deferred[None]]" = None
        self._waiters: "List[Deferred[None]]" = []
        self._loop: Optional[LoopingCall] = None

    # -- IKeySource ---------------------------------------------------------

    def key_for(self, algorithm: str, key_id: Optional[str]) -> Any:
        """
        The key with id C{key_id} that verifies C{algorithm}; for a token
        without a key id, the only key that verifies C{algorithm}, if there
        is exactly one.
        """
        fitting = [
            key
            for key in self._keys
            if algorithm in key.algorithms and (key_id is None or key.key_id == key_id)
        ]
        if key_id is None and len(fitting) != 1:
            return None
        return fitting[0].key if fitting else None

    def refresh(self) -> "Optional[Deferred[None]]":
        """
        Join the fetch in flight, or start one unless the last one started
        less than C{refresh_interval_s} ago.
        """
        start = self._in_flight is None
        if start:
            now = self._clock.seconds()
            last = self._last_attempt
            # A clock set backwards (now < last) must not block fetches.
            if last is not None and 0 <= now - last < self._refresh_interval_s:
                return None
        # The waiter goes in first: a fetch may end before _fetch returns.
        waiter: "Deferred[None]" = Deferred()
        self._waiters.append(waiter)
        if start:
            self._fetch()
        return waiter

    def missing_reason(self) -> str:
        """
        C{"keys unavailable"} until a fetch has succeeded, then
        C{"unknown key id"}.
        """
        return "unknown key id" if self._loaded else "keys unavailable"

    def start(self) -> None:
        """
        Fetch the keys now, then every L{JWKS_MAX_AGE_S} seconds.
        """
        if self._loop is not None:
            return
        self._loop = LoopingCall(self._scheduled_fetch)
        self._loop.clock = self._clock
        self._loop.start(JWKS_MAX_AGE_S, now=True)

    def stop(self) -> None:
        """
        Stop fetching; a fetch in flight is cancelled.
        """
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None
        if self._in_flight is not None:
            self._in_flight.cancel()

    # -- fetching -----------------------------------------------------------

    def _scheduled_fetch(self) -> None:
        """
        The background fetch: unless one is in flight already.
        """
        if self._in_flight is None:
            self._fetch()

    def _fetch(self) -> None:
        """
        Start fetching the key set; install it, or log why not, and fire
        the waiters.
        """
        self._last_attempt = self._clock.seconds()
        # Redirects are not followed: the URL names where the keys are; a
        # redirect (perhaps to plain http) is a misconfiguration to report.
        fetch: "Deferred[Any]" = maybeDeferred(
            self._client.get,
            self._url,
            headers={"Accept": "application/json"},
            allow_redirects=False,
            unbuffered=True,
        )
        fetch.addCallback(self._read)
        fetch.addCallback(self._parse)
        fetch.addTimeout(
            self._timeout_s,
            self._clock,
            onTimeoutCancel=lambda result, timeout: Failure(_FetchTimedOut()),
        )
        self._in_flight = fetch
        fetch.addCallbacks(self._install, self._failed)
        fetch.addBoth(self._deliver)

    def _read(self, response: IResponse) -> "Deferred[bytes]":
        """
        Read C{response}'s body, at most L{JWKS_MAX_BYTES}; fail unless it
        is a 200.  The body is read even then, so the connection can go
        back to its pool.
        """

        def finished(body: bytes) -> bytes:
            if response.code != 200:
                raise _FetchFailed(f"HTTP {response.code}")
            return body

        reader = _CappedBody(JWKS_MAX_BYTES)
        response.deliverBody(reader)
        return reader.finished.addCallback(finished)

    def _parse(self, body: bytes) -> Tuple[_PublicKey, ...]:
        """
        The usable keys of a JWKS document; unusable keys are logged and
        left out.

        @raise _FetchFailed: when the body is no key set or has no usable key.
        """
        try:
            document = json.loads(body)
        except ValueError:
            raise _FetchFailed("the body is not JSON")
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise _FetchFailed("the body is not a JWK Set (no keys list)")
        keys: List[_PublicKey] = []
        for entry in entries:
            key = self._public_key(entry)
            if key is not None:
                keys.append(key)
        if not keys:
            raise _FetchFailed("the key set has no usable key")
        return tuple(keys)

    def _public_key(self, entry: Any) -> Optional[_PublicKey]:
        """
        The L{_PublicKey} for one entry of a key set, or L{None} (logged)
        when it may not verify our tokens.
        """
        if not isinstance(entry, dict):
            self._skipped(None, "not a JSON object")
            return None
        key_id = entry.get("kid")
        if key_id is not None and not isinstance(key_id, str):
            self._skipped(None, "its kid is not a string")
            return None
        reason = _unusable(entry)
        if reason is not None:
            self._skipped(key_id, reason)
            return None
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as error:
            self._skipped(key_id, str(error) or type(error).__name__)
            return None
        algorithms = _key_algorithms(jwk.key, entry.get("alg")) & self.algorithms
        if not algorithms:
            self._skipped(key_id, "no algorithm of JWT_ALGORITHMS fits its key type and alg")
            return None
        return _PublicKey(key_id, algorithms, jwk.key, json.dumps(entry, sort_keys=True))

    def _skipped(self, key_id: Optional[str], reason: str) -> None:
        """
        Log that a key of the set is ignored.
        """
        _log.warn(
            "Ignoring key {key_id} of the JWKS at {url}: {reason}",
            key_id=key_id,
            url=self._url,
            reason=reason,
        )

    def _install(self, keys: Tuple[_PublicKey, ...]) -> None:
        """
        Use C{keys} from now on; report keys withdrawn since the last set.
        """
        if self._on_fetch is not None:
            self._on_fetch("success")
        before = {key.fingerprint for key in self._keys}
        after = {key.fingerprint for key in keys}
        withdrawn = before - after
        self._keys = keys
        self._loaded = True
        # Said at info level only when the set changed: the background
        # fetch repeats every few minutes on every replica.
        (_log.info if before != after else _log.debug)(
            "Fetched {count} keys from the JWKS at {url}",
            count=len(keys),
            url=self._url,
            key_ids=[key.key_id for key in keys],
        )
        if withdrawn and self._on_keys_withdrawn is not None:
            _log.info(
                "{count} keys were withdrawn from the JWKS at {url}",
                count=len(withdrawn),
                url=self._url,
            )
            self._on_keys_withdrawn()

    def _failed(self, failure: Failure) -> Failure:
        """
        Log why a fetch failed; keep the keys there were.
        """
        if self._on_fetch is not None:
            self._on_fetch("failure")
        error = _describe_fetch_failure(failure, self._timeout_s)
        if error is None:
            _log.failure("JWKS fetch from {url} failed unexpectedly", failure, url=self._url)
            error = "unexpected error"
        else:
            _log.warn(
                "JWKS fetch from {url} failed: {error}",
                url=self._url,
                error=error,
                keys_kept=len(self._keys),
            )
        return Failure(TokenRejected("keys unavailable"))

    def _deliver(self, result: Union[None, Failure]) -> None:
        """
        Fire every waiter of the fetch that just ended.
        """
        self._in_flight = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            # A waiter whose request went away was cancelled already.
            if waiter.called:
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)


# ---------------------------------------------------------------------------
# The verifier
# ---------------------------------------------------------------------------

# pyjwt checks the signature only: its time checks read the wall clock, and
# the claim checks are ours (check_claims).  enforce_minimum_key_length: a
# key too short for the algorithm (a 32-byte secret with HS512, RSA below
# 2048 bits) is refused, as jjwt refuses it, not merely warned about.
_SIGNATURE_ONLY: "Options" = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}

_PYJWT = jwt.PyJWT()


class TokenVerifier:
    """
    Verifies bearer tokens: L{verify} fires with the caller's L{Identity}
    or fails with L{TokenRejected}.

    A token already verified, or one whose key is at hand (the HMAC secret
    or a fetched JWKS key), is answered synchronously, with an
    already-fired L{Deferred}; only a token naming an unknown JWKS key waits
    for a fetch.
    """

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        jwks_client: Optional[JWKSClient] = None,
        on_jwks_fetch: Optional[Callable[[str], None]] = None,
    ) -> None:
        """
        @param config: JWT_* settings are read from it.
        @param clock: the clock tokens are checked against, and which times
            JWKS fetches.
        @param jwks_client: the client that fetches JWT_JWKS_URL; by
            default one made with L{make_jwks_client} on C{clock}, which
            must then be a reactor.  Pass one built with a TLS policy for an
            https JWKS on a private CA.
        @param on_jwks_fetch: called with each JWKS fetch's outcome
            (C{"success"} or C{"failure"}), for the metrics.

        @raise ValueError: for a secret shorter than 32 bytes.
        @raise TypeError: when a JWKS client is needed and C{clock} cannot
            make one.
        """
        self._clock = clock
        self._policy = ClaimPolicy.from_config(config)
        self._cache = TokenCache(config.jwt_cache_size)
        self._signature_checks = 0
        sources: List[IKeySource] = []
        hmac_key = config.hmac_key()
        hmac_algorithms = [name for name in config.jwt_algorithms if name in HMAC_ALGORITHMS]
        if hmac_key is not None and hmac_algorithms:
            hmac_source = HMACKeySource(hmac_key, hmac_algorithms)
            if hmac_source.algorithms:
                sources.append(hmac_source)
        public_algorithms = [
            name for name in config.jwt_algorithms if name in ASYMMETRIC_ALGORITHMS
        ]
        self._jwks: Optional[JWKSKeySource] = None
        if config.jwt_jwks_url is not None and public_algorithms:
            client: JWKSClient
            if jwks_client is not None:
                client = jwks_client
            elif IReactorTCP.providedBy(clock):
                client = make_jwks_client(clock)
            else:
                raise TypeError("JWT_JWKS_URL is set: pass a jwks_client, or a reactor")
            self._jwks = JWKSKeySource(
                config.jwt_jwks_url,
                client,
                clock,
                public_algorithms,
                refresh_interval_s=config.jwt_jwks_refresh_ms / 1000,
                timeout_s=config.proxy_timeout_ms / 1000,
                on_keys_withdrawn=self._cache.clear,
                on_fetch=on_jwks_fetch,
            )
            sources.append(self._jwks)
        # Each algorithm maps to one source: the families never mix.
        self._sources: Dict[str, IKeySource] = {
            name: source for source in sources for name in source.algorithms
        }

    @property
    def signature_checks(self) -> int:
        """
        How many times a signature was checked with pyjwt (cache misses).
        """
        return self._signature_checks

    @property
    def cached_tokens(self) -> int:
        """
        How many verified tokens are remembered.
        """
        return len(self._cache)

    def start(self) -> None:
        """
        Start background work: fetching the JWKS, when one is configured.
        """
        if self._jwks is not None:
            self._jwks.start()

    def stop(self) -> None:
        """
        Stop background work.
        """
        if self._jwks is not None:
            self._jwks.stop()

    def verify(self, token: str) -> "Deferred[Identity]":
        """
        Verify C{token} (the text after C{Bearer }).

        @return: a L{Deferred} firing with the token's L{Identity}, or
            failing with L{TokenRejected}; already fired unless the token
            names a JWKS key we must fetch first.
        """
        try:
            identity = self._cache.get(token, self._clock.seconds())
            if identity is not None:
                return succeed(identity)
            algorithm, key_id = _algorithm_and_key_id(token)
            source = self._sources.get(algorithm)
            if source is None:
                raise TokenRejected("algorithm not allowed")
            key = source.key_for(algorithm, key_id)
            if key is not None:
                return succeed(self._verify_with(token, algorithm, key))
            refreshed = source.refresh()
            if refreshed is None:
                raise TokenRejected(source.missing_reason())
        except TokenRejected as rejected:
            return fail(rejected)

        def retry(_: None) -> Identity:
            key = source.key_for(algorithm, key_id)
            if key is None:
                raise TokenRejected(source.missing_reason())
            return self._verify_with(token, algorithm, key)

        return refreshed.addCallback(retry)

    def _verify_with(self, token: str, algorithm: str, key: Any) -> Identity:
        """
        Check C{token}'s signature with C{key} for C{algorithm} only, then
        its claims now; remember it when it passes.

        @raise TokenRejected: when it does not.
        """
        self._signature_checks += 1
        try:
            claims = _PYJWT.decode(
                token, key, algorithms=[algorithm], options=_SIGNATURE_ONLY
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature")
        except jwt.InvalidAlgorithmError:
            raise TokenRejected("algorithm not allowed")
        except jwt.InvalidKeyError:
            raise TokenRejected("key refused")
        except jwt.PyJWTError:
            raise TokenRejected("malformed token")
        now = self._clock.seconds()
        check_claims(claims, now, self._policy)
        identity = identity_from_claims(claims)
        leeway = self._policy.leeway_s
        self._cache.put(
            token, identity, _not_before(claims, leeway), identity.expires_at + leeway
        )
        return identity


def _algorithm_and_key_id(token: str) -> Tuple[str, Optional[str]]:
    """
    The C{alg} and C{kid} of C{token}'s header, unverified: they only choose
    which key to try.

    @raise TokenRejected: for a token that is not a JWS, or whose header
        lacks a string C{alg}.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRejected("malformed token")
    algorithm = header.get("alg")
    key_id = header.get("kid")
    if not isinstance(algorithm, str) or not (key_id is None or isinstance(key_id, str)):
        raise TokenRejected("malformed token")
    return algorithm, key_id
