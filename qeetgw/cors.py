"""
CORS, as the C{cors} npm package answers it for an allow-list of origins.

- An allowed origin gets Access-Control-Allow-Origin echoing it, Vary:
  Origin, Allow-Credentials when CORS_CREDENTIALS=true, and
  Access-Control-Expose-Headers naming the headers a browser app may read.
- A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
  answered here with 204: never forwarded, never asked for a token, never
  charged to the rate limit (this wrapper sits above those guards).
- A disallowed origin gets no Access-Control-* header at all — and its
  request is otherwise served as usual: never an error status (the Express
  gateway answered 500).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import attrs
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from qeetgw.errors import GatewayError, render_error
from qeetgw.fields import KnownNames
from qeetgw.websocket import is_websocket_handshake
from qeetgw.wrapping import Wrapper

#: Response headers a browser app may read: the correlation id and the
#: rate-limit headers.
EXPOSED_HEADERS = (
    b"X-Correlation-ID, RateLimit, RateLimit-Policy, RateLimit-Limit, "
    b"RateLimit-Remaining, RateLimit-Reset, Retry-After"
)

#: The names of the fields L{cors_headers} gives, and Content-Length,
#: encoded once (L{qeetgw.fields}).
_NAMES = KnownNames(
    [
        b"Vary",
        b"Access-Control-Allow-Origin",
        b"Access-Control-Allow-Credentials",
        b"Access-Control-Allow-Methods",
        b"Access-Control-Allow-Headers",
        b"Access-Control-Max-Age",
        b"Access-Control-Expose-Headers",
        b"content-length",
    ]
)


@attrs.frozen
class CORSPolicy:
    """
    Which origins may call the gateway from a browser, and how.

    @ivar origins: the allowed origins (lower-case, no trailing slash), or
        C{("*",)} for any.
    @ivar credentials: send Access-Control-Allow-Credentials: true (never
        with C{*}).
    @ivar methods: the methods a preflight allows.
    @ivar max_age: seconds a browser may cache a preflight's answer.
    """

    origins: Tuple[str, ...]
    credentials: bool
    methods: Tuple[str, ...]
    max_age: int

    @property
    def any_origin(self) -> bool:
        """
        Whether every origin is allowed (C{*}).
        """
        return "*" in self.origins

    def allows(self, origin: bytes) -> bool:
        """
        Whether C{origin} (as the browser sent it) is allowed.
        """
        if self.any_origin:
            return True
        try:
            text = origin.decode("ascii").strip().lower().rstrip("/")
        except UnicodeDecodeError:
            return False
        return text in self.origins


def cors_headers(
    policy: CORSPolicy, origin: Optional[bytes], preflight: bool, requested_headers: Optional[bytes]
) -> Sequence[Tuple[bytes, bytes]]:
    """
    The CORS response headers for a request from C{origin}: pure, so every
    case is a plain test.
    """
    headers = []
    if policy.any_origin:
        headers.append((b"Access-Control-Allow-Origin", b"*"))
    else:
        # Vary on every response: a cache must not serve one origin's
        # answer to another.
        headers.append((b"Vary", b"Origin"))
        if origin is None or not policy.allows(origin):
            return headers
        headers.append((b"Access-Control-Allow-Origin", origin.strip()))
        if policy.credentials:
            headers.append((b"Access-Control-Allow-Credentials", b"true"))
    if preflight:
        headers.append((b"Access-Control-Allow-Methods", ",".join(policy.methods).encode("ascii")))
        if requested_headers:
            headers.append((b"Access-Control-Allow-Headers", requested_headers))
            headers.append((b"Vary", b"Access-Control-Request-Headers"))
        headers.append((b"Access-Control-Max-Age", b"%d" % (policy.max_age,)))
    else:
        headers.append((b"Access-Control-Expose-Headers", EXPOSED_HEADERS))
    return headers


def is_preflight(request: IRequest) -> bool:
    """
    Whether C{request} is a CORS preflight.
    """
    headers = request.requestHeaders
    return (
        request.method == b"OPTIONS"
        and headers.hasHeader(b"origin")
        and headers.hasHeader(b"access-control-request-method")
    )


class CORS(Wrapper):
    """
    Adds the CORS headers to every response of the wrapped resource, and
    answers preflights itself.
    """

    def __init__(self, wrapped: IResource, policy: CORSPolicy) -> None:
        super().__init__(wrapped)
        self.policy = policy

    def render(self, request: IRequest) -> Any:
        """
        Answer a preflight with 204, or add the headers and let the request
        through.
        """
        origin_values = request.requestHeaders.getRawHeaders(b"origin")
        origin = origin_values[0] if origin_values else None
        if origin is not None and not self.policy.allows(origin) and is_websocket_handshake(request):
            # A browser applies no CORS to a WebSocket: any page may open
            # one, with its users' cookies.  The gateway refuses the
            # handshake of an origin CORS_ORIGINS does not allow.
            return render_error(request, GatewayError("FORBIDDEN", "Origin not allowed", status=403))
        preflight = is_preflight(request)
        requested = request.requestHeaders.getRawHeaders(b"access-control-request-headers")
        outgoing = request.responseHeaders
        _NAMES.add(
            outgoing,
            cors_headers(self.policy, origin, preflight, b", ".join(requested) if requested else None),
        )
        if preflight:
            request.setResponseCode(204)
            _NAMES.set(outgoing, ((b"content-length", b"0"),))
            return b""
        return self.render_wrapped(request)
