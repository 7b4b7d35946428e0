"""
The gateway as operators run it: C{twistd qeetgw} in its own process.
"""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    PROJECT_ROOT,
    exchange,
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    spawn_gateway,
    twistd_command,
    wait_for,
    wait_until_refused,
)
from tests.e2e.upstreams import BlobUpstream, ScriptedUpstream
from tests.memory import parse_response

ENV = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": PROJECT_ROOT}


def run_twistd(*arguments: str, env: Any = None, path: Any = None) -> Deferred:
    """
    Run twistd to completion (in C{path}, else here); fire with (stdout,
    stderr, exit code).
    """
    command = twistd_command(*arguments)
    return getProcessOutputAndValue(command[0], command[1:], env={**ENV, **(env or {})}, path=path)


class PluginTests(TestCase):
    """
    twistd finds the plugin and explains its options.
    """

    timeout = 60

    @inlineCallbacks
    def test_plugin_listed(self) -> Any:
        out, err, code = yield run_twistd("--help")
        self.assertEqual(code, 0)
        self.assertIn(b"qeetgw", out)

    @inlineCallbacks
    def test_help_names_every_variable(self) -> Any:
        out, err, code = yield run_twistd("qeetgw", "--help")
        self.assertEqual(code, 0, err)
        for variable in [
            "PORT", "HOST", "TRUST_PROXY", "CORS_ORIGINS", "CORS_CREDENTIALS", "REQUIRE_AUTH",
            "JWT_SECRET", "JWT_ISSUER", "JWT_AUDIENCE", "RATE_LIMIT_WINDOW_MS", "RATE_LIMIT_MAX",
            "RATE_LIMIT_MESSAGE", "GATEWAY_PROXY_TIMEOUT_MS", "JSON_BODY_LIMIT", "AUTH_SERVICE_URL",
            "USER_SERVICE_URL", "PRODUCT_SERVICE_URL", "ORDER_SERVICE_URL", "PAYMENT_SERVICE_URL",
            "INVENTORY_SERVICE_URL", "UPSTREAM_CA_FILE", "LOG_FORMAT", "SHUTDOWN_GRACE_MS",
        ]:
            self.assertIn(variable.encode(), out, variable)

    @inlineCallbacks
    def test_bad_configuration_is_one_line_each_and_exit_1(self) -> Any:
        out, err, code = yield run_twistd(
            "--nodaemon", "--pidfile=", "qeetgw",
            env={"RATE_LIMIT_MAX": "lots", "PORT": "99999", "REQUIRE_AUTH": "false", "USER_SERVICE_URL": "ftp://x"},
        )
        text = (out + err).decode()
        self.assertNotEqual(code, 0)
        self.assertNotIn("Traceback", text)
        for name in ["RATE_LIMIT_MAX", "PORT", "USER_SERVICE_URL"]:
            lines = [line for line in text.splitlines() if name in line]
            self.assertEqual(len(lines), 1, (name, text))

    @inlineCallbacks
    def test_missing_jwt_secret_refused(self) -> Any:
        out, err, code = yield run_twistd("--nodaemon", "--pidfile=", "qeetgw", env={"REQUIRE_AUTH": "true"})
        self.assertNotEqual(code, 0)
        self.assertIn(b"JWT_SECRET", out + err)
        self.assertNotIn(b"Traceback", out + err)


class PortInUseTests(TestCase):
    """
    A gateway that cannot listen exits 1 at once: it must not stay up
    serving nothing (before the fix it did, until killed).
    """

    timeout = 60

    def taken_port(self) -> int:
        """
        A loopback port this test listens on for its whole length.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        return taken.getsockname()[1]

    @inlineCallbacks
    def assert_exits_1(
        self, *arguments: str, metrics_port: str = "", what: str = "on", tmpdir: str = ""
    ) -> Any:
        env = {"REQUIRE_AUTH": "false", "HEALTH_CHECK_INTERVAL_MS": "0"}
        if metrics_port:
            env["METRICS_PORT"] = metrics_port
        if tmpdir:
            env["TMPDIR"] = tmpdir
        workdir = self.mktemp()
        os.makedirs(workdir)
        out, err, code = yield run_twistd(*arguments, env=env, path=workdir)
        text = (out + err).decode()
        self.assertEqual(code, 1, text)
        self.assertNotIn("Traceback", text)
        [line] = [line for line in text.splitlines() if "cannot listen" in line]
        self.assertIn(f"cannot listen {what} tcp:", line)
        self.assertIn("Address already in use", line)
        return workdir

    def gateway_on(self, port: int, *options: str) -> List[str]:
        return ["--nodaemon", "--pidfile=", "qeetgw", "--port", f"tcp:{port}:interface=127.0.0.1", *options]

    def test_one_process(self) -> Any:
        return self.assert_exits_1(*self.gateway_on(self.taken_port()))

    def test_workers(self) -> Any:
        return self.assert_exits_1(*self.gateway_on(self.taken_port(), "--workers", "2"))

    def test_metrics_port_in_use(self) -> Any:
        metrics = f"tcp:{self.taken_port()}:interface=127.0.0.1"
        return self.assert_exits_1(*self.gateway_on(0), metrics_port=metrics, what="for metrics on")

    @inlineCallbacks
    def test_metrics_port_in_use_with_workers_leaves_no_directory(self) -> Any:
        metrics = f"tcp:{self.taken_port()}:interface=127.0.0.1"
        parent = os.path.abspath(self.mktemp())
        os.makedirs(parent)
        yield self.assert_exits_1(
            *self.gateway_on(0, "--workers", "2"), metrics_port=metrics, what="for metrics on",
            tmpdir=parent,
        )
        self.assertEqual(os.listdir(parent), [])

    @inlineCallbacks
    def test_as_a_daemon(self) -> Any:
        """
        Without -n, twistd's parent waits for its daemon to report: it
        reports the failure, the parent exits 1, and the pid file goes.
        """
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        pidfile = os.path.join(workdir, "twistd.pid")
        port = self.taken_port()

        def kill_a_stray_daemon() -> None:
            # Only if the behaviour under test is broken: a daemon that
            # stayed up.  Stopped by the pid it wrote.
            if os.path.exists(pidfile):
                with open(pidfile) as opened:
                    os.kill(int(opened.read().strip()), 9)

        self.addCleanup(kill_a_stray_daemon)
        out, err, code = yield run_twistd(
            "--pidfile", pidfile, "--logfile", os.path.join(workdir, "twistd.log"),
            "qeetgw", "--port", f"tcp:{port}:interface=127.0.0.1",
            env={"REQUIRE_AUTH": "false", "HEALTH_CHECK_INTERVAL_MS": "0"}, path=workdir,
        )
        self.assertEqual(code, 1, out + err)
        self.assertIn(b"cannot listen on tcp:", err)
        # The daemon removes its pid file after it has reported, so the
        # parent may exit a moment before the file goes.
        yield wait_for(lambda: not os.path.exists(pidfile), "the pid file removed")


class ServingProcessTests(TestCase):
    """
    A gateway process serving, logging, draining and stopping.
    """

    timeout = 90

    @inlineCallbacks
    def test_serves_logs_and_stops_cleanly(self) -> Any:
        upstream = ScriptedUpstream()
        process = spawn_gateway(self, gateway_environment(listen_upstream(self, upstream)))
        port = yield process.port
        health = yield fetch(port, request(b"GET", b"/health"))
        self.assertEqual((health.code, health.json()["status"]), (200, "ok"))
        proxied = yield fetch(port, request(b"GET", b"/api/v1/users/echo?secret=1", headers=b"X-Correlation-ID: log-1\r\n"))
        self.assertEqual(proxied.code, 200)
        process.terminate()
        code = yield process.ended
        self.assertEqual(code, 0, process.text())
        access = [event for event in process.events() if event.get("correlation_id") == "log-1" and "status" in event]
        self.assertEqual(len(access), 1, process.text())
        event = access[0]
        self.assertEqual(
            {key: event[key] for key in ["method", "path", "status", "service", "upstream_status", "client_ip"]},
            {"method": "GET", "path": "/api/v1/users/echo", "status": 200, "service": "user-service",
             "upstream_status": 200, "client_ip": "127.0.0.1"},
        )
        self.assertGreater(event["bytes_sent"], 0)
        self.assertIsInstance(event["duration_ms"], (int, float))
        self.assertNotIn("Traceback", process.text())

    @inlineCallbacks
    def test_sigterm_lets_in_flight_requests_finish(self) -> Any:
        upstream = ScriptedUpstream()
        # The held request must outlive the wait below: neither its timeout
        # (5 s) nor the grace may end it first.
        env = gateway_environment(
            listen_upstream(self, upstream), SHUTDOWN_GRACE_MS="60000", GATEWAY_PROXY_TIMEOUT_MS="60000"
        )
        process = spawn_gateway(self, env)
        port = yield process.port
        held = upstream.wait_held()
        in_flight = exchange(port, request(b"GET", b"/api/v1/orders/slow"))
        pending = yield held
        process.terminate()
        # The drain stops listening at once (no SHUTDOWN_DELAY_MS); then the
        # held request is answered.
        yield wait_until_refused(port)
        pending.setHeader(b"content-length", b"4")
        pending.write(b"done")
        pending.finish()
        raw, _ = yield in_flight
        response = parse_response(raw)[0]
        self.assertEqual((response.code, response.body, response.complete), (200, b"done", True))
        code = yield process.ended
        self.assertEqual(code, 0, process.text())


class SlowReader(Protocol):
    """
    Reads a response slowly: a pause of C{pause} seconds after each MiB.
    """

    def __init__(self, data: bytes, pause: float) -> None:
        self._data = data
        self._pause = pause
        self.received = 0
        self._since_pause = 0
        self._digest = hashlib.sha256()
        self._head = b""
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._data)

    def dataReceived(self, data: bytes) -> None:
        if len(self._head) < 4096:
            self._head += data[:4096]
        self.received += len(data)
        self._since_pause += len(data)
        if self._since_pause >= 1 << 20:
            self._since_pause = 0
            self.transport.pauseProducing()
            reactor.callLater(self._pause, self.transport.resumeProducing)

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback((self._head, self.received))


class LargeResponseTests(TestCase):
    """
    A 64 MiB response through the gateway to a client that reads slowly.
    """

    timeout = 120

    @inlineCallbacks
    def test_memory_stays_bounded(self) -> Any:
        total = 64 * 1024 * 1024
        upstream_url = listen_upstream(self, BlobUpstream(total))
        process = spawn_gateway(self, gateway_environment(upstream_url))
        port = yield process.port
        yield fetch(port, request(b"GET", b"/health"))
        baseline = process.peak_rss_kib()
        reader = SlowReader(request(b"GET", b"/api/v1/products/blob"), pause=0.02)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), reader)
        head, received = yield reader.done
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:200])
        header_length = head.index(b"\r\n\r\n") + 4
        self.assertEqual(received - header_length, total)
        growth_mib = (process.peak_rss_kib() - baseline) / 1024
        Logger().info("64 MiB slow read: gateway peak RSS {baseline_kib} KiB, grew {growth_mib} MiB",
                      baseline_kib=baseline, growth_mib=round(growth_mib, 1))
        # Buffering the body whole would add 64 MiB or more.
        self.assertLess(growth_mib, 24, f"gateway grew by {growth_mib:.1f} MiB")
