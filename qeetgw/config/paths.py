"""
What a request line is matched against: public paths, health paths, the
path prefixes of RATE_LIMIT_ROUTES and the methods a CORS preflight allows.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from qeetgw.config.errors import Invalid
from qeetgw.config.hosts import has_control_or_space
from qeetgw.config.parsers import DIGITS, comma_list

#: SPEC.md's public paths: the gateway's own endpoints, and the four
#: auth-service endpoints that take no access token (logout takes the
#: refresh token in its body).
DEFAULT_PUBLIC_PATHS: Tuple[str, ...] = (
    "/health",
    "/health/services",
    "/info",
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh-token",
    "/api/v1/auth/logout",
)

# RFC 3986 pchar without percent-encoding: a public path is written as the
# decoded path it matches, so "%" would only be ambiguous.
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+\Z")


def _public_path(item: str) -> str:
    """
    One public path: C{/} then segments that are neither empty, C{.} nor
    C{..}, without a trailing slash (C{/a/} means C{/a}).
    """
    bad = Invalid(
        f"{item!r} is not a public path; each entry must start with / and have "
        "segments of letters, digits and -._~!$&'()*+,;=:@ that are not empty, . or .. "
        "(such as /api/v1/auth/login)"
    )
    if not item.startswith("/"):
        raise bad
    trimmed = item[:-1] if item.endswith("/") else item
    segments = trimmed.split("/")[1:]
    if not trimmed:
        raise Invalid(f"{item!r} would make every path public; set REQUIRE_AUTH=false instead")
    for segment in segments:
        if segment in (".", "..") or not _PATH_SEGMENT.match(segment):
            raise bad
    return trimmed


def public_path_list(text: str) -> Tuple[str, ...]:
    """
    A comma list of public paths (see L{_public_path}); empty entries and
    duplicates dropped.  An empty list makes no path public.
    """
    paths: List[str] = []
    for item in comma_list(text):
        path = _public_path(item)
        if path not in paths:
            paths.append(path)
    return tuple(paths)


def health_path(text: str) -> str:
    """
    The path a service's health is probed at: it starts with one C{/}
    (C{//host} would name another host) and has no whitespace or fragment.
    """
    path = text.strip()
    if (
        not path.startswith("/")
        or path.startswith("//")
        or "#" in path
        or has_control_or_space(path)
    ):
        raise Invalid("must be a path starting with / (such as /health), without spaces or #")
    return path


_ROUTE_PREFIX = re.compile(r"/[A-Za-z0-9._~!$&'()*+;:@/-]*\Z")


def route_budgets(text: str) -> Tuple[Tuple[str, int, Optional[int]], ...]:
    """
    C{PREFIX=MAX[/WINDOW_MS]} entries, comma-separated; empty for none.
    """
    allowed = "must be PREFIX=MAX[/WINDOW_MS],... with PREFIX a path such as /api/v1/auth/login"
    routes: List[Tuple[str, int, Optional[int]]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        prefix, equals, budget = item.partition("=")
        prefix = prefix.strip().rstrip("/")
        limit_text, slash, window_text = budget.strip().partition("/")
        if (
            not equals
            or not _ROUTE_PREFIX.match(prefix + "/")
            or "//" in prefix + "/"
            or not DIGITS.match(limit_text)
            or int(limit_text) < 1
            or (slash and (not DIGITS.match(window_text) or int(window_text) < 1))
        ):
            raise Invalid(f"{item!r}: {allowed}")
        if prefix in [route[0] for route in routes]:
            raise Invalid(f"{prefix!r} is listed twice")
        routes.append((prefix, int(limit_text), int(window_text) if slash else None))
    return tuple(routes)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def methods(text: str) -> Tuple[str, ...]:
    """
    A comma list of HTTP methods, upper-cased: browsers compare a preflight's
    method case-sensitively and upper-case only some (not PATCH), so
    C{patch} would silently never match.
    """
    found: List[str] = []
    for item in comma_list(text):
        if not _TOKEN.match(item):
            raise Invalid(f"{item!r} is not an HTTP method; must be a comma list such as GET,POST")
        method = item.upper()
        if method not in found:
            found.append(method)
    if not found:
        raise Invalid("must list at least one method, such as GET,POST")
    return tuple(found)
