"""
A refusal the client can read, end to end (issue 11, part 5): the gateway
in this process on a real loopback port, clients on real sockets.

- Python's http.client writes a whole request body before it reads; when
  the gateway answered 413 early and closed at once, the kernel reset the
  connection under the client's writes (BrokenPipeError, or a reset) and it
  never read the answer.  With the lingering close every run reads the 413
  envelope.
- A chunk-size line that declares more than what is left of the body limit
  is answered 413 at once, and one of more than 16 hex digits 400 at once,
  without waiting for CLIENT_BODY_TIMEOUT_MS.

Every wait is bounded and every connection closed.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import time
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.e2e.test_hostile import SMALL, Client, HostileTestCase
from tests.memory import parse_response

#: The path of a request that would reach the recording upstream.
PATH = "/api/v1/users/echo"
#: How many runs of "send the whole over-limit body, then read".
RUNS = 20
MIB = 1024 * 1024


def post_then_read(
    port: int, body: bytes, runs: int, tls: Optional[ssl.SSLContext] = None
) -> List[Tuple[Any, ...]]:
    """
    In a thread: C{runs} times, POST C{body} with http.client (which
    writes the whole body before it reads) and read the answer; over TLS
    with the context C{tls} when given.  Each outcome is C{(status,
    envelope code)}, or C{("error", exception name)} for a run that could
    not read one.
    """
    outcomes: List[Tuple[Any, ...]] = []
    for _ in range(runs):
        connection: http.client.HTTPConnection
        if tls is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        else:
            connection = http.client.HTTPSConnection("localhost", port, timeout=5, context=tls)
        try:
            connection.request(
                "POST", PATH, body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            payload = response.read()
            outcomes.append((response.status, json.loads(payload)["error"]["code"]))
        except Exception as error:  # what the client saw, reported by the test
            outcomes.append(("error", type(error).__name__))
        finally:
            connection.close()
    return outcomes


@implementer(IHalfCloseableProtocol)
class HalfOpenClient(Client):
    """
    A raw client that can go on writing after the gateway shut its side:
    C{shut} fires when the gateway's end of the stream arrives.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shut: Deferred[None] = Deferred()

    def readConnectionLost(self) -> None:
        """
        The gateway shut its side.
        """
        self.shut.callback(None)

    def writeConnectionLost(self) -> None:
        """
        Our side was shut (never, here).
        """


def json_body(size: int) -> bytes:
    """
    A JSON document of about C{size} bytes.
    """
    return b'{"data":"' + b"x" * size + b'"}'


class OverLimitBodyTests(HostileTestCase):
    """
    A client that writes its whole over-limit body before it reads gets
    the 413 envelope, every time.
    """

    extra: Dict[str, str] = dict(SMALL, JSON_BODY_LIMIT="1mb", CLIENT_BODY_TIMEOUT_MS="30000")

    @inlineCallbacks
    def assert_all_read_413(self, body: bytes) -> Any:
        """
        L{RUNS} runs of http.client sending C{body}, then reading: every
        one reads the 413 envelope, in a few seconds all told, and nothing
        reaches the upstream.
        """
        started = time.monotonic()
        outcomes = yield deferToThread(post_then_read, self.port, body, RUNS)
        unread = [outcome for outcome in outcomes if outcome != (413, "PAYLOAD_TOO_LARGE")]
        self.assertEqual(unread, [], f"{len(unread)} of {RUNS} runs did not read the 413")
        self.assertEqual(len(outcomes), RUNS)
        self.assertLess(time.monotonic() - started, 10)
        # (The upstream's only visitors are the background health checks.)
        self.assertEqual([seen for seen in self.upstream.seen if seen["method"] == "POST"], [])

    def test_two_mib_body(self) -> Any:
        """
        The case of the issue: a 2 MiB JSON body over the 1 MiB limit.
        Before the lingering close, most batches of twenty had a run or
        three end in BrokenPipeError.
        """
        return self.assert_all_read_413(json_body(2 * MIB))

    def test_four_mib_body(self) -> Any:
        """
        A 4 MiB body is more than the loopback socket buffers take in one
        go: before the lingering close, every run ended in BrokenPipeError.
        """
        return self.assert_all_read_413(json_body(4 * MIB))


class LingeringConnectionTests(HostileTestCase):
    """
    A lingering connection on a real socket: half-closed, discarding, still
    one of MAX_CONNECTIONS, closed when the client goes quiet.
    """

    extra: Dict[str, str] = dict(
        SMALL, JSON_BODY_LIMIT="1mb", MAX_CONNECTIONS="1", CLIENT_LINGER_TIMEOUT_MS="300"
    )

    @inlineCallbacks
    def refused_client(self) -> Any:
        """
        A half-open client whose over-limit POST got its 413 and whose
        connection the gateway has half-closed.
        """
        client = HalfOpenClient()
        self.clients.append(client)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5), client)
        client.transport.write(
            b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 2000000\r\n\r\n" + b"x" * 1000
        )
        yield client.shut.addTimeout(5, reactor)
        self.assert_envelope(client.data(), 413, "PAYLOAD_TOO_LARGE")
        return client

    @inlineCallbacks
    def test_counts_toward_max_connections(self) -> Any:
        """
        The client may go on sending after the 413; the connection is one
        of MAX_CONNECTIONS (1 here) until the client closes it.
        """
        client = yield self.refused_client()
        self.assertEqual(len(self.site.lingering), 1)
        for _ in range(10):
            client.transport.write(b"x" * 10000)
        (channel,) = self.site.lingering
        yield self.wait_for(lambda: channel._lingered >= 100000)
        self.assertTrue(client.open)
        # Past MAX_CONNECTIONS: closed at once, nothing read.
        other = yield self.connect()
        yield other.closed.addTimeout(5, reactor)
        self.assertEqual(other.data(), b"")
        client.transport.loseConnection()
        yield self.wait_for(lambda: not self.site.channels)
        self.assertEqual(self.site.lingering, set())
        yield self.get_ok()

    @inlineCallbacks
    def test_linger_timeout(self) -> Any:
        """
        A client that sends nothing more is closed CLIENT_LINGER_TIMEOUT_MS
        (300 ms here) after its last byte.
        """
        yield self.refused_client()
        started = time.monotonic()
        self.assertEqual(len(self.site.channels), 1)
        # (The client, its reading side ended, would only learn of the
        # close by writing: the gateway's side is watched.)
        yield self.wait_for(lambda: not self.site.channels)
        self.assertGreater(time.monotonic() - started, 0.2)
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertEqual(self.site.lingering, set())


class ChunkSizeTests(HostileTestCase):
    """
    A chunk-size line is judged as it arrives: a chunk that cannot fit in
    the body limit is 413 at once, a chunk-size of more than 16 hex digits
    400 at once.  The body timeout is long, so an answer that came from it
    would fail the bound on the wait.
    """

    extra: Dict[str, str] = dict(SMALL, JSON_BODY_LIMIT="1mb", CLIENT_BODY_TIMEOUT_MS="60000")

    @inlineCallbacks
    def answer_to(self, body_start: bytes) -> Any:
        """
        Send a chunked request head and C{body_start}, then wait (at most
        3 s) for the answer and the gateway's end of the connection; fire
        with the parsed response.
        """
        client = yield self.connect()
        started = time.monotonic()
        client.transport.write(
            b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body_start
        )
        closed_at = yield client.closed.addTimeout(3, reactor)
        self.assertLess(closed_at - started, 2.0)
        response, _ = parse_response(client.data())
        self.assertEqual([seen for seen in self.upstream.seen if seen["method"] == "POST"], [])
        return response

    @inlineCallbacks
    def test_seventeen_hex_digits(self) -> Any:
        """
        C{10000000000000005}: 17 hex digits, 400 at once.
        """
        response = yield self.answer_to(b"10000000000000005\r\n")
        self.assertEqual(response.code, 400)
        self.assertEqual(response.json()["error"]["code"], "BAD_REQUEST")

    @inlineCallbacks
    def test_seventeen_digits_before_the_line_ends(self) -> Any:
        """
        The seventeenth digit is enough: no need to wait for the CRLF.
        """
        response = yield self.answer_to(b"00000000000000001")
        self.assertEqual(response.code, 400)

    @inlineCallbacks
    def test_sixteen_hex_digits_over_the_limit(self) -> Any:
        """
        C{FFFFFFFFFFFFFFFF} is a valid size far over the limit: 413.
        """
        response = yield self.answer_to(b"FFFFFFFFFFFFFFFF\r\n")
        self.assertEqual(response.code, 413)
        self.assertEqual(response.json()["error"]["code"], "PAYLOAD_TOO_LARGE")

    @inlineCallbacks
    def test_two_mib_chunk(self) -> Any:
        """
        A 2 MiB chunk against the 1 MiB limit: 413 on its size line, with
        only its first bytes sent.
        """
        response = yield self.answer_to(b"200000\r\n" + b"x" * 1000)
        self.assertEqual(response.code, 413)

    @inlineCallbacks
    def test_chunk_over_what_is_left(self) -> Any:
        """
        600 KiB received, then a chunk of 600 KiB declared: 413 on the
        second size line.
        """
        response = yield self.answer_to(
            b"96000\r\n" + b"x" * 0x96000 + b"\r\n96000\r\n"
        )
        self.assertEqual(response.code, 413)


class TLSOverLimitBodyTests(TestCase):
    """
    The same over TLS (C{--port ssl:...}): the gateway's half-close is
    TLS's own, close_notify, and it reads on until the linger ends.
    """

    timeout = 60
    #: Extra settings, for a subclass to change.
    extra: Dict[str, str] = {}

    @inlineCallbacks
    def setUp(self) -> Any:
        """
        The gateway on a TLS loopback port, with a private CA.
        """
        from cryptography.hazmat.primitives import serialization

        from qeetgw.config import load_config
        from qeetgw.process.service import GatewayService
        from qeetgw.site import build_site
        from tests.e2e.support import closed_port_url, gateway_environment
        from tests.e2e.test_tls import make_ca_and_leaf

        ca_pem, key, certificate = make_ca_and_leaf("localhost")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key_file = os.path.join(directory, "key.pem")
        cert_file = os.path.join(directory, "cert.pem")
        self.ca_file = os.path.join(directory, "ca.pem")
        with open(key_file, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        with open(cert_file, "wb") as out:
            out.write(certificate.public_bytes(serialization.Encoding.PEM))
        with open(self.ca_file, "wb") as out:
            out.write(ca_pem)
        listen = f"ssl:0:interface=127.0.0.1:privateKey={key_file}:certKey={cert_file}"
        env = gateway_environment(closed_port_url(), JSON_BODY_LIMIT="1mb", **self.extra)
        config = load_config(env, {}, {"LISTEN": listen})
        gateway = build_site(config, reactor)
        service = GatewayService(config.listen, gateway.site, gateway.upstreams, 1.0)
        service.startService()
        self.addCleanup(service.stopService)
        port = yield service.listening
        self.port = port.getHost().port
        self.site = gateway.site

    @inlineCallbacks
    def test_https_client_reads_413(self) -> Any:
        """
        Twenty runs of http.client over TLS sending a 4 MiB body over the
        1 MiB limit, then reading: all twenty read the 413.
        """
        context = ssl.create_default_context(cafile=self.ca_file)
        started = time.monotonic()
        outcomes = yield deferToThread(
            post_then_read, self.port, json_body(4 * MIB), RUNS, context
        )
        unread = [outcome for outcome in outcomes if outcome != (413, "PAYLOAD_TOO_LARGE")]
        self.assertEqual(unread, [], f"{len(unread)} of {RUNS} runs did not read the 413")
        self.assertLess(time.monotonic() - started, 10)


class ShutdownTests(TestCase):
    """
    SIGTERM while a connection lingers: the drain waits for it within
    SHUTDOWN_GRACE_MS, never beyond.
    """

    timeout = 60

    @inlineCallbacks
    def test_lingering_does_not_outlast_the_grace(self) -> Any:
        """
        A twistd gateway with a lingering client that keeps sending exits 0
        about SHUTDOWN_GRACE_MS (1 s) after SIGTERM, not after the 30 s linger
        time.
        """
        from twisted.internet.task import LoopingCall

        from tests.e2e.support import closed_port_url, gateway_environment, spawn_gateway

        env = gateway_environment(
            closed_port_url(),
            JSON_BODY_LIMIT="1kb",
            SHUTDOWN_GRACE_MS="1000",
            CLIENT_LINGER_TIME_MS="30000",
            HEALTH_CHECK_INTERVAL_MS="0",
        )
        process = spawn_gateway(self, env)
        port = yield process.port
        client = HalfOpenClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), client)
        self.addCleanup(lambda: client.transport.abortConnection() if client.open else None)
        client.transport.write(
            b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        yield client.shut.addTimeout(5, reactor)
        self.assertEqual(parse_response(client.data())[0].code, 413)

        # The client goes on sending, so the linger would last 30 s.
        def send() -> None:
            """
            One more write, while the connection is open.
            """
            if client.open:
                client.transport.write(b"x" * 100)

        sending = LoopingCall(send)
        sending.start(0.05)
        self.addCleanup(lambda: sending.stop() if sending.running else None)
        started = time.monotonic()
        process.terminate()
        code = yield process.ended.addTimeout(10, reactor)
        took = time.monotonic() - started
        self.assertEqual(code, 0, process.text())
        self.assertGreater(took, 0.9)
        self.assertLess(took, 5)
