"""
Tests for L{qeetgw.websocket}: recognising a WebSocket handshake.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from qeetgw.auth import bearer_token
from qeetgw.requeststate import state_of, target_of
from qeetgw.websocket import header_tokens, is_websocket_handshake, take_query_token, without_parameter


def request(method: bytes = b"GET", **fields: bytes) -> DummyRequest:
    made = DummyRequest([b"ws"])
    made.method = method
    made.clientproto = b"HTTP/1.1"
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

    def test_http_1_1_only(self) -> None:
        made = request(connection=b"Upgrade", upgrade=b"websocket")
        made.clientproto = b"HTTP/1.0"
        self.assertFalse(is_websocket_handshake(made))

    def test_empty_body_is_no_body(self) -> None:
        self.assertTrue(
            is_websocket_handshake(request(connection=b"upgrade", upgrade=b"websocket", content_length=b"0"))
        )

    def test_header_tokens(self) -> None:
        made = request(connection=b" a , B,,c")
        made.requestHeaders.addRawHeader(b"connection", b"D")
        self.assertEqual(header_tokens(made.requestHeaders, b"connection"), {b"a", b"b", b"c", b"d"})


class QueryTokenTests(SynchronousTestCase):
    """
    L{without_parameter} and L{take_query_token}: JWT_QUERY_PARAM.
    """

    def test_without_parameter(self) -> None:
        for query, expected in [
            (None, (None, None)),
            (b"", (b"", None)),
            (b"room=1", (b"room=1", None)),
            (b"access_token=abc", (None, b"abc")),
            (b"room=1&access_token=abc&x=%41", (b"room=1&x=%41", b"abc")),
            (b"access%5Ftoken=a%2Eb&access_token=second", (None, b"a.b")),
            (b"access_token", (None, b"")),
            (b"access_tokens=no", (b"access_tokens=no", None)),
        ]:
            self.assertEqual(without_parameter(query, b"access_token"), expected, query)

    def test_handshake_token_taken(self) -> None:
        made = request(connection=b"Upgrade", upgrade=b"websocket")
        made.uri = b"/api/v1/users/ws?room=1&access_token=eyJ.x.y"
        take_query_token(made, b"access_token")
        self.assertEqual(state_of(made).query_token, "eyJ.x.y")
        self.assertEqual(target_of(made).query, b"room=1")
        self.assertEqual(bearer_token(made), "eyJ.x.y")

    def test_authorization_wins(self) -> None:
        made = request(connection=b"Upgrade", upgrade=b"websocket", authorization=b"Bearer from-header")
        made.uri = b"/ws?access_token=from-query"
        take_query_token(made, b"access_token")
        self.assertEqual(bearer_token(made), "from-header")
        # Taken out of the target all the same: never forwarded.
        self.assertIsNone(target_of(made).query)

    def test_plain_requests_untouched(self) -> None:
        made = request()
        made.uri = b"/api/v1/users/1?access_token=abc"
        take_query_token(made, b"access_token")
        self.assertIsNone(state_of(made).query_token)
        self.assertEqual(target_of(made).query, b"access_token=abc")
        self.assertIsNone(bearer_token(made))
