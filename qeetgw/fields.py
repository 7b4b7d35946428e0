"""
Response header fields encoded once.

twisted.web's L{Headers} canonicalises a field's name and replaces the line
breaks of its value on every C{setRawHeaders} / C{addRawHeader}: for the
fields the gateway sends on every response (the security headers, CORS's,
the rate-limit headers, the correlation id, the error envelope's) that is
the same work with the same result each time.  Here it is done once, where
the fields are defined, and the stored bytes are put into a response's
L{Headers} as they are (L{qeetgw.twistedcompat.set_stored_fields}): the
bytes on the wire are the ones C{setRawHeaders} would have given.

A value made per request (a count, an id) may go in with a name from
L{stored_name} only when it cannot hold a CR or LF: digits, an id of
printable ASCII.
"""

from __future__ import annotations

from typing import Iterable, Tuple

from qeetgw.twistedcompat import add_stored_fields, set_stored_fields, stored_field

__all__ = ["Fields", "add_fields", "encode_fields", "set_fields", "stored_name"]

#: Fields as a L{Headers} keeps them: (name, value) pairs from
#: L{encode_fields}.
Fields = Tuple[Tuple[bytes, bytes], ...]

set_fields = set_stored_fields
add_fields = add_stored_fields


def encode_fields(fields: Iterable[Tuple[bytes, bytes]]) -> Fields:
    """
    C{fields}, (name, value) pairs, as a L{Headers} keeps them: for
    L{set_fields} and L{add_fields}.
    """
    return tuple(stored_field(name, value) for name, value in fields)


def stored_name(name: bytes) -> bytes:
    """
    The field name C{name} as a L{Headers} keeps it.
    """
    return stored_field(name, b"")[0]
