"""
The gateway as a Twisted service: listening, and a graceful drain on stop.

twistd stops the service tree on SIGTERM and SIGINT; stopping this service
stops accepting connections, lets in-flight requests finish for up to
SHUTDOWN_GRACE_MS, closes the rest, stops its children and closes the
upstream pool, and twistd then exits 0.

The gateway's parts with a lifetime of their own (the token verifier, the
rate-limit store, the metrics listener, DNS discovery, the health checker)
are Twisted services, children of this one: started with it, in order, and
stopped after the drain.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from qeetgw.process.startup import CannotListen, fail_start_up, listen_at_once, log_cannot_listen
from qeetgw.server import GatewaySite
from qeetgw.twistedcompat import clear_exit_signal
from qeetgw.upstream.pool import UpstreamPool

log = Logger()


class GatewayService(MultiService):
    """
    Listens on C{endpoint} with C{site}; drains on stop, then stops its
    children (the parts).

    @param endpoint: a Twisted server endpoint description, or an endpoint
        (a worker's adopted socket).
    @param site: the gateway's site.
    @param pool: the upstream pools (forwarding and probes), closed on stop.
    @param grace: seconds in-flight requests may take to finish on stop.
    @param observer: when given, the log observer twistd is to use (set as
        the application's L{ILogObserver} component, the documented hook).
    @param reactor: the reactor to listen with.
    @param delay: seconds to keep serving after a stop begins, not ready
        (SHUTDOWN_DELAY_MS), before listening stops.
    @param parts: the gateway's parts with a lifetime of their own, as
        services (L{qeetgw.site.Gateway.parts}): they become this service's
        children, started in this order after it binds its port (the
        metrics listener binds its own in L{privilegedStartService} too),
        and stopped once the drain is over.
    @param daemon: whether twistd runs as a daemon, which changes how a
        failure to listen ends the process (L{qeetgw.process.startup}).
    """

    def __init__(
        self,
        endpoint: Union[str, IStreamServerEndpoint],
        site: GatewaySite,
        pool: Optional[UpstreamPool],
        grace: float,
        observer: Optional[ILogObserver] = None,
        reactor: Any = None,
        parts: Sequence[IService] = (),
        delay: float = 0.0,
        daemon: bool = False,
        settle_heap: Optional[Callable[[], None]] = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        super().__init__()
        self.site = site
        self._reactor = reactor
        if isinstance(endpoint, str):
            self._endpoint = serverFromString(reactor, endpoint)
        else:
            self._endpoint = endpoint
        self._description = str(endpoint) if isinstance(endpoint, str) else repr(endpoint)
        self._pool = pool
        self._grace = grace
        self._observer = observer
        self._delay = delay
        self.port: Optional[IListeningPort] = None
        self._daemon = daemon
        #: Called once the service has started (twistd and the workers give
        #: L{qeetgw.process.heap.settle}): see L{startService}.
        self.settle_heap = settle_heap
        #: Fires with the listening port once listening (or with the error).
        self.listening: Deferred[IListeningPort] = Deferred()
        for part in parts:
            part.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        # twistd gives us its Application; an ILogObserver component on it is
        # what twistd's logger uses instead of its own text observer.
        if self._observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._observer)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """
        Bind the gateway's port, and those of children that have one (the
        metrics listener), now: twistd calls this before it sheds
        privileges (so a port below 1024 works with --uid) and before the
        reactor runs, the one moment a failure can still end the process
        with status 1 (see L{qeetgw.process.startup}).
        """
        try:
            port = listen_at_once(self._endpoint, self.site, self._description)
            super().privilegedStartService()
        except CannotListen as error:
            fail_start_up(error, self._daemon)
        self._listened(port)

    def startService(self) -> None:
        """
        Start the children, and listen unless L{privilegedStartService} did
        (tests and the --workers worker start the service without it).
        """
        try:
            super().startService()
        except CannotListen as error:
            # A child's port (METRICS_PORT) that privilegedStartService did
            # not bind: as for the gateway's own port below.
            self._give_up(error, Failure(error))
            return
        if self.port is None and not self.listening.called:
            self._endpoint.listen(self.site).addCallbacks(self._listened, self._cannot_listen)
        if self.settle_heap is not None:
            # Everything made so far (modules, configuration, the resource
            # tree, the parts) lives as long as the process, so now is when
            # the heap can be settled (qeetgw.process.heap).
            self.settle_heap()

    def _listened(self, port: IListeningPort) -> IListeningPort:
        """
        Listening on C{port}: say where, and fire L{listening}.
        """
        self.port = port
        address = port.getHost()
        log.info(
            "qeetgw listening on {host}:{port}",
            host=getattr(address, "host", None),
            port=getattr(address, "port", None),
            endpoint=self._description,
        )
        self.listening.callback(port)
        return port

    def _cannot_listen(self, reason: Failure) -> None:
        """
        Listening failed once the service was started outside twistd's
        start-up: give up.
        """
        self._give_up(CannotListen("on", self._description, reason.getErrorMessage()), reason)

    def _give_up(self, error: CannotListen, reason: Failure) -> None:
        """
        A port could not be bound once the service was started outside
        twistd's start-up: say so, fail L{listening}, and stop the reactor.
        """
        log_cannot_listen(error)
        self.listening.errback(reason)
        if self._reactor.running:
            self._reactor.stop()

    @inlineCallbacks
    def stopService(self) -> Any:  # type: ignore[override]
        """
        Drain in order: not ready at once; keep serving for the shutdown
        delay (load balancers take a moment to notice); stop listening;
        let in-flight requests finish within the grace; stop the children
        (the metrics stay served while the drain goes on) and wait for the
        L{Deferred} each C{stopService} returns; close the pool.
        """
        self.site.readiness.draining = True
        log.info(
            "draining: not ready; serving {delay}s more, then {count} requests in flight get {grace}s",
            delay=self._delay,
            count=len(self.site.in_flight),
            grace=self._grace,
        )
        if self._delay > 0:
            yield deferLater(self._reactor, self._delay, lambda: None)
        if self.port is not None:
            yield self.port.stopListening()
        yield self.site.drain(self._grace)
        # MultiService: every child is stopped, the last started first, and
        # all are waited for; one that fails to stop neither blocks the
        # others nor this drain (its failure is logged as unhandled).
        yield super().stopService()
        if self._pool is not None:
            yield self._pool.closeCachedConnections()
        # twistd re-raises the SIGTERM/SIGINT that stopped it once the reactor
        # is done, so the process ends "killed by signal" (exit 143).  Ours
        # is an orderly stop that drained: report it as exit 0, which is what
        # process supervisors and Kubernetes read as a clean shutdown.
        clear_exit_signal(self._reactor)
        log.info("shutdown complete")
