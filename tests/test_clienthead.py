"""
Tests for L{qeetgw.clienthead}: finding, parsing and checking a request head.
"""

from __future__ import annotations

from typing import List, Union

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.clienthead import SKIPPED, Head, HeadReader, parse_head
from qeetgw.clientlimits import ClientLimits, Refusal

LIMITS = ClientLimits(max_header_bytes=1024, max_request_line=64, max_header_fields=5)

GET = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"


def read_whole(raw: bytes, limits: ClientLimits = LIMITS) -> Union[None, str, Head, Refusal]:
    return HeadReader(limits).read(bytearray(raw))


def reason(result: object) -> str:
    assert isinstance(result, Refusal), result
    return result.reason


class HeadReaderTests(SynchronousTestCase):
    """
    L{HeadReader.read}: a head at the front of a buffer.
    """

    def test_whole_head(self) -> None:
        buffer = bytearray(GET + b"rest")
        head = HeadReader(LIMITS).read(buffer)
        self.assertEqual(
            head,
            Head(b"GET", b"/a?b=c", b"HTTP/1.1", [(b"Host", b"x"), (b"Accept", b"*/*")], None, False),
        )
        self.assertEqual(bytes(buffer), b"rest")

    def test_a_byte_at_a_time(self) -> None:
        reader = HeadReader(LIMITS)
        buffer = bytearray()
        for index, byte in enumerate(GET):
            buffer.append(byte)
            result = reader.read(buffer)
            if index < len(GET) - 1:
                self.assertIsNone(result, index)
        self.assertIsInstance(result, Head)
        self.assertEqual(bytes(buffer), b"")

    def test_every_split(self) -> None:
        """
        Two reads, split anywhere, give the head a single read gives.
        """
        whole = read_whole(GET)
        for split in range(1, len(GET)):
            reader = HeadReader(LIMITS)
            buffer = bytearray(GET[:split])
            self.assertIsNone(reader.read(buffer), split)
            buffer += GET[split:]
            self.assertEqual(reader.read(buffer), whole, split)

    def test_search_is_incremental(self) -> None:
        """
        A head that arrives a byte at a time is searched about once, not
        once per byte: a client cannot make the reader quadratic.
        """
        searched: List[int] = []

        class Counting(bytearray):
            def find(self, sub: bytes, start: int = 0, *rest: int) -> int:  # type: ignore[override]
                searched.append(len(self) - start)
                return super().find(sub, start, *rest)

        limits = ClientLimits(max_header_bytes=1 << 20)
        raw = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"v" * 50) for n in range(50)) + b"\r\n"
        reader = HeadReader(limits)
        buffer = Counting()
        for byte in raw:
            buffer.append(byte)
            result = reader.read(buffer)
        self.assertIsInstance(result, Head)
        # A few bytes searched per byte received (each search starts near
        # the end); searching from the start each time would be about
        # len(raw) ** 2 / 2 (over 4 million here).
        self.assertLess(sum(searched), 10 * len(raw))

    def test_one_blank_line_skipped(self) -> None:
        reader = HeadReader(LIMITS)
        buffer = bytearray(b"\r\n")
        self.assertIs(reader.read(buffer), SKIPPED)
        buffer += GET
        self.assertIsInstance(reader.read(buffer), Head)

    def test_blank_line_then_head_in_one_read(self) -> None:
        self.assertIsInstance(read_whole(b"\r\n" + GET), Head)

    def test_second_blank_line_refused(self) -> None:
        reader = HeadReader(LIMITS)
        self.assertIs(reader.read(bytearray(b"\r\n")), SKIPPED)
        self.assertEqual(reason(reader.read(bytearray(b"\r\n"))), "malformed request line")

    def test_blank_line_allowed_again_after_a_head(self) -> None:
        reader = HeadReader(LIMITS)
        for _ in range(2):
            buffer = bytearray(b"\r\n" + GET)
            self.assertIsInstance(reader.read(buffer), Head)

    def test_request_line_limit(self) -> None:
        at_limit = b"GET /" + b"a" * (64 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
        self.assertEqual(len(at_limit), 64)
        self.assertIsInstance(read_whole(at_limit + b"\r\n\r\n"), Head)
        over = b"GET /" + b"a" * (65 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
        result = read_whole(over + b"\r\n\r\n")
        self.assertEqual((reason(result), result.status), ("request line too long", 414))

    def test_request_line_refused_before_its_end(self) -> None:
        self.assertIsNone(read_whole(b"GET /" + b"a" * 60))
        self.assertEqual(read_whole(b"GET /" + b"a" * 61).status, 414)

    def test_header_bytes_limit(self) -> None:
        line = b"GET / HTTP/1.1\r\n"
        at_limit = b"X: " + b"v" * (1024 - 5) + b"\r\n"
        self.assertIsInstance(read_whole(line + at_limit + b"\r\n"), Head)
        over = b"X: " + b"v" * (1024 - 4) + b"\r\n"
        result = read_whole(line + over + b"\r\n")
        self.assertEqual((reason(result), result.status), ("header block too large", 431))

    def test_header_bytes_refused_before_the_end(self) -> None:
        line = b"GET / HTTP/1.1\r\n"
        self.assertIsNone(read_whole(line + b"X: " + b"v" * 1022))
        self.assertEqual(read_whole(line + b"X: " + b"v" * 1030).status, 431)

    def test_bad_line_refused_before_the_head_is_whole(self) -> None:
        """
        A head that has not arrived whole is judged a line at a time: a bad
        line is refused when it arrives, with the reason a whole head gets.
        """
        for partial, why in [
            (b"GET / HTTP/1.1\r\nX A: b\r\n", "invalid header name"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nJunk\r\nMore: y", "header line without a colon"),
            (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n", "differing Content-Length values"),
            (b"5\r\nhello\r\n0\r\n", "malformed request line"),
            (b"GET / HTTP/2.0\r\n", "malformed request line"),
        ]:
            self.assertEqual(reason(read_whole(partial, ClientLimits())), why, partial)

    def test_good_lines_wait(self) -> None:
        reader = HeadReader(ClientLimits())
        buffer = bytearray(b"GET / HTTP/1.1\r\nHost: x\r\nAcc")
        self.assertIsNone(reader.read(buffer))
        buffer += b"ept: */*\r\n"
        self.assertIsNone(reader.read(buffer))
        buffer += b"\r\n"
        self.assertEqual(reader.read(buffer).fields, [(b"Host", b"x"), (b"Accept", b"*/*")])

    def test_field_count_limit(self) -> None:
        fields = b"".join(b"X-%d: v\r\n" % (n,) for n in range(5))
        self.assertIsInstance(read_whole(b"GET / HTTP/1.1\r\n" + fields + b"\r\n"), Head)
        fields += b"X-5: v\r\n"
        result = read_whole(b"GET / HTTP/1.1\r\n" + fields + b"\r\n")
        self.assertEqual((reason(result), result.status), ("too many header fields", 431))


class ParseHeadTests(SynchronousTestCase):
    """
    L{parse_head}: what llhttp accepts, what the gateway adds, and the
    reasons given.
    """

    def parse(self, raw: bytes) -> Union[Head, Refusal]:
        return parse_head(raw, raw.index(b"\r\n"), ClientLimits())

    def test_framing(self) -> None:
        head = self.parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n")
        self.assertEqual((head.content_length, head.chunked), (12, False))
        head = self.parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n")
        self.assertEqual((head.content_length, head.chunked), (None, True))
        head = self.parse(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual((head.version, head.content_length, head.chunked), (b"HTTP/1.0", None, False))

    def test_any_token_is_a_method(self) -> None:
        head = self.parse(b"BREW /pot HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
        self.assertEqual((head.method, head.target, head.content_length), (b"BREW", b"/pot", 2))
        self.assertEqual(self.parse(b"PROPFIND / HTTP/1.1\r\n\r\n").method, b"PROPFIND")

    def test_method_not_a_token(self) -> None:
        self.assertEqual(reason(self.parse(b"BR(W / HTTP/1.1\r\n\r\n")), "malformed request line")

    def test_versions(self) -> None:
        for line in [b"GET /", b"GET / HTTP/2.0", b"GET / HTTP/1.2", b"GET / HTTP/0.9", b"GET / http/1.1"]:
            self.assertEqual(reason(self.parse(line + b"\r\n\r\n")), "malformed request line", line)

    def test_targets(self) -> None:
        for line in [
            b"GET /\x80 HTTP/1.1",
            b"GET /a\x7fb HTTP/1.1",
            b"GET  / HTTP/1.1",
            b"GET / a HTTP/1.1",
            # Not in origin, absolute, authority or asterisk form.
            b"GET Z/ HTTP/1.1",
            b"GET ; HTTP/1.1",
            b"GET -/ HTTP/1.1",
        ]:
            self.assertEqual(reason(self.parse(line + b"\r\n\r\n")), "malformed request line", line)
        self.assertEqual(self.parse(b"GET http://a/b?c HTTP/1.1\r\n\r\n").target, b"http://a/b?c")
        self.assertEqual(self.parse(b"OPTIONS * HTTP/1.1\r\n\r\n").target, b"*")

    def test_nothing_before_the_method(self) -> None:
        """
        llhttp skips line breaks before a method; twisted.web did not, nor
        does the gateway.
        """
        for raw in [b"\nGET / HTTP/1.1\r\n\r\n", b"\n\nGET / HTTP/1.1\r\n\r\n"]:
            self.assertEqual(reason(self.parse(raw)), "malformed request line", raw)

    def test_whitespace_around_values(self) -> None:
        head = self.parse(b"GET / HTTP/1.1\r\nHost:  x \t\r\nA:\tb\t\r\nEmpty: \r\n\r\n")
        self.assertEqual(head.fields, [(b"Host", b"x"), (b"A", b"b"), (b"Empty", b"")])

    def test_gateway_framing_rules(self) -> None:
        """
        The framing llhttp allows and the gateway refuses.
        """
        for raw, why in [
            (b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 19 + b"\r\n\r\n", "invalid Content-Length"),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding in an HTTP/1.0 request"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding other than chunked"),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "repeated Transfer-Encoding",
            ),
        ]:
            self.assertEqual(reason(self.parse(raw)), why, raw)

    def test_reasons_of_what_llhttp_refuses(self) -> None:
        """
        A head llhttp refuses is read line by line for the reason.
        """
        for raw, why in [
            (b"GET / HTTP/1.1\r\nX : y\r\n\r\n", "whitespace before a header colon"),
            (b"GET / HTTP/1.1\r\nX: y\r\n z\r\n\r\n", "obs-fold or whitespace before a header field"),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "differing Content-Length values"),
            (b"GET / HTTP/1.1\r\nX\r\n\r\n", "header line without a colon"),
        ]:
            self.assertEqual(reason(self.parse(raw)), why, raw)

    def test_llhttps_own_words(self) -> None:
        """
        What only llhttp refuses (a control character in a value) is refused
        with its words.
        """
        refusal = self.parse(b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n")
        self.assertEqual(refusal.status, 400)
        self.assertTrue(refusal.reason.startswith("malformed request head: "), refusal.reason)

    def test_upgrades_read_as_plain_requests(self) -> None:
        head = self.parse(b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        self.assertEqual((head.method, head.target), (b"GET", b"/ws"))
        self.assertEqual(head.fields, [(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")])
        head = self.parse(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")
        self.assertEqual((head.method, head.target), (b"CONNECT", b"a.test:443"))
