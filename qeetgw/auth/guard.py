"""
JWTGuard: the resource wrapper that asks for a valid token on /api/*.

- Public paths (PUBLIC_PATHS) pass without a token.  They match whole
  segments of the one reading of the path that routing also uses
  (L{qeetgw.paths}), so C{/api/v1/auth/login} and C{/api/v1/auth/login/} are
  public and C{/api/v1/auth/loginX}, C{/api/v1/auth/login/x} and every
  dot-segment or encoded-slash trick are not.
- REQUIRE_AUTH=true: no token → 401 with C{WWW-Authenticate: Bearer}.
  REQUIRE_AUTH=false: no token passes, but a token that is sent is still
  verified.  A bad token is 401 with C{error="invalid_token"} (RFC 6750).
- After verification the services learn who is calling through
  X-User-Id, X-User-Email and X-User-Role; a client's own copies of these
  headers are removed from every request, authenticated or not.
- Which key verified the token (its label: C{current}, C{previous-1}, ...)
  goes to the access event (C{jwt_key}) and is counted
  (C{qeetgw_jwt_verified_total}), once per request: what shows when a
  previous key stops being used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional, Tuple

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from qeetgw.auth import IVerifier, bearer_token
from qeetgw.auth.claims import Identity, TokenRejected
from qeetgw.correlation import correlation_id
from qeetgw.errors import GatewayError, render_error
from qeetgw.fields import KnownNames
from qeetgw.requeststate import state_of, target_of
from qeetgw.wrapping import Wrapper, render_when

if TYPE_CHECKING:
    from qeetgw.metrics import Metrics

log = Logger()

#: The identity headers the gateway sets for the services, and removes from
#: what clients send.
IDENTITY_HEADERS = (b"x-user-id", b"x-user-email", b"x-user-role")
#: Their names, and WWW-Authenticate's, encoded once (L{qeetgw.fields}).
_NAMES = KnownNames(IDENTITY_HEADERS + (b"www-authenticate",))

def public_path_segments(paths: Iterable[str]) -> Tuple[Tuple[bytes, ...], ...]:
    """
    PUBLIC_PATHS split into raw segments, a trailing slash ignored.
    """
    return tuple(
        tuple(path.encode("ascii").rstrip(b"/").split(b"/")[1:]) for path in paths
    )


def is_public(segments: list, public: Tuple[Tuple[bytes, ...], ...]) -> bool:
    """
    Whether a request path's raw C{segments} are one of the C{public} paths,
    segment for segment (one trailing empty segment, a trailing slash,
    allowed).
    """
    if len(segments) > 1 and segments[-1] == b"":
        segments = segments[:-1]
    return tuple(segments) in public


def _unauthorized(request: IRequest, message: str, challenge: bytes) -> bytes:
    _NAMES.set(request.responseHeaders, ((b"www-authenticate", challenge),))
    return render_error(request, GatewayError("UNAUTHORIZED", message))


class JWTGuard(Wrapper):
    """
    Asks for a valid JWT before the wrapped resource is reached.

    @param wrapped: the resource guarded.
    @param verifier: verifies tokens.
    @param require_auth: whether a request without a token is refused.
    @param public_paths: the paths that need no token.
    @param metrics: where 401s are counted by reason, and verified tokens
        by key; L{None} counts nothing.
    """

    def __init__(
        self,
        wrapped: IResource,
        verifier: IVerifier,
        require_auth: bool,
        public_paths: Iterable[str],
        metrics: "Optional[Metrics]" = None,
    ) -> None:
        super().__init__(wrapped)
        self._metrics = metrics
        self._verifier = verifier
        self._require_auth = require_auth
        self._public = public_path_segments(public_paths)

    def render(self, request: IRequest) -> Any:
        """
        Let C{request} through, or answer 401.
        """
        headers = request.requestHeaders
        for name in IDENTITY_HEADERS:
            headers.removeHeader(name)
        if is_public(target_of(request).segments(), self._public):
            return self.render_wrapped(request)
        token = bearer_token(request)
        if token is None:
            if self._require_auth:
                if self._metrics is not None:
                    self._metrics.auth_failure("missing")
                return _unauthorized(request, "Authentication required", b"Bearer")
            return self.render_wrapped(request)
        return render_when(
            request, self._verifier.verify(token), lambda result: self._decide(request, result)
        )

    def _decide(self, request: IRequest, result: Any) -> Any:
        """
        Let the request through with its identity, or answer 401.
        """
        if isinstance(result, Failure):
            if not result.check(TokenRejected):
                log.failure(
                    "token verification failed",
                    failure=result,
                    correlation_id=correlation_id(request),
                )
                return render_error(request, GatewayError("INTERNAL_ERROR", "Internal server error"))
            log.info(
                "token refused: {reason}",
                reason=result.value.reason,
                correlation_id=correlation_id(request),
            )
            if self._metrics is not None:
                self._metrics.auth_failure(result.value.reason)
            return _unauthorized(
                request, "Invalid or expired token", b'Bearer error="invalid_token"'
            )
        identity: Identity = result
        if identity.key_label is not None:
            state_of(request).jwt_key = identity.key_label
            if self._metrics is not None:
                self._metrics.jwt_verified_with(identity.key_label)
        headers = request.requestHeaders
        user_id = identity.user_id if identity.user_id is not None else identity.subject
        _NAMES.set(
            headers,
            [
                (name, value.encode("utf-8"))
                for name, value in (
                    (b"x-user-id", user_id),
                    (b"x-user-email", identity.subject),
                    (b"x-user-role", identity.role),
                )
                if value is not None
            ],
        )
        return self.render_wrapped(request)
