"""
Tests for L{qeetgw.config.endpoints}: endpoint descriptions checked with
Twisted's public parser and a reactor stand-in that listens on nothing.
"""

from __future__ import annotations

import os

from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.config.endpoints import ListenRecorder, endpoint, listening_port
from qeetgw.config.errors import Invalid
from tests.test_config import make_certificate


class _MustNotListen:
    """
    An endpoint that fails the test if it is asked to listen.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self._test = test

    def listen(self, factory: object) -> None:
        self._test.fail("an endpoint outside Twisted's TCP and TLS ones was asked to listen")


class _OwnTCPEndpoint(TCP4ServerEndpoint):
    """
    A plugin's subclass, whose listen may do anything.
    """

    def listen(self, protocolFactory: object) -> None:
        raise AssertionError("a subclass was asked to listen")


class ListeningPortTests(SynchronousTestCase):
    """
    L{listening_port} finds the port of Twisted's TCP and TLS endpoints,
    and asks no other endpoint to listen.
    """

    def port(self, description: str) -> object:
        recorder = ListenRecorder()
        return listening_port(serverFromString(recorder, description), recorder)

    def test_tcp_port(self) -> None:
        self.assertEqual(self.port("tcp:8080:interface=127.0.0.1"), 8080)

    def test_tcp6_port(self) -> None:
        self.assertEqual(self.port("tcp6:8443:interface=\\:\\:1"), 8443)

    def test_ssl_port(self) -> None:
        cert_path, key_path = make_certificate(self.mktemp())
        self.assertEqual(self.port(f"ssl:4443:privateKey={key_path}:certKey={cert_path}"), 4443)

    def test_unix_socket_has_no_port(self) -> None:
        self.assertIsNone(self.port("unix:/tmp/qeetgw.sock"))

    def test_other_endpoints_are_not_asked_to_listen(self) -> None:
        self.assertIsNone(listening_port(_MustNotListen(self), ListenRecorder()))

    def test_subclasses_are_not_asked_to_listen(self) -> None:
        recorder = ListenRecorder()
        self.assertIsNone(listening_port(_OwnTCPEndpoint(recorder, 99999), recorder))

    def test_recorder_listens_on_nothing(self) -> None:
        recorder = ListenRecorder()
        recorder.listenTCP(1, object())
        recorder.listenSSL(2, object(), object())
        self.assertEqual(recorder.ports, [1, 2])


class EndpointTests(SynchronousTestCase):
    """
    L{endpoint} accepts what Twisted parses, with a port in range.
    """

    def refusal(self, description: str) -> str:
        return str(self.assertRaises(Invalid, endpoint, description))

    def test_description_is_kept_stripped(self) -> None:
        self.assertEqual(endpoint(" tcp:0:interface=127.0.0.1\n"), "tcp:0:interface=127.0.0.1")

    def test_port_out_of_range(self) -> None:
        for description in ("tcp:65536", "tcp:-1", "tcp6:70000"):
            self.assertEqual(self.refusal(description), "must have a port from 0 to 65535")

    def test_ssl_port_out_of_range(self) -> None:
        cert_path, key_path = make_certificate(self.mktemp())
        self.assertEqual(
            self.refusal(f"ssl:70000:privateKey={key_path}:certKey={cert_path}"),
            "must have a port from 0 to 65535",
        )

    def test_port_range_ends(self) -> None:
        self.assertEqual(endpoint("tcp:65535"), "tcp:65535")
        self.assertEqual(endpoint("tcp:0"), "tcp:0")

    def test_unparsable_description(self) -> None:
        self.assertEqual(
            self.refusal("tcp:abc"),
            "must be a Twisted endpoint description such as tcp:4000:interface=0.0.0.0 or "
            "ssl:4443:privateKey=key.pem:certKey=cert.pem "
            "(invalid literal for int() with base 10: 'abc')",
        )

    def test_missing_key_file(self) -> None:
        missing = os.path.abspath(self.mktemp())
        self.assertIn("No such file or directory", self.refusal(f"ssl:4443:privateKey={missing}"))

    def test_systemd_without_a_socket(self) -> None:
        self.assertEqual(
            self.refusal("systemd:domain=INET:index=0"),
            "systemd passed no socket there (LISTEN_FDS, LISTEN_PID): start the gateway "
            "through its .socket unit (see contrib/systemd/)",
        )
