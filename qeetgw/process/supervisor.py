"""
Every core: WORKERS gateway processes sharing one listening socket.

The supervisor (the C{twistd qeetgw} process itself when WORKERS > 1) decides
the address and starts the workers (L{qeetgw.process.worker}), each a whole gateway:

- For a C{tcp:} endpoint every worker listens on the same address with
  C{SO_REUSEPORT}, and the kernel spreads new connections evenly over them.
  (One shared socket is not enough: Twisted accepts up to a hundred
  connections per wake-up, so the first worker to wake takes a whole burst
  and the others idle.)  The supervisor holds the port with a bound socket
  that does not listen, so it stays ours while workers restart.
- For C{systemd:} socket activation the socket is systemd's: the supervisor
  adopts it, never accepts on it, and hands it to each worker as a file
  descriptor.  A worker that dies is started again (with
a backoff, so a worker that cannot start does not spin); on SIGTERM or
SIGINT every worker is asked to drain and the supervisor waits for them,
then exits 0.

Each worker is a whole gateway with its own memory: rate limits are per
worker unless RATE_LIMIT_STORE=redis.

With METRICS_PORT the supervisor serves the metrics of the whole group on
that one port (L{qeetgw.groupmetrics}): it creates a private directory for
the workers' metric files at start, tells each worker where it is, forgets
a dead worker's live gauges before starting its successor (its counts
stay), and removes the directory once every worker has exited.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Dict, Mapping, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from qeetgw.groupmetrics import SUPERVISOR, GroupMetrics
from qeetgw.groupstatus import GroupStatus
from qeetgw.metricfiles import DIRECTORY_VARIABLE, MetricDirectory
from qeetgw.metrics import metrics_service
from qeetgw.process.startup import CannotListen, fail_start_up, listen_at_once, log_cannot_listen
from qeetgw.process.worker import ADDRESS_VARIABLE, FAMILY_VARIABLE, INDEX_VARIABLE, SOCKET_FD
from qeetgw.statuspage import status_resources
from qeetgw.twistedcompat import clear_exit_signal

log = Logger()

#: Restart delays for a worker that keeps dying: 0.5 s doubling to 30 s.
_FIRST_RESTART_S = 0.5
_LAST_RESTART_S = 30.0
#: A worker that lived this long is healthy again: its next restart is quick.
_STABLE_AFTER_S = 10.0


class _Worker(ProcessProtocol):
    """
    One worker process, watched by the supervisor.
    """

    def __init__(self, supervisor: "Supervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: Deferred[Optional[int]] = Deferred()
        self.started_at = 0.0
        self.pid: Optional[int] = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        self.started_at = self.supervisor.clock.seconds()

    def processEnded(self, reason: Failure) -> None:
        code = reason.value.exitCode if reason.check(ProcessDone, ProcessTerminated) else None
        signal_number = getattr(reason.value, "signal", None)
        self.ended.callback(code)
        self.supervisor.worker_ended(self, code, signal_number)

    def signal(self, name: str) -> None:
        """
        Send signal C{name} (C{"TERM"}, C{"KILL"}) unless it has ended.
        """
        if not self.ended.called:
            try:
                self.transport.signalProcess(name)
            except Exception:  # it ended between the check and the signal
                pass


class Supervisor(Service):
    """
    Starts C{count} workers on one listening socket and keeps them running.

    @param listen: the endpoint description to listen on (TCP).
    @param count: how many workers.
    @param environ: the workers' environment: the supervisor's plus every
        option given on its command line, as the variable it overrides.
    @param grace: seconds the workers may take to drain on stop (their
        shutdown delay and grace together).
    @param metrics_port: METRICS_PORT: serve the group's metrics there.
    @param metrics_parent: where to create the metric files' directory;
        the temporary directory (C{TMPDIR}, else C{/tmp}) when L{None}.
    @param daemon: whether twistd runs as a daemon, which changes how a
        failure to listen ends the process (L{qeetgw.process.startup}).
    @ivar metrics: the group's metrics once started, with METRICS_PORT.
    """

    def __init__(
        self,
        listen: str,
        count: int,
        environ: Mapping[str, str],
        grace: float,
        reactor: Any = None,
        observer: Optional[ILogObserver] = None,
        metrics_port: Optional[str] = None,
        metrics_parent: Optional[str] = None,
        daemon: bool = False,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.clock = reactor
        self._listen = listen
        self._count = count
        self._environ = dict(environ)
        self._grace = grace
        self._observer = observer
        #: The shared socket, for systemd: endpoints only.
        self.port: Optional[IListeningPort] = None
        self._holder: Optional[socket.socket] = None
        self._address: Any = None
        self.workers: Dict[int, _Worker] = {}
        self.restarts = 0
        self._failures: Dict[int, int] = {}
        self._stopping = False
        #: METRICS_PORT, or None.
        self.metrics_port = metrics_port
        self._metrics_parent = metrics_parent
        self.metrics: Optional[GroupMetrics] = None
        #: The service that serves them (L{metrics_service}), started at
        #: once and stopped once every worker has exited.
        self.metrics_listener: Optional[StreamServerEndpointService] = None
        #: The port bound at start-up, before it is handed to the workers.
        self._bound: Optional[IListeningPort] = None
        self._daemon = daemon
        #: Fires with the listening port once listening.
        self.listening: Deferred[IListeningPort] = Deferred()

    def setServiceParent(self, parent: Any) -> None:
        # As GatewayService: the log observer twistd is to use.
        if self._observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._observer)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """
        Bind the gateway's port (and METRICS_PORT) now, before the reactor
        runs, the one moment a failure can still end the process with
        status 1 (see L{qeetgw.process.startup}).
        """
        super().privilegedStartService()
        try:
            self._bind()
        except CannotListen as error:
            fail_start_up(error, self._daemon)

    @inlineCallbacks
    def startService(self) -> Any:  # type: ignore[override]
        """
        Bind unless L{privilegedStartService} did (tests start the service
        without it), then hand the port to the workers and start them.
        """
        super().startService()
        if self._bound is None:
            try:
                self._bind()
            except CannotListen as error:
                log_cannot_listen(error)
                self.listening.errback(error)
                if self.reactor.running:
                    self.reactor.stop()
                return
        port = self._bound
        assert port is not None
        port.stopReading()
        address = port.getHost()
        if self._listen.startswith("systemd:"):
            self.port = port
        else:
            # Trade the probe for a port-holding SO_REUSEPORT socket.
            yield port.stopListening()
            self._holder = _reserve(address.host, address.port)
        self._address = address
        log.info(
            "qeetgw listening on {host}:{port} with {workers} workers",
            host=address.host,
            port=address.port,
            workers=self._count,
        )
        for index in range(self._count):
            self._spawn(index)
        self.listening.callback(port)

    def _bind(self) -> None:
        """
        Listen on the gateway's endpoint (interface, IPv6, an inherited
        systemd socket: as the description says; it stops accepting at
        once), and on METRICS_PORT with the workers' metrics directory.

        @raise CannotListen: when a port cannot be bound.
        """
        endpoint = serverFromString(self.reactor, self._listen)
        self._bound = listen_at_once(endpoint, Factory.forProtocol(Protocol), self._listen)
        if self.metrics_port is not None:
            self._start_metrics(self.metrics_port)

    def _start_metrics(self, description: str) -> None:
        """
        Create the workers' metric directory and serve the group's metrics
        on C{description}, before any worker starts (each is told the
        directory in its environment).

        @raise CannotListen: when METRICS_PORT cannot be bound (the
            directory is removed again).
        """
        metrics = GroupMetrics(MetricDirectory.create(self._metrics_parent), self.processes)
        # The status page's state (instances, windows) lives in each worker;
        # each writes its report into the directory, merged here on request.
        status = GroupStatus(
            directory=metrics.directory.path,
            workers=lambda: {
                label: pid for label, pid in self.processes().items() if label != SUPERVISOR
            },
            clock=self.clock,
            started=self.clock.seconds(),
            configured=self._count,
        )
        listener = metrics_service(
            description, metrics.registry, self.reactor, status_resources(status.report)
        )
        try:
            # Binds now, or raises CannotListen (qeetgw.process.startup).
            listener.startService()
        except CannotListen:
            metrics.directory.remove()
            raise
        self.metrics, self.metrics_listener = metrics, listener

    def processes(self) -> Dict[str, int]:
        """
        The live processes of the group, C{worker label -> pid}: each
        running worker by its number, and this supervisor.  (A copy: the
        metrics scrape calls it from its thread.)
        """
        processes = {
            str(index): worker.pid for index, worker in list(self.workers.items()) if worker.pid is not None
        }
        processes[SUPERVISOR] = os.getpid()
        return processes

    def _spawn(self, index: int) -> None:
        """
        Start worker C{index}.
        """
        family = "INET6" if ":" in self._address.host else "INET"
        environ = {**self._environ, FAMILY_VARIABLE: family, INDEX_VARIABLE: str(index)}
        # Only our own directory, never one inherited from our environment.
        environ.pop(DIRECTORY_VARIABLE, None)
        if self.metrics is not None:
            environ[DIRECTORY_VARIABLE] = self.metrics.directory.path
        # Logs go where the supervisor's go.
        child_fds: Dict[int, Any] = {0: "w", 1: 1, 2: 2}
        if self.port is not None:
            # The shared (systemd) socket goes on SOCKET_FD.
            child_fds[SOCKET_FD] = self.port.fileno()
        else:
            environ[ADDRESS_VARIABLE] = f"{self._address.host} {self._address.port}"
        worker = _Worker(self, index)
        self.reactor.spawnProcess(
            worker,
            sys.executable,
            [sys.executable, "-m", "qeetgw.process.worker"],
            env=environ,
            path=os.getcwd(),
            childFDs=child_fds,
        )
        self.workers[index] = worker
        log.info("started worker {worker} (pid {pid})", worker=index, pid=worker.pid)

    def worker_ended(self, worker: _Worker, code: Optional[int], signal_number: Optional[int]) -> None:
        """
        A worker exited: start it again, unless we are stopping.
        """
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self.metrics is not None and worker.pid is not None:
            # Before its successor starts: its live gauges (connections,
            # requests in flight) are no longer the group's; its counts
            # stay in the sums.
            self.metrics.worker_ended(worker.pid)
        if self._stopping:
            return
        lived = self.clock.seconds() - worker.started_at
        failures = 0 if lived >= _STABLE_AFTER_S else self._failures.get(worker.index, 0) + 1
        self._failures[worker.index] = failures
        delay = min(_FIRST_RESTART_S * 2 ** max(failures - 1, 0), _LAST_RESTART_S) if failures else 0.0
        log.warn(
            "worker {worker} (pid {pid}) ended: exit code {code}, signal {signal}; restarting in {delay}s",
            worker=worker.index,
            pid=worker.pid,
            code=code,
            signal=signal_number,
            delay=delay,
        )
        self.restarts += 1
        if self.metrics is not None:
            self.metrics.restarts.inc()
        self.reactor.callLater(delay, self._restart, worker.index)

    def _restart(self, index: int) -> None:
        if not self._stopping and index not in self.workers:
            self._spawn(index)

    @inlineCallbacks
    def stopService(self) -> Any:  # type: ignore[override]
        """
        Ask every worker to drain, wait for them (killing stragglers after
        the grace), close the socket, and report a clean exit.
        """
        super().stopService()
        self._stopping = True
        # Close our copy of the socket first: once the workers have stopped
        # listening too, new connections are refused rather than queued
        # where nobody will accept them.
        if self.port is not None:
            yield self.port.stopListening()
        workers = list(self.workers.values())
        log.info("stopping {count} workers", count=len(workers))
        for worker in workers:
            worker.signal("TERM")
        # Workers drain for up to the grace; allow them a little longer to exit.
        killer = self.reactor.callLater(self._grace + 5, lambda: [w.signal("KILL") for w in workers])
        yield DeferredList([worker.ended for worker in workers])
        if killer.active():
            killer.cancel()
        if self._holder is not None:
            self._holder.close()
        # The metrics stay served while the workers drain; once they have
        # all exited nothing writes the files any more.
        if self.metrics_listener is not None:
            yield self.metrics_listener.stopService()
        if self.metrics is not None:
            self.metrics.directory.remove()
        # As GatewayService: an orderly stop is exit 0, not "killed by SIGTERM".
        clear_exit_signal(self.reactor)
        log.info("all workers stopped")


def _reserve(host: str, port: int) -> socket.socket:
    """
    A socket bound to C{host:port} with C{SO_REUSEPORT}, not listening: it
    keeps the port for the workers' own C{SO_REUSEPORT} listeners.
    """
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    return holder


def worker_environment(environ: Mapping[str, str], overrides: Mapping[str, str]) -> Dict[str, str]:
    """
    The environment workers get: C{environ} with every command-line option
    as the variable it overrides (so precedence over C{.env} holds), without
    the listening and worker settings, which are the supervisor's.
    """
    merged = dict(environ)
    for name, value in overrides.items():
        if name not in ("LISTEN", "WORKERS"):
            merged[name] = value
    merged["WORKERS"] = "1"
    return merged
