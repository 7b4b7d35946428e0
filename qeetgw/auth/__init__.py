"""
Who is calling: bearer tokens checked on /api/*.

- L{qeetgw.auth.guard.JWTGuard}: the resource wrapper that asks for a
  token (401 without a good one) and tells the services who is calling;
- L{qeetgw.auth.verifier.TokenVerifier}: checks a token's signature and
  claims, and remembers the tokens it verified;
- L{qeetgw.auth.claims}: what a token says, the claim checks as pure
  functions;
- L{qeetgw.auth.keys} and L{qeetgw.auth.jwks}: where the keys come from
  (the HMAC secret; a JWKS URL).

This module holds what every guard needs to read a token, whatever checks
it: L{bearer_token} and the L{IVerifier} interface (the rate limiter keys a
client by its verified token too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from twisted.web.iweb import IRequest
from zope.interface import Interface

from qeetgw.requeststate import state_of

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from qeetgw.auth.claims import Identity

_BEARER = b"bearer "


class IVerifier(Interface):
    """
    What the guards need of a token verifier (L{qeetgw.auth.verifier.TokenVerifier}).
    """

    def verify(token: str) -> "Deferred[Identity]":
        """
        Fire with the token's identity, or fail with L{TokenRejected}.
        """


def bearer_token(request: IRequest) -> Optional[str]:
    """
    The token of a C{Bearer} Authorization header (the scheme matched
    case-insensitively), or L{None} for anything else.
    """
    values = request.requestHeaders.getRawHeaders(b"authorization")
    if not values:
        # A WebSocket handshake's token may come in its query string
        # (JWT_QUERY_PARAM; see qeetgw.websocket.take_query_token).
        return state_of(request).query_token
    value = values[0].strip()
    if value[: len(_BEARER)].lower() != _BEARER:
        return None
    token = value[len(_BEARER):].strip()
    if not token:
        return None
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        return None
