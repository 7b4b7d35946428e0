"""
Tests for L{qeetgw.paths}: the one reading of a request target.
"""

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from qeetgw.paths import BadTarget, RequestTarget, parse_target
from qeetgw.requeststate import target_of


class ParseTargetTests(SynchronousTestCase):
    """
    L{parse_target} splits good targets and refuses ambiguous ones.
    """

    def test_path_and_query_kept_raw(self) -> None:
        self.assertEqual(
            parse_target(b"/api/v1/users/a%20b%2Fc?x=%41&y=1+2"),
            RequestTarget(path=b"/api/v1/users/a%20b%2Fc", query=b"x=%41&y=1+2"),
        )

    def test_empty_query_differs_from_none(self) -> None:
        self.assertEqual(parse_target(b"/x?").query, b"")
        self.assertIsNone(parse_target(b"/x").query)

    def test_absolute_form_is_reduced_to_origin_form(self) -> None:
        self.assertEqual(
            parse_target(b"http://gateway.example:4000/api/v1/users?a=1"),
            RequestTarget(path=b"/api/v1/users", query=b"a=1"),
        )
        self.assertEqual(parse_target(b"http://gateway.example").path, b"/")

    def test_dot_segments_refused_raw_and_encoded(self) -> None:
        for uri in [
            b"/api/v1/users/../orders",
            b"/api/v1/users/./7",
            b"/api/v1/users/%2e%2e/orders",
            b"/api/v1/users/%2E/7",
            b"/api/v1/users/.%2e",
            b"/api/v1/users/7%2F..%2F..%2Forders",
            b"/..",
        ]:
            with self.subTest(uri=uri):
                self.assertRaises(BadTarget, parse_target, uri)

    def test_dots_inside_names_are_fine(self) -> None:
        self.assertEqual(parse_target(b"/api/v1/products/a..b/.hidden/...").query, None)

    def test_backslashes_refused(self) -> None:
        for uri in [b"/api/v1/users\\..\\orders", b"/api/v1/users/%5c7", b"/a%5C"]:
            with self.subTest(uri=uri):
                self.assertRaises(BadTarget, parse_target, uri)

    def test_bad_characters_refused(self) -> None:
        for uri in [b"/a b", b"/caf\xc3\xa9", b"/a\x00", b"/a#frag", b"/a\x7f"]:
            with self.subTest(uri=uri):
                self.assertRaises(BadTarget, parse_target, uri)

    def test_malformed_percent_refused(self) -> None:
        for uri in [b"/a%", b"/a%2", b"/a%zz/b"]:
            with self.subTest(uri=uri):
                self.assertRaises(BadTarget, parse_target, uri)
        # a bad percent in the query is the upstream's business
        self.assertEqual(parse_target(b"/a?%zz").query, b"%zz")

    def test_not_a_path_refused(self) -> None:
        for uri in [b"*", b"api/v1/users", b""]:
            with self.subTest(uri=uri):
                self.assertRaises(BadTarget, parse_target, uri)


class TargetOfTests(SynchronousTestCase):
    """
    L{target_of} parses a request's target once.
    """

    def test_parsed_once(self) -> None:
        request = DummyRequest([b""])
        request.uri = b"/api/v1/users?x"
        first = target_of(request)
        request.uri = b"/changed"
        self.assertIs(target_of(request), first)
