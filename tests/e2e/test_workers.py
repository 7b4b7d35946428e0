"""
C{twistd qeetgw --workers N}: several gateway processes on one socket.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Dict, List

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.e2e.support import (
    GatewayProcess,
    exchange,
    fetch,
    gateway_environment,
    is_worker,
    listen_upstream,
    request,
    spawn_gateway,
    stop_workers_at_cleanup,
    wait_for,
    worker_pids,
)
from tests.e2e.upstreams import ScriptedUpstream
from tests.memory import parse_response

#: The most requests sent for both workers to serve one.  The kernel spreads
#: connections over the workers' SO_REUSEPORT sockets by a hash of each
#: connection's addresses, so one worker alone gets n of them with a chance
#: of 2**(1-n), whatever the load.
MOST_REQUESTS = 200


def access(process: GatewayProcess) -> List[Dict[str, Any]]:
    """
    The access events so far; each names the worker that served.
    """
    return process.logged("qeetgw.access")


class WorkersTests(TestCase):
    """
    Start, serve, restart a killed worker, drain.
    """

    timeout = 90

    @inlineCallbacks
    def served_by(self, process: GatewayProcess, port: int, path: bytes) -> Any:
        """
        GET C{path}, a new connection each, until the access events logged
        since the first request name both workers, or L{MOST_REQUESTS}
        were sent (or 30 s passed); each must answer 200.  Fire with the
        workers named by every access event of those requests, once all are
        logged.
        """
        before = len(access(process))
        deadline = time.monotonic() + 30
        sent = 0
        while sent < MOST_REQUESTS and time.monotonic() < deadline:
            response = yield fetch(port, request(b"GET", path))
            self.assertEqual(response.code, 200)
            sent += 1
            if {event.get("worker") for event in access(process)[before:]} >= {"0", "1"}:
                break
        yield wait_for(lambda: len(access(process)) >= before + sent, f"{sent} access events")
        return [event.get("worker") for event in access(process)[before:]]

    @inlineCallbacks
    def test_serve_restart_and_drain(self) -> Any:
        upstream = ScriptedUpstream()
        # The request held over the drain must not time out (5 s) first.
        env = gateway_environment(listen_upstream(self, upstream), GATEWAY_PROXY_TIMEOUT_MS="60000")
        process = spawn_gateway(self, env, "--workers", "2")
        stop_workers_at_cleanup(self, process)
        port = yield process.port
        yield wait_for(lambda: len(worker_pids(process)) == 2, "two workers started")
        yield wait_for(lambda: len(process.logged("qeetgw.process.worker", "worker")) == 2, "two workers serving")
        # Both workers serve on the one port; every access event names its worker.
        workers = yield self.served_by(process, port, b"/health")
        self.assertEqual(set(workers), {"0", "1"})
        # A killed worker is started again, and the gateway keeps serving,
        # the new worker too.
        pids = worker_pids(process)
        os.kill(pids[0], signal.SIGKILL)
        yield wait_for(lambda: worker_pids(process).get(0) not in (None, pids[0]), "worker 0 restarted")
        yield wait_for(lambda: len(process.logged("qeetgw.process.worker", "worker")) == 3, "worker 0 serving again")
        workers = yield self.served_by(process, port, b"/api/v1/users/echo")
        self.assertEqual(set(workers), {"0", "1"})
        # SIGTERM drains: a request in flight is answered, then all exit 0.
        held = upstream.wait_held()
        in_flight = exchange(port, request(b"GET", b"/api/v1/orders/slow"))
        pending = yield held
        process.terminate()
        yield wait_for(lambda: len(process.logged("qeetgw.process.service", "draining")) == 2, "both workers draining")
        pending.setHeader(b"content-length", b"2")
        pending.write(b"ok")
        pending.finish()
        raw, _ = yield in_flight
        self.assertEqual(parse_response(raw)[0].body, b"ok")
        code = yield process.ended
        self.assertEqual(code, 0, process.text())
        for pid in worker_pids(process).values():
            self.assertFalse(is_worker(pid), f"worker {pid} still running")
