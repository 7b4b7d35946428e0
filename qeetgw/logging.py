"""
Access-log events and the log observers.

Each finished request is one event, with its fields as data: C{method},
C{path}, C{status}, C{duration_ms}, C{bytes_sent}, C{correlation_id},
C{client_ip}, C{service} and C{upstream_status}.  The text observer renders
its format string for people; the JSON observer writes one JSON object a line
for log shippers (not twisted's RFC 7464 records).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any, Dict, Optional

from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    formatEvent,
    textFileLogObserver,
)
from twisted.web.iweb import IRequest
from zope.interface import implementer

from qeetgw.clientaddr import client_ip
from qeetgw.correlation import correlation_id

access_log = Logger(namespace="qeetgw.access")

_ACCESS_FORMAT = (
    "{method} {path} {status} {duration_ms}ms {bytes_sent}B"
    " service={service} upstream_status={upstream_status}"
    " client={client_ip} correlation_id={correlation_id}"
)


def access_event(request: IRequest, now: float, finished: bool = True) -> None:
    """
    Emit the access event of C{request}, finished (or, when C{finished} is
    false, cut off before its response was complete) at C{now}.
    """
    access_log.info(
        _ACCESS_FORMAT,
        method=request.method.decode("latin-1"),
        # The path without the query string, which may carry secrets.
        path=(request.path or b"").decode("latin-1"),
        status=request.code if finished else "aborted",
        duration_ms=round((now - getattr(request, "started", now)) * 1000, 3),
        bytes_sent=getattr(request, "sentLength", 0),
        correlation_id=correlation_id(request),
        client_ip=client_ip(request),
        service=getattr(request, "qeetgw_service", None),
        upstream_status=getattr(request, "qeetgw_upstream_status", None),
    )


def _json_safe(value: Any) -> Any:
    """
    C{value} if JSON can carry it, else its text.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return str(value)


def event_as_json(event: LogEvent) -> Dict[str, Any]:
    """
    The flat JSON object of one log event: time, level, namespace, the
    rendered message, a traceback when there is a failure, and every field
    the event carries (twisted's own C{log_*} keys aside).
    """
    record: Dict[str, Any] = {
        "time": datetime.fromtimestamp(
            event.get("log_time", 0), tz=timezone.utc
        ).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": getattr(event.get("log_level"), "name", None),
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and key != "format":
            record[key] = _json_safe(value)
    return record


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Writes each event as one JSON object on one line.
    """

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: LogEvent) -> None:
        try:
            line = json.dumps(event_as_json(event), ensure_ascii=False)
        except Exception as error:  # never let a log line take the server down
            line = json.dumps({"message": "unloggable event", "error": str(error)})
        self._out.write(line + "\n")
        self._out.flush()


def observer_for(log_format: str, out: Optional[IO[str]] = None) -> ILogObserver:
    """
    The observer for LOG_FORMAT C{log_format} (C{"text"} or C{"json"}),
    writing to C{out} (standard output by default).
    """
    stream = out if out is not None else sys.stdout
    if log_format == "json":
        return JSONLinesObserver(stream)
    return textFileLogObserver(stream)
