"""
Tests for L{qeetgw.fields}: fields encoded once go into a response's
L{Headers} exactly as C{setRawHeaders} / C{addRawHeader} would put them.
"""

from __future__ import annotations

from typing import List, Tuple

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from qeetgw.fields import KnownNames, add_fields, copy_field, encode_fields, set_fields, stored_name
from qeetgw.headers import HELMET_HEADERS

_NAMES = [b"x-xss-protection", b"X-DNS-Prefetch-Control", b"content-type", b"WWW-AUTHENTICATE", b"etag", b"RateLimit"]


def _fields(headers: Headers) -> List[Tuple[bytes, List[bytes]]]:
    return [(name, list(values)) for name, values in headers.getAllRawHeaders()]


class EncodedFieldsTests(SynchronousTestCase):
    """
    L{encode_fields}, L{set_fields} and L{add_fields} against Twisted's own calls.
    """

    def test_set_is_set_raw_headers(self) -> None:
        pairs = list(HELMET_HEADERS) + [(name, b"v") for name in _NAMES] + [(b"x-odd", b"a\r\nb\nc\rd")]
        ours, theirs = Headers(), Headers()
        for headers in (ours, theirs):
            headers.setRawHeaders(b"Date", [b"today"])
            headers.setRawHeaders(b"x-frame-options", [b"DENY"])  # replaced, in place
        set_fields(ours, encode_fields(pairs))
        for name, value in pairs:
            theirs.setRawHeaders(name, [value])
        self.assertEqual(_fields(ours), _fields(theirs))
        self.assertEqual(ours.getRawHeaders(b"x-xss-protection"), [b"v"])

    def test_add_is_add_raw_header(self) -> None:
        pairs = [(b"vary", b"Origin"), (b"Vary", b"Access-Control-Request-Headers"), (b"x-n", b"1\n2")]
        ours, theirs = Headers({b"vary": [b"Accept"]}), Headers({b"vary": [b"Accept"]})
        add_fields(ours, encode_fields(pairs))
        for name, value in pairs:
            theirs.addRawHeader(name, value)
        self.assertEqual(_fields(ours), _fields(theirs))

    def test_stored_name(self) -> None:
        for name in _NAMES:
            headers = Headers()
            headers.setRawHeaders(name, [b"v"])
            self.assertEqual([stored_name(name)], [key for key, _ in headers.getAllRawHeaders()])

    def test_responses_share_no_values(self) -> None:
        """
        Adding to a field set from the encoded ones changes that response only.
        """
        fields = encode_fields(HELMET_HEADERS)
        first, second = Headers(), Headers()
        set_fields(first, fields)
        set_fields(second, fields)
        first.addRawHeader(b"x-frame-options", b"DENY")
        self.assertEqual(second.getRawHeaders(b"x-frame-options"), [b"SAMEORIGIN"])
        self.assertEqual(encode_fields(HELMET_HEADERS), fields)


class KnownNamesTests(SynchronousTestCase):
    """
    L{KnownNames} gives what Twisted's own calls give, for any value.
    """

    values = [b"60", b"req-1", b"http://localhost:3000", b"a\r\nInjected: 1", b"b\nc", b"d\re", b"", b"\x00\x7f\xff"]

    def test_set(self) -> None:
        names = KnownNames([b"ratelimit-reset", b"X-Correlation-ID"])
        ours, theirs = Headers({b"date": [b"today"]}), Headers({b"date": [b"today"]})
        for value in self.values:
            for name in (b"ratelimit-reset", b"X-Correlation-ID", b"unknown-name"):
                names.set(ours, [(name, value)])
                theirs.setRawHeaders(name, [value])
                self.assertEqual(_fields(ours), _fields(theirs))

    def test_add(self) -> None:
        names = KnownNames([b"Vary", b"Access-Control-Allow-Origin"])
        ours, theirs = Headers(), Headers()
        for value in self.values:
            for name in (b"Vary", b"Access-Control-Allow-Origin", b"unknown-name"):
                names.add(ours, [(name, value)])
                theirs.addRawHeader(name, value)
        self.assertEqual(_fields(ours), _fields(theirs))


class CopyFieldTests(SynchronousTestCase):
    """
    L{copy_field} copies what another L{Headers} gives as
    C{setRawHeaders} would, without sharing its lists.
    """

    def test_copy(self) -> None:
        source = Headers()
        source.setRawHeaders(b"set-cookie", [b"a=1", b"b=2\r\nx"])
        source.setRawHeaders(b"x-xss-protection", [b"0"])
        ours, theirs = Headers(), Headers()
        for name, values in source.getAllRawHeaders():
            copy_field(ours, name, values)
            theirs.setRawHeaders(name, list(values))
        self.assertEqual(_fields(ours), _fields(theirs))
        ours.addRawHeader(b"set-cookie", b"c=3")
        self.assertEqual(source.getRawHeaders(b"set-cookie"), [b"a=1", b"b=2 x"])
