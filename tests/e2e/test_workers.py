"""
C{twistd qeetgw --workers N}: several gateway processes on one socket.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    GatewayProcess,
    exchange,
    fetch,
    gateway_environment,
    listen_upstream,
    request,
    spawn_gateway,
)
from tests.e2e.upstreams import ScriptedUpstream
from tests.memory import parse_response


def worker_pids(process: GatewayProcess) -> dict:
    """
    The newest pid of each worker, from the supervisor's log events.
    """
    pids: dict = {}
    for event in process.events():
        if event.get("namespace") == "qeetgw.process.supervisor" and "pid" in event and event.get("message", "").startswith("started worker"):
            pids[event["worker"]] = event["pid"]
    return pids


class WorkersTests(TestCase):
    """
    Start, serve, restart a killed worker, drain.
    """

    timeout = 90

    @inlineCallbacks
    def wait_for(self, condition: Any, tries: int = 200) -> Any:
        for _ in range(tries):
            if condition():
                return
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail("condition never held")

    @inlineCallbacks
    def test_serve_restart_and_drain(self) -> Any:
        upstream = ScriptedUpstream()
        process = spawn_gateway(self, gateway_environment(listen_upstream(self, upstream)), "--workers", "2")
        port = yield process.port
        yield self.wait_for(lambda: len(worker_pids(process)) == 2)
        # Both workers are serving on the one port; every access event names its worker.
        yield self.wait_for(lambda: len([e for e in process.events() if e.get("namespace") == "qeetgw.process.worker"]) == 2)
        for _ in range(20):
            response = yield fetch(port, request(b"GET", b"/health"))
            self.assertEqual(response.code, 200)
        access = [e for e in process.events() if e.get("namespace") == "qeetgw.access"]
        self.assertEqual(len(access), 20)
        self.assertTrue(set(event["worker"] for event in access) <= {"0", "1"})
        # A killed worker is started again, and the gateway keeps serving.
        pids = worker_pids(process)
        os.kill(pids[0], signal.SIGKILL)
        yield self.wait_for(lambda: worker_pids(process).get(0) not in (None, pids[0]))
        for _ in range(10):
            response = yield fetch(port, request(b"GET", b"/api/v1/users/echo"))
            self.assertEqual(response.code, 200)
        # SIGTERM drains: a request in flight is answered, then all exit 0.
        held = upstream.wait_held()
        in_flight = exchange(port, request(b"GET", b"/api/v1/orders/slow"))
        pending = yield held
        process.terminate()
        yield deferLater(reactor, 0.3, lambda: None)
        pending.setHeader(b"content-length", b"2")
        pending.write(b"ok")
        pending.finish()
        raw, _ = yield in_flight
        self.assertEqual(parse_response(raw)[0].body, b"ok")
        code = yield process.ended
        self.assertEqual(code, 0, process.text())
        for pid in worker_pids(process).values():
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"worker {pid} still running")
