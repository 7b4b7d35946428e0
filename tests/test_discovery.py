"""
Tests for L{qeetgw.upstream.discovery}: SERVICE_DISCOVERY=dns with a fake resolver
whose answers change between rounds, on a fake clock.
"""

from typing import Dict, List, Optional, Sequence, Union

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qeetgw.config import load_config
from qeetgw.upstream.balancing import Outcome
from qeetgw.upstream.discovery import DNSDiscovery, instance_url
from qeetgw.upstream.services import service_upstreams

from .gateway import MemoryGateway

SECRET = "a-raw-secret-of-more-than-32-bytes!"
NAMES = ["AUTH", "USER", "PRODUCT", "ORDER", "PAYMENT", "INVENTORY"]


class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name


@implementer(IHostnameResolver)
class FakeResolver:
    """
    Answers from C{answers} (name -> addresses; an exception raises; a
    missing name answers nothing, as a failed getaddrinfo does).  With
    C{hold}, answers wait in C{pending} until L{release}.
    """

    def __init__(self) -> None:
        self.answers: Dict[str, Union[Sequence[str], Exception]] = {}
        self.asked: List[str] = []
        self.hold = False
        self.pending: List[tuple] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Optional[Sequence[type]] = None,
        transportSemantics: str = "TCP",
    ) -> _Resolution:
        self.asked.append(hostName)
        answer = self.answers.get(hostName, [])
        if isinstance(answer, Exception):
            raise answer
        resolution = _Resolution(hostName)
        if self.hold:
            self.pending.append((resolutionReceiver, resolution, list(answer)))
        else:
            self._answer(resolutionReceiver, resolution, list(answer))
        return resolution

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for each in pending:
            self._answer(*each)

    @staticmethod
    def _answer(receiver: IResolutionReceiver, resolution: _Resolution, addresses: List[str]) -> None:
        receiver.resolutionBegan(resolution)
        for address in addresses:
            kind = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(kind("TCP", address, 0))
        receiver.resolutionComplete()


def config(payment: str, **env: str):
    settings = {"JWT_SECRET": SECRET, "SERVICE_DISCOVERY": "dns", "DNS_REFRESH_MS": "5000"}
    settings.update({f"{name}_SERVICE_URL": "http://10.9.9.9:80" for name in NAMES})
    settings["PAYMENT_SERVICE_URL"] = payment
    settings.update(env)
    return load_config(settings)


class DNSDiscoveryTests(SynchronousTestCase):
    def make(self, payment: str = "http://payments.internal:8085/api") -> None:
        self.clock = Clock()
        self.resolver = FakeResolver()
        cfg = config(payment)
        self.upstreams = service_upstreams(cfg, self.clock)
        self.discovery = DNSDiscovery(self.upstreams, self.resolver, self.clock, cfg.dns_refresh_ms)
        self.addCleanup(self.discovery.stopService)

    def urls(self, service: str = "payment-service") -> List[str]:
        return [i.url for i in self.upstreams[service].instances.instances]

    def test_fake_resolver_is_a_resolver(self) -> None:
        verifyObject(IHostnameResolver, FakeResolver())

    def test_instances_follow_the_answers(self) -> None:
        self.make()
        self.resolver.answers["payments.internal"] = ["10.0.0.8", "10.0.0.7"]
        self.discovery.startService()
        # Resolved at once, sorted, same scheme, port and path prefix.
        self.assertEqual(self.urls(), ["http://10.0.0.7:8085/api", "http://10.0.0.8:8085/api"])
        self.resolver.answers["payments.internal"] = ["10.0.0.8", "10.0.0.9", "10.0.0.10"]
        self.clock.advance(4.999)
        self.assertEqual(len(self.urls()), 2)
        self.clock.advance(0.001)
        self.assertEqual(
            self.urls(),
            ["http://10.0.0.8:8085/api", "http://10.0.0.9:8085/api", "http://10.0.0.10:8085/api"],
        )
        self.resolver.answers["payments.internal"] = ["10.0.0.10"]
        self.clock.advance(5)
        self.assertEqual(self.urls(), ["http://10.0.0.10:8085/api"])
        self.assertEqual(self.discovery.rounds, 3)

    def test_state_of_kept_instances_survives(self) -> None:
        self.make()
        self.resolver.answers["payments.internal"] = ["10.0.0.7", "10.0.0.8"]
        self.discovery.startService()
        instances = self.upstreams["payment-service"].instances
        kept = instances.instances[1]
        for _ in range(5):
            instances.started(kept)
            instances.finished(kept, Outcome.CONNECT_FAILURE)
        self.assertTrue(kept.ejected(self.clock.seconds()))
        self.resolver.answers["payments.internal"] = ["10.0.0.8", "10.0.0.9"]
        self.clock.advance(5)
        self.assertEqual(self.urls(), ["http://10.0.0.8:8085/api", "http://10.0.0.9:8085/api"])
        self.assertIs(instances.instances[0], kept)
        self.assertTrue(kept.ejected(self.clock.seconds()))
        self.assertEqual(kept.ejections, 1)
        self.assertFalse(instances.instances[1].ejected(self.clock.seconds()))

    def test_failure_keeps_the_old_set_and_warns_once(self) -> None:
        self.make()
        self.resolver.answers["payments.internal"] = ["10.0.0.7", "10.0.0.8"]
        self.discovery.startService()
        before = self.urls()
        with capturedLogs() as events:
            self.resolver.answers["payments.internal"] = []
            self.clock.advance(5)
            self.resolver.answers["payments.internal"] = OSError("SERVFAIL")
            self.clock.advance(5)
            self.clock.advance(5)
        self.assertEqual(self.urls(), before)
        warnings = [e for e in events if e.get("host") == "payments.internal" and "kept" in e]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertEqual(warnings[0]["services"], ["payment-service"])
        self.assertEqual(warnings[0]["kept"], ["10.0.0.7", "10.0.0.8"])
        # Back: a new streak warns again.
        self.resolver.answers["payments.internal"] = ["10.0.0.9"]
        self.clock.advance(5)
        self.assertEqual(self.urls(), ["http://10.0.0.9:8085/api"])
        with capturedLogs() as events:
            self.resolver.answers["payments.internal"] = []
            self.clock.advance(5)
        self.assertEqual(len([e for e in events if "kept" in e]), 1)
        self.assertEqual(self.urls(), ["http://10.0.0.9:8085/api"])

    def test_configured_urls_until_the_first_answer(self) -> None:
        self.make()
        self.resolver.hold = True
        self.resolver.answers["payments.internal"] = ["10.0.0.7"]
        self.discovery.startService()
        self.assertEqual(self.urls(), ["http://payments.internal:8085/api"])
        # A tick while the first round is pending is skipped.
        self.clock.advance(5)
        self.assertEqual(self.resolver.asked, ["payments.internal"])
        self.resolver.release()
        self.assertEqual(self.urls(), ["http://10.0.0.7:8085/api"])

    def test_first_failure_keeps_configured_url(self) -> None:
        self.make()
        self.discovery.startService()
        self.assertEqual(self.urls(), ["http://payments.internal:8085/api"])

    def test_ip_literals_untouched(self) -> None:
        self.make("http://10.1.1.1:8085,http://[fd00::1]:8085,http://payments.internal:8085")
        self.resolver.answers["payments.internal"] = ["fd00::2", "10.1.1.1"]
        self.discovery.startService()
        self.assertEqual(self.resolver.asked, ["payments.internal"])
        # 10.1.1.1 from DNS is the same instance as the configured one.
        self.assertEqual(
            self.urls(),
            ["http://10.1.1.1:8085", "http://[fd00::1]:8085", "http://[fd00::2]:8085"],
        )
        self.assertEqual(self.urls("user-service"), ["http://10.9.9.9:80"])

    def test_one_resolution_per_name(self) -> None:
        self.make()
        self.discovery.startService()
        self.assertEqual(self.resolver.asked, ["payments.internal"])

    def test_stop(self) -> None:
        self.make()
        self.resolver.hold = True
        self.resolver.answers["payments.internal"] = ["10.0.0.7"]
        self.discovery.startService()
        self.discovery.stopService()
        self.resolver.release()
        self.clock.advance(50)
        self.assertEqual(self.urls(), ["http://payments.internal:8085/api"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_instance_url(self) -> None:
        self.assertEqual(instance_url("http://a:81/p", "::1"), "http://[::1]:81/p")
        self.assertEqual(instance_url("http://a", "10.0.0.1"), "http://10.0.0.1")


class SiteDiscoveryTests(SynchronousTestCase):
    def test_part_when_dns(self) -> None:
        gateway = MemoryGateway({"SERVICE_DISCOVERY": "dns"}).gateway
        self.assertIsNotNone(gateway.discovery)
        self.assertIn(gateway.discovery, gateway.parts)

    def test_no_part_when_static(self) -> None:
        gateway = MemoryGateway().gateway
        self.assertIsNone(gateway.discovery)
        self.assertEqual([p for p in gateway.parts if isinstance(p, DNSDiscovery)], [])

    def test_reactor_resolver_by_default(self) -> None:
        made = MemoryGateway({"SERVICE_DISCOVERY": "dns"})
        self.assertIsInstance(made.clock, MemoryReactorClock)
        self.assertIs(made.gateway.discovery._resolver, made.clock.nameResolver)
