"""
Where the keys of one family of algorithms come from: L{IKeySource}, and
L{HMACKeySource} for the HMAC secrets of HS256/384/512 (JWT_SECRET, and
JWT_PREVIOUS_SECRETS during a key rotation).  The JWKS source for public
keys is L{qeetgw.auth.jwks.JWKSKeySource}.  A key comes with its label
(L{LabelledKey}), so that what a token was verified with can be told
without telling the key.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    FrozenSet,
    Iterable,
    Optional,
    Sequence,
    Tuple,
)

import attrs
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface, implementer

from qeetgw.auth.claims import algorithm_for_key
from qeetgw.config import (
    CURRENT_KEY_LABEL,
    HMAC_ALGORITHMS,
    HMAC_KEY_BYTES,
    previous_key_label,
)

if TYPE_CHECKING:
    pass



# ---------------------------------------------------------------------------
# Key sources
# ---------------------------------------------------------------------------


@attrs.frozen
class LabelledKey:
    """
    A verification key and its label.

    @ivar label: which key this is, for the access log and the metrics:
        C{current} (JWT_SECRET), C{previous-1}, C{previous-2}, ...
        (JWT_PREVIOUS_SECRETS, in order) or C{jwks}; bounded, and never the
        key or anything derived from it.
    @ivar key: the key, as pyjwt takes it; kept out of the repr so that it
        never reaches a log.
    """

    label: str
    key: Any = attrs.field(repr=False)


class IKeySource(Interface):
    """
    Where the keys of one family of algorithms come from.  A
    L{TokenVerifier} asks exactly one source per algorithm, so a key of one
    family is never used with an algorithm of another.
    """

    algorithms: FrozenSet[str] = Attribute(
        "The algorithms this source's keys verify; disjoint from other sources'."
    )

    key_labels: Tuple[str, ...] = Attribute(
        "The labels of the keys this source may give, for metrics made ahead."
    )

    def keys_for(algorithm: str, key_id: Optional[str]) -> Sequence[LabelledKey]:
        """
        The keys to try, in order, to verify a token signed with
        C{algorithm} (one of C{algorithms}) and carrying the key id
        C{key_id} (L{None} when the token has none); empty when this source
        has none yet.
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

    During a key rotation the secrets it had before (JWT_PREVIOUS_SECRETS)
    verify too, each for the algorithms its own length allows, tried after
    the current one and in their order: a token signed with the current key
    costs one HMAC, as without them.
    """

    def __init__(
        self, key: bytes, algorithms: Iterable[str], previous: Sequence[bytes] = ()
    ) -> None:
        """
        @param key: the derived key of JWT_SECRET (see L{derive_hmac_key}).
        @param algorithms: the HMAC algorithms allowed; those no key is long
            enough for are left out of L{algorithms}.
        @param previous: the derived keys of JWT_PREVIOUS_SECRETS, in order.

        @raise ValueError: for a key shorter than jjwt allows, or an
            algorithm that is not HMAC.
        """
        labelled = [LabelledKey(CURRENT_KEY_LABEL, key)] + [
            LabelledKey(previous_key_label(position), old)
            for position, old in enumerate(previous, 1)
        ]
        for each in labelled:
            algorithm_for_key(each.key)  # Raises for a short key.
        allowed = frozenset(algorithms)
        if not allowed <= frozenset(HMAC_ALGORITHMS):
            raise ValueError(f"not HMAC algorithms: {sorted(allowed)}")
        # Made once: the hot path is one dictionary look-up.
        self._keys: Dict[str, Tuple[LabelledKey, ...]] = {}
        for name in allowed:
            fitting = tuple(each for each in labelled if len(each.key) >= HMAC_KEY_BYTES[name])
            if fitting:
                self._keys[name] = fitting
        self.algorithms: FrozenSet[str] = frozenset(self._keys)
        self.key_labels: Tuple[str, ...] = tuple(
            each.label
            for each in labelled
            if any(each in fitting for fitting in self._keys.values())
        )

    def keys_for(self, algorithm: str, key_id: Optional[str]) -> Sequence[LabelledKey]:
        """
        The secrets long enough for C{algorithm}, the current one first:
        the auth-service signs with one, whatever the key id says.
        """
        return self._keys.get(algorithm, ())

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
