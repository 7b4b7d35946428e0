"""
Tests for L{qeetgw.logging}: JSON lines and the access event.
"""

import io
import json
import random
from typing import List

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import qeetgw.logging
from qeetgw.logging import (
    _ACCESS_FORMAT,
    ACCESS_FIELDS,
    JSONLinesObserver,
    access_line,
    event_as_json,
    observer_for,
)
from tests.memory import get


def event(**fields: object) -> dict:
    base = {"log_time": 1_800_000_000.25, "log_level": LogLevel.info, "log_namespace": "qeetgw.test"}
    base.update(fields)
    return base


class Buffer(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class EventAsJSONTests(SynchronousTestCase):
    """
    L{event_as_json}: a flat object with the event's fields.
    """

    def test_fields_and_message(self) -> None:
        record = event_as_json(event(log_format="{method} {path} {status!r}", method="GET", path="/x", status=200))
        self.assertEqual(
            record,
            {"time": "2027-01-15T08:00:00.250Z", "level": "info", "namespace": "qeetgw.test",
             "message": "GET /x 200", "method": "GET", "path": "/x", "status": 200},
        )

    def test_twisted_format_syntax_falls_back(self) -> None:
        record = event_as_json(event(log_format="{thing.upper()}", thing="abc"))
        self.assertEqual(record["message"], "ABC")

    def test_unserialisable_values_become_text(self) -> None:
        record = event_as_json(event(log_format="x", raw=b"\xff", obj=object(), nested={"a": (1, b"b")}))
        json.dumps(record)
        self.assertEqual(record["raw"], "\xff")
        self.assertEqual(record["nested"], {"a": [1, "b"]})

    def test_failure_has_a_traceback(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        record = event_as_json(event(log_format="boom", log_failure=failure))
        self.assertIn("ZeroDivisionError", record["traceback"])


class ObserverTests(SynchronousTestCase):
    """
    L{JSONLinesObserver}: one object a line, flushed per line or per tick.
    """

    def test_one_line_each(self) -> None:
        out = Buffer()
        observer = JSONLinesObserver(out)
        observer(event(log_format="one"))
        observer(event(log_format="two"))
        lines = out.getvalue().splitlines()
        self.assertEqual([json.loads(line)["message"] for line in lines], ["one", "two"])
        self.assertEqual(out.flushes, 2)

    def test_flushed_once_per_tick(self) -> None:
        out, clock = Buffer(), Clock()
        observer = JSONLinesObserver(out, clock.callLater)
        for _ in range(5):
            observer(event(log_format="x"))
        self.assertEqual(out.flushes, 0)
        clock.advance(0)
        self.assertEqual(out.flushes, 1)
        observer(event(log_format="y"))
        clock.advance(0)
        self.assertEqual(out.flushes, 2)

    def test_written_once_per_tick_when_the_stream_writes_through(self) -> None:
        """
        The lines of one tick reach the stream in one write, whatever its own
        buffering (PYTHONUNBUFFERED makes standard output write through).
        """
        writes: List[str] = []

        class WriteThrough(Buffer):
            def write(self, text: str) -> int:
                writes.append(text)
                return super().write(text)

        out, clock = WriteThrough(), Clock()
        observer = JSONLinesObserver(out, clock.callLater)
        for name in ("a", "b", "c"):
            observer(event(log_format=name))
        self.assertEqual(writes, [])
        clock.advance(0)
        self.assertEqual(len(writes), 1)
        self.assertEqual([json.loads(line)["message"] for line in writes[0].splitlines()], ["a", "b", "c"])
        self.assertTrue(writes[0].endswith("\n"))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_written_at_once_past_the_cap(self) -> None:
        out, clock = Buffer(), Clock()
        observer = JSONLinesObserver(out, clock.callLater)
        observer.MAX_UNWRITTEN = 250  # more than one line of 160, less than two
        observer(event(log_format="x" * 60))
        self.assertEqual(out.getvalue(), "")
        observer(event(log_format="y" * 60))
        messages = [json.loads(line)["message"] for line in out.getvalue().splitlines()]
        self.assertEqual(messages, ["x" * 60, "y" * 60])
        # The tick already scheduled finds nothing left to write.
        clock.advance(0)
        self.assertEqual(out.flushes, 1)

    def test_unwritten_lines_are_written_at_exit(self) -> None:
        out, clock = Buffer(), Clock()
        observer = JSONLinesObserver(out, clock.callLater)
        observer(event(log_format="last words"))
        self.assertIn(observer, qeetgw.logging._UNWRITTEN)
        qeetgw.logging._write_all_unwritten()
        self.assertEqual(json.loads(out.getvalue())["message"], "last words")
        self.assertNotIn(observer, qeetgw.logging._UNWRITTEN)

    def test_unloggable_event_is_still_a_line(self) -> None:
        class Loud:
            def __str__(self) -> str:
                raise RuntimeError("no")

        out = Buffer()
        JSONLinesObserver(out)(event(log_format="x", loud=Loud()))
        self.assertEqual(json.loads(out.getvalue())["message"], "unloggable event")

    def test_text_observer_by_default(self) -> None:
        out = io.StringIO()
        observer_for("text", out)(event(log_format="hello {who}", who="you"))
        self.assertIn("hello you", out.getvalue())
        self.assertFalse(out.getvalue().startswith("{"))


class AccessEventTests(SynchronousTestCase):
    """
    One access event per request, with its fields.
    """

    def test_fields(self) -> None:
        from tests.gateway import MemoryGateway

        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        gateway = MemoryGateway({"REQUIRE_AUTH": "false"})
        gateway.send(get(b"/api/v1/orders/3?token=secret", b"X-Correlation-ID: acc-1\r\n"))
        access = [e for e in events if e.get("log_namespace") == "qeetgw.access"]
        self.assertEqual(len(access), 1)
        record = event_as_json(access[0])
        self.assertEqual(
            {key: record[key] for key in ["method", "path", "status", "correlation_id", "client_ip", "service", "upstream_status"]},
            {"method": "GET", "path": "/api/v1/orders/3", "status": 200, "correlation_id": "acc-1",
             "client_ip": "203.0.113.9", "service": "order-service", "upstream_status": 200},
        )
        self.assertGreater(record["bytes_sent"], 0)
        self.assertNotIn("secret", record["message"])


_NASTY = ['"', "\\", "\\\"", "\n\r\t\b\f", "\x00\x01\x1f\x7f", "é", "\u2028\u2029", "\U0001f600", "{", "}", "", " "]


def _nasty_string(rng: "random.Random") -> str:
    parts = []
    for _ in range(rng.randrange(0, 6)):
        if rng.random() < 0.5:
            parts.append(rng.choice(_NASTY))
        else:
            point = rng.randrange(0, 0x110000)
            parts.append(chr(point) if not 0xD800 <= point < 0xE000 else "x")
    return "".join(parts)


def _access_value(rng: "random.Random", name: str) -> object:
    """
    A value field C{name} of an access event may take, or a nasty one.
    """
    pick = rng.random()
    if name == "duration_ms":
        return rng.choice([
            0.0, -0.0, 1e16, 1.5e-7, 123456789.125, round(rng.random() * 10 ** rng.randrange(-3, 12), 3),
            rng.random(), float(rng.randrange(10 ** 6)),
        ])
    if name == "status":
        return rng.choice([200, 404, 599, "aborted"])
    if pick < 0.3:
        return None
    if pick < 0.6:
        return rng.choice([0, 1, -1, 2 ** 70, -(2 ** 63), rng.randrange(10 ** 6)])
    return _nasty_string(rng)


def _access_event(rng: "random.Random") -> dict:
    """
    An access event as C{Logger.emit} makes it: the fields in order, then
    twisted's keys.
    """
    fields = {name: _access_value(rng, name) for name in ACCESS_FIELDS}
    fields.update(
        log_logger=object(), log_level=LogLevel.info, log_namespace="qeetgw.access", log_source=None,
        log_format=_ACCESS_FORMAT, log_time=1_800_000_000 + rng.random() * 10 ** 6,
    )
    return fields


def _general(record: dict) -> str:
    return json.JSONEncoder(ensure_ascii=False).encode(event_as_json(record))


class AccessLineTests(SynchronousTestCase):
    """
    L{access_line}, the access event's own serializer, writes exactly what
    the general encoder writes, and leaves every other event to it.
    """

    def test_same_text_as_the_general_encoder(self) -> None:
        rng = random.Random(1313)
        for _ in range(5000):
            record = _access_event(rng)
            expected = _general(record)
            self.assertEqual(access_line(record), expected)

    def test_real_access_event(self) -> None:
        """
        An event L{access_event} emits takes the fast path, to the same line.
        """
        from tests.gateway import MemoryGateway

        events: list = []
        # Straight to a list: the global publisher's other observers (trial's
        # legacy one) add fields to the event.
        self.patch(qeetgw.logging, "access_log", Logger(namespace="qeetgw.access", observer=events.append))
        gateway = MemoryGateway({"REQUIRE_AUTH": "false"})
        gateway.send(get(b"/api/v1/orders/%22x%5C?q=1", b"X-Correlation-ID: a\"b\\c\r\n"))
        gateway.send(get(b"/nowhere"))
        access = [e for e in events if e.get("log_namespace") == "qeetgw.access"]
        self.assertEqual(len(access), 2)
        for record in access:
            line = access_line(record)
            self.assertIsNotNone(line)
            self.assertEqual(line, _general(record))

    def test_other_events_take_the_general_encoder(self) -> None:
        rng = random.Random(7)
        base = _access_event(rng)
        odd = [
            dict(base, log_namespace="qeetgw.other"),
            dict(base, system="-"),  # a legacy observer's addition
            {key: base[key] for key in reversed(list(base))},
            dict(base, log_failure=Failure(ValueError("x"))),
            dict(base, status=True),
            dict(base, duration_ms=float("nan")),
            dict(base, duration_ms=float("-inf")),
            dict(base, bytes_sent=b"bytes"),
            dict(base, path=type("Text", (str,), {})("/x")),
            dict(base, tries=LogLevel.info),
        ]
        for record in odd:
            self.assertIsNone(access_line(record))
            out = Buffer()
            JSONLinesObserver(out)(record)
            self.assertEqual(out.getvalue(), _general(record) + "\n")

    def test_observer_writes_the_line(self) -> None:
        record = _access_event(random.Random(3))
        out = Buffer()
        JSONLinesObserver(out)(record)
        self.assertEqual(out.getvalue(), _general(record) + "\n")
