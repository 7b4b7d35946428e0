"""
Restarts that refuse nobody: the drain sequence with /ready, and systemd
socket activation with a socket handed over as systemd does.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    PROJECT_ROOT,
    GatewayProcess,
    connect_raw,
    exchange,
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    spawn_gateway,
    stop_workers_at_cleanup,
    twistd_command,
    wait_for,
    wait_until_refused,
)
from tests.e2e.upstreams import ScriptedUpstream
from tests.memory import parse_response


def keep_alive_get(path: bytes) -> bytes:
    """
    A request that does not ask to close: the server decides.
    """
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class DrainTests(TestCase):
    """
    SIGTERM: not ready, serve for the delay, stop listening, finish
    in-flight requests with Connection: close, exit 0.
    """

    timeout = 60

    #: SHUTDOWN_DELAY_MS, in seconds: long enough for two requests on a busy
    #: machine, since what the test checks within the delay must happen in it.
    delay = 3.0

    @inlineCallbacks
    def test_drain_sequence(self) -> Any:
        upstream = ScriptedUpstream()
        # The held request must outlive the waits below: neither its timeout
        # (5 s) nor the grace (10 s) may end it first.
        env = gateway_environment(
            listen_upstream(self, upstream),
            SHUTDOWN_DELAY_MS=str(int(self.delay * 1000)),
            SHUTDOWN_GRACE_MS="60000",
            GATEWAY_PROXY_TIMEOUT_MS="60000",
        )
        process = spawn_gateway(self, env)
        port = yield process.port
        ready = yield fetch(port, request(b"GET", b"/ready"))
        self.assertEqual((ready.code, ready.json()["status"]), (200, "ready"))
        held = upstream.wait_held()
        in_flight = exchange(port, keep_alive_get(b"/api/v1/orders/slow"))
        pending = yield held
        terminated = time.monotonic()
        process.terminate()
        # The drain's first event is logged once /ready has turned false.
        yield wait_for(lambda: process.logged("qeetgw.process.service", "draining"), "draining")
        # Within the delay: not ready, but still serving, each response the
        # connection's last.
        draining = yield fetch(port, request(b"GET", b"/ready"))
        self.assertEqual((draining.code, draining.json()["status"]), (503, "draining"))
        raw, _ = yield exchange(port, keep_alive_get(b"/api/v1/users/echo"))
        served = parse_response(raw)[0]
        self.assertEqual((served.code, served.header(b"connection")), (200, b"close"))
        # After the delay, not before: no longer listening.
        refused = yield wait_until_refused(port, within=self.delay + 15)
        self.assertGreaterEqual(refused - terminated, self.delay)
        # The request in flight all along is answered, and closes.
        pending.setHeader(b"content-length", b"4")
        pending.write(b"done")
        pending.finish()
        raw, _ = yield in_flight
        finished = parse_response(raw)[0]
        self.assertEqual((finished.code, finished.body, finished.header(b"connection")), (200, b"done", b"close"))
        code = yield process.ended
        self.assertEqual(code, 0, process.text())


# Sets LISTEN_PID to its own pid, then becomes twistd (exec keeps the pid),
# which is what systemd does between fork and exec.
_AS_SYSTEMD = (
    "import os, sys\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.execv(sys.executable, sys.argv[1:])\n"
)


class SocketActivationTests(TestCase):
    """
    C{--port systemd:domain=INET:index=0} with a socket passed as systemd
    passes it.
    """

    timeout = 60

    def activate(self, listening: socket.socket, upstream_url: str, *options: str) -> GatewayProcess:
        process = GatewayProcess()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": PROJECT_ROOT,
            "LOG_FORMAT": "json",
            "LISTEN_FDS": "1",
            # systemd 227 and later name the sockets; Twisted ignores a count
            # without names.
            "LISTEN_FDNAMES": "qeetgw.socket",
            **gateway_environment(upstream_url),
        }
        command = [sys.executable, "-c", _AS_SYSTEMD] + twistd_command(
            "--nodaemon", "--pidfile=", "qeetgw", "--port", "systemd:domain=INET:index=0", *options
        )
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        transport = reactor.spawnProcess(
            process, sys.executable, command, env=env, path=workdir,
            childFDs={0: "w", 1: "r", 2: "r", 3: listening.fileno()},
        )
        def kill() -> Any:
            if process.ended.called:
                return None
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass  # it ended meanwhile
            return process.ended

        self.addCleanup(kill)
        return process

    @inlineCallbacks
    def test_serves_and_restarts_without_refusing(self) -> Any:
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listening.bind(("127.0.0.1", 0))
        listening.listen(128)
        self.addCleanup(listening.close)
        port = listening.getsockname()[1]
        upstream_url = listen_upstream(self, ScriptedUpstream())
        first = self.activate(listening, upstream_url)
        announced = yield first.port
        self.assertEqual(announced, port)
        response = yield fetch(port, request(b"GET", b"/api/v1/users/echo"))
        self.assertEqual(response.code, 200)
        first.terminate()
        code = yield first.ended
        self.assertEqual(code, 0, first.text())
        # Between the two processes the socket is still open: a client that
        # connects now waits in the backlog instead of being refused.
        waiting = yield connect_raw(port, request(b"GET", b"/health"))
        second = self.activate(listening, upstream_url)
        yield second.port
        raw, _ = yield waiting.done.addTimeout(30, reactor)
        self.assertEqual(parse_response(raw)[0].code, 200)
        second.terminate()
        code = yield second.ended
        self.assertEqual(code, 0, second.text())

    @inlineCallbacks
    def test_workers_share_the_systemd_socket(self) -> Any:
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listening.bind(("127.0.0.1", 0))
        listening.listen(128)
        self.addCleanup(listening.close)
        port = listening.getsockname()[1]
        process = self.activate(listening, listen_upstream(self, ScriptedUpstream()), "--workers", "2")
        stop_workers_at_cleanup(self, process)
        announced = yield process.port
        self.assertEqual(announced, port)
        yield wait_for(lambda: len(process.logged("qeetgw.process.worker", "worker")) == 2, "both workers serving")
        for _ in range(5):
            response = yield fetch(port, request(b"GET", b"/api/v1/users/echo"))
            self.assertEqual(response.code, 200)
        process.terminate()
        code = yield process.ended
        self.assertEqual(code, 0, process.text())
