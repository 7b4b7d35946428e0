"""
Tests for L{qeetgw.ratelimit.redis}, in memory: plain values (URL parsing,
backoff, replies), and the store on a fake clock and an in-memory
connection, for timing and failure handling.  The store against a real
Redis is in L{tests.e2e.test_redis_store}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qeetgw.config import RedisURL, parse_redis_url
from qeetgw.ratelimit import redis as redis_module
from qeetgw.ratelimit.redis import (
    FIXED_WINDOW,
    SLIDING_WINDOW,
    RedisStore,
    count_from_reply,
    reconnect_delay,
)
from qeetgw.ratelimit.resp import ReplyParser
from qeetgw.ratelimit.store import Budget, Count, IRateLimitStore, StoreUnavailable

# ---------------------------------------------------------------------------
# Plain values


class ParseRedisURLTests(SynchronousTestCase):
    """
    L{parse_redis_url} reads C{redis://[[user]:password@]host[:port][/db]}.
    """

    def test_defaults(self) -> None:
        self.assertEqual(parse_redis_url("redis://cache"), RedisURL("cache", 6379, 0, None, None))

    def test_every_part(self) -> None:
        self.assertEqual(
            parse_redis_url("redis://alice:s%40cr%3At@Redis.internal:6380/15"),
            RedisURL("redis.internal", 6380, 15, "alice", "s@cr:t"),
        )

    def test_password_alone(self) -> None:
        url = parse_redis_url("redis://:secret@127.0.0.1/2")
        self.assertEqual((url.username, url.password, url.db), (None, "secret", 2))

    def test_ipv6(self) -> None:
        url = parse_redis_url("redis://[::1]:7000")
        self.assertEqual((url.host, url.port), ("::1", 7000))
        self.assertEqual(str(url), "redis://[::1]:7000/0")

    def test_trailing_slash_is_db_0(self) -> None:
        self.assertEqual(parse_redis_url("redis://h/").db, 0)

    def test_password_never_shown(self) -> None:
        url = parse_redis_url("redis://alice:hunter2@h")
        self.assertNotIn("hunter2", repr(url))
        self.assertNotIn("hunter2", str(url))

    def test_refused_with_a_reason(self) -> None:
        cases = {
            "http://h": "must start with redis://",
            "rediss://h": "TLS",
            "redis://": "no host",
            "redis://h:99999": "not a valid URL",
            "redis://h:port": "not a valid URL",
            "redis://h:0": "1 to 65535",
            "redis://h/db1": "must be a number",
            "redis://h/-1": "must be a number",
            "redis://h?db=1": "no query",
            "redis://alice@h": "no password",
        }
        for url, reason in cases.items():
            with self.assertRaises(ValueError, msg=url) as raised:
                parse_redis_url(url)
            self.assertIn(reason, str(raised.exception), url)

    def test_errors_do_not_echo_the_password(self) -> None:
        with self.assertRaises(ValueError) as raised:
            parse_redis_url("redis://:hunter2@h/x")
        self.assertNotIn("hunter2", str(raised.exception))


class ReconnectDelayTests(SynchronousTestCase):
    """
    L{reconnect_delay}: 0.1 s doubling to 2 s, jittered between 50 and 100 %.
    """

    def test_doubles_to_the_cap(self) -> None:
        delays = [reconnect_delay(attempt, lambda: 1.0) for attempt in range(1, 9)]
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])

    def test_jitter_halves_at_most(self) -> None:
        self.assertEqual(reconnect_delay(1, lambda: 0.0), 0.05)
        self.assertEqual(reconnect_delay(1000, lambda: 0.0), 1.0)


class CountFromReplyTests(SynchronousTestCase):
    """
    L{count_from_reply} turns a script's reply into a L{Count}.
    """

    def test_fixed(self) -> None:
        self.assertEqual(count_from_reply([3, 400], "fixed", 1000), Count(3, 0, 600, 1000))

    def test_fixed_elapsed_stays_in_the_window(self) -> None:
        self.assertEqual(count_from_reply([1, 1005], "fixed", 1000).elapsed_ms, 0)

    def test_sliding(self) -> None:
        self.assertEqual(count_from_reply([2, 7, 250], "sliding", 1000), Count(2, 7, 250, 1000))

    def test_anything_else_is_unavailable(self) -> None:
        for reply in ([1], [1, 2, 3], "OK", None, [1, b"2"]):
            self.assertRaises(StoreUnavailable, count_from_reply, reply, "fixed", 1000)


# ---------------------------------------------------------------------------
# The store on a fake clock, over in-memory connections

TIMEOUT_MS = 200
BUDGET = Budget("default", 10, 1000)


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    Connects at once to an in-memory transport, or refuses.

    @ivar connections: (protocol, transport) of every connection made.
    """

    def __init__(self) -> None:
        self.connections: List[Tuple[IProtocol, StringTransportWithDisconnection]] = []
        self.refusing = False
        self.attempts = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self.attempts += 1
        if self.refusing:
            return fail(ConnectionRefusedError("refused by the test"))
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6379))
        assert protocol is not None
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)

    @property
    def transport(self) -> StringTransportWithDisconnection:
        """
        The latest connection's transport.
        """
        return self.connections[-1][1]

    def commands(self) -> List[Any]:
        """
        The commands written on the latest connection since last asked.
        """
        written = ReplyParser().feed(self.transport.value())
        self.transport.clear()
        return written

    def reply(self, data: bytes) -> None:
        """
        Feed the latest connection C{data} as if from Redis.
        """
        self.connections[-1][0].dataReceived(data)

    def answer_handshake(self) -> None:
        """
        Answer the set-up commands the latest connection sent.
        """
        for command in self.commands():
            if command[:2] == [b"SCRIPT", b"LOAD"]:
                self.reply(b"$40\r\n" + b"0" * 40 + b"\r\n")
            else:
                self.reply(b"+OK\r\n")

    def drop(self) -> None:
        """
        The latest connection closes from the other side.
        """
        protocol, transport = self.connections[-1]
        transport.connected = False
        protocol.connectionLost(Failure(ConnectionLost("gone")))


def capture_log(test: SynchronousTestCase) -> List[Dict[str, Any]]:
    """
    Collect the store's log events for the length of C{test}.
    """
    events: List[Dict[str, Any]] = []
    observer: ILogObserver = events.append
    test.patch(redis_module, "_log", Logger(namespace="qeetgw.ratelimit.redis", observer=observer))
    return events


def levels(events: List[Dict[str, Any]]) -> List[str]:
    """
    The level of each event, by name.
    """
    return [event["log_level"].name for event in events]


class InMemoryStoreTests(SynchronousTestCase):
    """
    L{RedisStore}'s timing and failure handling on a fake clock.
    """

    def store(self, url: str = "redis://127.0.0.1", **kwargs: Any) -> Tuple[RedisStore, FakeEndpoint, Clock]:
        clock = Clock()
        endpoint = FakeEndpoint()
        store = RedisStore(
            url,
            "p:",
            TIMEOUT_MS,
            clock,
            endpoint_factory=lambda url: endpoint,
            random=lambda: 1.0,
            **kwargs,
        )
        return store, endpoint, clock

    def ready_store(self, **kwargs: Any) -> Tuple[RedisStore, FakeEndpoint, Clock]:
        store, endpoint, clock = self.store(**kwargs)
        store.startService()
        endpoint.answer_handshake()
        self.assertTrue(store.state().healthy)
        return store, endpoint, clock

    def test_provides_the_interface(self) -> None:
        store, _, _ = self.store()
        self.assertTrue(verifyObject(IRateLimitStore, store))

    def test_bad_url_or_timeout_refused(self) -> None:
        self.assertRaises(ValueError, RedisStore, "http://h", "p:", 100, Clock())
        self.assertRaises(ValueError, RedisStore, "redis://h", "p:", 0, Clock())

    def test_handshake_authenticates_selects_and_loads_scripts_in_one_write(self) -> None:
        store, endpoint, _ = self.store(url="redis://alice:s%40cret@h:1/3")
        store.startService()
        self.assertEqual(
            endpoint.commands(),
            [
                [b"AUTH", b"alice", b"s@cret"],
                [b"SELECT", b"3"],
                [b"SCRIPT", b"LOAD", FIXED_WINDOW.source],
                [b"SCRIPT", b"LOAD", SLIDING_WINDOW.source],
            ],
        )

    def test_password_alone_and_db_0(self) -> None:
        store, endpoint, _ = self.store(url="redis://:pw@h")
        store.startService()
        self.assertEqual([c[:2] for c in endpoint.commands()], [[b"AUTH", b"pw"], [b"SCRIPT", b"LOAD"], [b"SCRIPT", b"LOAD"]])

    def test_hits_fail_at_once_until_the_handshake_is_answered(self) -> None:
        events = capture_log(self)
        store, endpoint, _ = self.store()
        self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        store.startService()
        self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        self.assertEqual(store.state().healthy, False)
        self.assertEqual(store.state().detail, "connecting")
        endpoint.answer_handshake()
        self.assertEqual(store.state().healthy, True)
        # Starting up is not an outage: one info, no warning.
        self.assertEqual(levels(events), ["info"])

    def test_one_evalsha_per_hit(self) -> None:
        store, endpoint, _ = self.ready_store()
        counted = store.hit("1.2.3.4", BUDGET, "fixed")
        self.assertEqual(
            endpoint.commands(),
            [[b"EVALSHA", FIXED_WINDOW.sha.encode(), b"1", b"p:default:1.2.3.4", b"1000"]],
        )
        endpoint.reply(b"*2\r\n:3\r\n:400\r\n")
        self.assertEqual(self.successResultOf(counted), Count(3, 0, 600, 1000))

    def test_sliding_hit(self) -> None:
        store, endpoint, _ = self.ready_store()
        counted = store.hit("u", Budget("/api/v1/auth/login", 5, 60000), "sliding")
        self.assertEqual(
            endpoint.commands(),
            [[b"EVALSHA", SLIDING_WINDOW.sha.encode(), b"1", b"p:/api/v1/auth/login:u", b"60000"]],
        )
        endpoint.reply(b"*3\r\n:2\r\n:9\r\n:1500\r\n")
        self.assertEqual(self.successResultOf(counted), Count(2, 9, 1500, 60000))

    def test_noscript_falls_back_to_eval_once(self) -> None:
        store, endpoint, _ = self.ready_store()
        counted = store.hit("k", BUDGET, "fixed")
        endpoint.commands()
        endpoint.reply(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
        self.assertEqual(endpoint.commands(), [[b"EVAL", FIXED_WINDOW.source, b"1", b"p:default:k", b"1000"]])
        endpoint.reply(b"*2\r\n:1\r\n:1000\r\n")
        self.assertEqual(self.successResultOf(counted), Count(1, 0, 0, 1000))

    def test_other_error_replies_are_unavailable(self) -> None:
        store, endpoint, _ = self.ready_store()
        counted = store.hit("k", BUDGET, "fixed")
        endpoint.reply(b"-OOM command not allowed\r\n")
        failure = self.failureResultOf(counted, StoreUnavailable)
        self.assertIn("OOM", failure.getErrorMessage())
        self.assertEqual(store.state().healthy, False)

    def test_timeout_fails_within_the_bound(self) -> None:
        store, endpoint, clock = self.ready_store()
        counted = store.hit("k", BUDGET, "fixed")
        clock.advance(TIMEOUT_MS / 1000 - 0.001)
        self.assertNoResult(counted)
        clock.advance(0.001)
        failure = self.failureResultOf(counted, StoreUnavailable)
        self.assertIn(f"no answer within {TIMEOUT_MS} ms", failure.getErrorMessage())

    def test_silent_connection_is_dropped_and_reconnected(self) -> None:
        store, endpoint, clock = self.ready_store()
        unanswered = store.hit("k", BUDGET, "fixed")
        clock.advance(TIMEOUT_MS / 1000)
        self.failureResultOf(unanswered, StoreUnavailable)
        self.assertTrue(endpoint.transport.disconnected)
        self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        clock.advance(reconnect_delay(1, lambda: 1.0))
        self.assertEqual(len(endpoint.connections), 2)
        endpoint.answer_handshake()
        self.assertTrue(store.state().healthy)

    def test_slow_but_answering_connection_is_kept(self) -> None:
        store, endpoint, clock = self.ready_store()
        first = store.hit("a", BUDGET, "fixed")
        clock.advance(0.1)
        second = store.hit("b", BUDGET, "fixed")
        clock.advance(0.1)
        self.failureResultOf(first, StoreUnavailable)
        self.assertTrue(endpoint.transport.disconnected, "nothing came back: dropped")
        self.failureResultOf(second, StoreUnavailable)

        store, endpoint, clock = self.ready_store()
        first = store.hit("a", BUDGET, "fixed")
        clock.advance(0.1)
        second = store.hit("b", BUDGET, "fixed")
        endpoint.reply(b"*2\r\n:1\r\n:1000\r\n")
        clock.advance(0.1)
        self.successResultOf(first)
        clock.advance(0.1)
        self.failureResultOf(second, StoreUnavailable)
        self.assertFalse(endpoint.transport.disconnected, "replies came back: kept")

    def test_late_reply_goes_to_nobody(self) -> None:
        store, endpoint, clock = self.ready_store()
        answered = store.hit("z", BUDGET, "fixed")
        clock.advance(0.1)
        timed_out = store.hit("a", BUDGET, "fixed")
        endpoint.reply(b"*2\r\n:1\r\n:1000\r\n")  # z's: the connection lives
        self.successResultOf(answered)
        clock.advance(0.2)
        self.failureResultOf(timed_out, StoreUnavailable)
        later = store.hit("b", BUDGET, "fixed")
        endpoint.reply(b"*2\r\n:2\r\n:1000\r\n")  # a's, late
        self.assertNoResult(later)
        endpoint.reply(b"*2\r\n:3\r\n:1000\r\n")
        self.assertEqual(self.successResultOf(later).current, 3)

    def test_too_many_pending_fail_at_once(self) -> None:
        store, endpoint, _ = self.ready_store(max_pending=2)
        waiting = [store.hit("k", BUDGET, "fixed") for _ in range(2)]
        failure = self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        self.assertIn("2 calls to Redis in flight", failure.getErrorMessage())
        endpoint.reply(b"*2\r\n:1\r\n:1000\r\n*2\r\n:2\r\n:1000\r\n")
        self.assertEqual([self.successResultOf(d).current for d in waiting], [1, 2])
        self.assertNoResult(store.hit("k", BUDGET, "fixed"))

    def test_outage_logged_once_and_recovery_once(self) -> None:
        events = capture_log(self)
        store, endpoint, clock = self.ready_store()
        del events[:]
        sent_before = store.hit("a", BUDGET, "fixed")
        failing = [store.hit("b", BUDGET, "fixed"), store.hit("c", BUDGET, "fixed")]
        endpoint.reply(b"*2\r\n:1\r\n:1000\r\n")  # keeps the connection
        endpoint.reply(b"-BUSY Redis is busy\r\n-BUSY Redis is busy\r\n")
        self.successResultOf(sent_before)
        for d in failing:
            self.failureResultOf(d, StoreUnavailable)
        self.assertEqual(levels(events), ["warn"])
        self.assertEqual(events[0]["reason"], "Redis error: BUSY Redis is busy")
        self.assertEqual(store.state(), redis_module.StoreState("redis", False, "Redis error: BUSY Redis is busy"))

        clock.advance(3)
        recovered = store.hit("d", BUDGET, "fixed")
        endpoint.reply(b"*2\r\n:1\r\n:1000\r\n")
        self.successResultOf(recovered)
        self.assertEqual(levels(events), ["warn", "info"])
        self.assertEqual((events[1]["outage_s"], events[1]["failed_hits"]), (3, 2))
        self.assertTrue(store.state().healthy)

    def test_success_of_a_call_sent_before_the_failure_does_not_end_the_outage(self) -> None:
        events = capture_log(self)
        store, endpoint, _ = self.ready_store()
        del events[:]
        failing = store.hit("a", BUDGET, "fixed")
        sent_before = store.hit("b", BUDGET, "fixed")
        endpoint.reply(b"-BUSY busy\r\n*2\r\n:1\r\n:1000\r\n")
        self.failureResultOf(failing)
        self.successResultOf(sent_before)
        self.assertEqual(levels(events), ["warn"])
        self.assertFalse(store.state().healthy)

    def test_connection_lost_reconnects_with_backoff(self) -> None:
        events = capture_log(self)
        store, endpoint, clock = self.ready_store()
        del events[:]
        in_flight = store.hit("k", BUDGET, "fixed")
        endpoint.refusing = True
        endpoint.drop()
        self.failureResultOf(in_flight, StoreUnavailable)
        for _ in range(5):
            self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        self.assertFalse(store.state().healthy)
        # Refused three times: 0.1, then 0.2, then 0.4 s apart.
        for delay in (0.1, 0.2, 0.4):
            attempts = endpoint.attempts
            clock.advance(delay - 0.001)
            self.assertEqual(endpoint.attempts, attempts)
            clock.advance(0.001)
            self.assertEqual(endpoint.attempts, attempts + 1)
        self.assertIn("refused by the test", store.state().detail)
        endpoint.refusing = False
        clock.advance(0.8)
        endpoint.answer_handshake()
        self.assertTrue(store.state().healthy)
        self.assertEqual(levels(events), ["warn", "info"])
        self.assertEqual(events[1]["failed_hits"], 6)

    def test_failed_handshake_backs_off_too(self) -> None:
        events = capture_log(self)
        store, endpoint, clock = self.store(url="redis://:wrong@h")
        store.startService()
        for delay in (0.1, 0.2, 0.4, 0.8):
            connections = len(endpoint.connections)
            endpoint.commands()
            endpoint.reply(b"-WRONGPASS invalid username-password pair\r\n" + b"-NOAUTH Authentication required.\r\n" * 2)
            self.assertTrue(endpoint.transport.disconnected)
            clock.advance(delay - 0.001)
            self.assertEqual(len(endpoint.connections), connections)
            clock.advance(0.001)
            self.assertEqual(len(endpoint.connections), connections + 1)
        self.assertIn("WRONGPASS", store.state().detail)
        self.assertEqual(levels(events), ["warn"])

    def test_unanswered_handshake_is_dropped(self) -> None:
        store, endpoint, clock = self.store(connect_timeout_s=1.5)
        store.startService()
        clock.advance(1.499)
        self.assertFalse(endpoint.transport.disconnected)
        clock.advance(0.001)
        self.assertTrue(endpoint.transport.disconnected)
        self.assertIn("no answer from Redis within 1.5 s", store.state().detail)

    def test_caller_cancelling_is_not_an_outage(self) -> None:
        events = capture_log(self)
        store, endpoint, _ = self.ready_store()
        cancelled = store.hit("k", BUDGET, "fixed")
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.assertEqual(levels(events), ["info"])
        self.assertTrue(store.state().healthy)

    def test_stop_closes_quietly(self) -> None:
        events = capture_log(self)
        store, endpoint, _ = self.ready_store()
        in_flight = store.hit("k", BUDGET, "fixed")
        self.successResultOf(store.stopService())
        self.assertFalse(endpoint.transport.connected)
        self.failureResultOf(in_flight, StoreUnavailable)
        self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        self.assertEqual(store.state(), redis_module.StoreState("redis", False, "stopped"))
        self.assertEqual(levels(events), ["info"])

    def test_stop_before_start(self) -> None:
        store, _, _ = self.store()
        self.successResultOf(store.stopService())
