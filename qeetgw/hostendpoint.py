"""
Connecting to a host by name, the way RFC 8305 (Happy Eyeballs v2) says.

Twisted's L{twisted.internet.endpoints.HostnameEndpoint} starts one attempt
per resolved address, C{attemptDelay} (0.3 s) apart, but it only notices
that every attempt failed when its loop next wakes up: a connection refused
at once by the only address there is still takes 0.3 s to report.  Behind a
gateway that is 300 ms added to every 502 of a stopped local upstream and
to every failed health probe.  RFC 8305 section 5 starts the next attempt
as soon as one fails, and gives up as soon as the last one has.

L{HostEndpoint} does that: attempts start in the resolver's order (which
already follows RFC 6724), each one C{attempt_delay} after the previous
unless that one failed first; the first connection wins and the others are
cancelled; when every attempt has failed, the last failure is reported at
once.  An IP literal is not resolved at all.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Union

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectingCancelledError, DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

#: RFC 8305's recommended "Connection Attempt Delay" (section 5), as used
#: by most clients; Twisted's default is 0.3 s.
ATTEMPT_DELAY = 0.25

_Address = Union[IPv4Address, IPv6Address]


@implementer(IStreamClientEndpoint)
class HostEndpoint:
    """
    A TCP client endpoint for a host name (or IP literal) and a port, that
    tries each address the name resolves to as RFC 8305 says.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        attempt_delay: float = ATTEMPT_DELAY,
        clock: Optional[IReactorTime] = None,
        resolver: Optional[IHostnameResolver] = None,
    ) -> None:
        """
        @param reactor: connects (C{IReactorTCP}); also resolves (its
            C{nameResolver}) and times (C{IReactorTime}) unless told otherwise.
        @param host: a host name, or an IPv4 or IPv6 literal (brackets
            allowed, as in a URL).
        @param port: the TCP port.
        @param timeout: how long each attempt may take to connect.
        @param attempt_delay: how long an attempt has before the next one
            starts beside it.
        @param clock: what times the attempt delay; C{reactor} by default.
        @param resolver: what resolves C{host}; the reactor's C{nameResolver}
            (looked up at each connect) by default.
        """
        self._reactor = reactor
        self._host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self._port = port
        self._timeout = timeout
        self._attempt_delay = attempt_delay
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._resolver = resolver

    def __repr__(self) -> str:
        return f"<HostEndpoint {self._host}:{self._port}>"

    def connect(self, protocolFactory: IProtocolFactory) -> "Deferred[IProtocol]":
        """
        Connect C{protocolFactory}'s protocol to the first address that
        accepts; fail with the last attempt's failure when none does, or
        with L{DNSLookupError} when the name has no address.
        """
        attempts = _Attempts(
            lambda address: self._endpoint_for(address).connect(protocolFactory),
            self._clock,
            self._attempt_delay,
            HostnameAddress(self._host.encode("utf-8"), self._port),
        )
        literal = _literal_address(self._host, self._port)
        if literal is not None:
            attempts.start([literal])
        else:
            resolver = self._resolver if self._resolver is not None else self._reactor.nameResolver
            resolver.resolveHostName(_Receiver(attempts), self._host, portNumber=self._port)
        return attempts.result

    def _endpoint_for(self, address: _Address) -> IStreamClientEndpoint:
        """
        The plain TCP endpoint of one resolved address.
        """
        kind = TCP6ClientEndpoint if isinstance(address, IPv6Address) else TCP4ClientEndpoint
        return kind(self._reactor, address.host, address.port, self._timeout)


def _literal_address(host: str, port: int) -> Optional[_Address]:
    """
    The address of C{host} when it is an IP literal, else L{None}.
    """
    if isIPv6Address(host):
        return IPv6Address("TCP", host, port)
    if isIPAddress(host):
        return IPv4Address("TCP", host, port)
    return None


@implementer(IResolutionReceiver)
class _Receiver:
    """
    Collects the addresses a name resolves to, and starts the attempts once
    the resolution is complete.
    """

    def __init__(self, attempts: "_Attempts") -> None:
        self._attempts = attempts
        self._addresses: List[_Address] = []

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        """
        Nothing to do until addresses arrive.
        """

    def addressResolved(self, address: IAddress) -> None:
        """
        Keep one more TCP address (anything else is not for us).
        """
        if isinstance(address, (IPv4Address, IPv6Address)):
            self._addresses.append(address)

    def resolutionComplete(self) -> None:
        """
        Start connecting to what was found.
        """
        self._attempts.start(self._addresses)


class _Attempts:
    """
    The connection attempts of one L{HostEndpoint.connect}.

    @ivar result: fires with the winning protocol, or fails with the last
        attempt's failure; cancelling it cancels every attempt.
    """

    def __init__(
        self,
        connect: Callable[[_Address], "Deferred[IProtocol]"],
        clock: IReactorTime,
        attempt_delay: float,
        name: HostnameAddress,
    ) -> None:
        """
        @param connect: starts one attempt to an address.
        @param clock: times the delay between attempts.
        @param attempt_delay: how long an attempt has before the next starts.
        @param name: the host name and port, for the failures we make.
        """
        self._connect = connect
        self._clock = clock
        self._attempt_delay = attempt_delay
        self._name = name
        self._waiting: List[_Address] = []
        self._pending: List["Deferred[IProtocol]"] = []
        self._failures: List[Failure] = []
        self._timer: Optional[IDelayedCall] = None
        # Set once the result is decided (won, failed or cancelled): from
        # then on, attempts that end say nothing.
        self._over = False
        self.result: "Deferred[IProtocol]" = Deferred(self._cancel)

    def start(self, addresses: Sequence[_Address]) -> None:
        """
        Start with the first of C{addresses} (the resolver's order).
        """
        if self._over:
            return  # cancelled while the name was being resolved
        if not addresses:
            host = self._name.hostname.decode("utf-8")
            self._finish(Failure(DNSLookupError(f"no address for {host}")))
            return
        self._waiting = list(addresses)
        self._next()

    def _next(self) -> None:
        """
        Start the next attempt, and schedule the one after it.
        """
        self._stop_timer()
        address = self._waiting.pop(0)
        if self._waiting:
            # Scheduled before connecting: an attempt that fails at once
            # starts the next one itself (and replaces this timer).
            self._timer = self._clock.callLater(self._attempt_delay, self._next)
        attempt = self._connect(address)
        self._pending.append(attempt)
        attempt.addCallbacks(self._won, self._lost, callbackArgs=(attempt,), errbackArgs=(attempt,))

    def _won(self, protocol: IProtocol, attempt: "Deferred[IProtocol]") -> None:
        """
        An attempt connected: it wins.  (Once the result is decided, every
        other attempt has been cancelled, so none can connect after it.)
        """
        self._pending.remove(attempt)
        self._finish(protocol)

    def _lost(self, failure: Failure, attempt: "Deferred[IProtocol]") -> None:
        """
        An attempt failed: RFC 8305 moves on to the next address at once,
        and gives up once none is left and none is pending.
        """
        self._pending.remove(attempt)
        if self._over:
            return
        self._failures.append(failure)
        if self._waiting:
            self._next()
        elif not self._pending:
            self._finish(self._failures[-1])

    def _finish(self, outcome: Union[IProtocol, Failure]) -> None:
        """
        Decide the result, and stop every other attempt.
        """
        self._over = True
        self._waiting = []
        self._stop_timer()
        for attempt in list(self._pending):
            attempt.cancel()
        if isinstance(outcome, Failure):
            self.result.errback(outcome)
        else:
            self.result.callback(outcome)

    def _stop_timer(self) -> None:
        """
        Cancel the scheduled start of the next attempt, if any.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _cancel(self, result: "Deferred[IProtocol]") -> None:
        """
        The caller gave up: stop every attempt, and fail as Twisted's
        endpoints do.
        """
        self._finish(Failure(ConnectingCancelledError(self._name)))
