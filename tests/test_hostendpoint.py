"""
Tests for L{qeetgw.hostendpoint}: RFC 8305 connection attempts, in memory
(a L{MemoryReactorClock} records each attempt; the test decides how it
ends), and once on a real loopback socket.
"""

from __future__ import annotations

import socket
from typing import Any, List, Tuple

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from qeetgw.hostendpoint import ATTEMPT_DELAY, HostEndpoint


@implementer(IHostnameResolver)
class Resolver:
    """
    Resolves every name to the addresses given, and remembers what it was
    asked; with C{hold}, completes only when L{complete} is called.
    """

    def __init__(self, *hosts: str, hold: bool = False) -> None:
        self.hosts = hosts
        self.asked: List[Tuple[str, int]] = []
        self.hold = hold
        self._receivers: List[Tuple[IResolutionReceiver, int]] = []

    def resolveHostName(
        self, resolutionReceiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
        addressTypes: Any = None, transportSemantics: str = "TCP",
    ) -> Any:
        self.asked.append((hostName, portNumber))
        resolutionReceiver.resolutionBegan(None)
        self._receivers.append((resolutionReceiver, portNumber))
        if not self.hold:
            self.complete()
        return None

    def complete(self) -> None:
        for receiver, port in self._receivers:
            for host in self.hosts:
                kind = IPv6Address if ":" in host else IPv4Address
                receiver.addressResolved(kind("TCP", host, port))
            receiver.resolutionComplete()
        self._receivers = []


class Attempts:
    """
    The connection attempts a L{MemoryReactorClock} recorded, ended by hand.
    """

    def __init__(self, memory: MemoryReactorClock) -> None:
        self.memory = memory

    def hosts(self) -> List[str]:
        return [host for host, *_ in self.memory.tcpClients]

    def refuse(self, index: int) -> None:
        factory = self.memory.tcpClients[index][2]
        factory.clientConnectionFailed(self.memory.connectors[index], Failure(ConnectionRefusedError()))

    def accept(self, index: int) -> StringTransport:
        host, port, factory, _, _ = self.memory.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return transport

    def stopped(self) -> List[bool]:
        return [connector.stoppedConnecting for connector in self.memory.connectors]


class HostEndpointTests(SynchronousTestCase):
    """
    L{HostEndpoint} on a memory reactor: the clock moves only when a test
    advances it, so "at once" means with no time passing at all.
    """

    def setUp(self) -> None:
        self.memory = MemoryReactorClock()
        self.attempts = Attempts(self.memory)

    def connect(self, host: str, *addresses: str, **kwargs: Any) -> "Deferred[Any]":
        self.resolver = Resolver(*addresses)
        endpoint = HostEndpoint(self.memory, host, 8082, resolver=self.resolver, **kwargs)
        return endpoint.connect(Factory.forProtocol(Protocol))

    def test_a_refused_only_address_fails_at_once(self) -> None:
        """
        The symptom: Twisted's HostnameEndpoint reports this failure only
        when its next attempt would be due, 0.3 s later.
        """
        connecting = self.connect("localhost", "127.0.0.1")
        self.attempts.refuse(0)
        self.failureResultOf(connecting, ConnectionRefusedError)
        self.assertEqual(self.memory.getDelayedCalls(), [])

    def test_a_refused_address_moves_on_at_once(self) -> None:
        connecting = self.connect("localhost", "::1", "127.0.0.1")
        self.assertEqual(self.attempts.hosts(), ["::1"])
        self.attempts.refuse(0)
        self.assertEqual(self.attempts.hosts(), ["::1", "127.0.0.1"])
        self.attempts.accept(1)
        self.assertIsInstance(self.successResultOf(connecting), Protocol)

    def test_every_address_refused_fails_with_the_last_failure(self) -> None:
        connecting = self.connect("localhost", "::1", "127.0.0.1")
        self.attempts.refuse(0)
        self.attempts.refuse(1)
        self.failureResultOf(connecting, ConnectionRefusedError)
        self.assertEqual(self.memory.getDelayedCalls(), [])

    def test_a_slow_attempt_gets_a_companion_after_the_delay(self) -> None:
        connecting = self.connect("localhost", "::1", "127.0.0.1", "10.0.0.7")
        self.memory.advance(ATTEMPT_DELAY - 0.001)
        self.assertEqual(self.attempts.hosts(), ["::1"])
        self.memory.advance(0.001)
        self.assertEqual(self.attempts.hosts(), ["::1", "127.0.0.1"])
        # The first to connect wins; the others are stopped, and so is the
        # schedule of the next.
        self.attempts.accept(1)
        self.successResultOf(connecting)
        self.assertEqual(self.attempts.stopped(), [True, False])
        self.assertEqual(self.memory.getDelayedCalls(), [])

    def test_the_last_attempt_failing_waits_for_those_pending(self) -> None:
        connecting = self.connect("localhost", "::1", "127.0.0.1")
        self.memory.advance(ATTEMPT_DELAY)
        self.attempts.refuse(1)
        self.assertNoResult(connecting)
        self.attempts.accept(0)
        self.successResultOf(connecting)

    def test_an_ip_literal_is_not_resolved(self) -> None:
        connecting = self.connect("10.0.0.7", "192.0.2.1")
        self.assertEqual((self.resolver.asked, self.attempts.hosts()), ([], ["10.0.0.7"]))
        self.attempts.accept(0)
        self.successResultOf(connecting)

    def test_an_ipv6_literal_in_brackets(self) -> None:
        self.connect("[::1]", "192.0.2.1")
        self.assertEqual((self.resolver.asked, self.attempts.hosts()), ([], ["::1"]))

    def test_a_name_is_resolved_with_its_port(self) -> None:
        self.connect("user-service", "10.0.0.7")
        self.assertEqual(self.resolver.asked, [("user-service", 8082)])
        self.assertEqual(self.memory.tcpClients[0][:2], ("10.0.0.7", 8082))

    def test_a_name_without_addresses(self) -> None:
        connecting = self.connect("nowhere.test")
        failure = self.failureResultOf(connecting, DNSLookupError)
        self.assertIn("nowhere.test", str(failure.value))

    def test_each_attempt_gets_the_timeout(self) -> None:
        self.connect("localhost", "127.0.0.1", timeout=7.5)
        self.assertEqual(self.memory.tcpClients[0][3], 7.5)

    def test_cancel_stops_every_attempt(self) -> None:
        connecting = self.connect("localhost", "::1", "127.0.0.1")
        self.memory.advance(ATTEMPT_DELAY)
        connecting.cancel()
        self.failureResultOf(connecting, ConnectingCancelledError)
        self.assertEqual(self.attempts.stopped(), [True, True])
        self.assertEqual(self.memory.getDelayedCalls(), [])

    def test_cancel_during_resolution(self) -> None:
        resolver = Resolver("127.0.0.1", hold=True)
        endpoint = HostEndpoint(self.memory, "localhost", 8082, resolver=resolver)
        connecting = endpoint.connect(Factory.forProtocol(Protocol))
        connecting.cancel()
        self.failureResultOf(connecting, ConnectingCancelledError)
        resolver.complete()
        self.assertEqual(self.attempts.hosts(), [])

    def test_the_delay_is_timed_on_the_clock_given(self) -> None:
        clock = Clock()
        self.connect("localhost", "::1", "127.0.0.1", clock=clock, attempt_delay=1.0)
        self.memory.advance(5)
        self.assertEqual(len(self.attempts.hosts()), 1)
        clock.advance(1)
        self.assertEqual(len(self.attempts.hosts()), 2)


class RealSocketTests(TestCase):
    """
    A refused connection on real loopback sockets.
    """

    timeout = 10

    @inlineCallbacks
    def test_a_refused_port_is_reported_without_waiting_for_the_delay(self) -> Any:
        """
        The attempt delay runs on a clock that never moves: were the
        failure reported only when the next attempt is due (as Twisted's
        HostnameEndpoint does), this would never fire.
        """
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        endpoint = HostEndpoint(reactor, "127.0.0.1", port, clock=Clock())
        yield self.assertFailure(
            endpoint.connect(Factory.forProtocol(Protocol)), ConnectionRefusedError
        )
