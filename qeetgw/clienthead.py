"""
A client's request head, read from the bytes as they arrive: found by its
blank line, parsed by llhttp (the parser of Node.js, through httptools), and
checked against the client limits (L{qeetgw.clientlimits}).

The gateway's channel (L{qeetgw.server.GatewayChannel}) hands every byte of
a request head to a L{HeadReader}, which answers "more", a L{Head}, or a
L{Refusal}.  The body is not parsed here: the channel frames it from the
L{Head}'s C{Content-Length} or C{chunked}, with the chunk-size rules of
L{qeetgw.clientlimits}.

Why llhttp: twisted.web reads a head a line at a time in Python, with a
method call or two and a header canonicalisation per line; on the gateway's
cheapest answers (a 429, a 401) that was a sixth of the CPU time.  llhttp
parses the whole head in one call, in C, and is strict where it matters
(token names, no whitespace before a colon, no obs-fold, one
Content-Length, not both framings).

The rules are the ones the gateway had with twisted.web's parser, and the
refusals say the same things:

- Only where llhttp refuses a head is it read again, line by line, with
  L{qeetgw.clientlimits.RequestHead}, to name the reason (the refused head
  is the rare case; its answer is the same 400 envelope either way).  What
  llhttp refuses and those rules allow (a control character in a value) is
  refused with llhttp's own words.
- What llhttp allows and the gateway does not is checked here: a request
  line of other than three parts or with an HTTP version other than 1.0 and
  1.1, a target that is not printable ASCII, a Content-Length of more than
  18 digits, a Transfer-Encoding other than one C{chunked} on HTTP/1.1, the
  sizes and counts of L{qeetgw.clientlimits.ClientLimits}.
- llhttp knows a fixed list of methods; RFC 9110 allows any token.  A
  method it does not know is checked as a token here and the head parsed
  as a GET, keeping the method the client sent.
- One empty line before a request line is skipped (a CRLF some clients send
  after a body), a second is refused, as twisted.web does.
- An upgrade (C{Connection: upgrade} with C{Upgrade}, or C{CONNECT}) is read
  as the plain request it also is; the channel decides what to do with it.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple, Union

import attrs
from httptools import (
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserInvalidURLError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from qeetgw.clientlimits import (
    ClientLimits,
    Refusal,
    RequestHead,
    bad_request,
    header_bytes_exceeded,
    header_fields_exceeded,
    uri_too_long,
)

_CRLF = b"\r\n"
_OWS = (b" ", b"\t")
_BLANK_LINE = b"\r\n\r\n"

# RFC 9110 section 9.1: a method is a token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# twisted.web's rule, kept: a non-empty target of printable ASCII.
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")
_VERSIONS = {"1.0": b"HTTP/1.0", "1.1": b"HTTP/1.1"}

#: The lengths of "content-length" and "transfer-encoding": a field name of
#: another length is neither, without lowering it.
_FRAMING_LENGTHS = (14, 17)


@attrs.define(slots=True)
class Head:
    """
    An accepted request head.

    @ivar method: the method, as sent.
    @ivar target: the request target, as sent.
    @ivar version: C{b"HTTP/1.0"} or C{b"HTTP/1.1"}.
    @ivar fields: each header field as C{(name, value)}, in order, the name
        as sent and the value without its surrounding whitespace.
    @ivar content_length: the declared body length, or L{None}.
    @ivar chunked: whether the body is chunked.
    """

    method: bytes
    target: bytes
    version: bytes
    fields: List[Tuple[bytes, bytes]]
    content_length: Optional[int]
    chunked: bool


#: What L{HeadReader.read} returns when the bytes so far were one skipped
#: empty line and nothing more: the connection is idle again.
SKIPPED = "skipped"

ReadResult = Union[None, str, Head, Refusal]


class _Collector:
    """
    The callbacks httptools calls while it parses one head.
    """

    __slots__ = ("target", "fields")

    def __init__(self) -> None:
        self.target = b""
        self.fields: List[Tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp leaves the whitespace after a value in it; RFC 9112 section
        # 5 says it is not part of the value (nor is the whitespace before,
        # which llhttp drops).
        if value[-1:] in _OWS:
            value = value.rstrip(b" \t")
        self.fields.append((name, value))


class HeadReader:
    """
    Finds and reads one request head at a time at the front of a buffer.

    The buffer is the channel's: L{read} takes the head out of it when it
    is complete and leaves what follows (the body, the next request).  It
    searches only the bytes it has not searched, so a head that arrives a
    byte at a time costs no more than one that arrives whole.
    """

    __slots__ = (
        "_limits", "_searched", "_line_end", "_skipped_blank", "_checks", "_checked", "_scanned"
    )

    def __init__(self, limits: ClientLimits) -> None:
        self._limits = limits
        self._searched = 0
        self._line_end = -1
        self._skipped_blank = False
        # The line rules, run on the lines of a head that has not arrived
        # whole (see _check_lines), and how far they have read.
        self._checks: Optional[RequestHead] = None
        self._checked = 0
        self._scanned = 0

    def read(self, buffer: bytearray) -> ReadResult:
        """
        Read the head at the front of C{buffer}: L{None} while it is
        incomplete (and within the limits), L{SKIPPED} when C{buffer} held
        only the one empty line allowed before a request, the L{Head} (taken
        out of C{buffer}), or the L{Refusal} of a head that is refused.
        """
        if self._searched == 0 and not self._skipped_blank:
            if buffer[:2] == _CRLF:
                self._skipped_blank = True
                del buffer[:2]
                if not buffer:
                    return SKIPPED
            elif buffer == b"\r":
                return None
        limits = self._limits
        line_end = self._line_end
        if line_end < 0:
            line_end = buffer.find(_CRLF, max(self._searched - 1, 0))
            if line_end < 0:
                self._searched = len(buffer)
                # One byte over for a CR whose LF is still to come.
                if len(buffer) > limits.max_request_line + 1:
                    return uri_too_long(limits)
                return None
            if line_end == 0:
                # A second empty line.
                return bad_request("malformed request line")
            if line_end > limits.max_request_line:
                return uri_too_long(limits)
            self._line_end = line_end
        end = buffer.find(_BLANK_LINE, max(self._searched - 3, line_end))
        if end < 0:
            self._searched = len(buffer)
            # The header fields so far, and two bytes of the blank line.
            if len(buffer) - line_end - 4 > limits.max_header_bytes:
                return header_bytes_exceeded(limits)
            # A head that has not arrived whole is judged a line at a time
            # meanwhile, so that a bad line is refused when it arrives, not
            # at the header deadline.
            return self._check_lines(buffer)
        # The header field lines with their CRLFs; the request line, and
        # the CRLF of the blank line, not counted.
        if end - line_end > limits.max_header_bytes:
            return header_bytes_exceeded(limits)
        head = bytes(buffer[: end + 4])
        del buffer[: end + 4]
        self._searched = 0
        self._line_end = -1
        self._skipped_blank = False
        self._checks = None
        self._checked = 0
        self._scanned = 0
        return parse_head(head, line_end, limits)

    def _check_lines(self, buffer: bytearray) -> Optional[Refusal]:
        """
        Judge the lines of the incomplete head in C{buffer} that are complete
        and not judged yet, as twisted.web and L{RequestHead} did, line by
        line: the first line refused, or L{None}.
        """
        checks = self._checks
        if checks is None:
            checks = self._checks = RequestHead(self._limits)
        start = self._checked
        # Where the line being read may end: not before what was searched.
        search = max(start, self._scanned - 1)
        while True:
            end = buffer.find(_CRLF, search)
            if end < 0:
                break
            line = bytes(buffer[start:end])
            if start == 0:
                refusal = check_request_line(line, checks)
            else:
                refusal = checks.header_line(line)
            if refusal is not None:
                return refusal
            start = search = end + 2
        self._checked = start
        self._scanned = len(buffer)
        return None


def parse_head(head: bytes, line_end: int, limits: ClientLimits) -> Union[Head, Refusal]:
    """
    Parse and check the complete head C{head}, whose request line ends at
    C{line_end}.
    """
    collector = _Collector()
    parser = HttpRequestParser(collector)
    method: Optional[bytes] = None
    try:
        try:
            parser.feed_data(head)
        except HttpParserInvalidMethodError:
            # A method llhttp does not know: any token is a method.
            space = head.find(b" ", 0, line_end)
            method = head[:space] if space > 0 else b""
            if not _TOKEN.match(method):
                raise
            collector = _Collector()
            parser = HttpRequestParser(collector)
            parser.feed_data(b"GET" + head[space:])
    except HttpParserUpgrade:
        pass  # the head was read whole first
    except HttpParserError as error:
        return diagnose(head, limits, error)
    if method is None:
        method = parser.get_method()
    version = _VERSIONS.get(parser.get_http_version())
    target = collector.target
    if (
        version is None
        or not _TARGET.match(target)
        or head.count(b" ", 0, line_end) != 2
        or not head.startswith(method + b" ")
    ):
        # llhttp reads HTTP/0.9's "GET /" and versions up to 9.9, and skips
        # line breaks before the method.
        return bad_request("malformed request line")
    fields = collector.fields
    if len(fields) > limits.max_header_fields:
        return header_fields_exceeded(limits)
    content_length: Optional[int] = None
    chunked = False
    framing: Optional[RequestHead] = None
    for name, value in fields:
        if len(name) in _FRAMING_LENGTHS:
            lowered = name.lower()
            if lowered == b"content-length" or lowered == b"transfer-encoding":
                if framing is None:
                    framing = RequestHead(limits)
                    framing.version = version
                refusal = framing.framing_field(lowered, value)
                if refusal is not None:
                    return refusal
    if framing is not None:
        if framing.content_length is not None:
            content_length = int(framing.content_length)
        chunked = framing.transfer_encoding
    return Head(
        method,
        target,
        version,
        fields,
        content_length,
        chunked,
    )


def check_request_line(line: bytes, checks: RequestHead) -> Optional[Refusal]:
    """
    The refusal of request line C{line} (without its CRLF), or L{None}: its
    length (L{RequestHead.request_line}, which C{checks} then remembers),
    then its shape, as twisted.web read it: three parts, a token, a target of
    printable ASCII, HTTP/1.0 or HTTP/1.1.
    """
    refusal = checks.request_line(line)
    if refusal is not None:
        return refusal
    parts = line.split(b" ")
    if (
        len(parts) != 3
        or not _TOKEN.match(parts[0])
        or not _TARGET.match(parts[1])
        or parts[2] not in _VERSIONS.values()
    ):
        return bad_request("malformed request line")
    return None


def diagnose(head: bytes, limits: ClientLimits, error: HttpParserError) -> Refusal:
    """
    The refusal of a head llhttp refused with C{error}: the first line that
    the rules of L{check_request_line} and L{RequestHead} refuse, and why; a
    target llhttp cannot read (not in origin, absolute, authority or
    asterisk form) is a malformed request line; otherwise llhttp's words.
    """
    lines = head[:-4].split(_CRLF)
    checks = RequestHead(limits)
    refusal = check_request_line(lines[0], checks)
    if refusal is not None:
        return refusal
    for line in lines[1:]:
        refusal = checks.header_line(line)
        if refusal is not None:
            return refusal
    if isinstance(error, HttpParserInvalidURLError):
        return bad_request("malformed request line")
    return bad_request("malformed request head: " + str(error).lower())
