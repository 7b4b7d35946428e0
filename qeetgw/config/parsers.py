"""
The value parsers every kind of variable shares: whole numbers, booleans,
choices, text, sizes, comma lists, files.

A parser takes the text as given and returns the value, or raises
L{Invalid} saying what is allowed.  Structured values are stripped of
surrounding whitespace (a trailing newline from a Kubernetes secret or
ConfigMap is a common accident); free text (the JWT secret, the 429
message) is kept as given, since it must match the auth-service's byte for
byte.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, List, Mapping, Optional, Tuple

from cryptography import x509

from qeetgw.config.errors import Invalid, one_line

#: What a variable's text is turned into its value by.
Parser = Callable[[str], Any]

#: Digits only: no sign, no decimal point, no C{1_000} or C{1e3}.
DIGITS = re.compile(r"[0-9]+\Z")


def whole_number(minimum: int, maximum: Optional[int] = None) -> Parser:
    """
    A parser of whole numbers from C{minimum} (to C{maximum}), digits only:
    no sign, no decimal point, no C{1_000} or C{1e3}.
    """
    if maximum is None:
        allowed = f"must be a whole number of at least {minimum}"
    else:
        allowed = f"must be a whole number from {minimum} to {maximum}"

    def parse(text: str) -> int:
        digits = text.strip()
        if not DIGITS.match(digits):
            raise Invalid(allowed)
        number = int(digits)
        if number < minimum or (maximum is not None and number > maximum):
            raise Invalid(allowed)
        return number

    return parse


def optional_positive(text: str) -> Optional[int]:
    """
    A whole number of at least 1, or nothing when blank.
    """
    return whole_number(1)(text) if text.strip() else None


def boolean(text: str) -> bool:
    """
    C{true} or C{false}, in any case; nothing else (no C{1}, C{yes}): SPEC.md
    allows only those, and a typo must not silently mean C{false}.
    """
    word = text.strip().lower()
    if word == "true":
        return True
    if word == "false":
        return False
    raise Invalid("must be true or false")


def choice(*choices: str) -> Parser:
    """
    A parser of one word among C{choices}, in any case.
    """

    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in choices:
            raise Invalid(f"must be one of: {', '.join(choices)}")
        return word

    return parse


def free_text(text: str) -> str:
    """
    Free text, kept exactly as given.
    """
    return text


def optional_text(text: str) -> Optional[str]:
    """
    Text, where a blank value means unset (C{JWT_AUDIENCE=} in a C{.env}).
    """
    text = text.strip()
    return text or None


def required_text(text: str) -> str:
    """
    Text that must not be blank.
    """
    text = text.strip()
    if not text:
        raise Invalid("must not be empty")
    return text


def secret(text: str) -> Optional[str]:
    """
    A secret: kept byte for byte (it must equal the auth-service's), but a
    blank value means unset.
    """
    return text if text.strip() else None


def secret_list(text: str) -> Tuple[str, ...]:
    """
    A comma list of secrets (JWT_PREVIOUS_SECRETS), in order, each stripped
    of surrounding whitespace; a blank value is the empty list.  A secret
    that contains a comma cannot be listed: the comma splits it.

    @raise Invalid: for an empty item (C{a,,b}, a trailing comma), without
        repeating the value.
    """
    if not text.strip():
        return ()
    items = tuple(item.strip() for item in text.split(","))
    for position, item in enumerate(items, 1):
        if not item:
            raise Invalid(
                f"item {position} of {len(items)} is empty; separate the secrets with single "
                "commas (a secret that contains a comma cannot be listed)",
                hide_value=True,
            )
    return items


_BYTE_UNITS: Mapping[str, int] = {
    "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50,
}
_BYTE_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) *([a-z]*)\Z", re.IGNORECASE)


def byte_size(text: str) -> int:
    """
    A size in the npm C{bytes} library's syntax, as body-parser's C{limit}
    reads it: C{1mb}, C{100kb}, C{1.5mb}, C{512b} or a plain number of bytes;
    units are 1024-based and case-insensitive, fractions are rounded down.
    """
    allowed = (
        "must be a size such as 1mb, 100kb, 1.5mb, 512b or a number of bytes "
        "(units b, kb, mb, gb, tb, pb), of at least 1 byte"
    )
    match = _BYTE_SIZE.match(text.strip())
    if match is None:
        raise Invalid(allowed)
    number, unit = match.group(1), (match.group(2).lower() or "b")
    if unit not in _BYTE_UNITS:
        raise Invalid(allowed)
    # Exact arithmetic, so 1.1mb is the same whole number bytes computes.
    whole, _, fraction = number.partition(".")
    scale = 10 ** len(fraction)
    size = (int(whole + fraction) * _BYTE_UNITS[unit]) // scale
    if size < 1:
        raise Invalid(allowed)
    return size


def comma_list(text: str) -> List[str]:
    """
    The trimmed, non-empty entries of a comma list, duplicates dropped.
    """
    items: List[str] = []
    for item in (part.strip() for part in text.split(",")):
        if item and item not in items:
            items.append(item)
    return items


def worker_count(text: str) -> int:
    """
    A number of worker processes, or C{auto} for one per core.
    """
    value = text.strip().lower()
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if not DIGITS.match(value) or not 1 <= int(value) <= 64:
        raise Invalid("must be auto or a whole number from 1 to 64")
    return int(value)


def ca_file(text: str) -> Optional[str]:
    """
    A PEM file of CA certificates, checked now so that a bad file stops
    start-up instead of failing the first https request.  Blank means unset.
    The path is made absolute, as twistd may change directory later.
    """
    path = text.strip()
    if not path:
        return None
    allowed = "must be a readable PEM file with at least one CA certificate"
    try:
        with open(path, "rb") as pem:
            data = pem.read()
    except OSError as error:
        raise Invalid(f"{allowed} ({error.strerror or one_line(error)})")
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise Invalid(f"{allowed} (no certificate found in it)")
    return os.path.abspath(path)
