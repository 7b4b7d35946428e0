"""
The values of the token variables that are more than text: JWT_ALGORITHMS
and JWT_LEEWAY_S.
"""

from __future__ import annotations

import re
from typing import List, Mapping, Tuple

from qeetgw.config.errors import Invalid
from qeetgw.config.jwtkeys import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS
from qeetgw.config.parsers import comma_list

_ALGORITHMS_BY_UPPER: Mapping[str, str] = {
    name.upper(): name for name in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS
}


def algorithm_list(text: str) -> Tuple[str, ...]:
    """
    A comma list of JWT algorithm names (any case; kept in their canonical
    spelling).  C{none} is refused outright: an unsigned token must never be
    accepted, whatever the configuration says.
    """
    allowed = f"allowed: {', '.join(HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS)}"
    algorithms: List[str] = []
    for item in comma_list(text):
        if item.lower() == "none":
            raise Invalid(f"none is never accepted (it means an unsigned token); {allowed}")
        name = _ALGORITHMS_BY_UPPER.get(item.upper())
        if name is None:
            raise Invalid(f"{item!r} is not a supported JWT algorithm; {allowed}")
        if name not in algorithms:
            algorithms.append(name)
    if not algorithms:
        raise Invalid(f"must list at least one algorithm; {allowed}")
    return tuple(algorithms)


_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")

#: The largest JWT_LEEWAY_S: leeway is for clock skew between hosts; more
#: than a few minutes would quietly extend every token's life.
MAXIMUM_JWT_LEEWAY_S = 300


def leeway(text: str) -> float:
    """
    A number of seconds from 0 to L{MAXIMUM_JWT_LEEWAY_S}, whole or
    decimal (C{0}, C{5}, C{1.5}).
    """
    value = text.strip()
    if not _SECONDS.match(value) or float(value) > MAXIMUM_JWT_LEEWAY_S:
        raise Invalid(
            f"must be a number of seconds from 0 to {MAXIMUM_JWT_LEEWAY_S} (such as 0, 5 or 1.5)"
        )
    return float(value)
