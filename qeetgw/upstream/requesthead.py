"""
The head of a request sent upstream, as bytes: which connection it goes
on (scheme, host, port), its Host field and request target, and the head
itself.  Pure functions on bytes.

Why not twisted.web.client.URI: it drops a bare C{?} (an empty query, which
an upstream may tell apart from none), and canonicalising through it and
L{twisted.web.http_headers.Headers} was a tenth of the gateway's CPU.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

#: The default port of each scheme the gateway forwards to.
_DEFAULT_PORTS = {b"http": 80, b"https": 443}

#: A method is an RFC 9110 token.
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

#: A request target holds no whitespace, control character or non-ASCII byte.
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")

#: Methods whose request is expected to have a body: with none, they are
#: sent with C{Content-Length: 0} (as twisted's client did).
_EXPECTS_BODY = frozenset({b"PATCH", b"POST", b"PUT"})


class Unsendable(ValueError):
    """
    A method or target that is not valid HTTP to send.
    """


def split_url(url: bytes) -> Tuple[Tuple[bytes, bytes, int], bytes, bytes]:
    """
    The pool key (scheme, host, port), the Host field's value and the
    request target of an absolute C{url}, its path and query kept byte for
    byte (an empty query's C{?} too).
    """
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in _DEFAULT_PORTS:
        raise Unsendable(f"not an http(s) URL: {url!r}")
    scheme = scheme.lower()
    cut = len(rest)
    for mark in (b"/", b"?"):
        at = rest.find(mark)
        if at != -1 and at < cut:
            cut = at
    authority, target = rest[:cut], rest[cut:]
    authority = authority.rpartition(b"@")[2]
    if target[:1] != b"/":
        target = b"/" + target
    if authority.startswith(b"["):
        end = authority.find(b"]")
        host, port_text = authority[1:end], authority[end + 2 :]
    else:
        host, _, port_text = authority.partition(b":")
    port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    if not host:
        raise Unsendable(f"no host in {url!r}")
    shown = b"[" + host + b"]" if b":" in host else host
    host_value = shown if port == _DEFAULT_PORTS[scheme] else shown + b":%d" % (port,)
    return (scheme, host, port), host_value, target


def request_head(
    method: bytes, target: bytes, host: bytes, lines: bytes, length: Optional[int]
) -> bytes:
    """
    A request's head: its request line, Host, the header C{lines} (each
    ending in CRLF), a Content-Length for a body of C{length} bytes (or
    none without a body), and the empty line.
    """
    if not _METHOD.match(method):
        raise Unsendable(f"method {method!r}")
    if not _TARGET.match(target):
        raise Unsendable(f"target {target!r}")
    if length is None and method in _EXPECTS_BODY:
        length = 0
    framing = b"" if length is None else b"Content-Length: %d\r\n" % (length,)
    return b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n" % (method, target, host, lines, framing)
