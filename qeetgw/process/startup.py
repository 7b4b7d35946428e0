"""
Binding the gateway's ports at start-up, and failing start-up when one
cannot be bound.

A gateway that cannot listen must not look alive: systemd, Kubernetes and
a person at a terminal all need it to exit non-zero at once.  twistd gives
a service one moment for that: C{privilegedStartService}, called before the
reactor runs (and before twistd sheds privileges).  A listening failure that
surfaces later, inside a Deferred once the reactor runs, can only stop the
reactor, and twistd then exits 0.  So the gateway binds every port there,
synchronously: every endpoint type it documents (tcp, ssl, unix, systemd)
listens or fails at once.

How the process then ends depends on how twistd runs it.  In the
foreground (C{-n}) a L{SystemExit} ends it with status 1 and no traceback.
As a daemon, twistd's parent process waits for its child to report through
a pipe, and it reports only an exception (SystemExit would leave the parent
waiting forever): there the error is raised, twistd writes it to the pipe,
removes its pid file, and the parent prints it and exits 1.

A port that belongs to a service of its own (METRICS_PORT, a
C{strports.service}) is bound the same way: its endpoint is a
L{StartUpEndpoint}, which listens at once or fails with L{CannotListen}, and
C{strports.service} raises a failure that comes out of the endpoint at once
from the service's C{privilegedStartService}.
"""

from __future__ import annotations

from typing import Any, Callable, List, NoReturn, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()


class CannotListen(Exception):
    """
    A port the gateway needs could not be bound at start-up.

    @ivar purpose: what the port is for, for the log (C{"on"} for the
        gateway's own port, C{"for metrics on"} for METRICS_PORT).
    @ivar endpoint: the endpoint description.
    @ivar error: why, from the reactor (C{"... Address already in use."}).
    """

    def __init__(self, purpose: str, endpoint: str, error: str) -> None:
        super().__init__(f"cannot listen {purpose} {endpoint}: {error}")
        self.purpose = purpose
        self.endpoint = endpoint
        self.error = error


def listen_at_once(
    endpoint: IStreamServerEndpoint, factory: IProtocolFactory, description: str, purpose: str = "on"
) -> IListeningPort:
    """
    Listen on C{endpoint} with C{factory} now.

    @param description: the endpoint's description, for the error.
    @param purpose: what the port is for; see L{CannotListen.purpose}.
    @raise CannotListen: when listening failed, or did not end at once
        (an endpoint type the gateway does not document; it is cancelled).
    """
    outcome: List[Any] = []
    listening = endpoint.listen(factory)
    listening.addBoth(outcome.append)
    if not outcome:
        listening.cancel()
        raise CannotListen(purpose, description, "the endpoint did not listen at once")
    if isinstance(outcome[0], Failure):
        raise CannotListen(purpose, description, outcome[0].getErrorMessage())
    port: IListeningPort = outcome[0]
    return port


@implementer(IStreamServerEndpoint)
class StartUpEndpoint:
    """
    The endpoint of a listening service whose port is bound at start-up:
    it listens at once (L{listen_at_once}) or fails with L{CannotListen},
    and calls C{listened} with each port it listens on (to say where).

    @param endpoint: the endpoint it listens with.
    @param description: the endpoint's description, for the error.
    @param purpose: what the port is for; see L{CannotListen.purpose}.
    @param listened: called with the port once listening.
    @ivar port: the port it listened on last, or L{None}.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        description: str,
        purpose: str,
        listened: Callable[[IListeningPort], None],
    ) -> None:
        self._endpoint = endpoint
        self._description = description
        self._purpose = purpose
        self._listened = listened
        self.port: Optional[IListeningPort] = None

    def listen(self, factory: IProtocolFactory) -> "Deferred[IListeningPort]":
        """
        Listen with C{factory}: an already fired L{Deferred}, with the port
        or a L{CannotListen}.
        """
        try:
            port = listen_at_once(self._endpoint, factory, self._description, self._purpose)
        except CannotListen as error:
            return fail(error)
        self.port = port
        self._listened(port)
        return succeed(port)

    def __repr__(self) -> str:
        return f"<StartUpEndpoint {self._description}>"


def log_cannot_listen(error: CannotListen) -> None:
    """
    The one critical line that says a port could not be bound.
    """
    log.critical(
        "cannot listen {purpose} {endpoint}: {error}",
        purpose=error.purpose,
        endpoint=error.endpoint,
        error=error.error,
    )


def fail_start_up(error: CannotListen, daemon: bool) -> NoReturn:
    """
    End start-up because of C{error}: one critical line, then exit status 1
    (see the module's docstring for how, with C{daemon} or without).
    """
    log_cannot_listen(error)
    if daemon:
        raise error
    raise SystemExit(1)
