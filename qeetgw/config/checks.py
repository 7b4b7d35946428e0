"""
The checks that span several variables, run once every variable is parsed:
the JWT key sources and algorithms (JWT_PREVIOUS_SECRETS included), dns discovery against https:// service
URLs, and workers against the kind of endpoint.  Each adds one problem line
per conflict; none raises.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from qeetgw.config.jwtkeys import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    HMAC_KEY_BYTES,
    MINIMUM_HMAC_KEY_BYTES,
    previous_key_label,
    read_hmac_key,
)
from qeetgw.config.services import SERVICE_URL_VARIABLES


def check_discovery(values: Mapping[str, Any], problems: List[str]) -> None:
    """
    dns discovery connects to the addresses a name resolves to, and TLS
    verifies the certificate against the host connected to: an https://
    service URL cannot be discovered by DNS (it is for http:// upstreams
    inside the cluster).
    """
    if values.get("SERVICE_DISCOVERY") != "dns":
        return
    for variable in SERVICE_URL_VARIABLES:
        urls = values.get(variable)
        if isinstance(urls, tuple) and any(url.startswith("https://") for url in urls):
            problems.append(
                f"SERVICE_DISCOVERY=dns: {variable} is https://, but dns discovery connects "
                "to the resolved addresses and TLS verifies the host name; use dns discovery "
                "for http:// upstreams inside the cluster, or SERVICE_DISCOVERY=static"
            )


def check_workers(values: Mapping[str, Any], listen: Optional[str], problems: List[str]) -> None:
    """
    Workers share one listening socket, which only a plain TCP endpoint (or
    the one systemd passes) can be.
    """
    workers = values.get("WORKERS")
    if (
        isinstance(workers, int)
        and workers > 1
        and listen is not None
        and not listen.startswith(("tcp", "systemd:"))
    ):
        problems.append(
            f"WORKERS={workers}: workers share a plain TCP socket (tcp:... or systemd:...); "
            "for TLS (ssl:...) or other endpoints run one worker, or terminate TLS in front"
        )


def check_jwt(
    values: Mapping[str, Any], given: Mapping[str, Tuple[str, str]], problems: List[str]
) -> None:
    """
    The checks that span the JWT variables: a key source when REQUIRE_AUTH
    needs one, a key the auth-service could sign with, and algorithms that
    match the key sources.  A problem line never shows a set secret.
    """
    secret = values.get("JWT_SECRET")
    if values.get("REQUIRE_AUTH") is True and secret is None and values.get("JWT_JWKS_URL") is None:
        # Only reached for an unset or blank secret, so echoing it leaks nothing.
        given_secret = given.get("JWT_SECRET")
        shown = (
            "JWT_SECRET is not set" if given_secret is None else f"JWT_SECRET={given_secret[1]!r}"
        )
        problems.append(
            f"{shown}: must be the auth-service's secret when REQUIRE_AUTH=true "
            "(set REQUIRE_AUTH=false only for development)"
        )
    key = _check_hmac_key(secret, values.get("JWT_SECRET_ENCODING"), problems)
    _check_jwt_algorithms(values, given, key, problems)
    _check_previous_keys(values, key, problems)


def _check_hmac_key(
    secret: Optional[str],
    encoding: Optional[str],
    problems: List[str],
    name: str = "JWT_SECRET",
    hint: str = "",
) -> Optional[bytes]:
    """
    The HMAC key of a set C{secret}, when the auth-service could use it;
    else L{None}, with a problem line when it is set but unusable.

    @param name: how the problem line names the secret.
    @param hint: added to the line of a text key too short.
    """
    if secret is None or encoding is None:
        return None  # Unset, or JWT_SECRET_ENCODING has its own line.
    try:
        read = read_hmac_key(secret, encoding)
    except ValueError as error:
        problems.append(f"{name}: {error}")
        return None
    if len(read.key) < MINIMUM_HMAC_KEY_BYTES:
        how = (
            "after base64 decoding" if read.reading == "base64"
            else "(its UTF-8 text, not base64)"
        )
        problems.append(
            f"{name}: the key is {len(read.key)} bytes {how}; the auth-service "
            f"(jjwt) needs at least {MINIMUM_HMAC_KEY_BYTES}"
            + (hint if read.reading == "text" else "")
        )
        return None
    return read.key


def _check_previous_keys(
    values: Mapping[str, Any], current: Optional[bytes], problems: List[str]
) -> None:
    """
    JWT_PREVIOUS_SECRETS: only beside JWT_SECRET, each item a key the
    auth-service could have signed with and that an allowed HMAC algorithm
    fits, and no key listed twice (JWT_SECRET's included).  A problem line
    names an item by its position and label, never by its text.

    @param current: JWT_SECRET's key, when usable.
    """
    previous = values.get("JWT_PREVIOUS_SECRETS")
    if not previous:
        return  # Unset, or its own problem line.
    if values.get("JWT_SECRET") is None:
        problems.append(
            "JWT_PREVIOUS_SECRETS is set but JWT_SECRET is not: previous secrets are "
            "accepted only beside the current one (JWT_SECRET, the secret the "
            "auth-service signs with)"
        )
        return
    algorithms = values.get("JWT_ALGORITHMS") or ()
    hmac_algorithms = [name for name in algorithms if name in HMAC_ALGORITHMS]
    seen: Dict[bytes, str] = {} if current is None else {current: "JWT_SECRET"}
    for position, secret in enumerate(previous, 1):
        name = f"JWT_PREVIOUS_SECRETS item {position} ({previous_key_label(position)})"
        # A text key may be short because a comma split it.
        hint = " (a secret that contains a comma cannot be listed: the comma splits it)"
        key = _check_hmac_key(secret, values.get("JWT_SECRET_ENCODING"), problems, name, hint)
        if key is None:
            continue
        if hmac_algorithms and all(len(key) < HMAC_KEY_BYTES[alg] for alg in hmac_algorithms):
            problems.append(
                f"{name}: the key is {len(key)} bytes, too short for "
                f"{', '.join(hmac_algorithms)} (JWT_ALGORITHMS; HS256 needs 32 bytes, "
                "HS384 48, HS512 64)"
            )
        earlier = seen.get(key)
        if earlier is not None:
            problems.append(
                f"{name}: the same key as {earlier}; list each previous key once, "
                "and never the current one"
            )
        else:
            seen[key] = name


def _check_jwt_algorithms(
    values: Mapping[str, Any],
    given: Mapping[str, Tuple[str, str]],
    key: Optional[bytes],
    problems: List[str],
) -> None:
    """
    Each algorithm family listed needs its key source, and the JWKS needs
    an algorithm: otherwise the setting silently refuses every token.
    """
    algorithms = values.get("JWT_ALGORITHMS")
    if algorithms is None:
        return  # Already a problem line.
    jwks_url = values.get("JWT_JWKS_URL")
    # The default algorithms fit any usable key and list no asymmetric
    # one, so a line about them is always about a given value.
    spelled = given.get("JWT_ALGORITHMS", ("", ",".join(algorithms)))[1]
    hmac_algorithms = [name for name in algorithms if name in HMAC_ALGORITHMS]
    if key is not None and hmac_algorithms and all(
        len(key) < HMAC_KEY_BYTES[name] for name in hmac_algorithms
    ):
        problems.append(
            f"JWT_ALGORITHMS={spelled!r}: the JWT_SECRET key is {len(key)} bytes, too short "
            f"for {', '.join(hmac_algorithms)} (HS256 needs 32 bytes, HS384 48, HS512 64)"
        )
    asymmetric = [name for name in algorithms if name in ASYMMETRIC_ALGORITHMS]
    if asymmetric and jwks_url is None:
        problems.append(
            f"JWT_ALGORITHMS={spelled!r}: {', '.join(asymmetric)} "
            f"{'needs' if len(asymmetric) == 1 else 'need'} JWT_JWKS_URL "
            "(public keys come only from a JWKS)"
        )
    if jwks_url is not None and not asymmetric:
        problems.append(
            f"JWT_JWKS_URL={jwks_url!r}: JWT_ALGORITHMS lists no asymmetric algorithm "
            "(RS256, ES256, ...), so no key of the JWKS would ever be used"
        )
