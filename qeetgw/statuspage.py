"""
The status page's resources, mounted on the metrics listener (never the
public port): C{/status} (HTML), C{/status.js}, C{/status.css} and
C{/status.json} (the data behind the page, L{qeetgw.statusreport}).

Every answer carries the gateway's own security headers
(L{qeetgw.headers.apply_security_headers}), its Content-Security-Policy
included, so the page is proved to work under that policy (over plain HTTP
without C{upgrade-insecure-requests}: see L{apply_status_headers}); none
says which server software answered.  Only GET and HEAD are served; anything else, or
a path below one of these, is the gateway's JSON error.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from qeetgw.errors import GatewayError, dumps, render_error
from qeetgw.headers import HELMET_HEADERS, apply_security_headers
from qeetgw.statusassets import PAGE, SCRIPT, STYLE

log = Logger()


def _without_upgrade(policy: bytes) -> bytes:
    """
    C{policy}, a Content-Security-Policy, without its
    C{upgrade-insecure-requests} directive.
    """
    kept = [d for d in policy.split(b";") if d.strip().lower() != b"upgrade-insecure-requests"]
    return b";".join(kept)


#: The gateway's Content-Security-Policy (helmet's, L{HELMET_HEADERS}).
_POLICY = dict(HELMET_HEADERS)[b"Content-Security-Policy"]
#: The same policy for the page served over plain HTTP: without
#: C{upgrade-insecure-requests}, which makes a browser fetch the page's own
#: script and data over https, where a plain listener (METRICS_PORT is
#: usually C{tcp:}) does not answer, and the page would stay empty.
#: (Chromium exempts loopback addresses, so only a page reached on another
#: address shows it.)  Every other directive, C{script-src 'self'} and
#: C{script-src-attr 'none'} included, stays as the gateway sends it.
_PLAIN_POLICY = _without_upgrade(_POLICY)


def apply_status_headers(request: IRequest) -> None:
    """
    The gateway's security headers (L{apply_security_headers}) on a status
    answer, without C{upgrade-insecure-requests} over plain HTTP, and no
    Server field.
    """
    apply_security_headers(request)
    if not request.isSecure():
        request.responseHeaders.setRawHeaders(b"content-security-policy", [_PLAIN_POLICY])
    request.responseHeaders.removeHeader(b"server")


def _prepare(request: IRequest) -> Any:
    """
    The security headers (L{apply_status_headers}); L{None} when the
    request may be served, else the body of its JSON error.
    """
    apply_status_headers(request)
    if request.method not in (b"GET", b"HEAD"):
        request.setHeader(b"allow", b"GET, HEAD")
        method = request.method.decode("latin-1")
        return render_error(
            request, GatewayError("METHOD_NOT_ALLOWED", f"Method {method} not allowed here")
        )
    if request.postpath:
        path = (request.path or b"/").decode("latin-1")
        return render_error(request, GatewayError("NOT_FOUND", f"Route GET {path} not found"))
    return None


class _Fixed(Resource):
    """
    A fixed text file: the page, its script or its style sheet.
    """

    isLeaf = True

    def __init__(self, body: str, content_type: bytes) -> None:
        super().__init__()
        self._body = body.encode("utf-8")
        self._content_type = content_type

    def render(self, request: IRequest) -> bytes:
        refused = _prepare(request)
        if refused is not None:
            return refused  # type: ignore[no-any-return]
        request.setHeader(b"content-type", self._content_type)
        # Fetched again on each load: a gateway upgraded in place serves
        # the page and script of its own version.
        request.setHeader(b"cache-control", b"no-cache")
        return self._body


class StatusJSON(Resource):
    """
    C{/status.json}: what C{report} returns, as compact JSON, never cached.
    A L{GatewayError} it raises is answered as such; any other fault while
    reading the status is the gateway's JSON 500 (logged), never a
    traceback.
    """

    isLeaf = True

    def __init__(self, report: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__()
        self._report = report

    def render(self, request: IRequest) -> bytes:
        refused = _prepare(request)
        if refused is not None:
            return refused  # type: ignore[no-any-return]
        try:
            body = dumps(self._report())
        except GatewayError as error:
            # The report cannot be given now, and says why (a group whose
            # workers have not reported yet).
            return render_error(request, error)
        except Exception:
            log.failure("status report failed")
            return render_error(request, GatewayError("INTERNAL_ERROR", "Internal server error"))
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return body


def status_resources(report: Callable[[], Mapping[str, Any]]) -> Dict[bytes, IResource]:
    """
    The status page's resources by child name, to mount at the root of the
    metrics listener.

    @param report: what C{/status.json} serves, read on each request.
    """
    return {
        b"status": _Fixed(PAGE, b"text/html; charset=utf-8"),
        b"status.js": _Fixed(SCRIPT, b"text/javascript; charset=utf-8"),
        b"status.css": _Fixed(STYLE, b"text/css; charset=utf-8"),
        b"status.json": StatusJSON(report),
    }
