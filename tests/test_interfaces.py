"""
The rule for seams: a zope.interface interface (C{I...}) for a seam whose
implementations are ours, declared with C{@implementer}; a L{typing.Protocol}
only for the shape of a third-party object that declares no interface of
ours; Twisted's C{Protocol} never imported under another name.

Every class of qeetgw that declares an interface (ours, such as
L{IRateLimitStore}, or Twisted's, such as L{IStreamClientEndpoint}) provides
it as C{verifyObject} checks it: each method with a compatible signature,
each attribute present.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import os
import pkgutil
from typing import Any, Callable, Dict, Iterator, List, Protocol, Set, Type

from treq.testing import StubTreq
from twisted.internet.address import HostnameAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementedBy, providedBy
from zope.interface.verify import verifyObject

import qeetgw
from qeetgw.auth.jwks import JWKSKeySource
from qeetgw.auth.keys import HMACKeySource
from qeetgw.auth.verifier import TokenVerifier
from qeetgw.config import load_config
from qeetgw.hostendpoint import HostEndpoint, _Attempts, _Receiver
from qeetgw.logging import JSONLinesObserver
from qeetgw.process.startup import StartUpEndpoint
from qeetgw.ratelimit.memory import MemoryStore
from qeetgw.ratelimit.redis import RedisStore, _ReportingEndpoint
from qeetgw.twistedcompat import TrustRoot
from qeetgw.upstream.activehealth import ActiveHealthChecker
from qeetgw.upstream.client import UpstreamConnection, _Discard, _Reading
from qeetgw.upstream.discovery import _Collector
from qeetgw.upstream.health import HealthChecker
from qeetgw.upstream.pool import CachingEndpointFactory
from qeetgw.upstream.proxy import _StreamToClient
from qeetgw.upstream.tls import PlatformTrustPlus
from tests.gateway import SECRET
from tests.test_project import PROJECT_ROOT

#: The typing.Protocols of qeetgw, each the shape of third-party objects.
THIRD_PARTY_SHAPES = {
    "qeetgw.auth.jwks.JWKSClient": "treq's HTTPClient and StubTreq",
    "qeetgw.upstream.health.ProbeClient": "treq's HTTPClient and StubTreq",
}


def _receiver() -> _Receiver:
    attempts = _Attempts(
        lambda address: Deferred(), Clock(), 0.25, HostnameAddress(b"localhost", 80)
    )
    return _Receiver(attempts)


def _endpoint() -> HostEndpoint:
    return HostEndpoint(MemoryReactorClock(), "localhost", 80)


#: How to make an instance of each class that declares an interface.
EXAMPLES: Dict[Type[Any], Callable[[], object]] = {
    # Ours.
    HMACKeySource: lambda: HMACKeySource(b"k" * 32, ["HS256"]),
    JWKSKeySource: lambda: JWKSKeySource(
        "https://auth.example/jwks.json", StubTreq(Resource()), Clock(), ["RS256"], 30.0, 5.0
    ),
    TokenVerifier: lambda: TokenVerifier(load_config({"JWT_SECRET": SECRET}), Clock()),
    MemoryStore: lambda: MemoryStore(Clock()),
    RedisStore: lambda: RedisStore("redis://localhost:6379", "p:", 100, Clock()),
    HealthChecker: lambda: HealthChecker([], StubTreq(Resource()), Clock(), 1000),
    ActiveHealthChecker: lambda: ActiveHealthChecker({}, StubTreq(Resource()), Clock(), 1000),
    _Discard: _Discard,
    _StreamToClient: lambda: _StreamToClient(DummyRequest([b""]), Deferred()),
    # Twisted's.
    _Reading: lambda: _Reading(UpstreamConnection()),
    CachingEndpointFactory: lambda: CachingEndpointFactory(
        MemoryReactorClock(), BrowserLikePolicyForHTTPS()
    ),
    _Collector: _Collector,
    HostEndpoint: _endpoint,
    _Receiver: _receiver,
    _ReportingEndpoint: lambda: _ReportingEndpoint(_endpoint(), lambda failure: None),
    StartUpEndpoint: lambda: StartUpEndpoint(
        serverFromString(MemoryReactorClock(), "tcp:0"), "tcp:0", "metrics", lambda port: None
    ),
    JSONLinesObserver: lambda: JSONLinesObserver(io.StringIO()),
    TrustRoot: TrustRoot,
    PlatformTrustPlus: lambda: PlatformTrustPlus([]),
}


def qeetgw_classes() -> Iterator[Type[Any]]:
    """
    Every class defined in a module of qeetgw.
    """
    seen: Set[Type[Any]] = set()
    for module_info in pkgutil.walk_packages(qeetgw.__path__, "qeetgw."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if inspect.isclass(value) and value.__module__ == module.__name__ and value not in seen:
                seen.add(value)
                yield value


def declaring_classes() -> Iterator[Type[Any]]:
    """
    Every class defined in qeetgw that provides an interface declared by a
    class of qeetgw (itself or a base), rather than only ones its Twisted
    base classes declare (every L{Resource} is an C{IResource}).
    """
    for cls in qeetgw_classes():
        if any(
            base.__module__.split(".")[0] == "qeetgw"
            and "__implemented__" in vars(base)
            and vars(base)["__implemented__"].declared
            for base in cls.__mro__
        ):
            yield cls


class InterfaceTests(SynchronousTestCase):
    """
    Declared interfaces are provided.
    """

    def test_every_declaring_class_has_an_example(self) -> None:
        missing = sorted(
            f"{cls.__module__}.{cls.__qualname__}"
            for cls in declaring_classes()
            if cls not in EXAMPLES
        )
        self.assertEqual(missing, [])

    def test_every_example_provides_what_its_class_declares(self) -> None:
        checked: List[str] = []
        for cls, make in EXAMPLES.items():
            instance = make()
            interfaces = list(providedBy(instance))
            self.assertTrue(interfaces, cls)
            self.assertEqual(set(interfaces), set(implementedBy(cls)))
            for interface in interfaces:
                self.assertTrue(verifyObject(interface, instance))
                checked.append(f"{cls.__name__}: {interface.__name__}")
        self.assertIn("TokenVerifier: IVerifier", checked)
        self.assertIn("HealthChecker: IHealthSource", checked)
        self.assertIn("ActiveHealthChecker: IHealthSource", checked)
        self.assertIn("MemoryStore: IRateLimitStore", checked)
        self.assertIn("RedisStore: IRateLimitStore", checked)
        self.assertIn("HMACKeySource: IKeySource", checked)
        self.assertIn("JWKSKeySource: IKeySource", checked)


class RuleTests(SynchronousTestCase):
    """
    One rule for seams, applied everywhere.
    """

    def test_typing_protocols_describe_third_party_shapes_only(self) -> None:
        found = {
            f"{cls.__module__}.{cls.__qualname__}"
            for cls in qeetgw_classes()
            if Protocol in cls.__bases__
        }
        self.assertEqual(found, set(THIRD_PARTY_SHAPES))

    def test_twisted_protocol_is_never_renamed(self) -> None:
        renamed: List[str] = []
        for folder, folders, files in os.walk(os.path.join(PROJECT_ROOT, "qeetgw")):
            folders[:] = [f for f in folders if f != "__pycache__"]
            for name in (n for n in files if n.endswith(".py")):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as opened:
                    tree = ast.parse(opened.read(), path)
                renamed += [
                    f"{os.path.relpath(path, PROJECT_ROOT)}:{node.lineno}"
                    for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("twisted")
                    and any(alias.asname and alias.name == "Protocol" for alias in node.names)
                ]
        self.assertEqual(renamed, [])
