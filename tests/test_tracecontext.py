"""
W3C Trace Context: the traceparent rules, and what the proxy forwards.
"""

from __future__ import annotations

from typing import Any, List

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from qeetgw.tracecontext import (
    NEW_TRACE_FLAGS,
    Parent,
    from_headers,
    new_span_id,
    new_trace_id,
    parse_traceparent,
)
from tests.gateway import MemoryGateway
from tests.memory import get

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01".encode()


class ParseTests(TestCase):
    """
    L{parse_traceparent} against the spec's valid and invalid shapes.
    """

    def test_valid(self) -> None:
        self.assertEqual(parse_traceparent(VALID), Parent("00", TRACE, PARENT, "01"))

    def test_unsampled(self) -> None:
        self.assertEqual(parse_traceparent(VALID[:-2] + b"00").flags, "00")

    def test_invalid(self) -> None:
        cases = [
            None,
            b"",
            VALID.upper(),  # uppercase hex
            f"00-{TRACE.upper()}-{PARENT}-01".encode(),
            f"00-{TRACE}-{PARENT.upper()}-01".encode(),
            f"00-{TRACE}-{PARENT}-0A".encode(),
            f"00-{TRACE[:-1]}-{PARENT}-01".encode(),  # short trace-id
            f"00-{TRACE}0-{PARENT}-01".encode(),  # long trace-id
            f"00-{TRACE}-{PARENT[:-1]}-01".encode(),
            f"00-{TRACE}-{PARENT}0-01".encode(),
            f"00-{TRACE}-{PARENT}-1".encode(),
            f"00-{'0' * 32}-{PARENT}-01".encode(),  # all-zero trace-id
            f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero parent-id
            f"ff-{TRACE}-{PARENT}-01".encode(),  # version ff
            f"0-{TRACE}-{PARENT}-01".encode(),
            f"0g-{TRACE}-{PARENT}-01".encode(),
            f"00-{TRACE}-{PARENT}-01-extra".encode(),  # extra field on 00
            VALID + b"-",
            f"00_{TRACE}_{PARENT}_01".encode(),
            f"00-{TRACE[:-1]}g-{PARENT}-01".encode(),
            f"00-{TRACE}-{PARENT}-01".encode() + b" ",
            "00-4bf92f3577b34da6a3ce929d0e0e473\u00e9-00f067aa0ba902b7-01".encode(),
            f"cc-{TRACE}-{PARENT}-01extra".encode(),  # future: no dash after flags
            f"cc-{TRACE}-{PARENT}".encode(),  # future: too short
        ]
        for case in cases:
            self.assertIsNone(parse_traceparent(case), case)

    def test_future_version(self) -> None:
        """
        A later version is read by its first four fields; what follows a
        dash after the flags is ignored.
        """
        self.assertEqual(
            parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-holds".encode()),
            Parent("cc", TRACE, PARENT, "01"),
        )
        self.assertEqual(
            parse_traceparent(f"01-{TRACE}-{PARENT}-00".encode()), Parent("01", TRACE, PARENT, "00")
        )


class ContextTests(TestCase):
    """
    L{from_headers}: continue a valid trace, start one otherwise.
    """

    def test_continued(self) -> None:
        context = from_headers([VALID], [b"rojo=00f067aa0ba902b7", b"congo=t61rcWkgMzE"])
        self.assertEqual(context.trace_id, TRACE)
        self.assertNotEqual(context.span_id, PARENT)
        self.assertEqual(len(context.span_id), 16)
        self.assertEqual(context.flags, "01")
        self.assertEqual(context.tracestate, (b"rojo=00f067aa0ba902b7", b"congo=t61rcWkgMzE"))
        self.assertEqual(
            context.traceparent(), f"00-{TRACE}-{context.span_id}-01".encode()
        )

    def test_future_version_forwarded_as_00(self) -> None:
        context = from_headers([f"cc-{TRACE}-{PARENT}-01-x".encode()], None)
        self.assertTrue(context.traceparent().startswith(f"00-{TRACE}-".encode()))

    def test_new_trace(self) -> None:
        for traceparents in (None, [b"garbage"], [VALID, VALID]):
            context = from_headers(traceparents, [b"rojo=1"])
            self.assertFalse(context.continued)
            self.assertNotEqual(context.trace_id, TRACE)
            self.assertEqual(context.flags, NEW_TRACE_FLAGS)
            # A tracestate without a valid traceparent is dropped.
            self.assertEqual(context.tracestate, ())
            self.assertIsNotNone(parse_traceparent(context.traceparent()))

    def test_random_ids(self) -> None:
        ids = {new_trace_id() for _ in range(1000)}
        self.assertEqual(len(ids), 1000)
        self.assertTrue(all(len(i) == 32 and i.strip("0") for i in ids))
        self.assertEqual(len(new_span_id()), 16)


class ProxyTraceTests(TestCase):
    """
    What the proxy sends upstream, and what the access log says.
    """

    def setUp(self) -> None:
        self.gateway = MemoryGateway({"REQUIRE_AUTH": "false"})
        self.events: List[Any] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def access_trace_ids(self) -> List[str]:
        return [e["trace_id"] for e in self.events if e.get("log_namespace") == "qeetgw.access"]

    def test_continued(self) -> None:
        response = self.gateway.send(
            get(
                b"/api/v1/users/7",
                b"traceparent: " + VALID + b"\r\ntracestate: rojo=00f067aa0ba902b7\r\n"
                b"tracestate: congo=t61rcWkgMzE\r\n",
            )
        )
        self.assertEqual(response.code, 200)
        seen = self.gateway.upstream.seen[0].headers
        forwarded = parse_traceparent(seen.getRawHeaders(b"traceparent")[0])
        self.assertEqual(forwarded.trace_id, TRACE)
        self.assertEqual(forwarded.flags, "01")
        self.assertNotEqual(forwarded.parent_id, PARENT)
        self.assertEqual(
            seen.getRawHeaders(b"tracestate"), [b"rojo=00f067aa0ba902b7", b"congo=t61rcWkgMzE"]
        )
        self.assertEqual(self.access_trace_ids(), [TRACE])

    def test_unsampled_kept(self) -> None:
        self.gateway.send(get(b"/api/v1/users/7", b"traceparent: " + VALID[:-2] + b"00\r\n"))
        seen = self.gateway.upstream.seen[0].headers
        self.assertEqual(parse_traceparent(seen.getRawHeaders(b"traceparent")[0]).flags, "00")

    def test_malformed_new_trace(self) -> None:
        response = self.gateway.send(
            get(b"/api/v1/users/7", b"traceparent: " + VALID.upper() + b"\r\ntracestate: rojo=1\r\n")
        )
        self.assertEqual(response.code, 200)
        seen = self.gateway.upstream.seen[0].headers
        forwarded = parse_traceparent(seen.getRawHeaders(b"traceparent")[0])
        self.assertIsNotNone(forwarded)
        self.assertNotEqual(forwarded.trace_id, TRACE.upper().lower())
        self.assertEqual(forwarded.flags, NEW_TRACE_FLAGS)
        self.assertFalse(seen.hasHeader(b"tracestate"))
        self.assertEqual(self.access_trace_ids(), [forwarded.trace_id])

    def test_absent_new_trace(self) -> None:
        self.gateway.send(get(b"/api/v1/users/7"))
        self.gateway.send(get(b"/api/v1/users/8"))
        first, second = (
            parse_traceparent(seen.headers.getRawHeaders(b"traceparent")[0])
            for seen in self.gateway.upstream.seen
        )
        self.assertNotEqual(first.trace_id, second.trace_id)
        self.assertEqual(self.access_trace_ids(), [first.trace_id, second.trace_id])

    def test_not_proxied_logged(self) -> None:
        """
        A request the gateway answers itself still logs its trace id.
        """
        self.gateway.send(get(b"/health", b"traceparent: " + VALID + b"\r\n"))
        self.assertEqual(self.access_trace_ids(), [TRACE])
