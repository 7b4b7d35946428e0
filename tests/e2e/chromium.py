"""
Headless Chromium for the browser tests: Debian's C{chromium} (which
.ci/run installs where it can), started with a private profile, killed at
the test's cleanup (only the process started here, by its transport), and
optionally driven over the DevTools protocol: a WebSocket to the page
(Twisted's own client) to evaluate script in it and take screenshots.

A test calls L{chromium_or_skip} first, and L{Chromium.skip_if_failed}
when the browser ended early: where Chromium is missing or cannot start
(no sandbox support, no shared memory, ...) the test is skipped, saying
why, rather than failed.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, SkipTest, TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.websocket import WebSocketClientEndpoint, WebSocketTransport


def chromium_or_skip() -> str:
    """
    The path of the chromium executable; skip the test when there is none.
    """
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SkipTest("no chromium on this machine (.ci/run installs Debian's chromium where it can)")
    return found


class Chromium(ProcessProtocol):
    """
    A headless Chromium started by L{launch}.

    @ivar profile: its private user-data directory.
    @ivar ended: fires when the process has ended.
    """

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.ended: Deferred[None] = Deferred()
        self.reason: Any = None
        self.errors = b""

    def errReceived(self, data: bytes) -> None:
        self.errors = (self.errors + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        self.reason = reason
        self.ended.callback(None)

    def skip_if_failed(self) -> None:
        """
        Skip the test, with Chromium's last words, when it ended with an
        error (it could not start here).
        """
        if self.ended.called and isinstance(self.reason, Failure) and not self.reason.check(ProcessDone):
            raise SkipTest(f"chromium could not start: {self.errors.decode(errors='replace')[-500:]}")

    @inlineCallbacks
    def devtools_port(self, within: float = 30.0) -> Any:
        """
        Fire with the port of its DevTools endpoint (started with
        C{--remote-debugging-port=0}, Chromium writes the port it chose in
        the profile's C{DevToolsActivePort} file); skip the test if
        Chromium ends first.
        """
        path = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + within
        while True:
            if os.path.exists(path):
                with open(path) as active:
                    first = active.readline().strip()
                if first.isdigit():
                    return int(first)
            self.skip_if_failed()
            if self.ended.called:
                raise SkipTest(f"chromium ended at once: {self.errors.decode(errors='replace')[-500:]}")
            if time.monotonic() > deadline:
                raise FailTest(f"no DevTools port within {within} s")
            yield deferLater(reactor, 0.05, lambda: None)


def launch(test: TestCase, url: str, devtools: bool = False, size: str = "1400,1000") -> Chromium:
    """
    Start headless Chromium on C{url} for the length of C{test}.

    @param devtools: open its DevTools endpoint on a loopback port of its
        choosing (L{Chromium.devtools_port}).
    @param size: the window size, C{"width,height"} (screenshots have it).
    """
    executable = chromium_or_skip()
    profile = tempfile.mkdtemp(prefix="qeetgw-chromium-")
    test.addCleanup(shutil.rmtree, profile, True)
    browser = Chromium(profile)
    arguments = [
        executable, "--headless=new", "--no-sandbox", "--disable-gpu",
        "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
        f"--window-size={size}", f"--user-data-dir={profile}",
    ]
    if devtools:
        arguments += ["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
    process = reactor.spawnProcess(
        browser,
        executable,
        arguments + [url],
        env={"HOME": profile, "PATH": os.environ.get("PATH", "")},
    )

    def stop() -> Any:
        if not browser.ended.called:
            process.signalProcess("KILL")
        return browser.ended

    test.addCleanup(stop)
    return browser


class _DevToolsClient:
    """
    The WebSocket protocol of a DevTools session: commands by id, their
    answers matched back.
    """

    def __init__(self) -> None:
        self.transport: Optional[WebSocketTransport] = None
        self._ids = itertools.count(1)
        self._waiting: Dict[int, Deferred[Dict[str, Any]]] = {}
        self.lost: Deferred[None] = Deferred()

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        answer = json.loads(message)
        waiting = self._waiting.pop(answer.get("id"), None)
        if waiting is not None:
            waiting.callback(answer)

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        for waiting in self._waiting.values():
            waiting.errback(reason)
        self._waiting.clear()
        self.lost.callback(None)

    def send(self, method: str, params: Optional[Dict[str, Any]] = None) -> "Deferred[Dict[str, Any]]":
        assert self.transport is not None
        command_id = next(self._ids)
        answered: Deferred[Dict[str, Any]] = Deferred()
        self._waiting[command_id] = answered
        self.transport.sendTextMessage(json.dumps({"id": command_id, "method": method, "params": params or {}}))
        return answered.addTimeout(30, reactor)


class DevToolsPage:
    """
    One page of a Chromium, driven over the DevTools protocol.
    """

    def __init__(self, client: _DevToolsClient) -> None:
        self._client = client

    @classmethod
    @inlineCallbacks
    def attach(cls, test: TestCase, browser: Chromium, url_starts: str) -> Any:
        """
        Fire with the page whose URL starts with C{url_starts} (listed by
        the DevTools endpoint's C{/json/list}), connected; the connection
        is closed at the test's cleanup.
        """
        port = yield browser.devtools_port()
        deadline = time.monotonic() + 30
        target: Optional[Dict[str, Any]] = None
        while target is None:
            response = yield treq.get(
                f"http://127.0.0.1:{port}/json/list",
                timeout=10,
                pool=HTTPConnectionPool(reactor, persistent=False),
            )
            targets: List[Dict[str, Any]] = yield response.json()
            pages = [t for t in targets if t.get("type") == "page" and t.get("url", "").startswith(url_starts)]
            if pages:
                target = pages[0]
                break
            if time.monotonic() > deadline:
                raise FailTest(f"no page at {url_starts} among {targets}")
            yield deferLater(reactor, 0.1, lambda: None)
        client = _DevToolsClient()

        class _Factory:
            def buildProtocol(self, url: str) -> _DevToolsClient:
                return client

        endpoint = WebSocketClientEndpoint.new(reactor, target["webSocketDebuggerUrl"])
        yield ensureDeferred(endpoint.connect(_Factory()))

        def close() -> Any:
            if client.transport is not None and not client.lost.called:
                client.transport.loseConnection()
                return client.lost
            return None

        test.addCleanup(close)
        return cls(client)

    @inlineCallbacks
    def evaluate(self, expression: str) -> Any:
        """
        Fire with the JSON value of C{expression} evaluated in the page
        (waiting, a bounded while, for the page to have a context to
        evaluate in: it has none until its document is loading).
        """
        deadline = time.monotonic() + 30
        while True:
            answer = yield self._client.send(
                "Runtime.evaluate", {"expression": expression, "returnByValue": True}
            )
            missing = "execution context" in answer.get("error", {}).get("message", "")
            if not missing or time.monotonic() > deadline:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        if "error" in answer:
            raise FailTest(f"DevTools refused {expression!r}: {answer['error']}")
        result = answer["result"]
        if "exceptionDetails" in result:
            raise FailTest(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    @inlineCallbacks
    def screenshot(self, path: str) -> Any:
        """
        Write a PNG of the whole page to C{path}; fire with its size in bytes.
        """
        answer = yield self._client.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        if "error" in answer:
            raise FailTest(f"no screenshot: {answer['error']}")
        data = base64.b64decode(answer["result"]["data"])
        with open(path, "wb") as png:
            png.write(data)
        return len(data)
