"""
L{qeetgw.ratelimit.redis.RedisStore} against real Redis: the shared server
on 127.0.0.1:6379 (each test under a key prefix of its own, deleted
afterwards) and private redis-servers (L{tests.e2e.redisserver}) for what
touches a whole server (SCRIPT FLUSH, passwords, outages).  The store's
timing and failure handling on a fake clock are in L{tests.test_redis_store}.
"""

from __future__ import annotations

import time
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from qeetgw.ratelimit.redis import FIXED_WINDOW, RedisStore
from qeetgw.ratelimit.resp import RedisProtocol, ReplyParser
from qeetgw.ratelimit.store import Budget, StoreUnavailable
from tests.e2e.redisserver import (
    SHARED_PORT,
    RedisServer,
    connect,
    delete_keys,
    free_port,
    unique_prefix,
)
from tests.e2e.support import wait_for
from tests.test_redis_store import BUDGET, capture_log, levels


def sleep(seconds: float) -> Deferred[None]:
    """
    Wait C{seconds} of real time (these tests watch Redis's clock).
    """
    return deferLater(reactor, max(seconds, 0), lambda: None)


class RealRedisTestCase(TestCase):
    """
    Tests on the shared Redis: a key prefix per test, its keys deleted after.
    """

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.prefix = unique_prefix()
        self.events = capture_log(self)
        self.client = yield self.connect_client()

    @inlineCallbacks
    def connect_client(self, port: int = SHARED_PORT, db: int = 0) -> Any:
        """
        A plain client, closed after the test and its keys deleted.
        """
        client: RedisProtocol = yield connect(port)
        self.addCleanup(client.transport.loseConnection)
        if db:
            yield client.execute("SELECT", db)
        self.addCleanup(delete_keys, client, self.prefix)
        return client

    @inlineCallbacks
    def start_store(self, url: str = f"redis://127.0.0.1:{SHARED_PORT}", timeout_ms: int = 2000, **kwargs: Any) -> Any:
        """
        A started store, stopped after the test; fires once it is ready.
        """
        store = RedisStore(url, self.prefix, timeout_ms, reactor, **kwargs)
        store.startService()
        self.addCleanup(store.stopService)
        yield wait_for(lambda: store.state().healthy, "connected", within=5, every=0.02)
        return store


class SharedRedisStoreTests(RealRedisTestCase):
    """
    L{RedisStore} counting in the shared Redis.
    """

    @inlineCallbacks
    def test_fixed_window_counts_and_expires_in_ms(self) -> None:
        store = yield self.start_store()
        budget = Budget("default", 5, 10_000)
        counts = []
        for _ in range(3):
            counts.append((yield store.hit("1.2.3.4", budget, "fixed")))
        self.assertEqual([c.current for c in counts], [1, 2, 3])
        self.assertTrue(all(c.previous == 0 and c.window_ms == 10_000 for c in counts))
        self.assertTrue(all(0 <= c.elapsed_ms < 1000 for c in counts), counts)
        ttl = yield self.client.execute("PTTL", f"{self.prefix}default:1.2.3.4")
        self.assertTrue(0 < ttl <= 10_000, ttl)

    @inlineCallbacks
    def test_fixed_window_starts_again_when_its_key_expires(self) -> None:
        store = yield self.start_store()
        budget = Budget("default", 5, 100)
        yield store.hit("k", budget, "fixed")
        second = yield store.hit("k", budget, "fixed")
        self.assertEqual(second.current, 2)
        yield sleep(0.2)
        self.assertEqual((yield self.client.execute("EXISTS", f"{self.prefix}default:k")), 0)
        third = yield store.hit("k", budget, "fixed")
        self.assertEqual(third.current, 1)

    @inlineCallbacks
    def test_counter_without_expiry_gets_one(self) -> None:
        store = yield self.start_store()
        key = f"{self.prefix}default:k"
        yield self.client.execute("SET", key, 5)
        count = yield store.hit("k", Budget("default", 10, 5000), "fixed")
        self.assertEqual(count.current, 6)
        ttl = yield self.client.execute("PTTL", key)
        self.assertTrue(0 < ttl <= 5000, ttl)

    @inlineCallbacks
    def test_sliding_window_across_boundaries(self) -> None:
        store = yield self.start_store()
        window = 300
        budget = Budget("default", 5, window)
        probe = yield store.hit("k", budget, "sliding")
        # Start just after a window begins, so the next hits share one.
        yield sleep((window - probe.elapsed_ms + 20) / 1000)
        counts = []
        for _ in range(3):
            counts.append((yield store.hit("k", budget, "sliding")))
        self.assertEqual([(c.current, c.previous) for c in counts], [(1, 1), (2, 1), (3, 1)])
        self.assertTrue(all(0 <= c.elapsed_ms < window for c in counts), counts)
        yield sleep((window - counts[-1].elapsed_ms + 20) / 1000)
        after = yield store.hit("k", budget, "sliding")
        self.assertEqual((after.current, after.previous), (1, 3))
        # A whole window without hits: the previous count is 0 again.
        yield sleep((2 * window - after.elapsed_ms + 20) / 1000)
        later = yield store.hit("k", budget, "sliding")
        self.assertEqual((later.current, later.previous), (1, 0))

    @inlineCallbacks
    def test_sliding_keys_expire_by_themselves(self) -> None:
        store = yield self.start_store()
        yield store.hit("k", Budget("default", 5, 100), "sliding")
        cursor, keys = yield self.client.execute("SCAN", 0, "MATCH", self.prefix + "*", "COUNT", 1000)
        self.assertEqual(len(keys), 1)
        self.assertTrue(keys[0].startswith(f"{self.prefix}default:k:".encode()), keys)
        ttl = yield self.client.execute("PTTL", keys[0])
        self.assertTrue(0 < ttl <= 200, ttl)
        yield sleep(0.25)
        self.assertEqual((yield self.client.execute("EXISTS", keys[0])), 0)

    @inlineCallbacks
    def test_budgets_and_keys_count_apart(self) -> None:
        store = yield self.start_store()
        login = Budget("/api/v1/auth/login", 5, 10_000)
        yield store.hit("a", BUDGET, "fixed")
        yield store.hit("a", BUDGET, "fixed")
        self.assertEqual((yield store.hit("a", login, "fixed")).current, 1)
        self.assertEqual((yield store.hit("b", BUDGET, "fixed")).current, 1)

    @inlineCallbacks
    def test_two_stores_share_one_count(self) -> None:
        one = yield self.start_store()
        two = yield self.start_store()
        budget = Budget("default", 100, 10_000)
        for store in (one, two, one, two, two):
            last = yield store.hit("client", budget, "fixed")
        self.assertEqual(last.current, 5)
        for store in (one, two):
            last = yield store.hit("client", budget, "sliding")
        self.assertEqual(last.current, 2)

    @inlineCallbacks
    def test_concurrent_hits_from_two_stores_get_distinct_counts(self) -> None:
        one = yield self.start_store()
        two = yield self.start_store()
        for algorithm in ("fixed", "sliding"):
            # An hour: the sliding hits all but surely share one window.
            budget = Budget(algorithm, 100, 3_600_000)
            counts = yield gatherResults(
                [(one if i % 2 else two).hit("client", budget, algorithm) for i in range(200)]
            )
            self.assertEqual(sorted(c.current for c in counts), list(range(1, 201)), algorithm)

    @inlineCallbacks
    def test_database_from_the_url(self) -> None:
        db15 = yield self.connect_client(db=15)
        store = yield self.start_store(f"redis://127.0.0.1:{SHARED_PORT}/15")
        yield store.hit("k", BUDGET, "fixed")
        key = f"{self.prefix}default:k"
        self.assertEqual((yield db15.execute("EXISTS", key)), 1)
        self.assertEqual((yield self.client.execute("EXISTS", key)), 0)

    @inlineCallbacks
    def test_healthy_state_and_one_info_event(self) -> None:
        store = yield self.start_store()
        self.assertEqual(store.state().detail, f"connected to redis://127.0.0.1:{SHARED_PORT}/0")
        self.assertEqual(levels(self.events), ["info"])


class UnreachableRedisTests(RealRedisTestCase):
    """
    Hits fail fast, within the bound, when Redis is not there or silent.
    """

    def test_not_connected_fails_at_once(self) -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}", self.prefix, 2000, reactor)
        self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)

    @inlineCallbacks
    def test_refused_connection_fails_at_once_and_says_why(self) -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}", self.prefix, 2000, reactor)
        store.startService()
        self.addCleanup(store.stopService)
        yield wait_for(lambda: "refused" in store.state().detail, "refused", within=5, every=0.02)
        self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        self.assertFalse(store.state().healthy)
        yield sleep(0.5)  # a few retries
        self.assertEqual(levels(self.events), ["warn"])

    @inlineCallbacks
    def test_silent_server_times_out_within_the_bound(self) -> None:
        port = self.listen(answer_handshake=True)
        store = yield self.start_store(f"redis://127.0.0.1:{port}", timeout_ms=200)
        started = time.monotonic()
        with self.assertRaises(StoreUnavailable) as raised:
            yield store.hit("k", BUDGET, "fixed")
        elapsed = time.monotonic() - started
        self.assertTrue(0.19 <= elapsed < 0.4, elapsed)
        self.assertIn("no answer within 200 ms", str(raised.exception))
        self.assertFalse(store.state().healthy)

    @inlineCallbacks
    def test_server_that_never_answers_is_never_ready(self) -> None:
        port = self.listen(answer_handshake=False)
        store = RedisStore(f"redis://127.0.0.1:{port}", self.prefix, 200, reactor, connect_timeout_s=0.3)
        store.startService()
        self.addCleanup(store.stopService)
        yield wait_for(lambda: len(self.accepted) >= 2, "reconnected after the set-up timed out", within=5, every=0.02)
        self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        self.assertIn("no answer from Redis within 0.3 s", store.state().detail)

    def listen(self, answer_handshake: bool) -> int:
        """
        A loopback server that reads commands and answers none, or only the
        handshake's; returns its port.
        """
        self.accepted: List[Protocol] = []
        test = self

        class Silent(Protocol):
            def connectionMade(self) -> None:
                test.accepted.append(self)
                self.parser = ReplyParser()

            def dataReceived(self, data: bytes) -> None:
                for command in self.parser.feed(data):
                    if answer_handshake and command[0] == b"SCRIPT":
                        self.transport.write(b"$40\r\n" + b"0" * 40 + b"\r\n")

        listening = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(lambda: [p.transport.abortConnection() for p in self.accepted])
        return int(listening.getHost().port)


class PrivateRedisStoreTests(RealRedisTestCase):
    """
    L{RedisStore} against a redis-server of the test's own: what touches a
    whole server, and outages.
    """

    def setUp(self) -> None:
        self.prefix = unique_prefix()
        self.events = capture_log(self)

    @inlineCallbacks
    def test_noscript_recovery_evals_once_and_caches_again(self) -> None:
        server = yield RedisServer.started(self)
        client = yield self.connect_client(server.port)
        store = yield self.start_store(server.url)
        yield store.hit("k", BUDGET, "fixed")
        yield client.execute("SCRIPT", "FLUSH")
        yield client.execute("CONFIG", "RESETSTAT")
        counts = []
        for _ in range(3):
            counts.append((yield store.hit("k", BUDGET, "fixed")))
        self.assertEqual([c.current for c in counts], [2, 3, 4])
        self.assertEqual((yield client.execute("SCRIPT", "EXISTS", FIXED_WINDOW.sha)), [1])
        stats = (yield client.execute("INFO", "commandstats")).decode()
        self.assertIn("cmdstat_eval:calls=1,", stats)
        self.assertIn("cmdstat_evalsha:calls=3,", stats)
        self.assertTrue(store.state().healthy)

    @inlineCallbacks
    def test_password(self) -> None:
        server = yield RedisServer.started(self, ["--requirepass", "s3cret:@"])
        store = yield self.start_store(f"redis://:s3cret%3A%40@127.0.0.1:{server.port}")
        self.assertEqual((yield store.hit("k", BUDGET, "fixed")).current, 1)

    @inlineCallbacks
    def test_acl_user(self) -> None:
        server = yield RedisServer.started(self, ["--user", "gateway", "on", ">pw", "~*", "+@all"])
        store = yield self.start_store(f"redis://gateway:pw@127.0.0.1:{server.port}")
        self.assertEqual((yield store.hit("k", BUDGET, "fixed")).current, 1)

    @inlineCallbacks
    def test_wrong_password_is_one_outage(self) -> None:
        server = yield RedisServer.started(self, ["--requirepass", "right"])
        store = RedisStore(f"redis://:hunter2@127.0.0.1:{server.port}", self.prefix, 500, reactor)
        store.startService()
        self.addCleanup(store.stopService)
        yield wait_for(lambda: "WRONGPASS" in store.state().detail, "refused", within=5, every=0.02)
        yield sleep(0.5)  # a few retries
        self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        self.assertEqual(levels(self.events), ["warn"])
        self.assertNotIn("hunter2", store.state().detail + repr(self.events))

    @inlineCallbacks
    def test_outage_and_recovery(self) -> None:
        server = yield RedisServer.started(self)
        store = yield self.start_store(server.url, timeout_ms=500)
        self.assertEqual((yield store.hit("k", BUDGET, "fixed")).current, 1)

        yield server.stop()
        with self.assertRaises(StoreUnavailable):
            yield store.hit("k", BUDGET, "fixed")
        yield wait_for(lambda: not store.state().healthy, "unhealthy", within=5, every=0.02)
        for _ in range(20):
            started = time.monotonic()
            self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
            self.assertLess(time.monotonic() - started, 0.05)
        yield sleep(1)  # some reconnection attempts, refused
        self.assertEqual(levels(self.events), ["info", "warn"])

        yield server.start()
        yield wait_for(lambda: store.state().healthy, "reconnected", within=5, every=0.02)
        # The restarted server kept nothing: counting starts again.
        self.assertEqual((yield store.hit("k", BUDGET, "fixed")).current, 1)
        self.assertEqual(levels(self.events), ["info", "warn", "info"])
        self.assertGreaterEqual(self.events[2]["failed_hits"], 20)

    @inlineCallbacks
    def test_hung_server_times_out_and_recovers(self) -> None:
        server = yield RedisServer.started(self)
        store = yield self.start_store(server.url, timeout_ms=200, connect_timeout_s=0.5)
        server.pause()
        started = time.monotonic()
        with self.assertRaises(StoreUnavailable):
            yield store.hit("k", BUDGET, "fixed")
        self.assertLess(time.monotonic() - started, 0.4)
        self.failureResultOf(store.hit("k", BUDGET, "fixed"), StoreUnavailable)
        yield sleep(1)  # reconnects, whose set-up times out
        server.resume()
        yield wait_for(lambda: store.state().healthy, "recovered", within=5, every=0.02)
        # 2 if the hit that timed out was read by Redis after it woke.
        self.assertIn((yield store.hit("k", BUDGET, "fixed")).current, (1, 2))
        self.assertEqual(levels(self.events), ["info", "warn", "info"])
