"""
Tests for L{qeetgw.correlation}.
"""

import uuid

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from qeetgw.correlation import accept_or_make, correlation_id, make_id


class AcceptOrMakeTests(SynchronousTestCase):
    """
    A client's id is kept when sane, replaced otherwise.
    """

    def test_kept_trimmed(self) -> None:
        self.assertEqual(accept_or_make(b"  abc-123 \t"), "abc-123")
        self.assertEqual(accept_or_make(b"x" * 128), "x" * 128)
        self.assertEqual(accept_or_make(b"with inner space"), "with inner space")

    def test_replaced(self) -> None:
        for raw in [None, b"", b"   ", b"x" * 129, b"bad\x01", b"caf\xc3\xa9", b"tab\tinside"]:
            with self.subTest(raw=raw):
                self.assertEqual(accept_or_make(raw, make=lambda: "new"), "new")

    def test_made_ids_are_uuid4(self) -> None:
        ids = [make_id() for _ in range(600)]  # crosses a batch boundary
        self.assertEqual(len(set(ids)), 600)
        for made in ids:
            self.assertTrue(made.startswith("req-"))
            parsed = uuid.UUID(made[4:])
            self.assertEqual((parsed.version, parsed.variant), (4, uuid.RFC_4122))
            self.assertEqual(str(parsed), made[4:])


class CorrelationIdTests(SynchronousTestCase):
    """
    L{correlation_id} chooses once and sets the response header.
    """

    def test_chosen_once_and_returned(self) -> None:
        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(b"x-correlation-id", [b"abc"])
        self.assertEqual(correlation_id(request), "abc")
        request.requestHeaders.setRawHeaders(b"x-correlation-id", [b"other"])
        self.assertEqual(correlation_id(request), "abc")
        self.assertEqual(request.responseHeaders.getRawHeaders(b"x-correlation-id"), [b"abc"])
