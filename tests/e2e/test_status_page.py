"""
The status page in a real browser: headless Chromium (Debian's, which
.ci/run installs where it can; skipped, saying why, where it is missing or
cannot start) loads C{/status} from the metrics listener of a gateway with
six services on loopback upstreams, under the gateway's own
Content-Security-Policy.  The test reads the live page over the DevTools
protocol: six services shown, then an instance whose port is closed turns
unhealthy on the page within a few check intervals; a screenshot is
written to the test's temporary folder.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from tests.e2e.chromium import DevToolsPage, chromium_or_skip, launch
from tests.e2e.support import (
    SERVICE_VARIABLES,
    JSONUpstream,
    fetch,
    gateway_environment,
    request,
    start_gateway,
)

log = Logger()

#: The health checks' interval in this test, in milliseconds.
INTERVAL_MS = 400
#: How often the page polls status.json (statusassets' REFRESH_MS).
PAGE_REFRESH_S = 1.0



class _Upstream:
    """
    A loopback HTTP upstream whose port and connections the test can close,
    as an instance that dies.
    """

    def __init__(self, test: TestCase) -> None:
        self._factory = WrappingFactory(Site(JSONUpstream(b'{"status":"UP"}')))
        self._port = reactor.listenTCP(0, self._factory, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self._port.getHost().port}"
        self.stopped = False
        test.addCleanup(self.stop)

    def stop(self) -> Any:
        if self.stopped:
            return None
        self.stopped = True
        for protocol in list(self._factory.protocols):
            protocol.transport.abortConnection()
        return self._port.stopListening()


PAGE_STATE = """(() => {
  if (document.readyState === "loading") return null;
  const services = [...document.querySelectorAll("#services tbody[data-service]")].map((body) => [
    body.getAttribute("data-service"),
    [...body.querySelectorAll("tr.instance")].map((row) => [row.getAttribute("data-url"), row.getAttribute("data-state")]),
  ]);
  const badge = document.querySelector("tr.instance .state-healthy");
  const users = document.querySelector('tbody[data-service="user-service"] tr.service');
  return {
    services: services,
    usersTraffic: users ? [...users.querySelectorAll("td.num")].map((td) => td.textContent) : null,
    updated: document.body.getAttribute("data-updated"),
    healthyColour: badge ? getComputedStyle(badge).backgroundColor : null,
    routes: document.querySelectorAll("#routes tbody tr").length,
    gateway: [...document.querySelectorAll("#gateway dt")].map((dt) => dt.textContent),
  };
})()"""


class StatusPageTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_page_shows_services_and_an_instance_going_down(self) -> Any:
        chromium_or_skip()
        upstreams = [_Upstream(self) for _ in SERVICE_VARIABLES]
        second_user = _Upstream(self)
        env = gateway_environment(
            upstreams[0].url,
            METRICS_PORT="tcp:0:interface=127.0.0.1",
            HEALTH_CHECK_INTERVAL_MS=str(INTERVAL_MS),
            # One failed check is enough: the page should turn within an
            # interval, not three.
            HEALTH_UNHEALTHY_THRESHOLD="1",
        )
        for variable, upstream in zip(SERVICE_VARIABLES, upstreams):
            env[variable] = upstream.url
        # USER_SERVICE_URL: two instances.
        env["USER_SERVICE_URL"] = f"{upstreams[1].url},{second_user.url}"
        service, port = yield start_gateway(self, env)
        metrics_port = service.getServiceNamed("metrics").endpoint.port.getHost().port
        page_url = f"http://127.0.0.1:{metrics_port}/status"

        browser = launch(self, page_url, devtools=True)
        page = yield DevToolsPage.attach(self, browser, page_url)

        @inlineCallbacks
        def until(condition: Any, what: str, within: float) -> Any:
            deadline = time.monotonic() + within
            while True:
                state = yield page.evaluate(PAGE_STATE)
                if state is not None and condition(state):
                    return state
                if time.monotonic() > deadline:
                    self.fail(f"the page did not show {what} within {within} s: {state}")
                yield deferLater(reactor, 0.1, lambda: None)

        def instances(state: Dict[str, Any]) -> Dict[str, str]:
            return {url: seen for _, rows in state["services"] for url, seen in rows}

        def all_healthy(state: Dict[str, Any]) -> bool:
            found = instances(state)
            return len(state["services"]) == 6 and len(found) == 7 and set(found.values()) == {"healthy"}

        shown = yield until(all_healthy, "six services, every instance healthy", 30)
        services: List[Tuple[str, Any]] = shown["services"]
        self.assertEqual(
            [name for name, _ in services],
            ["auth-service", "user-service", "product-service", "order-service",
             "payment-service", "inventory-service"],
        )
        self.assertEqual(dict(services)["user-service"],
                         [[upstreams[1].url, "healthy"], [second_user.url, "healthy"]])
        self.assertEqual(shown["routes"], 6)
        self.assertIn("uptime", shown["gateway"])
        self.assertIn("rate-limit store", shown["gateway"])
        # The style sheet applied under the CSP: a healthy badge is green.
        self.assertEqual(shown["healthyColour"], "rgb(26, 127, 55)")

        # Traffic: the rates and percentiles columns fill in.
        for index in range(20):
            response = yield fetch(port, request(b"GET", b"/api/v1/users/%d" % (index,)))
            self.assertEqual(response.code, 200)
        for index in range(5):
            yield fetch(port, request(b"GET", b"/api/v1/products/%d" % (index,)))
        counted = yield until(
            lambda state: state["usersTraffic"] and state["usersTraffic"][3] != "\u2013",
            "user-service's traffic", 10,
        )
        in_flight, per_second, errors, p50, p99 = counted["usersTraffic"]
        self.assertEqual((in_flight, errors), ("0", "0"))
        self.assertGreater(float(per_second), 0)
        self.assertTrue(p50.endswith(" ms") and p99.endswith(" ms"), (p50, p99))

        # An instance dies: its port closes, its connections are cut.
        yield second_user.stop()
        killed_at = time.monotonic()

        def second_down(state: Dict[str, Any]) -> bool:
            return instances(state).get(second_user.url) in ("unhealthy", "ejected")

        # Bounded by a few check intervals and page refreshes.
        bound = 4 * INTERVAL_MS / 1000 + 3 * PAGE_REFRESH_S
        after = yield until(second_down, "the killed instance unhealthy", bound)
        log.info(
            "killed instance shown {state} after {seconds:.2f} s",
            state=instances(after)[second_user.url],
            seconds=time.monotonic() - killed_at,
        )
        self.assertEqual(instances(after)[upstreams[1].url], "healthy")
        reason = yield page.evaluate(
            f'document.querySelector(\'tr.instance[data-url="{second_user.url}"] td.reason\').textContent'
        )
        self.assertEqual(reason, "connection refused")

        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "status.png")
        size = yield page.screenshot(path)
        self.assertGreater(size, 1000)
        with open(path, "rb") as png:
            self.assertEqual(png.read(8), b"\x89PNG\r\n\x1a\n")
        log.info("status page screenshot: {path}", path=os.path.abspath(path))
