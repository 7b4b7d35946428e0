"""
JWT verification: which bearer tokens the gateway accepts, and whom they name.

A L{TokenVerifier} checks a token the way the auth-service (Spring and jjwt)
issues it: the signature with pyjwt, for an algorithm on an explicit
allow-list and only with a key of that algorithm's family (the HMAC secret
for HS*, a JWKS public key for RS*/PS*/ES*/EdDSA, see L{qeetgw.auth.keys}
and L{qeetgw.auth.jwks}); then the claims (L{qeetgw.auth.claims}) against
an injected clock.  During a key rotation the HMAC secrets JWT_SECRET had
before are tried after the current one; the identity says which key
verified the token (its label).  Verified tokens are remembered in a L{TokenCache} until
they expire, so the hot path is a dictionary lookup and no reactor round
trip.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
)

import attrs
import jwt
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from zope.interface import implementer

from qeetgw.auth import IVerifier
from qeetgw.auth.claims import (
    ClaimPolicy,
    Identity,
    TokenRejected,
    check_claims,
    identity_from_claims,
    not_before,
)
from qeetgw.auth.jwks import JWKSClient, JWKSKeySource, make_jwks_client
from qeetgw.auth.keys import HMACKeySource, IKeySource, LabelledKey
from qeetgw.config import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    Config,
)

if TYPE_CHECKING:
    from jwt.types import Options



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


@implementer(IVerifier)
class TokenVerifier(Service):
    """
    Verifies bearer tokens: L{verify} fires with the caller's L{Identity}
    or fails with L{TokenRejected}.

    A token already verified, or one whose key is at hand (the HMAC secret
    or a fetched JWKS key), is answered synchronously, with an
    already-fired L{Deferred}; only a token naming an unknown JWKS key waits
    for a fetch.

    A Twisted service: while it runs, the JWKS (when one is configured) is
    fetched in the background.
    """

    name = "token-verifier"

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
            previous = [read.key for read in config.read_previous_hmac_keys()]
            hmac_source = HMACKeySource(hmac_key, hmac_algorithms, previous)
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
        self._key_labels = tuple(label for source in sources for label in source.key_labels)

    @property
    def key_labels(self) -> Tuple[str, ...]:
        """
        The labels of every key a token may be verified with (C{current},
        C{previous-1}, ..., C{jwks}), in the order they are tried: the
        values an L{Identity}'s C{key_label} can take.
        """
        return self._key_labels

    @property
    def signature_checks(self) -> int:
        """
        How many times a signature was checked with pyjwt: once per key
        tried, on cache misses only.
        """
        return self._signature_checks

    @property
    def cached_tokens(self) -> int:
        """
        How many verified tokens are remembered.
        """
        return len(self._cache)

    def startService(self) -> None:
        """
        Start background work: fetching the JWKS, when one is configured.
        """
        super().startService()
        if self._jwks is not None:
            self._jwks.start()

    def stopService(self) -> None:
        """
        Stop background work (a fetch in flight is cancelled: nothing to
        wait for).
        """
        super().stopService()
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
            keys = source.keys_for(algorithm, key_id)
            if keys:
                return succeed(self._verify_with(token, algorithm, keys))
            refreshed = source.refresh()
            if refreshed is None:
                raise TokenRejected(source.missing_reason())
        except TokenRejected as rejected:
            return fail(rejected)

        def retry(_: None) -> Identity:
            keys = source.keys_for(algorithm, key_id)
            if not keys:
                raise TokenRejected(source.missing_reason())
            return self._verify_with(token, algorithm, keys)

        return refreshed.addCallback(retry)

    def _verify_with(
        self, token: str, algorithm: str, keys: Sequence[LabelledKey]
    ) -> Identity:
        """
        Check C{token}'s signature with the first of C{keys} that verifies
        it, for C{algorithm} only, then its claims now; remember it, with
        that key's label, when it passes.

        @raise TokenRejected: when it does not.
        """
        claims, label = self._signed_claims(token, algorithm, keys)
        now = self._clock.seconds()
        check_claims(claims, now, self._policy)
        identity = identity_from_claims(claims, label)
        leeway = self._policy.leeway_s
        self._cache.put(
            token, identity, not_before(claims, leeway), identity.expires_at + leeway
        )
        return identity

    def _signed_claims(
        self, token: str, algorithm: str, keys: Sequence[LabelledKey]
    ) -> Tuple[Dict[str, Any], str]:
        """
        C{token}'s claims and the label of the first of C{keys} its
        signature verifies with.  Keys are tried in order, the current one
        first, so a token it signed costs one check however many previous
        keys there are.

        @raise TokenRejected: (C{"bad signature"}) when none of them
            verifies it, or as soon as one says the token or the key is
            unusable whatever the key.
        """
        for labelled in keys:
            self._signature_checks += 1
            try:
                claims = _PYJWT.decode(
                    token, labelled.key, algorithms=[algorithm], options=_SIGNATURE_ONLY
                )
            except jwt.InvalidSignatureError:
                continue  # Perhaps signed with the next key.
            except jwt.InvalidAlgorithmError:
                raise TokenRejected("algorithm not allowed")
            except jwt.InvalidKeyError:
                raise TokenRejected("key refused")
            except jwt.PyJWTError:
                raise TokenRejected("malformed token")
            return claims, labelled.label
        raise TokenRejected("bad signature")


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
