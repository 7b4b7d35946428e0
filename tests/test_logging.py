"""
Tests for L{qeetgw.logging}: JSON lines and the access event.
"""

import io
import json

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.logging import JSONLinesObserver, event_as_json, observer_for
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
