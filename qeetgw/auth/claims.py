"""
What a token says, and whether the gateway accepts it: L{Identity},
L{TokenRejected}, the algorithm a key allows, and the claim checks
(C{exp}, C{nbf}, C{iat}, C{iss}, C{aud}, the token type) as pure functions
of the claims, the time and the L{ClaimPolicy}.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import (
    TYPE_CHECKING,
    Any,
    Mapping,
    Optional,
)

import attrs

from qeetgw.config import (
    MINIMUM_HMAC_KEY_BYTES,
    Config,
)

if TYPE_CHECKING:
    pass



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
    @ivar key_label: the label of the key that verified the token
        (C{current}, C{previous-1}, ..., C{jwks}: see
        L{qeetgw.auth.keys.LabelledKey}); L{None} for an identity no
        verifier made.
    """

    subject: Optional[str]
    user_id: Optional[str]
    role: Optional[str]
    # A read-only mapping is not hashable; the other fields identify enough.
    claims: Mapping[str, Any] = attrs.field(hash=False)
    expires_at: float
    key_label: Optional[str] = None


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


def not_before(claims: Mapping[str, Any], leeway_s: float) -> float:
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


def identity_from_claims(
    claims: Mapping[str, Any], key_label: Optional[str] = None
) -> Identity:
    """
    The L{Identity} that checked C{claims} stand for, verified with the key
    labelled C{key_label}.
    """
    return Identity(
        subject=_header_safe(claims.get("sub")),
        user_id=_user_id(claims.get("userId")),
        role=_header_safe(claims.get("role")),
        claims=MappingProxyType(dict(claims)),
        expires_at=float(claims["exp"]),
        key_label=key_label,
    )
