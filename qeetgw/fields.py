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

A value made per request (a count, an id, an origin) goes in through
L{KnownNames}: the name encoded once, the value as it is unless it holds a
CR or LF, when Twisted's own call replaces them as it always did.
"""

from __future__ import annotations

from typing import Iterable, Tuple

from twisted.web.http_headers import Headers

from qeetgw.twistedcompat import (
    add_known_fields,
    add_stored_fields,
    set_known_fields,
    set_stored_fields,
    set_stored_values,
    stored_field,
)

__all__ = [
    "Fields",
    "KnownNames",
    "add_fields",
    "copy_field",
    "encode_fields",
    "set_fields",
    "stored_name",
]

#: Fields as a L{Headers} keeps them: (name, value) pairs from
#: L{encode_fields}.
Fields = Tuple[Tuple[bytes, bytes], ...]

set_fields = set_stored_fields
add_fields = add_stored_fields
#: C{copy_field(headers, name, values)}: set field C{name} of C{headers}
#: to C{values}, a name and values as another L{Headers} gave them (its
#: C{getAllRawHeaders}), so already in their stored form.
copy_field = set_stored_values


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


class KnownNames:
    """
    Field names encoded once, for values made per request: a value without
    CR or LF (what C{setRawHeaders} would keep as it is) goes in as it is,
    under its stored name; any other takes Twisted's own call.

    @param names: the names; a name not among them takes Twisted's own call.
    """

    def __init__(self, names: Iterable[bytes]) -> None:
        self._stored = {name: stored_name(name) for name in names}

    def set(self, headers: Headers, fields: Iterable[Tuple[bytes, bytes]]) -> None:
        """
        As C{headers.setRawHeaders(name, [value])} for each of C{fields}.
        """
        set_known_fields(headers, self._stored, fields)

    def add(self, headers: Headers, fields: Iterable[Tuple[bytes, bytes]]) -> None:
        """
        As C{headers.addRawHeader(name, value)} for each of C{fields}.
        """
        add_known_fields(headers, self._stored, fields)
