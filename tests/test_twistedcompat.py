"""
Tests for L{qeetgw.twistedcompat}: each private name of Twisted behaves as
the module says, and no other module of qeetgw uses one.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import re
import signal
from typing import Any, List, Set, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

import qeetgw
from qeetgw.twistedcompat import (
    ChunkedDecoder,
    HookedHTTPChannel,
    HookedRequest,
    MalformedChunkedData,
    TrustRoot,
    add_received_fields,
    clear_exit_signal,
)
from tests.test_project import PROJECT_ROOT


def _is_private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


class FenceTests(SynchronousTestCase):
    """
    Only L{qeetgw.twistedcompat} names Twisted's private API.
    """

    def test_no_other_module_imports_a_private_name(self) -> None:
        found: List[str] = []
        for folder, folders, files in os.walk(os.path.join(PROJECT_ROOT, "qeetgw")):
            folders[:] = [f for f in folders if f != "__pycache__"]
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or name == "twistedcompat.py":
                    continue
                with open(path, encoding="utf-8") as opened:
                    tree = ast.parse(opened.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom):
                        names = [f"{node.module}.{alias.name}" for alias in node.names]
                    elif isinstance(node, ast.Import):
                        names = [alias.name for alias in node.names]
                    else:
                        continue
                    found += [
                        f"{os.path.relpath(path, PROJECT_ROOT)}:{node.lineno}: {each}"
                        for each in names
                        if each.startswith("twisted.") and _is_private(each)
                    ]
        self.assertEqual(found, [])

    def test_no_subclass_of_twisted_touches_its_private_names(self) -> None:
        found: Set[Tuple[str, str]] = set()
        for module_info in pkgutil.walk_packages(qeetgw.__path__, "qeetgw."):
            if module_info.name == "qeetgw.twistedcompat":
                continue
            module = importlib.import_module(module_info.name)
            for value in vars(module).values():
                if not inspect.isclass(value) or value.__module__ != module.__name__:
                    continue
                private = _private_names_of_twisted_bases(value)
                used = set(re.findall(r"\b(_[A-Za-z]\w*)\b", inspect.getsource(value)))
                found |= {(value.__qualname__, name) for name in used & private}
        self.assertEqual(sorted(found), [])


def _private_names_of_twisted_bases(cls: type) -> Set[str]:
    """
    The private attributes and methods of C{cls}'s Twisted base classes,
    from their class dictionaries and the C{self._name} their code uses.
    """
    names: Set[str] = set()
    for base in cls.__mro__:
        if base.__module__.split(".")[0] != "twisted":
            continue
        names.update(n for n in vars(base) if n.startswith("_") and not n.startswith("__"))
        try:
            names.update(re.findall(r"self\.(_[A-Za-z]\w*)", inspect.getsource(base)))
        except (OSError, TypeError):
            pass
    return names


class ReactorTests(SynchronousTestCase):
    """
    L{clear_exit_signal}.
    """

    def test_forgets_the_signal(self) -> None:
        class Reactor:
            _exitSignal = signal.SIGTERM

        reactor = Reactor()
        clear_exit_signal(reactor)
        self.assertIsNone(reactor._exitSignal)

    def test_a_reactor_without_one_is_left_alone(self) -> None:
        reactor = MemoryReactor()
        clear_exit_signal(reactor)
        self.assertIsNone(getattr(reactor, "_exitSignal", None))


class TrustRootTests(SynchronousTestCase):
    """
    L{TrustRoot} is asked for the CAs of each TLS context made with it, and
    L{BrowserLikePolicyForHTTPS} accepts it.
    """

    def test_loads_the_context(self) -> None:
        loaded: List[Any] = []

        class Recording(TrustRoot):
            def add_ca_certificates(self, context: Any) -> None:
                loaded.append(context)

        context = CertificateOptions(trustRoot=Recording()).getContext()
        self.assertEqual(loaded, [context])
        BrowserLikePolicyForHTTPS(Recording()).creatorForNetloc(b"example.com", 443)


class _Recording(ChunkedDecoder):
    """
    A chunked decoder that records what its hooks are told.
    """

    def __init__(self) -> None:
        self.data: List[bytes] = []
        self.lines: List[bytes] = []
        self.sizes: List[int] = []
        self.rest: List[bytes] = []
        super().__init__(self.data.append, self.rest.append)

    def check_chunk_size_line(self, line: bytearray) -> None:
        self.lines.append(bytes(line))
        if line.startswith(b"bad"):
            raise MalformedChunkedData("bad")

    def chunk_size_read(self, length: int) -> None:
        self.sizes.append(length)


class ChunkedDecoderTests(SynchronousTestCase):
    """
    L{ChunkedDecoder}'s hooks.
    """

    def test_each_chunk_size_line_then_its_size(self) -> None:
        decoder = _Recording()
        decoder.dataReceived(b"5\r")
        decoder.dataReceived(b"\nhello\r\na\r\n0123456789\r\n0\r\n\r\nafter")
        # Each time with the buffer from the line on, complete or not.
        self.assertEqual(
            [line.split(b"\r\n")[0] for line in decoder.lines], [b"5\r", b"5", b"a", b"0"]
        )
        self.assertEqual(decoder.lines[-1], b"0\r\n\r\nafter")
        self.assertEqual(decoder.sizes, [5, 10])
        self.assertEqual(b"".join(decoder.data), b"hello0123456789")
        self.assertEqual(decoder.rest, [b"after"])

    def test_a_refused_line_is_malformed(self) -> None:
        decoder = _Recording()
        self.assertRaises(MalformedChunkedData, decoder.dataReceived, b"bad\r\n")
        self.assertEqual(decoder.sizes, [])


class _Channel(HookedHTTPChannel):
    """
    A channel that reads as the gateway's does: each line it is given is a
    request target, made into a request and answered when the test says.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[Any] = []
        self.answering: List["_Request"] = []

    def dataReceived(self, data: bytes) -> None:
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        request.requestHeaders.setRawHeaders(b"host", [b"h"])
        request.gotLength(0)
        self.begin_handling()
        request.requestReceived(b"GET", data, b"HTTP/1.1")

    def bad_request_received(self) -> None:
        self.seen.append("bad request")
        super().bad_request_received()


class _Request(HookedRequest):
    """
    A request answered when the test says.
    """

    def process(self) -> None:
        channel: _Channel = self.channel
        channel.seen.append(("handling", self.uri))
        channel.answering.append(self)

    def cleaned_up(self, channel: Any) -> None:
        channel.seen.append(("cleaned up", self.uri))


def _connect() -> Tuple[_Channel, StringTransport]:
    site = Site(Resource())
    site.protocol = _Channel
    site.requestFactory = _Request
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


class HookedHTTPChannelTests(SynchronousTestCase):
    """
    L{HookedHTTPChannel} and L{HookedRequest}.
    """

    def test_handling_and_clean_up(self) -> None:
        channel, transport = _connect()
        channel.dataReceived(b"/x")
        self.assertIsNone(channel.timeOut)
        channel.answering.pop().finish()
        self.assertEqual(channel.seen, [("handling", b"/x"), ("cleaned up", b"/x")])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(channel.requests, [])

    def test_full_send_buffer_while_handling(self) -> None:
        """
        While a request is handled, a full send buffer does not stop the
        reading of the connection; once it is done, it does.
        """
        channel, transport = _connect()
        channel.dataReceived(b"/x")
        channel.pauseProducing()
        self.assertEqual(transport.producerState, "producing")
        channel.resumeProducing()
        channel.answering.pop().finish()
        channel.pauseProducing()
        self.assertEqual(transport.producerState, "paused")

    def test_reading_paused_until_done(self) -> None:
        channel, transport = _connect()
        channel.dataReceived(b"/x")
        channel.pause_reading()
        self.assertEqual(transport.producerState, "paused")
        channel.answering.pop().finish()
        self.assertEqual(transport.producerState, "producing")

    def test_bad_request_hook(self) -> None:
        channel, transport = _connect()
        channel._respondToBadRequestAndDisconnect()
        self.assertEqual(channel.seen, ["bad request"])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request"))

    def test_timeout_after_request(self) -> None:
        channel, _ = _connect()
        channel.dataReceived(b"/")
        self.assertIsNone(channel.timeOut)
        channel.set_timeout_after_request(17)
        channel.answering.pop().finish()
        self.assertEqual(channel.timeOut, 17)

    def test_transport_released(self) -> None:
        channel, transport = _connect()
        self.assertIs(transport.producer, channel)
        transport.pauseProducing()
        channel.release_transport()
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.producerState, "producing")


class ReceivedFieldsTests(SynchronousTestCase):
    """
    L{add_received_fields} stores what C{addRawHeader} would.
    """

    FIELDS = [
        (b"host", b"h"),
        (b"X-Forwarded-For", b"1.2.3.4"),
        (b"x-forwarded-for", b"5.6.7.8"),
        (b"ACCEPT", b"*/*"),
        (b"x-odd", b"a\rb"),
        (b"x-nul", b"a\x00b"),
    ]

    def test_same_as_add_raw_header(self) -> None:
        expected = Headers()
        for name, value in self.FIELDS:
            expected.addRawHeader(name, value)
        for _ in range(2):  # names unseen, then seen
            received = Headers()
            add_received_fields(received, self.FIELDS)
            self.assertEqual(list(received.getAllRawHeaders()), list(expected.getAllRawHeaders()))
            self.assertEqual(received.getRawHeaders(b"x-forwarded-for"), [b"1.2.3.4", b"5.6.7.8"])

    def test_names_remembered_are_bounded(self) -> None:
        import qeetgw.twistedcompat as compat

        self.patch(compat, "_RECEIVED_NAMES", {})
        self.patch(compat, "_MAX_RECEIVED_NAMES", 3)
        received = Headers()
        add_received_fields(received, [(b"x-%d" % (n,), b"v") for n in range(10)])
        self.assertEqual(len(compat._RECEIVED_NAMES), 3)
        self.assertEqual(received.getRawHeaders(b"X-9"), [b"v"])
        self.assertEqual(len(list(received.getAllRawHeaders())), 10)
