"""
Where the keys of one family of algorithms come from: L{IKeySource}, and
L{HMACKeySource} for the HMAC secret of HS256/384/512.  The JWKS source
for public keys is L{qeetgw.auth.jwks.JWKSKeySource}.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    FrozenSet,
    Iterable,
    Optional,
)

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface, implementer

from qeetgw.auth.claims import algorithm_for_key
from qeetgw.config import (
    HMAC_ALGORITHMS,
    HMAC_KEY_BYTES,
)

if TYPE_CHECKING:
    pass



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
