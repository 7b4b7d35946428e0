"""
Real parts on real loopback sockets: upstream servers started by the test,
the gateway in this process or as a C{twistd qeetgw} child process, and a
client that speaks raw HTTP bytes.  Everything binds to 127.0.0.1, port 0.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, TestCase
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from qeetgw.config import load_config
from qeetgw.process.service import GatewayService
from qeetgw.site import build_site
from tests.memory import parse_response

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SERVICE_VARIABLES = [
    "AUTH_SERVICE_URL",
    "USER_SERVICE_URL",
    "PRODUCT_SERVICE_URL",
    "ORDER_SERVICE_URL",
    "PAYMENT_SERVICE_URL",
    "INVENTORY_SERVICE_URL",
]


@inlineCallbacks
def wait_for(condition: Callable[[], Any], what: str, within: float = 10.0, every: float = 0.05) -> Any:
    """
    Check C{condition()} every C{every} seconds until it is true; fire with
    what it returned, or fail the test after C{within} seconds.  The bound
    is there for a broken gateway, not for a slow machine: it is far above
    what the condition takes.
    """
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise FailTest(f"not {what} within {within} s")
        yield deferLater(reactor, every, lambda: None)


class JSONUpstream(Resource):
    """
    An upstream that answers every request 200 with a fixed JSON body (by
    default C{{"ok":true}}), for tests that need a service to be there.
    """

    isLeaf = True

    def __init__(self, body: bytes = b'{"ok":true}') -> None:
        super().__init__()
        self._body = body

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return self._body


def listen_upstream(test: TestCase, resource: IResource) -> str:
    """
    Serve C{resource} on a loopback port for the length of C{test}; return
    its base URL.
    """
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return f"http://127.0.0.1:{port.getHost().port}"


def closed_port_url() -> str:
    """
    The URL of a loopback port nothing listens on.
    """
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def gateway_environment(upstream_url: str, **extra: str) -> Dict[str, str]:
    """
    An environment with every service at C{upstream_url}, no JWT check, and
    no background health checks (their probes, which start with the
    gateway, would be counted by tests that count what an upstream got);
    C{extra} may turn them on.
    """
    env = {name: upstream_url for name in SERVICE_VARIABLES}
    env["REQUIRE_AUTH"] = "false"
    env["HEALTH_CHECK_INTERVAL_MS"] = "0"
    env.update(extra)
    return env


@inlineCallbacks
def start_gateway(test: TestCase, env: Mapping[str, str]) -> Any:
    """
    Start the gateway in this process, listening on a loopback port, for
    the length of C{test}.  Fires with C{(service, port)}.
    """
    config = load_config(env, {}, {"LISTEN": "tcp:0:interface=127.0.0.1"})
    gateway = build_site(config, reactor)
    service = GatewayService(
        config.listen,
        gateway.site,
        gateway.upstreams,
        config.shutdown_grace_ms / 1000,
        parts=gateway.parts,
    )
    service.startService()
    port = yield service.listening
    test.addCleanup(service.stopService)
    return service, port.getHost().port


class RawClient(Protocol):
    """
    Sends raw bytes, collects everything until the connection closes.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.received: List[bytes] = []
        self.done: Deferred[Tuple[bytes, Failure]] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._data)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback((b"".join(self.received), reason))


@inlineCallbacks
def connect_raw(port: int, data: bytes) -> Any:
    """
    Connect to 127.0.0.1:C{port} and send C{data}; fire once connected with
    the L{RawClient}, whose C{done} fires when the server closes.
    """
    client = RawClient(data)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


@inlineCallbacks
def exchange(port: int, data: bytes, timeout: float = 15) -> Any:
    """
    Send C{data} to 127.0.0.1:C{port}; fire with all bytes received until
    the server closed, and the reason it closed.
    """
    client = yield connect_raw(port, data)
    result = yield client.done.addTimeout(timeout, reactor)
    return result


@inlineCallbacks
def wait_until_refused(port: int, within: float = 15.0, every: float = 0.05) -> Any:
    """
    Open a connection to 127.0.0.1:C{port} (and close it) every C{every}
    seconds until one is refused, which is what a closed port does; fire
    with the C{time.monotonic()} of the refusal.  Fail the test when the
    port still accepts after C{within} seconds; any other error is the
    test's error.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            probe = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), Protocol())
        except ConnectionRefusedError:
            return time.monotonic()
        except ConnectError as error:
            # Accepted by the kernel just before the port closed, and reset
            # with it: the port is closing; the next try is refused.
            if error.osError != errno.ECONNRESET:
                raise
        else:
            probe.transport.loseConnection()
        if time.monotonic() > deadline:
            raise FailTest(f"127.0.0.1:{port} still accepts connections after {within} s")
        yield deferLater(reactor, every, lambda: None)


@inlineCallbacks
def fetch(port: int, data: bytes, head: bool = False) -> Any:
    """
    Send one request (which should say C{Connection: close}); fire with the
    parsed response.
    """
    raw, _ = yield exchange(port, data)
    return parse_response(raw, head)[0]


def request(method: bytes, path: bytes, body: Optional[bytes] = None, headers: bytes = b"") -> bytes:
    """
    Raw bytes of a request that closes its connection after the response.
    """
    head = method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers
    if body is not None:
        head += b"Content-Length: %d\r\n" % (len(body),)
    return head + b"\r\n" + (body or b"")


class GatewayProcess(ProcessProtocol):
    """
    C{twistd -n qeetgw} as a child process, logging JSON lines.
    """

    def __init__(self) -> None:
        self.output: List[bytes] = []
        self.port: Deferred[int] = Deferred()
        self.ended: Deferred[int] = Deferred()
        self.pid: Optional[int] = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def outReceived(self, data: bytes) -> None:
        self.output.append(data)
        if not self.port.called:
            found = re.search(rb'qeetgw listening on 127\.0\.0\.1:(\d+)', b"".join(self.output))
            if found:
                self.port.callback(int(found.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        code = reason.value.exitCode if reason.check(ProcessDone, ProcessTerminated) else None
        if not self.port.called:
            self.port.errback(RuntimeError("gateway exited: " + self.text()))
        self.ended.callback(code)

    def text(self) -> str:
        """
        Everything the process printed.
        """
        return b"".join(self.output).decode("utf-8", "replace")

    def events(self) -> List[Dict[str, Any]]:
        """
        The JSON log events printed so far, in whole lines (the last may
        still be arriving).
        """
        text = self.text()
        found = []
        for line in text[: text.rfind("\n") + 1].splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def logged(self, namespace: str, starts: str = "") -> List[Dict[str, Any]]:
        """
        The JSON log events so far of C{namespace} whose message starts
        with C{starts}.
        """
        return [
            event for event in self.events()
            if event.get("namespace") == namespace and event.get("message", "").startswith(starts)
        ]

    def terminate(self) -> None:
        """
        Send SIGTERM, as Kubernetes does.
        """
        self.transport.signalProcess("TERM")

    def peak_rss_kib(self) -> int:
        """
        The process's peak resident memory, from /proc.
        """
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM")


def is_worker(pid: int) -> bool:
    """
    Whether C{pid} is a running qeetgw worker (not a pid reused since).
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"qeetgw.process.worker" in cmdline.read()
    except OSError:
        return False


def worker_pids(process: GatewayProcess) -> Dict[int, int]:
    """
    The newest pid of each worker, from the supervisor's log events.
    """
    return {event["worker"]: event["pid"] for event in process.logged("qeetgw.process.supervisor", "started worker")}


def stop_workers_at_cleanup(test: TestCase, process: GatewayProcess) -> None:
    """
    Kill, by pid, every worker C{process} (a supervisor) started that still
    runs when C{test} ends, failed or not: killing the supervisor leaves
    them running, and holding its output open.
    """

    def kill() -> None:
        for event in process.logged("qeetgw.process.supervisor", "started worker"):
            if is_worker(event["pid"]):
                os.kill(event["pid"], signal.SIGKILL)

    test.addCleanup(kill)


def twistd_command(*arguments: str) -> List[str]:
    """
    The command line of this Python's twistd.
    """
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *arguments]


def spawn_twistd(test: TestCase, env: Mapping[str, str], *arguments: str) -> GatewayProcess:
    """
    Run twistd with C{arguments} in a fresh directory (no .env) for the
    length of C{test}; it is killed at cleanup if still running.
    """
    process = GatewayProcess()
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": PROJECT_ROOT, **env}
    workdir = test.mktemp()
    os.makedirs(workdir)
    transport = reactor.spawnProcess(
        process, sys.executable, twistd_command(*arguments), env=full_env, path=workdir
    )

    def kill() -> Any:
        if not process.ended.called:
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass
            return process.ended
        return None

    test.addCleanup(kill)
    return process


def spawn_gateway(test: TestCase, env: Mapping[str, str], *options: str) -> GatewayProcess:
    """
    Start C{twistd -n qeetgw} on a loopback port with JSON logs, with
    C{options} added.
    """
    return spawn_twistd(
        test,
        {"LOG_FORMAT": "json", **env},
        "--nodaemon", "--pidfile=", "qeetgw", "--port", "tcp:0:interface=127.0.0.1", *options,
    )
