"""
The Redis store: one rate limit shared by every replica of the gateway.

Each hit is one round trip, an C{EVALSHA} of a short Lua script that counts
and sets the expiry atomically, so two replicas racing for the last request
of a budget cannot both get it, and every counter expires by itself.

Why a client of our own (L{qeetgw.ratelimit.resp}) and no new dependency
such as txredisapi: the store needs five commands (C{EVALSHA}, C{EVAL},
C{SCRIPT LOAD}, C{AUTH}, C{SELECT}) and three behaviours a general client
does not promise together: a hard bound on every call, failing at once
while disconnected instead of queueing until a reconnect, and reconnecting
with backoff and jitter.  Twisted's L{ClientService} gives the last one,
RESP2 is a page of code, and a library would bring a connection pool, a
command set and a release cadence to track, for what fits here in two
short modules.

The store never makes a request wait: without a ready connection, with too
many calls in flight, or after C{timeout_ms}, a hit fails with
L{StoreUnavailable} and the rate limiter decides what that means (fail open
or closed).  An outage is logged once as a warning when it starts and once
as info when it ends.

Keys are C{{prefix}{budget}:{key}} (fixed window) and
C{{prefix}{budget}:{key}:{window index}} (sliding window); the sliding
script derives its keys from the first, so the store needs one Redis server
(a primary), not Redis Cluster.  Redis 5 or newer (6 or newer for an ACL
user name in the URL).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Callable, Dict, Optional

import attrs
from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FirstError,
    TimeoutError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qeetgw.config import RedisURL, parse_redis_url
from qeetgw.hostendpoint import HostEndpoint
from qeetgw.ratelimit.resp import Argument, RedisError, RedisProtocol, Reply
from qeetgw.ratelimit.store import (
    Algorithm,
    Budget,
    Count,
    IRateLimitStore,
    StoreState,
    StoreUnavailable,
)

_log = Logger()


#: Calls in flight on the connection past which new hits fail at once: a
#: slow Redis then sheds load instead of collecting a queue it cannot serve.
MAX_PENDING = 1000

#: Bound on a TCP connect and, separately, on the handshake after it.
CONNECT_TIMEOUT_S = 2.0

#: Reconnection backoff: the first delay, doubling up to the last.
FIRST_RETRY_S = 0.1
LAST_RETRY_S = 2.0


@attrs.frozen
class _Script:
    """
    A Lua script and its SHA-1, the name C{EVALSHA} calls it by.
    """

    source: bytes
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source).hexdigest()


# KEYS[1]: the counter.  ARGV[1]: the window, in ms.  Returns the count and
# the milliseconds left in the key's window.
FIXED_WINDOW = _Script(
    b"""
local current = redis.call('INCR', KEYS[1])
if current == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  -- A counter without an expiry (written by hand, or by a client that died
  -- between an INCR and a PEXPIRE of its own) must not live forever.
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {current, ttl}
"""
)

# KEYS[1]: the counters' common prefix.  ARGV[1]: the window, in ms.
# Returns this window's count, the previous window's, and how far into this
# window Redis's clock is.
SLIDING_WINDOW = _Script(
    b"""
-- Redis's clock, not the gateway's: every replica sees the same windows.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[1])
local index = math.floor(now / window)
local key = KEYS[1] .. ':' .. string.format('%d', index)
local current = redis.call('INCR', key)
if current == 1 or redis.call('PTTL', key) < 0 then
  -- Two windows: this counter is read as the previous one in the next.
  redis.call('PEXPIRE', key, 2 * window)
end
local previous = redis.call('GET', KEYS[1] .. ':' .. string.format('%d', index - 1))
return {current, tonumber(previous) or 0, now % window}
"""
)

_SCRIPTS: Dict[str, _Script] = {"fixed": FIXED_WINDOW, "sliding": SLIDING_WINDOW}


def reconnect_delay(attempt: int, random: Callable[[], float] = random.random) -> float:
    """
    Seconds to wait before reconnection attempt C{attempt} (1, 2, ...):
    0.1 s doubling to 2 s, each scaled by a random 50 to 100 %, so replicas
    that lost Redis together do not come back in step.
    """
    base = min(FIRST_RETRY_S * 2 ** min(attempt - 1, 16), LAST_RETRY_S)
    return base * (0.5 + random() / 2)


def count_from_reply(reply: Reply, algorithm: Algorithm, window_ms: int) -> Count:
    """
    The L{Count} a script's reply stands for.

    @raise StoreUnavailable: when the reply is not the script's.
    """
    if not (isinstance(reply, list) and all(isinstance(n, int) for n in reply)):
        raise StoreUnavailable(f"unexpected reply from Redis: {reply!r}")
    if algorithm == "fixed" and len(reply) == 2:
        current, ttl = reply
        elapsed = min(max(window_ms - ttl, 0), window_ms)
        return Count(current, 0, elapsed, window_ms)
    if algorithm == "sliding" and len(reply) == 3:
        current, previous, elapsed = reply
        return Count(current, previous, elapsed, window_ms)
    raise StoreUnavailable(f"unexpected reply from Redis: {reply!r}")


class _Connection(RedisProtocol):
    """
    A L{RedisProtocol} that tells its store when it connects and closes.
    """

    def __init__(self, store: RedisStore) -> None:
        super().__init__()
        self._store = store

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            # Nagle's algorithm would hold a pipelined command back until
            # the previous reply's ACK: tens of ms on a call bounded by a
            # few hundred.  Keep-alive notices a peer that vanished.
            self.transport.setTcpNoDelay(True)
            self.transport.setTcpKeepAlive(True)
        self._store._connected(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._store._disconnected(self)


class _ConnectionFactory(Factory):
    """
    Builds the store's connections.
    """

    # Factory logs "Starting factory" on every connection otherwise.
    noisy = False

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def buildProtocol(self, addr: IAddress) -> _Connection:
        return _Connection(self._store)


@implementer(IStreamClientEndpoint)
@attrs.frozen(repr=False)
class _ReportingEndpoint:
    """
    An endpoint that reports why a connection attempt failed, which
    L{ClientService} keeps to itself.
    """

    endpoint: IStreamClientEndpoint
    on_failure: Callable[[Failure], None]

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        def report(failure: Failure) -> Failure:
            self.on_failure(failure)
            return failure

        return self.endpoint.connect(factory).addErrback(report)

    def __repr__(self) -> str:
        # ClientService logs its endpoint on every retry: show the address.
        return repr(self.endpoint)


@attrs.define
class _Outage:
    """
    An outage in progress: when it began, and how many hits failed in it.
    """

    began: float
    failed_hits: int = 0


@implementer(IRateLimitStore)
class RedisStore(Service):
    """
    Counts hits in Redis, so that every replica shares one limit.

    Connected while the service runs (a L{ClientService} of its own,
    reconnecting with backoff).

    @param url: C{redis://[[user]:password@]host[:port][/db]}.
    @param prefix: put before every key, so counters never meet other data.
    @param timeout_ms: the longest a hit may take, connection included.
    @param reactor: the clock for timeouts and retries; also connects, unless
        C{endpoint_factory} is given.
    @param endpoint_factory: makes the endpoint to connect to (tests pass
        one); by default a L{qeetgw.hostendpoint.HostEndpoint} to the URL's host and port.
    @param max_pending: calls in flight past which hits fail at once.
    @param connect_timeout_s: the bound on a TCP connect, and on the
        handshake (C{AUTH}, C{SELECT}, C{SCRIPT LOAD}) after it.
    @param random: jitter for reconnection delays (tests fix it).

    @raise ValueError: for a bad URL or a timeout that is not positive.
    """

    name = "rate-limit-store"

    def __init__(
        self,
        url: str,
        prefix: str,
        timeout_ms: int,
        reactor: Any,
        endpoint_factory: Optional[Callable[[RedisURL], IStreamClientEndpoint]] = None,
        max_pending: int = MAX_PENDING,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        random: Callable[[], float] = random.random,
    ) -> None:
        if timeout_ms <= 0:
            raise ValueError(f"the Redis timeout must be positive, not {timeout_ms} ms")
        self._url = parse_redis_url(url)
        self._prefix = prefix
        self._timeout_ms = timeout_ms
        self._clock: IReactorTime = reactor
        self._max_pending = max_pending
        self._connect_timeout_s = connect_timeout_s
        self._random = random
        if endpoint_factory is None:
            self._endpoint: IStreamClientEndpoint = HostEndpoint(
                reactor, self._url.host, self._url.port, timeout=connect_timeout_s
            )
        else:
            self._endpoint = endpoint_factory(self._url)
        self._service: Optional[ClientService] = None
        self._ready: Optional[_Connection] = None
        self._retries = 0
        self._detail = "not started"
        self._outage: Optional[_Outage] = None
        self._ever_ready = False
        # Calls are numbered; an outage ends with the success of a call sent
        # after its last failure (not of one sent before, still in flight).
        self._calls_sent = 0
        self._last_failure = 0

    # IRateLimitStore (and IService)

    def startService(self) -> None:
        """
        Connect, and keep reconnecting with backoff until L{stopService}.
        """
        super().startService()
        if self._service is not None:
            return
        self._detail = "connecting"
        self._service = ClientService(
            _ReportingEndpoint(self._endpoint, self._connect_failed),
            _ConnectionFactory(self),
            retryPolicy=self._next_delay,
            clock=self._clock,
        )
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop reconnecting and close the connection; fire when it is closed.
        Hits in flight fail with L{StoreUnavailable}.
        """
        super().stopService()
        service, self._service = self._service, None
        if service is None:
            return succeed(None)
        self._detail = "stopped"
        self._outage = None
        return service.stopService().addCallback(lambda _: None)

    def state(self) -> StoreState:
        """
        Healthy while connected and counting, else why not.
        """
        if self._ready is not None and self._outage is None:
            return StoreState("redis", True, f"connected to {self._url}")
        return StoreState("redis", False, self._detail)

    def hit(self, key: str, budget: Budget, algorithm: Algorithm) -> Deferred[Count]:
        """
        Count one hit in one round trip; fail with L{StoreUnavailable} at
        once when not connected or overloaded, or after C{timeout_ms}.
        """
        if algorithm not in _SCRIPTS:
            raise ValueError(f"unknown rate-limit algorithm {algorithm!r}")
        script = _SCRIPTS[algorithm]
        connection = self._ready
        if connection is None or not connection.usable:
            # Not news: the failure that closed the connection began the
            # outage; this only counts against it.
            if self._outage is not None:
                self._outage.failed_hits += 1
            return fail(StoreUnavailable(f"Redis unavailable: {self._detail}"))
        if connection.pending >= self._max_pending:
            reason = f"{connection.pending} calls to Redis in flight"
            self._failed(reason, hit=True)
            return fail(StoreUnavailable(f"Redis unavailable: {reason}"))
        self._calls_sent += 1
        call = self._calls_sent
        replies_before = connection.replies_received
        result = self._evaluate(connection, script, f"{self._prefix}{budget.name}:{key}", budget.window_ms)
        result.addCallback(count_from_reply, algorithm, budget.window_ms)
        result.addTimeout(self._timeout_ms / 1000, self._clock)
        return result.addCallbacks(
            self._hit_counted,
            self._hit_failed,
            callbackArgs=(call,),
            errbackArgs=(connection, replies_before),
        )

    # Hits

    def _evaluate(self, connection: _Connection, script: _Script, key: str, window_ms: int) -> Deferred[Reply]:
        args: tuple[Argument, ...] = (1, key, window_ms)

        def no_script(failure: Failure) -> Any:
            failure.trap(RedisError)
            if failure.value.code != "NOSCRIPT":
                return failure
            # The server lost its scripts since we connected (SCRIPT FLUSH,
            # a failover): send the source once; EVAL caches it again, so
            # the next EVALSHA finds it.
            return connection.execute("EVAL", script.source, *args)

        return connection.execute("EVALSHA", script.sha, *args).addErrback(no_script)

    def _hit_counted(self, count: Count, call: int) -> Count:
        if self._outage is not None and call > self._last_failure:
            self._recovered()
        return count

    def _hit_failed(self, failure: Failure, connection: _Connection, replies_before: int) -> Failure:
        if failure.check(CancelledError):
            # Cancelled by the caller (its client went away): not Redis's fault.
            return failure
        if failure.check(TimeoutError):
            reason = f"no answer within {self._timeout_ms} ms"
            if connection.replies_received == replies_before and connection.usable:
                # Nothing at all came back while this call waited: the
                # server or the path to it is stuck, and TCP may take hours
                # to say so.  Drop the connection and reconnect.
                connection.abort(f"nothing came back for {self._timeout_ms} ms")
        elif failure.check(RedisError):
            reason = f"Redis error: {failure.getErrorMessage()}"
        else:
            reason = failure.getErrorMessage()
        self._failed(reason, hit=True)
        return Failure(StoreUnavailable(f"Redis unavailable: {reason}"))

    # Connections

    def _next_delay(self, attempt: int) -> float:
        # ClientService restarts its count each time TCP connects, so a
        # server that accepts and then fails the handshake (a wrong
        # password, LOADING) would be retried at the first delay forever:
        # count retries since the last ready connection ourselves.
        self._retries += 1
        return reconnect_delay(self._retries, self._random)

    def _connect_failed(self, failure: Failure) -> None:
        if self._service is not None and not failure.check(CancelledError):
            self._failed(f"cannot connect to {self._url}: {failure.getErrorMessage()}")

    def _connected(self, connection: _Connection) -> None:
        commands: list[tuple[Argument, ...]] = []
        if self._url.password is not None:
            if self._url.username is not None:
                commands.append(("AUTH", self._url.username, self._url.password))
            else:
                commands.append(("AUTH", self._url.password))
        if self._url.db != 0:
            commands.append(("SELECT", self._url.db))
        for script in _SCRIPTS.values():
            commands.append(("SCRIPT", "LOAD", script.source))
        # Pipelined: one round trip.  A hit before it is answered fails at
        # once, as when not connected.  (Not ClientService's
        # prepareConnection: when that fails, ClientService leaves the
        # connection open, and a connection lost during it raises
        # NoTransition inside the reactor.)
        answers = gatherResults([connection.execute(*command) for command in commands], consumeErrors=True)
        answers.addTimeout(
            self._connect_timeout_s,
            self._clock,
            onTimeoutCancel=lambda result, timeout: Failure(
                StoreUnavailable(f"no answer from Redis within {timeout} s of connecting")
            ),
        )
        answers.addCallbacks(
            lambda _: self._handshake_done(connection),
            lambda failure: self._handshake_failed(connection, failure),
        )

    def _handshake_done(self, connection: _Connection) -> None:
        if not connection.usable:
            return
        self._ready = connection
        self._retries = 0
        if self._outage is not None:
            self._recovered()
        elif not self._ever_ready:
            _log.info("Rate-limit store connected to {redis}", redis=str(self._url))
        self._ever_ready = True

    def _handshake_failed(self, connection: _Connection, failure: Failure) -> None:
        if failure.check(FirstError):
            failure = failure.value.subFailure
        if connection.usable:
            connection.abort(f"set-up failed: {failure.getErrorMessage()}")

    def _disconnected(self, connection: _Connection) -> None:
        if connection is self._ready:
            self._ready = None
        if self._service is not None:
            self._failed(connection.close_reason or "connection to Redis lost")

    # Health

    def _failed(self, reason: str, hit: bool = False) -> None:
        """
        Note a failure; the first after a healthy spell begins an outage.
        """
        if self._service is None:
            # Stopped: what fails now is the stopping, not Redis.
            return
        self._last_failure = self._calls_sent
        self._detail = reason
        if self._outage is None:
            self._outage = _Outage(began=self._clock.seconds())
            _log.warn(
                "Rate-limit store: Redis at {redis} unavailable ({reason}); "
                "hits fail until it recovers",
                redis=str(self._url),
                reason=reason,
            )
        if hit:
            self._outage.failed_hits += 1

    def _recovered(self) -> None:
        outage, self._outage = self._outage, None
        assert outage is not None
        _log.info(
            "Rate-limit store: Redis at {redis} recovered after {outage_s:.1f} s; "
            "{failed_hits} hits failed meanwhile",
            redis=str(self._url),
            outage_s=self._clock.seconds() - outage.began,
            failed_hits=outage.failed_hits,
        )
