"""
The status page with workers (WORKERS > 1): each worker writes its status
report into the group's metric directory once a second, and the supervisor,
which serves METRICS_PORT but has no instances of its own, reads the live
workers' reports to merge them (L{qeetgw.groupstatus}).

Why files, as for the instance gauge (L{qeetgw.metrics.InstanceGauge}): the
states and traffic windows live in each worker, the directory is already
shared and private (mode 0700), and a report a second costs a worker one
small write; the supervisor reads them only when someone asks.  A file is
written whole under another name and renamed over the old one, so a reader
never sees half of it.  Each is named after its worker's pid: the
supervisor reads only those of live workers, so an exited worker's report
is never shown as current.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Mapping

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from qeetgw.errors import dumps

log = Logger()

#: How often a worker writes its report, in seconds (the page polls once a
#: second).
STATUS_REFRESH_S = 1.0


def status_path(directory: str, pid: int) -> str:
    """
    Where the worker of C{pid} writes its report in C{directory}.
    """
    return os.path.join(directory, f"status_{pid}.json")


class StatusFileWriter(Service):
    """
    A worker's report, written to its file every L{STATUS_REFRESH_S}
    seconds while the service runs (a part started and stopped with the
    gateway service, so it keeps writing through a drain).

    @param report: the worker's report, with raw traffic
        (L{qeetgw.statusreport.StatusSource.report} with C{raw=True}).
    @param path: the file (L{status_path}).
    @param worker: the worker's number, written with the report.
    """

    name = "status-file"

    def __init__(self, report: Callable[[], Mapping[str, Any]], path: str, worker: str, clock: IReactorTime) -> None:
        self._report = report
        self._path = path
        self._worker = worker
        self._failing = False
        self._loop = LoopingCall(self.write)
        self._loop.clock = clock

    def write(self) -> None:
        """
        Write the report as it is now; a failure is logged once (until a
        write succeeds again), never raised: the status page is not worth a
        worker.
        """
        partial = self._path + ".partial"
        try:
            body = dumps({"worker": self._worker, "report": self._report()})
            with open(partial, "wb") as out:
                out.write(body)
            os.replace(partial, self._path)
        except Exception:
            if not self._failing:
                log.failure("cannot write the status report to {path}", path=self._path)
            self._failing = True
        else:
            self._failing = False

    def startService(self) -> None:
        """
        Write now, then every L{STATUS_REFRESH_S} seconds.
        """
        super().startService()
        if not self._loop.running:
            self._loop.start(STATUS_REFRESH_S, now=True)

    def stopService(self) -> None:
        """
        Stop writing (the file stays; the supervisor reads only live
        workers' files and the directory goes with the group).
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()


def read_reports(directory: str, workers: Mapping[str, int]) -> Dict[str, Dict[str, Any]]:
    """
    The reports of C{workers} (worker number to pid; the live ones) found in
    C{directory}, by worker number.  A worker whose file is missing (it has
    just started) or unreadable is left out.
    """
    reports: Dict[str, Dict[str, Any]] = {}
    for worker, pid in workers.items():
        try:
            with open(status_path(directory, pid), "rb") as found:
                written = json.loads(found.read())
        except (OSError, ValueError):
            continue
        if isinstance(written, dict) and isinstance(written.get("report"), dict):
            reports[worker] = written["report"]
    return reports
