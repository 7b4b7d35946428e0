"""
Access-log events and the log observers.

Each finished request is one event, with its fields as data: C{method},
C{path}, C{status}, C{duration_ms}, C{bytes_sent}, C{correlation_id},
C{client_ip}, C{service}, C{upstream_status}, C{tries} and C{instance} (how many
tries the request took and the instance that answered), C{trace_id} (the W3C trace the
request belongs to, see L{qeetgw.tracecontext}) and C{jwt_key} (the label of the key
that verified the request's token, see L{qeetgw.auth.keys.LabelledKey}; L{None} when
none was verified).  The text observer renders
its format string for people; the JSON observer writes one JSON object a line
for log shippers (not twisted's RFC 7464 records).
"""

from __future__ import annotations

import atexit
import json
import sys
import time
import weakref
from json.encoder import encode_basestring
from typing import IO, Any, Callable, Dict, List, Optional

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
from qeetgw.requeststate import state_of, trace_of

access_log = Logger(namespace="qeetgw.access")

_ACCESS_FORMAT = (
    "{method} {path} {status} {duration_ms}ms {bytes_sent}B"
    " service={service} upstream_status={upstream_status}"
    " client={client_ip} correlation_id={correlation_id} trace_id={trace_id}"
    " jwt_key={jwt_key}"
)


#: The fields of an access event, in the order L{access_event} gives them.
ACCESS_FIELDS = (
    "method",
    "path",
    "status",
    "duration_ms",
    "bytes_sent",
    "correlation_id",
    "client_ip",
    "service",
    "upstream_status",
    "tries",
    "instance",
    "trace_id",
    "jwt_key",
)


def access_event(request: IRequest, now: float, finished: bool = True) -> None:
    """
    Emit the access event of C{request}, finished (or, when C{finished} is
    false, cut off before its response was complete) at C{now}.
    """
    state = state_of(request)
    started = state.started
    access_log.info(
        _ACCESS_FORMAT,
        method=request.method.decode("latin-1"),
        # The path without the query string, which may carry secrets.
        path=(request.path or b"").decode("latin-1"),
        status=request.code if finished else "aborted",
        duration_ms=round((now - started) * 1000, 3) if started is not None else 0.0,
        bytes_sent=getattr(request, "sentLength", 0),
        correlation_id=correlation_id(request),
        client_ip=client_ip(request),
        service=state.service,
        upstream_status=state.upstream_status,
        tries=state.tries,
        instance=state.instance,
        trace_id=trace_of(request).trace_id,
        jwt_key=state.jwt_key,
    )


_PLAIN = (str, int, float, bool, type(None))


def _json_safe(value: Any) -> Any:
    """
    C{value} if JSON can carry it, else its text.
    """
    if type(value) in _PLAIN:  # the common case, without isinstance chains
        return value
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return str(value)


def _message(event: LogEvent) -> str:
    """
    The event's format string rendered with its fields.

    Plain C{{name}} fields (all of ours) take C{str.format_map}, several times
    cheaper than twisted.logger's own formatter, which runs for everything
    else (calls, missing keys) — this is on every request's access event.
    """
    text = event.get("log_format")
    if text is not None:
        try:
            return text.format_map(event)
        except Exception:
            pass
    return formatEvent(event)


class _Timestamps:
    """
    ISO-8601 UTC times with milliseconds, the seconds part made once per
    second rather than once per event.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return "%s.%03dZ" % (self._prefix, int((when - second) * 1000))


_timestamp = _Timestamps()


def event_as_json(event: LogEvent) -> Dict[str, Any]:
    """
    The flat JSON object of one log event: time, level, namespace, the
    rendered message, a traceback when there is a failure, and every field
    the event carries (twisted's own C{log_*} keys aside).
    """
    record: Dict[str, Any] = {
        "time": _timestamp(event.get("log_time", 0)),
        "level": getattr(event.get("log_level"), "name", None),
        "namespace": event.get("log_namespace"),
        "message": _message(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and key != "format":
            record[key] = _json_safe(value)
    return record


# One encoder, made once: json.dumps with any keyword argument builds a new
# JSONEncoder for every call, and this runs for every request.
_ENCODER = json.JSONEncoder(ensure_ascii=False)

_ACCESS_KEYS: List[str] = list(ACCESS_FIELDS)
#: Each access field with the separator and key before its value, as
#: L{_ENCODER} writes them.
_ACCESS_PREFIXES = tuple((", " + encode_basestring(key) + ": ", key) for key in ACCESS_FIELDS)


def access_line(event: LogEvent) -> Optional[str]:
    """
    The JSON line of an access event, written for its known fields: the
    same text as L{_ENCODER} gives for L{event_as_json}, several times
    cheaper, and this runs for every request.  L{None} for any event it is
    not sure of — another namespace, other fields, a failure, a value of
    another type than str, int, finite float or None — which then takes the
    general encoder.

    Strings are escaped by C{json.encoder.encode_basestring}, the function
    the encoder itself uses with C{ensure_ascii=False}; ints and floats are
    written with C{int.__repr__} and C{float.__repr__}, as it writes them.
    """
    if event.get("log_namespace") != "qeetgw.access" or "log_failure" in event:
        return None
    if [key for key in event if not key.startswith("log_")] != _ACCESS_KEYS:
        return None
    level = getattr(event.get("log_level"), "name", None)
    if type(level) is not str:
        return None
    parts = [
        '{"time": ',
        encode_basestring(_timestamp(event.get("log_time", 0))),
        ', "level": ',
        encode_basestring(level),
        ', "namespace": "qeetgw.access", "message": ',
        encode_basestring(_message(event)),
    ]
    append = parts.append
    for prefix, key in _ACCESS_PREFIXES:
        value = event[key]
        kind = type(value)
        if kind is str:
            text = encode_basestring(value)
        elif value is None:
            text = "null"
        elif kind is int:
            text = int.__repr__(value)
        elif kind is float and value - value == 0.0:  # finite: not NaN, not ±inf
            text = float.__repr__(value)
        else:
            return None
        append(prefix)
        append(text)
    append("}")
    return "".join(parts)


#: Observers holding lines not yet written, flushed at interpreter exit in
#: case the reactor stopped before their flush came round.
_UNWRITTEN: "weakref.WeakSet[JSONLinesObserver]" = weakref.WeakSet()


@atexit.register
def _write_all_unwritten() -> None:
    for observer in list(_UNWRITTEN):
        observer.flush()


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Writes each event as one JSON object on one line.

    @param out: where lines go.
    @param flush_soon: when given (the reactor's C{callLater}), lines are
        kept and written together once per reactor iteration instead of once
        per line: under load that is one write for many access events, not
        one each.  The observer keeps them itself, so this holds when the
        stream writes through (C{PYTHONUNBUFFERED=1}, the usual setting in
        container images), and at most L{MAX_UNWRITTEN} characters wait.
    """

    #: Past this many characters kept, the lines are written at once.
    MAX_UNWRITTEN = 65536

    def __init__(
        self, out: IO[str], flush_soon: Optional[Callable[..., Any]] = None
    ) -> None:
        self._out = out
        self._flush_soon = flush_soon
        self._lines: List[str] = []
        self._size = 0
        self._scheduled = False

    def __call__(self, event: LogEvent) -> None:
        try:
            line = access_line(event) or _ENCODER.encode(event_as_json(event))
        except Exception as error:  # never let a log line take the server down
            line = json.dumps({"message": "unloggable event", "error": str(error)})
        if self._flush_soon is None:
            self._out.write(line + "\n")
            self._out.flush()
            return
        lines = self._lines
        lines.append(line)
        self._size += len(line) + 1
        if len(lines) == 1:
            _UNWRITTEN.add(self)
        if not self._scheduled:
            self._scheduled = True
            self._flush_soon(0, self._tick)
        if self._size > self.MAX_UNWRITTEN:
            self.flush()

    def _tick(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """
        Write the lines kept so far, in one write, and flush the stream.
        """
        lines = self._lines
        if not lines:
            return
        self._lines = []
        self._size = 0
        _UNWRITTEN.discard(self)
        lines.append("")
        self._out.write("\n".join(lines))
        self._out.flush()


def observer_for(
    log_format: str,
    out: Optional[IO[str]] = None,
    flush_soon: Optional[Callable[..., Any]] = None,
) -> ILogObserver:
    """
    The observer for LOG_FORMAT C{log_format} (C{"text"} or C{"json"}),
    writing to C{out} (standard output by default); C{flush_soon} as for
    L{JSONLinesObserver}.
    """
    stream = out if out is not None else sys.stdout
    if log_format == "json":
        return JSONLinesObserver(stream, flush_soon)
    return textFileLogObserver(stream)
