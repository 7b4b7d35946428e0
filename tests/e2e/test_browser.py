"""
A WebSocket through the gateway from a real browser: headless Chromium
(Debian's chromium, which .ci/run installs where it can) loads a page from
an origin CORS_ORIGINS allows, opens a WebSocket with its token in the
query string (a browser cannot set Authorization on a WebSocket), and
exchanges a message.  Skipped, saying why, where Chromium is missing or
cannot start.
"""

from __future__ import annotations

import json
from typing import Any, List

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.websocket import WebSocketResource

from tests.e2e.chromium import chromium_or_skip, launch
from tests.e2e.support import (
    gateway_environment,
    listen_upstream,
    start_gateway,
    wait_for,
)
from tests.e2e.test_security import live_token
from tests.e2e.test_websocket import Upstream
from tests.gateway import SECRET

_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>qeetgw websocket check</title>
<script>
const ws = new WebSocket(%(url)s);
ws.onopen = () => ws.send("hello from the browser");
ws.onmessage = (event) => {
  fetch("/done?message=" + encodeURIComponent(event.data)).then(() => ws.close());
};
ws.onerror = () => fetch("/done?message=error");
</script>
"""


class _Page(Resource):
    """
    The page at the allowed origin, and C{/done}, where it reports what the
    WebSocket brought.
    """

    isLeaf = True

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.reports: List[str] = []

    def render_GET(self, request: IRequest) -> bytes:
        if request.path == b"/done":
            self.reports.append(request.args[b"message"][0].decode("utf-8"))
            return b"ok"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (_PAGE % {"url": json.dumps(self.url)}).encode("utf-8")


class BrowserTests(TestCase):
    timeout = 90

    @inlineCallbacks
    def test_page_exchanges_messages_over_a_websocket(self) -> Any:
        chromium_or_skip()
        upstream = Upstream()
        root = Resource()
        users = Resource()
        root.putChild(b"users", users)
        users.putChild(b"ws", WebSocketResource(upstream))
        upstream_url = listen_upstream(self, root)
        page = _Page("")
        page_origin = listen_upstream(self, page)
        env = gateway_environment(
            upstream_url,
            REQUIRE_AUTH="true",
            JWT_SECRET=SECRET,
            JWT_QUERY_PARAM="access_token",
            CORS_ORIGINS=page_origin,
        )
        _, port = yield start_gateway(self, env)
        page.url = f"ws://127.0.0.1:{port}/api/v1/users/ws?access_token={live_token()}"

        browser = launch(self, page_origin + "/")

        def reported_or_ended() -> bool:
            return bool(page.reports) or browser.ended.called

        yield wait_for(reported_or_ended, "the page's report", within=60)
        if not page.reports:
            browser.skip_if_failed()
        self.assertEqual(page.reports, ["echo:hello from the browser"])
        [handshake] = upstream.handshakes
        # The token stayed at the gateway; the origin reached the service.
        self.assertEqual(handshake.uri, b"/users/ws")
        self.assertEqual(handshake.requestHeaders.getRawHeaders(b"origin"), [page_origin.encode("ascii")])
