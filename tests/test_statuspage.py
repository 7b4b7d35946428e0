"""
Tests for L{qeetgw.statuspage} and L{qeetgw.statusassets}: the status
page's resources, in memory with L{DummyRequest}s, and the metrics site
they are mounted on.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from qeetgw.headers import HELMET_HEADERS
from qeetgw.metrics import Metrics, metrics_site
from qeetgw.statusassets import PAGE, SCRIPT, STYLE
from qeetgw.errors import GatewayError
from qeetgw.statuspage import status_resources

#: The gateway's policy, as the page gets it over plain HTTP.
PLAIN_POLICY = (
    b"default-src 'self';base-uri 'self';font-src 'self' https: data:;"
    b"form-action 'self';frame-ancestors 'self';img-src 'self' data:;"
    b"object-src 'none';script-src 'self';script-src-attr 'none';"
    b"style-src 'self' https: 'unsafe-inline'"
)


def render(resources: Dict[bytes, Any], path: bytes, method: bytes = b"GET", secure: bool = False) -> DummyRequest:
    """
    Render C{path} (C{/status}, C{/status.json}, ...) from the metrics site's
    root with C{resources} mounted, as Twisted's site would.
    """
    site = metrics_site(Metrics(process=False).registry, resources)
    segments = path.lstrip(b"/").split(b"/")
    request = DummyRequest(segments)
    request.method = method
    request.path = path
    request.uri = path
    request.isSecure = lambda: secure  # type: ignore[method-assign]
    request.responseHeaders.setRawHeaders(b"server", [b"TwistedWeb/26.10.0"])
    resource = getChildForRequest(site.resource, request)
    body = resource.render(request)
    if isinstance(body, bytes):
        request.write(body)
    request.finish()
    if request.responseCode is None:
        request.responseCode = 200  # DummyRequest's unset default
    return request


def header(request: DummyRequest, name: bytes) -> Optional[bytes]:
    values = request.responseHeaders.getRawHeaders(name)
    return values[0] if values else None


class StatusResourcesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reports: List[Dict[str, Any]] = [{"gateway": {"version": "1"}, "services": []}]
        self.resources = status_resources(lambda: self.reports[-1])

    def test_json(self) -> None:
        request = render(self.resources, b"/status.json")
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(header(request, b"content-type"), b"application/json; charset=utf-8")
        self.assertEqual(header(request, b"cache-control"), b"no-store")
        self.assertEqual(json.loads(b"".join(request.written)), self.reports[-1])
        # Read on each request.
        self.reports.append({"gateway": {"version": "2"}})
        self.assertEqual(json.loads(b"".join(render(self.resources, b"/status.json").written)),
                         {"gateway": {"version": "2"}})

    def test_every_file_has_the_gateways_security_headers_and_no_server(self) -> None:
        for path, content_type in [
            (b"/status", b"text/html; charset=utf-8"),
            (b"/status.js", b"text/javascript; charset=utf-8"),
            (b"/status.css", b"text/css; charset=utf-8"),
            (b"/status.json", b"application/json; charset=utf-8"),
        ]:
            request = render(self.resources, path)
            self.assertEqual(request.responseCode, 200, path)
            self.assertEqual(header(request, b"content-type"), content_type)
            for name, value in HELMET_HEADERS:
                if name == b"Content-Security-Policy":
                    value = PLAIN_POLICY
                self.assertEqual(header(request, name), value, (path, name))
            self.assertIsNone(header(request, b"server"))

    def test_the_policy_over_plain_http_does_not_upgrade_requests(self) -> None:
        # Everything of the gateway's policy but upgrade-insecure-requests,
        # which would send the page's own requests to https.
        self.assertEqual(PLAIN_POLICY + b";upgrade-insecure-requests", dict(HELMET_HEADERS)[b"Content-Security-Policy"])
        self.assertIn(b"script-src 'self';script-src-attr 'none'", PLAIN_POLICY)

    def test_the_policy_over_tls_is_the_gateways(self) -> None:
        request = render(self.resources, b"/status", secure=True)
        self.assertEqual(header(request, b"content-security-policy"), dict(HELMET_HEADERS)[b"Content-Security-Policy"])

    def test_files(self) -> None:
        self.assertEqual(b"".join(render(self.resources, b"/status").written), PAGE.encode())
        self.assertEqual(b"".join(render(self.resources, b"/status.js").written), SCRIPT.encode())
        self.assertEqual(b"".join(render(self.resources, b"/status.css").written), STYLE.encode())

    def test_other_methods_are_refused_in_json(self) -> None:
        request = render(self.resources, b"/status.json", b"POST")
        self.assertEqual(request.responseCode, 405)
        self.assertEqual(header(request, b"allow"), b"GET, HEAD")
        body = json.loads(b"".join(request.written))
        self.assertEqual(body["error"]["code"], "METHOD_NOT_ALLOWED")
        self.assertFalse(body["success"])

    def test_a_path_below_is_not_found(self) -> None:
        request = render(self.resources, b"/status/x")
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(json.loads(b"".join(request.written))["error"]["code"], "NOT_FOUND")

    def test_a_report_that_cannot_be_given_says_why(self) -> None:
        def starting() -> Dict[str, Any]:
            raise GatewayError("SERVICE_UNAVAILABLE", "No worker has reported its status yet", 503)

        request = render(status_resources(starting), b"/status.json")
        self.assertEqual(request.responseCode, 503)
        error = json.loads(b"".join(request.written))["error"]
        self.assertEqual(
            (error["code"], error["message"]),
            ("SERVICE_UNAVAILABLE", "No worker has reported its status yet"),
        )
        self.assertEqual(header(request, b"content-security-policy"), PLAIN_POLICY)

    def test_a_failing_report_is_a_json_500_without_a_traceback(self) -> None:
        def broken() -> Dict[str, Any]:
            raise RuntimeError("secret internals")

        request = render(status_resources(broken), b"/status.json")
        self.assertEqual(request.responseCode, 500)
        body = b"".join(request.written)
        self.assertEqual(json.loads(body)["error"]["code"], "INTERNAL_ERROR")
        self.assertNotIn(b"secret", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class AssetsTests(SynchronousTestCase):
    """
    What the gateway's Content-Security-Policy demands of the page, and
    how the script treats data.
    """

    def test_no_inline_script_style_or_handler(self) -> None:
        scripts = re.findall(r"<script[^>]*>", PAGE)
        self.assertEqual(scripts, ['<script src="status.js" defer>'])
        self.assertNotIn("<style", PAGE)
        self.assertNotIn(" style=", PAGE)
        self.assertIsNone(re.search(r"\son[a-z]+=", PAGE))

    def test_nothing_from_elsewhere(self) -> None:
        for text in (PAGE, SCRIPT, STYLE):
            self.assertIsNone(re.search(r"https?:|//[a-z]|@import|url\(", text.replace("// ", "")))

    def test_script_writes_text_only(self) -> None:
        code = "\n".join(line for line in SCRIPT.splitlines() if not line.lstrip().startswith("//"))
        self.assertIn("textContent", code)
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
            self.assertFalse(sink in code, sink)


class MetricsListenerTests(SynchronousTestCase):
    """
    The rest of the metrics listener's paths.
    """

    def test_other_paths_are_the_gateways_json_404(self) -> None:
        for path in (b"/", b"/nope", b"/STATUS", b"/status.json%2f"):
            request = render(status_resources(lambda: {}), path)
            self.assertEqual(request.responseCode, 404, path)
            self.assertEqual(header(request, b"content-type"), b"application/json; charset=utf-8")
            body = json.loads(b"".join(request.written))
            self.assertEqual(body["success"], False)
            self.assertEqual(body["error"]["code"], "NOT_FOUND")
            self.assertEqual(body["error"]["message"], f"Route GET {path.decode()} not found")
