"""
DNS discovery (SERVICE_DISCOVERY=dns): every configured instance host name
is re-resolved every DNS_REFRESH_MS through the reactor's resolver, and each
address it resolves to is an instance of its own, as Envoy's STRICT_DNS
cluster does for a Kubernetes headless Service.

A service URL C{http://payments:8085/api} whose name resolves to 10.0.0.7
and 10.0.0.8 becomes the instances C{http://10.0.0.7:8085/api} and
C{http://10.0.0.8:8085/api}: same scheme, port and path prefix, one
instance (and one keep-alive pool) per address.  The new list is given to
the service's L{qeetgw.upstream.balancing.InstanceSet.update}, so an address that
stays keeps its state (its ejection, its health, its tries in flight).

A name whose resolution fails or comes back empty keeps the instances it
had: a DNS hiccup must not empty a service.  Until a name's first answer,
its configured URL is used as it is.  A host that is already an IP address
is used as it is, without asking the resolver.

Only for C{http://} upstreams: the gateway connects to the addresses, and
TLS would verify the certificate against an address instead of the name
(L{qeetgw.config} refuses C{https://} service URLs with dns discovery).
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qeetgw.upstream.services import ServiceUpstream

_log = Logger()


def _is_ip(host: str) -> bool:
    """
    Whether C{host} is an IPv4 or IPv6 address rather than a name.
    """
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def _host_of(url: str) -> str:
    """
    The host of the base URL C{url}, without brackets.
    """
    return urlsplit(url).hostname or ""


def instance_url(url: str, address: str) -> str:
    """
    C{url} with its host replaced by C{address}: same scheme, port and path
    prefix, an IPv6 address in brackets.
    """
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


@implementer(IResolutionReceiver)
class _Collector:
    """
    Collects the addresses of one resolution and fires C{done} with them
    (in the order they came, without repeats) once it is complete.
    """

    def __init__(self) -> None:
        self.addresses: List[str] = []
        self.done: "Deferred[List[str]]" = Deferred()

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: object) -> None:
        host = getattr(address, "host", None)
        if isinstance(host, str) and host not in self.addresses:
            self.addresses.append(host)

    def resolutionComplete(self) -> None:
        if not self.done.called:
            self.done.callback(self.addresses)


class DNSDiscovery(Service):
    """
    Re-resolves every instance host name of every service every
    C{refresh_ms}, and updates each service's instances from the answers.

    One round at a time: a tick that comes while a resolution is still
    pending is skipped.  A Twisted service, started and stopped with the
    gateway (one of L{qeetgw.site.Gateway}'s parts).
    """

    name = "dns-discovery"

    def __init__(
        self,
        upstreams: Mapping[str, ServiceUpstream],
        resolver: IHostnameResolver,
        clock: IReactorTime,
        refresh_ms: int,
    ) -> None:
        """
        @param upstreams: every service's upstream, by name: the same
            objects the proxy balances over.
        @param resolver: the reactor's C{nameResolver}, or a fake in tests.
        @param clock: the clock that schedules rounds.
        @param refresh_ms: time between the starts of two rounds; at least 1.
        """
        if refresh_ms < 1:
            raise ValueError("the refresh interval must be at least 1 ms")
        self._upstreams = dict(upstreams)
        self._resolver = resolver
        self._clock = clock
        self._interval = refresh_ms / 1000
        #: Each service's configured URLs, as the configuration gave them.
        self._configured: Dict[str, Tuple[str, ...]] = {
            name: tuple(upstream.service.instances) for name, upstream in self._upstreams.items()
        }
        #: The latest non-empty answer for each host name.
        self._answers: Dict[str, Tuple[str, ...]] = {}
        #: Host names whose latest resolution failed (one warning a streak).
        self._failing: Set[str] = set()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._round: Optional["Deferred[None]"] = None
        self._stopped = False
        #: Rounds completed, for tests and the curious.
        self.rounds = 0

    def names(self) -> List[str]:
        """
        Every host name to resolve (IP addresses left out), each once.
        """
        names: List[str] = []
        for urls in self._configured.values():
            for url in urls:
                host = _host_of(url)
                if not _is_ip(host) and host not in names:
                    names.append(host)
        return names

    def startService(self) -> None:
        """
        Resolve at once, then every interval.  Until a name's first answer
        its configured URL is used as it is.
        """
        super().startService()
        self._stopped = False
        if not self._loop.running:
            self._loop.start(self._interval, now=True)

    def stopService(self) -> "Deferred[None]":
        """
        Stop resolving; an answer still on its way is ignored.
        """
        super().stopService()
        self._stopped = True
        if self._loop.running:
            self._loop.stop()
        return succeed(None)

    def _tick(self) -> None:
        if self._round is not None:
            _log.debug("DNS discovery round still running; tick skipped")
            return
        # Not returned to the loop, so a slow resolver does not shift rounds
        # off the interval's grid (the tick is skipped instead).
        self.run_round()

    def run_round(self) -> "Deferred[None]":
        """
        Resolve every name once, concurrently, then update every service's
        instances; fire when done.  Joins the round in flight if any.
        """
        if self._round is not None:
            joined: "Deferred[None]" = Deferred()
            self._round.addBoth(lambda _: joined.callback(None))
            return joined
        names = self.names()
        round_: "Deferred[None]" = Deferred()
        self._round = round_
        resolutions = [self._resolve(name) for name in names]

        def resolved(results: Sequence[Tuple[str, Optional[List[str]], Optional[str]]]) -> None:
            if not self._stopped:
                for name, addresses, error in results:
                    self._record(name, addresses, error)
                self._apply()

        def ended(result: object) -> None:
            self._round = None
            self.rounds += 1
            round_.callback(None)
            if isinstance(result, Failure):
                _log.failure("DNS discovery round failed", result)

        gatherResults(resolutions, consumeErrors=True).addCallback(resolved).addBoth(ended)
        return round_

    def _resolve(self, name: str) -> "Deferred[Tuple[str, Optional[List[str]], Optional[str]]]":
        """
        Resolve C{name}: fires with C{(name, addresses, None)}, or
        C{(name, None, error)} when the resolver raised; never fails.
        """
        collector = _Collector()
        try:
            self._resolver.resolveHostName(collector, name, 0)
        except Exception as error:  # a resolver that raises, rather than reporting nothing
            return succeed((name, None, f"{type(error).__name__}: {error}"))
        return collector.done.addCallback(lambda addresses: (name, addresses, None))

    def _record(self, name: str, addresses: Optional[List[str]], error: Optional[str]) -> None:
        """
        Keep C{name}'s answer, or keep the previous one and warn (once a
        streak) when it failed or was empty.
        """
        if addresses:
            self._answers[name] = tuple(sorted(addresses, key=_address_order))
            if name in self._failing:
                self._failing.discard(name)
                _log.info(
                    "DNS discovery: {host} resolves again",
                    host=name,
                    addresses=list(self._answers[name]),
                )
            return
        if name in self._failing:
            return
        self._failing.add(name)
        kept = self._answers.get(name)
        _log.warn(
            "DNS discovery: cannot resolve {host} ({error}); keeping its instances",
            host=name,
            error=error or "no addresses",
            services=[s for s, urls in self._configured.items() if any(_host_of(u) == name for u in urls)],
            kept=list(kept) if kept is not None else None,
        )

    def urls_of(self, service: str) -> List[str]:
        """
        The instance URLs of C{service} from the answers so far.
        """
        urls: List[str] = []
        for url in self._configured[service]:
            host = _host_of(url)
            answer = None if _is_ip(host) else self._answers.get(host)
            expanded = [url] if answer is None else [instance_url(url, a) for a in answer]
            for each in expanded:
                if each not in urls:
                    urls.append(each)
        return urls

    def _apply(self) -> None:
        """
        Give every service the instances the answers make, where they changed.
        """
        for name, upstream in self._upstreams.items():
            wanted = self.urls_of(name)
            current = [instance.url for instance in upstream.instances.instances]
            if wanted == current:
                continue
            upstream.instances.update(wanted)
            _log.info(
                "DNS discovery: {service} has {count} instances",
                service=name,
                count=len(wanted),
                instances=wanted,
                added=[url for url in wanted if url not in current],
                removed=[url for url in current if url not in wanted],
            )


def _address_order(address: str) -> Tuple[int, int]:
    """
    A stable order for addresses: DNS servers rotate their answers, and the
    instances' order (which round robin walks) should not churn with them.
    """
    try:
        parsed = ip_address(address)
    except ValueError:
        return (9, 0)  # not an address: after them, in the order given
    return (parsed.version, int(parsed))
