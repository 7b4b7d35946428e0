"""
Tests for L{qeetgw_dev.echo}: the echo site in memory, plus one request over a
real loopback socket.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from typing import Any, List, Tuple

import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from qeetgw_dev.echo import (
    DEFAULT_SERVICES,
    echo_site,
    listen,
    parse_args,
    service_for_port,
)


def exchange(raw: bytes, name: str = "user-service") -> Tuple[bytes, bytes]:
    """
    Feed C{raw} HTTP to an echo site in memory; return the response's head
    and body.
    """
    site = echo_site(name)
    peer = IPv4Address("TCP", "10.0.0.7", 40000)
    protocol = site.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    protocol.dataReceived(raw)
    # Closing cancels the channel's idle timeout on the global reactor.
    protocol.connectionLost(Failure(ConnectionDone()))
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return head, body


def echo(raw: bytes) -> Any:
    head, body = exchange(raw)
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"Content-Type: application/json; charset=utf-8" in head.split(b"\r\n")
    return json.loads(body)


class EchoResourceTests(SynchronousTestCase):
    """
    What the echo says about a request.
    """

    def test_describes_the_request(self) -> None:
        body = '{"name":"ünï"}'.encode("utf-8")
        value = echo(
            b"POST /users/7%2F..?a=1&b=%20 HTTP/1.1\r\n"
            b"Host: localhost:8082\r\n"
            b"X-Multi: one\r\n"
            b"x-multi: two\r\n"
            b"Content-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % (len(body),)
            + body
        )
        self.assertEqual(
            value,
            {
                "service": "user-service",
                "method": "POST",
                "path": "/users/7%2F..",
                "query": "a=1&b=%20",
                "headers": {
                    "host": ["localhost:8082"],
                    "x-multi": ["one", "two"],
                    "content-type": ["application/json"],
                    "content-length": [str(len(body))],
                },
                "body": '{"name":"ünï"}',
                "bodyLength": len(body),
            },
        )

    def test_binary_body_is_base64(self) -> None:
        body = b"\x00\xff\xfe"
        value = echo(
            b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n" + body
        )
        self.assertEqual(value["body"], base64.b64encode(body).decode())
        self.assertEqual(value["bodyEncoding"], "base64")
        self.assertEqual(value["bodyLength"], 3)

    def test_text_body_has_no_encoding_key(self) -> None:
        value = echo(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual((value["body"], value["bodyLength"]), ("", 0))
        self.assertNotIn("bodyEncoding", value)

    def test_query_absent_or_empty(self) -> None:
        self.assertIsNone(echo(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")["query"])
        self.assertEqual(echo(b"GET /x? HTTP/1.1\r\nHost: h\r\n\r\n")["query"], "")

    def test_health_paths_are_up(self) -> None:
        for target in [b"/actuator/health", b"/health", b"/health?full=1"]:
            for method in [b"GET", b"POST"]:
                value = echo(method + b" " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
                self.assertEqual(value, {"status": "UP"})

    def test_other_health_spellings_are_echoed(self) -> None:
        value = echo(b"GET /health/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(value["path"], "/health/")

    def test_head_has_no_body(self) -> None:
        head, body = exchange(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "))
        self.assertEqual(body, b"")


class _Port:
    """
    A listening port that remembers being closed.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.stopped = False

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self.port)

    def stopListening(self) -> None:
        self.stopped = True


class _BusyReactor(MemoryReactor):
    """
    A reactor on which one port is taken.
    """

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy
        self.ports: List[_Port] = []

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> _Port:
        if port == self.busy:
            raise CannotListenError(interface, port, OSError("in use"))
        self.tcpServers.append((port, factory, backlog, interface))
        self.ports.append(_Port(port))
        return self.ports[-1]


class CommandLineTests(SynchronousTestCase):
    """
    Ports, names and the command line.
    """

    def test_default_ports_name_the_services(self) -> None:
        self.assertEqual(
            sorted(parse_args([]).ports), [4001, 8080, 8082, 8083, 8084, 8085]
        )
        self.assertEqual(service_for_port(8084), "order-service")
        self.assertEqual(service_for_port(4001), "auth-service")
        self.assertEqual(service_for_port(9999), "echo")
        self.assertEqual(parse_args([]).host, "127.0.0.1")

    def test_ports_spaced_or_comma_separated(self) -> None:
        options = parse_args(["--host", "0.0.0.0", "--ports", "8082,8083", "9000"])
        self.assertEqual(options.ports, [8082, 8083, 9000])
        self.assertEqual(options.host, "0.0.0.0")

    def test_bad_port_is_a_usage_error(self) -> None:
        self.patch(sys, "stderr", io.StringIO())
        self.assertRaises(SystemExit, parse_args, ["--ports", "70000"])
        self.assertRaises(SystemExit, parse_args, ["--ports", "http"])
        self.assertIn("not a port number: 'http'", sys.stderr.getvalue())

    def test_listen_names_each_port(self) -> None:
        memory = MemoryReactor()
        listen(memory, "127.0.0.1", list(DEFAULT_SERVICES))
        self.assertEqual(
            [(port, interface) for port, _, _, interface in memory.tcpServers],
            [(port, "127.0.0.1") for port in DEFAULT_SERVICES],
        )
        self.assertEqual(
            [site.resource.service for _, site, _, _ in memory.tcpServers],
            list(DEFAULT_SERVICES.values()),
        )

    def test_listen_failure_closes_what_it_opened(self) -> None:
        busy = _BusyReactor(8083)
        self.assertRaises(CannotListenError, listen, busy, "127.0.0.1", [8082, 8083])
        self.assertEqual([port.stopped for port in busy.ports], [True])


class LoopbackTests(TestCase):
    """
    One request over a real socket.
    """

    def test_echo_over_loopback(self) -> Any:
        port = reactor.listenTCP(0, echo_site("echo"), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/orders/1?x=y"
        d = treq.post(url, data=b"hello", persistent=False)
        d.addCallback(treq.json_content)

        def check(value: Any) -> None:
            self.assertEqual(value["service"], "echo")
            self.assertEqual(value["path"], "/orders/1")
            self.assertEqual(value["query"], "x=y")
            self.assertEqual(value["body"], "hello")

        return d.addCallback(check)
