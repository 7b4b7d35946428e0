"""
Tests for L{qeetgw.headers}: helmet 8's defaults, value for value.
"""

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from qeetgw.headers import SecurityHeaders

#: What the Express gateway sends (SPEC.md, "Headers").
EXPECTED = {
    b"content-security-policy": b"default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src 'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline';upgrade-insecure-requests",
    b"cross-origin-opener-policy": b"same-origin",
    b"cross-origin-resource-policy": b"same-origin",
    b"origin-agent-cluster": b"?1",
    b"referrer-policy": b"no-referrer",
    b"strict-transport-security": b"max-age=31536000; includeSubDomains",
    b"x-content-type-options": b"nosniff",
    b"x-dns-prefetch-control": b"off",
    b"x-download-options": b"noopen",
    b"x-frame-options": b"SAMEORIGIN",
    b"x-permitted-cross-domain-policies": b"none",
    b"x-xss-protection": b"0",
}


class Inner(Resource):
    isLeaf = True

    def render(self, request: DummyRequest) -> bytes:
        # an inner resource may set its own value for one of the fields
        request.responseHeaders.setRawHeaders(b"x-frame-options", [b"DENY"])
        return b"ok"


class SecurityHeadersTests(SynchronousTestCase):
    """
    L{SecurityHeaders} sets every helmet header before the wrapped resource
    renders.
    """

    def test_every_value(self) -> None:
        request = DummyRequest([b""])
        wrapper = SecurityHeaders(Inner())
        self.assertEqual(wrapper.render(request), b"ok")
        got = {name.lower(): values for name, values in request.responseHeaders.getAllRawHeaders()}
        for name, value in EXPECTED.items():
            if name == b"x-frame-options":
                continue
            self.assertEqual(got[name], [value], name)
        self.assertNotIn(b"cross-origin-embedder-policy", got)

    def test_inner_value_wins(self) -> None:
        request = DummyRequest([b""])
        SecurityHeaders(Inner()).render(request)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"x-frame-options"), [b"DENY"])
