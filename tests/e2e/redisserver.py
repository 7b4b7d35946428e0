"""
Redis for tests: a private C{redis-server} a test can stop and start again
on the same port (an outage and its recovery), a plain client for looking
at and cleaning up keys, and where the shared Redis is.

The private server keeps nothing on disk (C{--save "" --appendonly no},
its own C{--dir}) and listens on 127.0.0.1 only.  Commands that touch the
whole server (C{SCRIPT FLUSH}, C{SHUTDOWN}, C{FLUSHALL}) belong there,
never on the shared Redis on 6379.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import uuid
from typing import Any, List, Optional, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from qeetgw.ratelimit.resp import RedisError, RedisProtocol

#: How long starting or stopping a server may take.
BOUND_S = 10.0

#: The shared Redis every test run has (see C{.ci/run}): keys only, each
#: test under a prefix of its own (L{unique_prefix}), deleted after.
SHARED_PORT = 6379
SHARED_URL = f"redis://127.0.0.1:{SHARED_PORT}/0"


def unique_prefix() -> str:
    """
    A key prefix no other test uses, for the test's keys in the shared Redis.
    """
    return f"test:qeetgw:{uuid.uuid4().hex}:"


def free_port() -> int:
    """
    A loopback TCP port free right now (redis-server needs a number; it
    cannot take port 0 and say which it got).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@inlineCallbacks
def connect(port: int, host: str = "127.0.0.1", timeout: float = BOUND_S) -> Any:
    """
    Connect a plain L{RedisProtocol} to C{host:port}; fire with it.
    """
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    client = yield connectProtocol(endpoint, RedisProtocol())
    return client


@inlineCallbacks
def delete_keys(client: RedisProtocol, prefix: str) -> Any:
    """
    Delete every key that starts with C{prefix} (C{SCAN} and C{DEL}: never
    C{KEYS} or a flush, which would block or wipe a shared server).
    Fires with how many were deleted.
    """
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    cursor: bytes = b"0"
    deleted = 0
    while True:
        cursor, keys = yield client.execute("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        if keys:
            deleted += yield client.execute("DEL", *keys)
        if cursor == b"0":
            return deleted


class _ServerProcess(ProcessProtocol):
    """
    Keeps what redis-server prints (for the error when it will not start)
    and fires C{ended} when it exits.
    """

    def __init__(self) -> None:
        self.output: List[bytes] = []
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output.append(data)

    def processEnded(self, reason: Failure) -> None:
        if not reason.check(ProcessDone, ProcessTerminated):
            reason.printTraceback()
        self.ended.callback(None)


class RedisServer:
    """
    A redis-server of the test's own on 127.0.0.1, on one port across
    L{stop} and L{start}.

    @ivar port: where it listens.
    @ivar url: C{redis://127.0.0.1:port}.
    """

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(executable, os.X_OK):
            raise SkipTest("redis-server is not installed")
        self._executable = executable
        self._extra_args = list(extra_args)
        self._directory = tempfile.mkdtemp(prefix="qeetgw-redis-")
        self._process: Optional[_ServerProcess] = None
        self._transport: Any = None
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"

    @classmethod
    @inlineCallbacks
    def started(cls, test: TestCase, extra_args: Sequence[str] = ()) -> Any:
        """
        Start a server for the length of C{test}; fire with it.
        """
        server = cls(extra_args)
        test.addCleanup(server.remove)
        yield server.start()
        return server

    @inlineCallbacks
    def start(self) -> Any:
        """
        Start the server; fire once it answers C{PING}, or fail after
        L{BOUND_S} seconds.
        """
        assert self._process is None, "already running"
        args = [
            self._executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._directory,
            "--daemonize", "no",
            "--loglevel", "warning",
            *self._extra_args,
        ]
        self._process = _ServerProcess()
        self._transport = reactor.spawnProcess(
            self._process, self._executable, args, env={}, childFDs={0: "w", 1: "r", 2: "r"}
        )
        deadline = reactor.seconds() + BOUND_S
        while True:
            if self._process.ended.called:
                output = b"".join(self._process.output).decode("utf-8", "replace")
                self._process = None
                raise RuntimeError(f"redis-server exited at start:\n{output}")
            try:
                client = yield connect(self.port, timeout=1)
            except Exception:
                if reactor.seconds() > deadline:
                    raise
                yield deferLater(reactor, 0.02, lambda: None)
                continue
            try:
                yield client.execute("PING")
                return None
            except RedisError as error:
                # NOAUTH is an answer (the server is up, with a password);
                # LOADING is not yet.
                if error.code != "LOADING":
                    return None
                if reactor.seconds() > deadline:
                    raise
            finally:
                client.transport.loseConnection()

    @inlineCallbacks
    def stop(self) -> Any:
        """
        Stop the server (SIGTERM, then SIGKILL past L{BOUND_S}); fire when
        it has exited.
        """
        process, self._process = self._process, None
        if process is None:
            return None
        self._signal("TERM")
        # resume() first, in case it was paused: a stopped process does not
        # act on SIGTERM.
        self._signal("CONT")
        timer = reactor.callLater(BOUND_S, self._signal, "KILL")
        yield process.ended
        if timer.active():
            timer.cancel()
        return None

    def pause(self) -> None:
        """
        Freeze the server (SIGSTOP): connections stay open and nothing is
        answered, as with a Redis that hangs.
        """
        self._signal("STOP")

    def resume(self) -> None:
        """
        Thaw a paused server (SIGCONT).
        """
        self._signal("CONT")

    @inlineCallbacks
    def remove(self) -> Any:
        """
        Stop the server and delete its directory.
        """
        yield self.stop()
        shutil.rmtree(self._directory, ignore_errors=True)

    def _signal(self, name: str) -> None:
        if self._transport is not None and self._transport.pid is not None:
            os.kill(self._transport.pid, getattr(signal, "SIG" + name))
