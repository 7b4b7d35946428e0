"""
The one reading of a request's target that routing, forwarding and every
guard share.

Twisted percent-decodes each path segment before resources see them, so
``/api/v1/orders%2Fx`` and ``/api/v1/orders/x`` look alike in
C{request.postpath}.  We never route on that: we route on the raw bytes of
C{request.uri}, forward those same bytes, and refuse the targets whose
meaning depends on who decodes them (dot segments, backslashes), so a
request cannot be routed on one reading and checked on another.
"""

from __future__ import annotations

import re
from typing import List, Optional
from urllib.parse import unquote_to_bytes

import attrs

# RFC 9112 request-target in origin-form: visible ASCII, no fragment.  Space,
# controls and raw non-ASCII never reach here from a well-formed client.
_ALLOWED = re.compile(rb"\A[\x21-\x7e]*\Z")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ABSOLUTE_FORM = re.compile(rb"\A[A-Za-z][A-Za-z0-9+.-]*://[^/?]*")


class BadTarget(ValueError):
    """
    The request target cannot be served; the message says why, for the
    client.
    """


@attrs.frozen
class RequestTarget:
    """
    A request target split into its raw parts.

    @ivar path: the path exactly as the client sent it, starting with C{/}.
    @ivar query: the bytes after the first C{?}, or L{None} when there was
        no C{?} at all (so C{/x?} keeps its empty query).
    """

    path: bytes
    query: Optional[bytes]

    def segments(self) -> List[bytes]:
        """
        The raw (still percent-encoded) segments of the path.
        """
        return self.path[1:].split(b"/")


def parse_target(uri: bytes) -> RequestTarget:
    """
    Check and split a request target.

    An absolute-form target (C{http://host/path}), which HTTP/1.1 servers
    must accept, is reduced to its path and query.

    @raise BadTarget: for anything but an origin-form path of visible ASCII
        with well-formed percent-encoding and without dot segments or
        backslashes (raw or encoded).
    """
    absolute = _ABSOLUTE_FORM.match(uri)
    if absolute is not None:
        uri = uri[absolute.end():] or b"/"
    if not uri.startswith(b"/"):
        raise BadTarget("Request target must be an absolute path")
    if not _ALLOWED.match(uri) or b"#" in uri:
        raise BadTarget("Request target contains characters that are not allowed")
    path, question, query = uri.partition(b"?")
    if _BAD_PERCENT.search(path):
        raise BadTarget("Request path has malformed percent-encoding")
    for segment in path[1:].split(b"/"):
        _check_segment(segment)
    return RequestTarget(path=path, query=query if question else None)


def is_api_path(path: bytes) -> bool:
    """
    Whether the raw C{path} is C{/api} or below it: the API chain's, not
    the gateway's own endpoints'.
    """
    return path == b"/api" or path.startswith(b"/api/")


def _check_segment(segment: bytes) -> None:
    """
    Refuse a raw segment that some server along the way could read as a dot
    segment or a path separator other than the slash we split on.
    """
    if b"%" not in segment and b"\\" not in segment and segment not in (b".", b".."):
        return  # the common case: nothing encoded, nothing ambiguous
    decoded = unquote_to_bytes(segment)
    if b"\\" in decoded:
        raise BadTarget("Request path must not contain backslashes")
    # An encoded slash is allowed (it reaches the upstream as sent), but not
    # to smuggle a dot segment in: "a%2F..%2Fb" decodes to "a/../b".
    for piece in decoded.split(b"/"):
        if piece in (b".", b".."):
            raise BadTarget("Request path must not contain dot segments")
