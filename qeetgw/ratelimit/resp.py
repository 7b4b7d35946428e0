"""
Just enough of Redis's wire protocol (RESP2) for the rate-limit store.

Three parts, the first two pure: L{encode_command} turns a command into
bytes, L{ReplyParser} turns bytes (in pieces of any size) back into
replies, and L{RedisProtocol} pipelines commands over one connection,
matching replies to commands in order, as Redis answers them.

See U{https://redis.io/docs/latest/develop/reference/protocol-spec/}.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, List, Optional, Tuple, Union

from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from qeetgw.ratelimit.store import StoreUnavailable

#: One argument of a command; L{str} is sent as UTF-8, L{int} in decimal.
Argument = Union[bytes, str, int]

#: One reply: a simple string (L{str}), a bulk string (L{bytes}), an integer,
#: C{None} (the null bulk string or array), an array, or an error reply
#: (L{RedisError}: a value, because an array may hold one).
Reply = Union[str, bytes, int, None, List["Reply"], "RedisError"]

_CRLF = b"\r\n"


class RedisError(Exception):
    """
    Redis answered a command with an error reply (C{-ERR ...}).

    @ivar message: the reply's text, such as C{"NOSCRIPT No matching
        script. Please use EVAL."}.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        """
        The error's first word, by Redis convention its kind (C{"ERR"},
        C{"NOSCRIPT"}, C{"WRONGPASS"}, C{"LOADING"}).
        """
        return self.message.split(" ", 1)[0]

    def __eq__(self, other: object) -> bool:
        # Replies are compared in tests; an error reply equals another with
        # the same text, as a str reply would.
        if not isinstance(other, RedisError):
            return NotImplemented
        return self.message == other.message

    def __hash__(self) -> int:
        return hash(self.message)


class RedisProtocolError(Exception):
    """
    The bytes from the server are not RESP2; the connection is unusable.
    """


class RedisConnectionLost(StoreUnavailable):
    """
    A command could not be answered: the connection is closed, or closed
    before its reply arrived.
    """


def encode_command(*args: Argument) -> bytes:
    """
    C{args} as a RESP2 array of bulk strings, the form Redis accepts every
    command in (C{encode_command("GET", "k")} is C{b"*2\\r\\n$3\\r\\nGET..."}).

    @raise TypeError: for an argument that is not bytes, str or int (a
        bool, for one, would be ambiguous).
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            raise TypeError(f"a Redis argument must be bytes, str or int, not {arg!r}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Incomplete(Exception):
    """
    The buffer ends inside a reply: wait for more bytes.
    """


def _integer(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise RedisProtocolError(f"not an integer: {line!r}") from None


def _parse(buffer: bytes, start: int) -> Tuple[Reply, int]:
    """
    The reply that begins at C{buffer[start]}, and where the next begins.

    @raise _Incomplete: when the buffer ends first.
    @raise RedisProtocolError: when the bytes are not RESP2.
    """
    line_end = buffer.find(_CRLF, start)
    if line_end == -1:
        raise _Incomplete()
    kind = buffer[start : start + 1]
    line = buffer[start + 1 : line_end]
    after = line_end + 2
    if kind == b"+":
        return line.decode("utf-8", "replace"), after
    if kind == b"-":
        return RedisError(line.decode("utf-8", "replace")), after
    if kind == b":":
        return _integer(line), after
    if kind == b"$":
        length = _integer(line)
        if length == -1:
            return None, after
        if length < 0:
            raise RedisProtocolError(f"bad bulk string length {length}")
        end = after + length
        if len(buffer) < end + 2:
            raise _Incomplete()
        if buffer[end : end + 2] != _CRLF:
            raise RedisProtocolError("bulk string not followed by CRLF")
        return buffer[after:end], end + 2
    if kind == b"*":
        count = _integer(line)
        if count == -1:
            return None, after
        if count < 0:
            raise RedisProtocolError(f"bad array length {count}")
        items: List[Reply] = []
        for _ in range(count):
            item, after = _parse(buffer, after)
            items.append(item)
        return items, after
    raise RedisProtocolError(f"unknown reply type {kind!r}")


class ReplyParser:
    """
    Turns a stream of bytes, cut anywhere, into replies.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> List[Reply]:
        """
        Add C{data}; return every reply it completes, in order (none when it
        ends inside a reply, which is kept for the next call).

        @raise RedisProtocolError: when the bytes are not RESP2.
        """
        self._buffer += data
        replies: List[Reply] = []
        start = 0
        # A reply cut short is parsed again from its beginning when more
        # bytes come: simple, and cheap for the short replies we read.
        while start < len(self._buffer):
            try:
                reply, start_of_next = _parse(self._buffer, start)
            except _Incomplete:
                break
            replies.append(reply)
            start = start_of_next
        self._buffer = self._buffer[start:]
        return replies


class RedisProtocol(Protocol):
    """
    A pipelined Redis connection: L{execute} sends a command at once and
    returns a L{Deferred} for its reply; Redis answers in order, so the
    replies fire the pending L{Deferred}s first in, first out.

    @ivar replies_received: how many replies this connection has read; a
        caller compares two readings to tell a slow server from a silent one.
    """

    def __init__(self) -> None:
        self._parser = ReplyParser()
        self._pending: Deque[Deferred[Reply]] = deque()
        self._closed: Optional[str] = None
        self.replies_received = 0

    @property
    def pending(self) -> int:
        """
        Commands sent and not yet answered (answered late included: a
        cancelled call still has its reply on the way).
        """
        return len(self._pending)

    @property
    def usable(self) -> bool:
        """
        Whether L{execute} can send: connected, and not closed or closing.
        """
        return (
            self.transport is not None
            and self._closed is None
            and not getattr(self.transport, "disconnecting", False)
        )

    def execute(self, *args: Argument) -> Deferred[Reply]:
        """
        Send one command; fire with its reply, or fail with L{RedisError}
        for an error reply and L{RedisConnectionLost} when the connection
        closes first (or is closed already).
        """
        if not self.usable:
            return fail(RedisConnectionLost(self._closed or "not connected to Redis"))
        data = encode_command(*args)
        reply: Deferred[Reply] = Deferred()
        self._pending.append(reply)
        self.transport.write(data)  # type: ignore[union-attr]
        return reply

    def dataReceived(self, data: bytes) -> None:
        """
        Fire the oldest pending L{Deferred} with each complete reply.
        """
        try:
            replies = self._parser.feed(data)
        except RedisProtocolError as error:
            self.abort(f"unreadable reply from Redis: {error}")
            return
        for reply in replies:
            if self._closed is not None:
                # A callback below closed the connection: past that, which
                # reply answers which command no longer matters.
                return
            if not self._pending:
                self.abort("a reply from Redis that no command asked for")
                return
            waiting = self._pending.popleft()
            self.replies_received += 1
            if isinstance(reply, RedisError):
                waiting.errback(reply)
            else:
                waiting.callback(reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Fail every pending command with L{RedisConnectionLost}.
        """
        if self._closed is None:
            self._closed = f"connection to Redis lost: {reason.getErrorMessage()}"
        self._fail_pending()

    @property
    def close_reason(self) -> Optional[str]:
        """
        Why the connection closed (or is closing), for people; C{None} while
        it is open.
        """
        return self._closed

    def abort(self, reason: str) -> None:
        """
        Drop the connection now, failing every pending command, because of
        C{reason}.
        """
        if self._closed is None:
            self._closed = f"connection to Redis dropped: {reason}"
        self.transport.abortConnection()  # type: ignore[union-attr]
        self._fail_pending()

    def _fail_pending(self) -> None:
        while self._pending:
            self._pending.popleft().errback(RedisConnectionLost(self._closed))
