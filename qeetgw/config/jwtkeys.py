"""
The JWT algorithm families and the HMAC key JWT_SECRET stands for: what
the auth-service signs with, and so what the gateway may verify with.
"""

from __future__ import annotations

from typing import Literal, Mapping, Tuple

import attrs

from qeetgw.config.jjwt import jjwt_base64_decode

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


#: The label of the key JWT_SECRET stands for, in the access log and the
#: metrics: which key verified a token, never the key.
CURRENT_KEY_LABEL = "current"

#: The label of a key from JWT_JWKS_URL.
JWKS_KEY_LABEL = "jwks"


def previous_key_label(position: int) -> str:
    """
    The label of the JWT_PREVIOUS_SECRETS item at C{position} (1-based):
    C{previous-1}, C{previous-2}, ...
    """
    return f"previous-{position}"


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
