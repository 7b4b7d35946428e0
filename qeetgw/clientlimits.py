"""
The rules for clients that misbehave, as small pure pieces the HTTP channel
(L{qeetgw.server.GatewayChannel}) and its head reader
(L{qeetgw.clienthead}) apply while a request arrives.

llhttp parses a request head (L{qeetgw.clienthead}); this module decides
whether it is acceptable, and, line by line, why a head llhttp refused is
refused:

- a request line over L{ClientLimits.max_request_line} bytes: 414;
- a header block over L{ClientLimits.max_header_bytes} bytes (the header
  field lines with their CRLFs, the request line not counted) or more than
  L{ClientLimits.max_header_fields} fields: 431 (RFC 6585);
- the request smuggling shapes of RFC 9112 sections 6.1, 6.3 and 11.2: 400;
- in a chunked body, a chunk-size of more than L{MAX_CHUNK_SIZE_DIGITS} hex
  digits: 400; a chunk declared larger than what is left of the body limit:
  413 (both on the chunk-size line, before the chunk's data).

Every refusal is answered early, while the client may still be sending; the
channel then closes by lingering (L{ClientLimits.linger_time}): it
half-closes, reads and discards what still comes for a bounded time and
amount, then closes, so that the client is not reset before it reads the
answer.

Framing decisions (RFC 9112 section 6), stricter than the RFC where it lets
a server choose, because a gateway that frames a message differently from
the server behind it is how smuggling happens:

- C{Content-Length} must be 1 to 18 digits, sent once; a list (even
  C{"5, 5"}) or a second field is refused, as nginx does.
- C{Transfer-Encoding} must be exactly C{chunked} (any case, surrounding
  spaces/tabs being optional whitespace the RFC allows), sent once, on an
  HTTP/1.1 request.  C{gzip}, C{chunked, gzip}, C{gzip, chunked},
  C{identity}, C{chunked, chunked} are all refused: twisted.web decodes
  only C{chunked}, and the gateway always frames the upstream body itself.
- C{Content-Length} and C{Transfer-Encoding} together are refused.
- A line starting with a space or tab (obs-fold, or whitespace before the
  first field), whitespace before a colon, a field name that is not a
  token, a line without a colon, and NUL, CR or LF inside a value are
  refused.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Union

import attrs
from twisted.logger import Logger

from qeetgw.errors import JSON_CONTENT_TYPE, envelope
from qeetgw.headers import HELMET_HEADERS

#: The one logger of refusals: each refused client is one event, with the
#: fields C{reason}, C{client}, C{limit}, C{status} and C{correlation_id}.
client_log = Logger(namespace="qeetgw.clients")

Number = Union[int, float]

#: RFC 9110's reason phrases for the statuses of this module (twisted.web
#: has no 431, and an older phrase for 408).
_PHRASES = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


@attrs.frozen
class ClientLimits:
    """
    What the gateway tolerates from a client connection.  The defaults are
    the configuration's defaults.

    @ivar header_timeout: seconds from a request's first byte to the end of
        its headers (a deadline: slow bytes do not extend it).
    @ivar body_timeout: seconds a request body may go without a byte.
    @ivar keepalive_timeout: seconds an idle keep-alive connection is kept.
    @ivar max_header_bytes: the largest header block, in bytes.
    @ivar max_connections: the most client connections open at once.
    @ivar max_request_line: the longest request line, in bytes.
    @ivar max_header_fields: the most header fields in one request.
    @ivar linger_timeout: after an early refusal, seconds without a byte
        from the client after which the connection is closed.
    @ivar linger_time: after an early refusal, the longest the client's
        bytes are read and discarded, in seconds; 0 closes at once.
    @ivar linger_max_bytes: the most bytes read and discarded after an early
        refusal.
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 65.0
    max_header_bytes: int = 16384
    max_connections: int = 10000
    max_request_line: int = 8192
    max_header_fields: int = 100
    linger_timeout: float = 5.0
    linger_time: float = 30.0
    linger_max_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_config(cls, config: Any) -> "ClientLimits":
        """
        The limits of a L{qeetgw.config.Config}.
        """
        return cls(
            header_timeout=config.client_header_timeout_ms / 1000,
            body_timeout=config.client_body_timeout_ms / 1000,
            keepalive_timeout=config.keepalive_timeout_ms / 1000,
            max_header_bytes=config.client_max_header_bytes,
            max_connections=config.max_connections,
            linger_timeout=config.client_linger_timeout_ms / 1000,
            linger_time=config.client_linger_time_ms / 1000,
            linger_max_bytes=config.client_linger_max_bytes,
        )


@attrs.frozen
class Refusal:
    """
    Why a request is refused, and how it is answered.

    @ivar status: the HTTP status.
    @ivar code: the envelope's code (a key of L{qeetgw.errors.STATUS_FOR_CODE}).
    @ivar reason: a short, stable description for the log.
    @ivar message: what the client is told.
    @ivar limit: the limit that was passed, when there is one.
    """

    status: int
    code: str
    reason: str
    message: str
    limit: Optional[Number] = None


def header_timeout(limits: ClientLimits) -> Refusal:
    """
    The headers did not arrive in time.
    """
    return Refusal(
        408, "REQUEST_TIMEOUT", "header timeout", "Request headers not received in time",
        limits.header_timeout,
    )


def body_timeout(limits: ClientLimits) -> Refusal:
    """
    The body stalled.
    """
    return Refusal(
        408, "REQUEST_TIMEOUT", "body timeout", "Request body not received in time",
        limits.body_timeout,
    )


def bad_request(reason: str) -> Refusal:
    """
    A malformed or ambiguous request, for C{reason}.
    """
    return Refusal(400, "BAD_REQUEST", reason, "Bad request: " + reason)


def uri_too_long(limits: ClientLimits) -> Refusal:
    """
    The request line is too long.
    """
    return Refusal(414, "URI_TOO_LONG", "request line too long", "Request line too long",
                   limits.max_request_line)


def header_bytes_exceeded(limits: ClientLimits) -> Refusal:
    """
    The header block is too large.
    """
    return Refusal(431, "HEADERS_TOO_LARGE", "header block too large",
                   "Request header fields too large", limits.max_header_bytes)


def header_fields_exceeded(limits: ClientLimits) -> Refusal:
    """
    There are too many header fields.
    """
    return Refusal(431, "HEADERS_TOO_LARGE", "too many header fields",
                   "Request header fields too large", limits.max_header_fields)


#: The most hex digits of a chunk-size: 16 digits say any 64-bit size, and
#: past them no real body is meant (Python's int() would take any number, so
#: twisted.web would wait for 2**64 bytes of a 17-digit chunk).
MAX_CHUNK_SIZE_DIGITS = 16


def chunk_size_too_long() -> Refusal:
    """
    A chunk-size line with more than L{MAX_CHUNK_SIZE_DIGITS} hex digits.
    """
    return Refusal(400, "BAD_REQUEST", "chunk size over 16 hex digits",
                   "Bad request: chunk size over 16 hex digits", MAX_CHUNK_SIZE_DIGITS)


# RFC 9110 section 5.6.2: a field name is a token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Past 18 digits a length is no body anyone sends, and Python's int() of a
# few thousand digits raises inside twisted.web instead of refusing.
_MAX_LENGTH_DIGITS = 18


class RequestHead:
    """
    The checks of one request head, fed its lines as they arrive.  One is
    made when a request's first byte arrives and dropped when its headers
    are over, so an idle connection holds none.
    """

    __slots__ = ("limits", "request_line_seen", "version", "header_bytes",
                 "header_fields", "content_length", "transfer_encoding")

    def __init__(self, limits: ClientLimits) -> None:
        self.limits = limits
        self.request_line_seen = False
        self.version = b""
        self.header_bytes = 0
        self.header_fields = 0
        self.content_length: Optional[bytes] = None
        self.transfer_encoding = False

    def request_line(self, line: bytes) -> Optional[Refusal]:
        """
        Check the request line C{line} (without its CRLF).
        """
        self.request_line_seen = True
        if len(line) > self.limits.max_request_line:
            return uri_too_long(self.limits)
        self.version = line.rsplit(b" ", 1)[-1]
        return None

    def line_too_long(self) -> Refusal:
        """
        The refusal for a line longer than the parser accepts: the request
        line's limit until it has been read, the header block's after.
        """
        if self.request_line_seen:
            return header_bytes_exceeded(self.limits)
        return uri_too_long(self.limits)

    def header_line(self, line: bytes) -> Optional[Refusal]:
        """
        Check one line of the header block (without its CRLF); the empty
        line ends the block.
        """
        if not line:
            return None
        limits = self.limits
        self.header_bytes += len(line) + 2
        if self.header_bytes > limits.max_header_bytes:
            return header_bytes_exceeded(limits)
        self.header_fields += 1
        if self.header_fields > limits.max_header_fields:
            return header_fields_exceeded(limits)
        if line[0] in b" \t":
            return bad_request("obs-fold or whitespace before a header field")
        name, colon, value = line.partition(b":")
        if not colon:
            return bad_request("header line without a colon")
        if name != name.rstrip(b" \t"):
            return bad_request("whitespace before a header colon")
        if not _TOKEN.match(name):
            return bad_request("invalid header name")
        value = value.strip(b" \t")
        if b"\x00" in value or b"\r" in value or b"\n" in value:
            return bad_request("NUL, CR or LF in a header value")
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            return self.framing_field(lowered, value)
        return None

    def framing_field(self, lowered: bytes, value: bytes) -> Optional[Refusal]:
        """
        Check one C{Content-Length} or C{Transfer-Encoding} field (C{lowered}
        the name in lower case) against the ones before it; the request
        line, or L{version}, must have been given.
        """
        value = value.strip(b" \t")
        if lowered == b"content-length":
            return self._content_length(value)
        return self._transfer_encoding(value)

    def _content_length(self, value: bytes) -> Optional[Refusal]:
        values = [part.strip(b" \t") for part in value.split(b",")]
        if any(not part.isdigit() or len(part) > _MAX_LENGTH_DIGITS for part in values):
            return bad_request("invalid Content-Length")
        if self.content_length is not None:
            values.append(self.content_length)
        if len(set(values)) > 1:
            return bad_request("differing Content-Length values")
        if len(values) > 1:
            return bad_request("repeated Content-Length")
        if self.transfer_encoding:
            return bad_request("both Content-Length and Transfer-Encoding")
        self.content_length = values[0]
        return None

    def _transfer_encoding(self, value: bytes) -> Optional[Refusal]:
        if self.transfer_encoding:
            return bad_request("repeated Transfer-Encoding")
        if value.lower() != b"chunked":
            return bad_request("Transfer-Encoding other than chunked")
        if self.version != b"HTTP/1.1":
            return bad_request("Transfer-Encoding in an HTTP/1.0 request")
        if self.content_length is not None:
            return bad_request("both Content-Length and Transfer-Encoding")
        self.transfer_encoding = True
        return None


def error_response(refusal: Refusal, correlation_id: str, date: bytes) -> bytes:
    """
    The whole response for C{refusal}: the JSON envelope with its
    Content-Type and Content-Length, C{Connection: close}, the correlation
    id and the security headers every response of the gateway carries.
    """
    body = envelope(refusal.code, refusal.message, correlation_id)
    phrase = _PHRASES.get(refusal.status, b"Error")
    lines = [
        b"HTTP/1.1 %d %s" % (refusal.status, phrase),
        b"Date: " + date,
        b"Content-Type: " + JSON_CONTENT_TYPE,
        b"Content-Length: %d" % (len(body),),
        b"Connection: close",
        b"X-Correlation-ID: " + correlation_id.encode("ascii"),
    ]
    lines.extend(name + b": " + value for name, value in HELMET_HEADERS)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def log_refusal(refusal: Refusal, client: str, correlation_id: Optional[str]) -> None:
    """
    The one event of a refused request.
    """
    client_log.warn(
        "refused client {client}: {reason} (limit {limit}), answered {status}",
        reason=refusal.reason,
        client=client,
        limit=refusal.limit,
        status=refusal.status,
        correlation_id=correlation_id,
    )


def log_idle_closed(client: str, limits: ClientLimits) -> None:
    """
    The one event of an idle keep-alive connection closed: routine, so at
    debug level.
    """
    client_log.debug(
        "closed idle connection {client} (limit {limit})",
        reason="keep-alive timeout",
        client=client,
        limit=limits.keepalive_timeout,
    )


def log_linger_ended(
    client: str, why: str, discarded: int, seconds: float, limits: ClientLimits
) -> None:
    """
    The one event of a lingering close that ended: C{why} is C{"client
    closed"}, C{"linger timeout"}, C{"linger time"}, C{"linger bytes"} or
    C{"connection lost"}, C{discarded} the bytes read and thrown away,
    C{seconds} how long it lingered.  Routine, so at debug level.
    """
    client_log.debug(
        "closed refused connection {client} after lingering: {why} "
        "({discarded} bytes discarded in {seconds:.3f}s)",
        reason="lingering close",
        client=client,
        why=why,
        discarded=discarded,
        seconds=seconds,
        limit=limits.linger_time,
    )


def log_connection_refused(client: str, limits: ClientLimits) -> None:
    """
    The one event of a connection closed at once, past MAX_CONNECTIONS.
    """
    client_log.warn(
        "refused connection {client}: too many connections (limit {limit})",
        reason="too many connections",
        client=client,
        limit=limits.max_connections,
    )


def describe_address(address: Any) -> str:
    """
    C{host:port} for an IP address, its text otherwise.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"{host}:{port}"
