"""
Tests for L{qeetgw.ratelimit.resp}: encoding and parsing as plain values,
the protocol over a L{StringTransport}.
"""

from __future__ import annotations

from typing import List

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.ratelimit.resp import (
    RedisConnectionLost,
    RedisError,
    RedisProtocol,
    RedisProtocolError,
    Reply,
    ReplyParser,
    encode_command,
)
from qeetgw.ratelimit.store import StoreUnavailable


class EncodeCommandTests(SynchronousTestCase):
    """
    L{encode_command} writes arrays of bulk strings.
    """

    def test_bytes_str_and_int_arguments(self) -> None:
        self.assertEqual(
            encode_command(b"EVALSHA", "é", 12),
            b"*3\r\n$7\r\nEVALSHA\r\n$2\r\n\xc3\xa9\r\n$2\r\n12\r\n",
        )

    def test_empty_and_binary_arguments_are_sent_whole(self) -> None:
        self.assertEqual(
            encode_command("SET", b"", b"a\r\nb"),
            b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\na\r\nb\r\n",
        )

    def test_negative_integer(self) -> None:
        self.assertEqual(encode_command("X", -1), b"*2\r\n$1\r\nX\r\n$2\r\n-1\r\n")

    def test_other_types_are_refused(self) -> None:
        for bad in (True, 1.5, None, ["a"]):
            self.assertRaises(TypeError, encode_command, "SET", bad)


#: One of every reply type, as Redis would send them in a row.
STREAM = (
    b"+OK\r\n"
    b"-NOSCRIPT No matching script\r\n"
    b":-42\r\n"
    b"$5\r\nhe\r\nl\r\n"
    b"$0\r\n\r\n"
    b"$-1\r\n"
    b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n-ERR inner\r\n*0\r\n"
    b"*-1\r\n"
    b":7\r\n"
)

REPLIES: List[Reply] = [
    "OK",
    RedisError("NOSCRIPT No matching script"),
    -42,
    b"he\r\nl",
    b"",
    None,
    [1, [b"a", RedisError("ERR inner")], []],
    None,
    7,
]


class ReplyParserTests(SynchronousTestCase):
    """
    L{ReplyParser} reads every reply type from bytes cut anywhere.
    """

    def test_whole_stream(self) -> None:
        self.assertEqual(ReplyParser().feed(STREAM), REPLIES)

    def test_split_at_every_byte_boundary(self) -> None:
        for cut in range(len(STREAM) + 1):
            parser = ReplyParser()
            replies = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
            self.assertEqual(replies, REPLIES, f"cut at {cut}")

    def test_one_byte_at_a_time(self) -> None:
        parser = ReplyParser()
        replies: List[Reply] = []
        for i in range(len(STREAM)):
            replies += parser.feed(STREAM[i : i + 1])
        self.assertEqual(replies, REPLIES)

    def test_partial_reply_is_kept_until_complete(self) -> None:
        parser = ReplyParser()
        self.assertEqual(parser.feed(b"*2\r\n:1\r\n$3\r\nab"), [])
        self.assertEqual(parser.feed(b"c\r\n+OK"), [[1, b"abc"]])
        self.assertEqual(parser.feed(b"\r\n"), ["OK"])

    def test_error_code(self) -> None:
        self.assertEqual(RedisError("NOSCRIPT No matching script").code, "NOSCRIPT")

    def test_not_resp_is_an_error(self) -> None:
        for bad in (b"?what\r\n", b":12x\r\n", b"$3\r\nabcde\r\n", b"*-2\r\n", b"$-5\r\n"):
            self.assertRaises(RedisProtocolError, ReplyParser().feed, bad)


def connected() -> tuple[RedisProtocol, StringTransport]:
    """
    A protocol connected to a L{StringTransport}.
    """
    protocol = RedisProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class RedisProtocolTests(SynchronousTestCase):
    """
    L{RedisProtocol} pipelines commands and matches replies in order.
    """

    def test_commands_are_written_at_once(self) -> None:
        protocol, transport = connected()
        protocol.execute("GET", "a")
        protocol.execute("INCR", "b")
        self.assertEqual(transport.value(), encode_command("GET", "a") + encode_command("INCR", "b"))
        self.assertEqual(protocol.pending, 2)

    def test_replies_fire_in_order(self) -> None:
        protocol, transport = connected()
        first = protocol.execute("GET", "a")
        second = protocol.execute("INCR", "b")
        third = protocol.execute("PING")
        protocol.dataReceived(b"$1\r\nx\r\n:5\r")
        self.assertEqual(self.successResultOf(first), b"x")
        self.assertNoResult(second)
        protocol.dataReceived(b"\n+PONG\r\n")
        self.assertEqual(self.successResultOf(second), 5)
        self.assertEqual(self.successResultOf(third), "PONG")
        self.assertEqual((protocol.pending, protocol.replies_received), (0, 3))

    def test_error_reply_fails_only_its_command(self) -> None:
        protocol, transport = connected()
        failing = protocol.execute("EVALSHA", "abc", 0)
        fine = protocol.execute("PING")
        protocol.dataReceived(b"-NOSCRIPT No matching script\r\n+PONG\r\n")
        error = self.failureResultOf(failing, RedisError).value
        self.assertEqual(error.message, "NOSCRIPT No matching script")
        self.assertEqual(self.successResultOf(fine), "PONG")

    def test_connection_lost_fails_every_pending_command(self) -> None:
        protocol, transport = connected()
        answered = protocol.execute("PING")
        pending = [protocol.execute("GET", "a"), protocol.execute("GET", "b")]
        protocol.dataReceived(b"+PONG\r\n")
        protocol.connectionLost(Failure(ConnectionDone("bye")))
        self.assertEqual(self.successResultOf(answered), "PONG")
        for waiting in pending:
            failure = self.failureResultOf(waiting, RedisConnectionLost)
            self.assertIsInstance(failure.value, StoreUnavailable)
            self.assertIn("bye", failure.getErrorMessage())
        self.assertEqual(protocol.pending, 0)

    def test_execute_after_close_fails_at_once(self) -> None:
        protocol, transport = connected()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(protocol.execute("PING"), RedisConnectionLost)
        self.assertFalse(protocol.usable)

    def test_execute_before_connecting_fails_at_once(self) -> None:
        self.failureResultOf(RedisProtocol().execute("PING"), RedisConnectionLost)

    def test_cancelled_command_still_takes_its_reply(self) -> None:
        protocol, transport = connected()
        cancelled = protocol.execute("GET", "slow")
        after = protocol.execute("GET", "next")
        cancelled.cancel()
        self.failureResultOf(cancelled)
        protocol.dataReceived(b"$4\r\nlate\r\n$4\r\nmine\r\n")
        self.assertEqual(self.successResultOf(after), b"mine")

    def test_unreadable_reply_aborts_and_fails_pending(self) -> None:
        protocol, transport = connected()
        waiting = protocol.execute("PING")
        protocol.dataReceived(b"!nonsense\r\n")
        self.assertTrue(transport.disconnected)
        failure = self.failureResultOf(waiting, RedisConnectionLost)
        self.assertIn("unreadable reply", failure.getErrorMessage())
        self.assertIn("unreadable reply", protocol.close_reason or "")

    def test_reply_nobody_asked_for_aborts(self) -> None:
        protocol, transport = connected()
        protocol.dataReceived(b"+OK\r\n")
        self.assertTrue(transport.disconnected)
        self.assertFalse(protocol.usable)

    def test_abort_fails_pending_with_the_reason(self) -> None:
        protocol, transport = connected()
        waiting = protocol.execute("PING")
        protocol.abort("stuck")
        failure = self.failureResultOf(waiting, RedisConnectionLost)
        self.assertIn("stuck", failure.getErrorMessage())
        self.assertEqual(protocol.close_reason, "connection to Redis dropped: stuck")
