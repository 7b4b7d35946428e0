"""
Public keys from a JWKS URL (L{JWKSKeySource}): fetched at start-up and in
the background (every L{JWKS_MAX_AGE_S}), capped in size and time, refetched
at once for a key id it does not know, and kept when a fetch fails.
"""

from __future__ import annotations

import json
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
    cast,
)

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from treq.client import HTTPClient
from twisted.internet import protocol
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IPushProducer, IReactorTime
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
from zope.interface import implementer

from qeetgw.auth.claims import TokenRejected
from qeetgw.auth.keys import IKeySource, LabelledKey
from qeetgw.config import (
    ASYMMETRIC_ALGORITHMS,
    JWKS_KEY_LABEL,
)

if TYPE_CHECKING:
    pass

_log = Logger()


class JWKSClient(Protocol):
    """
    What L{JWKSKeySource} needs of an HTTP client: treq's C{get}.
    L{treq.client.HTTPClient} (see L{make_jwks_client}) and
    L{treq.testing.StubTreq} both provide it.

    A L{typing.Protocol}, not an interface: it describes the shape of treq's
    objects, which declare no interface of ours.
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


class _CappedBody(protocol.Protocol):
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
        #: Every key of the set has the one label: which of them verified a
        #: token is its key id, which the auth-service chooses (unbounded).
        self.key_labels: Tuple[str, ...] = (JWKS_KEY_LABEL,)
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

    def keys_for(self, algorithm: str, key_id: Optional[str]) -> Sequence[LabelledKey]:
        """
        The key with id C{key_id} that verifies C{algorithm}; for a token
        without a key id, the only key that verifies C{algorithm}, if there
        is exactly one; else none.
        """
        fitting = [
            key
            for key in self._keys
            if algorithm in key.algorithms and (key_id is None or key.key_id == key_id)
        ]
        if not fitting or (key_id is None and len(fitting) != 1):
            return ()
        return (LabelledKey(JWKS_KEY_LABEL, fitting[0].key),)

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
