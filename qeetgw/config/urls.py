"""
URLs: the CORS origins, the upstream services' base URLs, the JWKS URL and
REDIS_URL.  Each is checked as far as the gateway will use it, so that a
typo is a problem line at start-up rather than a failed request later.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple
from urllib.parse import unquote, urlsplit

from qeetgw.config.errors import Invalid
from qeetgw.config.hosts import has_control_or_space, is_host, netloc
from qeetgw.config.values import REDIS_DEFAULT_PORT, RedisURL

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(item: str) -> str:
    """
    One CORS origin, normalised as browsers send it: scheme and host in
    lower case, no default port, no trailing slash.
    """
    bad = Invalid(
        f"{item!r} is not an origin; each entry must be scheme://host[:port] "
        "(no path) or *"
    )
    if has_control_or_space(item) or any(char in item for char in "?#@"):
        raise bad
    try:
        parts = urlsplit(item)
        port = parts.port
    except ValueError:
        raise bad
    scheme, host = parts.scheme.lower(), parts.hostname
    # A lone trailing slash is a common slip that the Express gateway's cors
    # silently never matched; a real path is refused.
    if not _SCHEME.match(scheme) or not host or not is_host(host) or parts.path not in ("", "/"):
        raise bad
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return f"{scheme}://{netloc(host, port)}"


def origins(text: str) -> Tuple[str, ...]:
    """
    A comma list of CORS origins, trimmed, empty entries dropped, duplicates
    dropped; C{*} allows any origin.  An empty list allows none.
    """
    found: List[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        origin = "*" if item == "*" else _origin(item)
        if origin not in found:
            found.append(origin)
    return tuple(found)


def _service_url(text: str) -> str:
    """
    An upstream's base URL: http or https, a host, an optional port and path
    prefix; no query, fragment or user info.  Normalised: scheme and host in
    lower case, no trailing slash.
    """
    allowed = (
        "must be an http:// or https:// URL with a host, an optional port and "
        "path, and no query, fragment or user info"
    )
    url = text.strip()
    if not url or has_control_or_space(url):
        raise Invalid(allowed)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urlsplit refuses a bad port or IPv6 literal.
        raise Invalid(f"has no valid host and port; {allowed}")
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https"):
        raise Invalid(allowed)
    if "@" in parts.netloc:
        raise Invalid(f"has user info; {allowed}")
    if "?" in url or "#" in url:
        raise Invalid(f"has a query or fragment; {allowed}")
    if not host or not is_host(host):
        raise Invalid(f"has no valid host; {allowed}")
    if port == 0:
        raise Invalid(f"port must be from 1 to 65535; {allowed}")
    return f"{scheme}://{netloc(host, port)}{parts.path.rstrip('/')}"


def service_urls(text: str) -> Tuple[str, ...]:
    """
    One base URL, or a comma list of instances with the same path prefix.
    """
    if not text.strip():
        return (_service_url(text),)  # says what a URL must be
    urls = tuple(_service_url(part) for part in text.split(",") if part.strip())
    paths = {urlsplit(url).path for url in urls}
    if len(paths) > 1:
        raise Invalid("every instance must have the same path prefix")
    if len(set(urls)) != len(urls):
        raise Invalid("lists an instance twice")
    return urls


def jwks_url(text: str) -> Optional[str]:
    """
    The JWKS URL: http or https, a host, an optional port, path and query;
    no user info or fragment.  Blank means unset.
    """
    url = text.strip()
    if not url:
        return None
    allowed = "must be an http:// or https:// URL with a host, and no user info or fragment"
    if has_control_or_space(url) or "#" in url:
        raise Invalid(allowed)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Invalid(allowed)
    host = parts.hostname
    if (
        parts.scheme.lower() not in ("http", "https")
        or "@" in parts.netloc
        or not host
        or not is_host(host)
        or port == 0
    ):
        raise Invalid(allowed)
    return url


def parse_redis_url(url: str) -> RedisURL:
    """
    Parse C{redis://[[user]:password@]host[:port][/db]} (user and password
    percent-encoded; port 6379 and database 0 by default).

    @raise ValueError: naming what is wrong, without echoing the password.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise ValueError(f"REDIS_URL is not a valid URL: {error}") from None
    if parts.scheme.lower() != "redis":
        hint = " (TLS, rediss://, is not supported)" if parts.scheme.lower() == "rediss" else ""
        raise ValueError(f"REDIS_URL must start with redis://{hint}")
    if not parts.hostname:
        raise ValueError("REDIS_URL has no host: redis://host[:port][/db]")
    if port == 0:
        raise ValueError("REDIS_URL's port must be 1 to 65535")
    if parts.query or parts.fragment:
        raise ValueError("REDIS_URL takes no query or fragment: redis://host[:port][/db]")
    path = parts.path.strip("/")
    if not path:
        db = 0
    elif path.isdigit():
        db = int(path)
    else:
        raise ValueError(f"REDIS_URL's database must be a number, not {path!r}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if username is not None and password is None:
        raise ValueError("REDIS_URL has a user but no password: redis://user:password@host")
    return RedisURL(
        host=parts.hostname,
        port=REDIS_DEFAULT_PORT if port is None else port,
        db=db,
        username=username,
        password=password,
    )


def checked_redis_url(text: str) -> str:
    """
    A C{redis://} URL; the value is kept as text, L{parse_redis_url} splits it.
    """
    value = text.strip()
    try:
        parse_redis_url(value)
    except ValueError as error:
        # the URL may carry a password: the problem line does not repeat it
        raise Invalid(str(error), hide_value=True)
    return value
