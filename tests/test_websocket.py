"""
Tests for L{qeetgw.websocket}: recognising a WebSocket handshake.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from qeetgw.websocket import header_tokens, is_websocket_handshake


def request(method: bytes = b"GET", **fields: bytes) -> DummyRequest:
    made = DummyRequest([b"ws"])
    made.method = method
    for name, value in fields.items():
        made.requestHeaders.addRawHeader(name.replace("_", "-").encode("ascii"), value)
    return made


class HandshakeTests(SynchronousTestCase):
    def test_handshake(self) -> None:
        self.assertTrue(is_websocket_handshake(request(connection=b"Upgrade", upgrade=b"websocket")))

    def test_tokens_any_case_in_lists(self) -> None:
        self.assertTrue(
            is_websocket_handshake(request(connection=b"keep-alive, UPGRADE", upgrade=b"WebSocket"))
        )

    def test_not_a_handshake(self) -> None:
        for made in [
            request(upgrade=b"websocket"),
            request(connection=b"upgrade"),
            request(connection=b"upgrade", upgrade=b"h2c"),
            request(b"POST", connection=b"upgrade", upgrade=b"websocket"),
            request(connection=b"upgrade", upgrade=b"websocket", content_length=b"5"),
            request(connection=b"upgrade", upgrade=b"websocket", transfer_encoding=b"chunked"),
        ]:
            self.assertFalse(is_websocket_handshake(made), made.requestHeaders)

    def test_empty_body_is_no_body(self) -> None:
        self.assertTrue(
            is_websocket_handshake(request(connection=b"upgrade", upgrade=b"websocket", content_length=b"0"))
        )

    def test_header_tokens(self) -> None:
        made = request(connection=b" a , B,,c")
        made.requestHeaders.addRawHeader(b"connection", b"D")
        self.assertEqual(header_tokens(made.requestHeaders, b"connection"), {b"a", b"b", b"c", b"d"})
