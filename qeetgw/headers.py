"""
Security headers: helmet 8's defaults, with exactly helmet's values, on
every response of the gateway — its own answers, its errors and proxied
responses.

An upstream's own value for one of these fields wins on a proxied response:
a service that set, say, its own Content-Security-Policy did so on purpose.
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from qeetgw.fields import encode_fields, set_fields
from qeetgw.wrapping import Wrapper

#: helmet 8's default headers and values, in helmet's order
#: (Cross-Origin-Embedder-Policy is off by default in helmet 8).
HELMET_HEADERS: Sequence[Tuple[bytes, bytes]] = (
    (
        b"Content-Security-Policy",
        b"default-src 'self';base-uri 'self';font-src 'self' https: data:;"
        b"form-action 'self';frame-ancestors 'self';img-src 'self' data:;"
        b"object-src 'none';script-src 'self';script-src-attr 'none';"
        b"style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
    ),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
    (b"Origin-Agent-Cluster", b"?1"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Strict-Transport-Security", b"max-age=31536000; includeSubDomains"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-DNS-Prefetch-Control", b"off"),
    (b"X-Download-Options", b"noopen"),
    (b"X-Frame-Options", b"SAMEORIGIN"),
    (b"X-Permitted-Cross-Domain-Policies", b"none"),
    (b"X-XSS-Protection", b"0"),
)

#: L{HELMET_HEADERS} encoded once (L{qeetgw.fields}).
_HELMET_FIELDS = encode_fields(HELMET_HEADERS)


def apply_security_headers(request: IRequest) -> None:
    """
    Set the helmet headers on C{request}'s response.
    """
    set_fields(request.responseHeaders, _HELMET_FIELDS)


class SecurityHeaders(Wrapper):
    """
    Sets the helmet headers before the wrapped resource renders, so they
    are on every response it gives (a proxied response's own values for
    the same fields replace them).
    """

    def __init__(self, wrapped: IResource) -> None:
        super().__init__(wrapped)

    def render(self, request: IRequest) -> Any:
        """
        Set the headers, then render the wrapped resource.
        """
        apply_security_headers(request)
        return self.render_wrapped(request)
