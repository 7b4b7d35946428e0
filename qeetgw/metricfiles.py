"""
The metric files of a group of worker processes (WORKERS > 1 with
METRICS_PORT): prometheus_client's multiprocess format, in a private
directory the supervisor creates, hands to its workers and removes.

Each worker writes its values into memory-mapped files named after its pid
(C{counter_<pid>.db}, C{histogram_<pid>.db}, C{gauge_livesum_<pid>.db}, ...);
the supervisor reads every file at scrape time and adds them up, as
prometheus_client's L{MultiProcessCollector} does.

Two halves, one per side:

- L{MetricFiles}, in a worker: where its values go.  L{MetricFiles.bound}
  gives a Counter, Gauge or Histogram class whose values live in this
  worker's files, so a gateway built with a L{MetricFiles} counts into the
  directory it names and nowhere else.
- L{MetricDirectory}, in the supervisor: creates the directory, collects
  it, forgets a dead worker's live gauges (L{mark_process_dead}) and folds
  its counters and histograms into one archive file, and removes it all on
  shutdown.

Why not prometheus_client's own switch (C{PROMETHEUS_MULTIPROC_DIR})?  It
is read once, when prometheus_client is imported, and turns I{every}
metric of the process into files in one directory named by the
environment.  Binding the directory to the metrics that use it instead
keeps the single-process gateway (and the tests, which build several
gateways in one process) on plain in-memory values, and lets a test run two
"workers" side by side in one process.  The workers are told the directory
in L{DIRECTORY_VARIABLE}, not C{PROMETHEUS_MULTIPROC_DIR}, so that nothing
else in a worker switches to files behind our back (two writers of one
file would corrupt it).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple, Type, TypeVar

from prometheus_client import values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from twisted.logger import Logger

log = Logger()

#: The environment variable that gives a worker the directory to write to.
DIRECTORY_VARIABLE = "QEETGW_METRICS_DIR"

#: The identifier of the archive files dead workers' counters and
#: histograms are folded into (C{counter_dead.db}, C{histogram_dead.db}).
ARCHIVE = "dead"

#: The kinds of file whose values outlive their process: summed forever.
_KEPT_KINDS = ("counter", "histogram")

M = TypeVar("M", bound=MetricWrapperBase)


def _file_value_class(directory: str, identifier: str) -> Type[Any]:
    """
    A prometheus_client value class (the interface of C{values.MutexValue})
    whose values live in C{directory}'s files of C{identifier}, one file
    per kind of metric, in prometheus_client's multiprocess format.

    Unlike prometheus_client's own C{MultiProcessValue} the directory is
    given, not read from the environment when each value is made; the pid
    is not checked on every write (workers are started with exec, never
    forked after their metrics exist); and a write takes no lock (below).
    """
    files: Dict[str, MmapedDict] = {}
    # Making a value may grow (remap) a file, so it is done under a lock.
    # Writing one is not: the gateway counts only in the reactor thread, the
    # one writer, and each write is one 16-byte copy into a place that
    # never moves; a lock per write (prometheus_client takes one) cost as
    # much as the write itself, measured.
    lock = threading.Lock()

    class FileValue:
        """
        A float in a memory-mapped file, shared with the supervisor.
        """

        _multiprocess = True

        def __init__(
            self,
            typ: str,
            metric_name: str,
            name: str,
            labelnames: Iterable[str],
            labelvalues: Iterable[str],
            help_text: str,
            multiprocess_mode: str = "",
            **kwargs: Any,
        ) -> None:
            prefix = f"gauge_{multiprocess_mode}" if typ == "gauge" else typ
            with lock:
                file = files.get(prefix)
                if file is None:
                    path = os.path.join(directory, f"{prefix}_{identifier}.db")
                    file = files[prefix] = MmapedDict(path)
                self._file = file
                self._key = mmap_key(metric_name, name, list(labelnames), list(labelvalues), help_text)
                # Reading a new key writes it with 0, so a series exists
                # (and is scraped as 0) from the moment it is made, as in
                # one process.
                self._value, _ = file.read_value(self._key)

        def inc(self, amount: float) -> None:
            self._value += amount
            self._file.write_value(self._key, self._value, 0.0)

        def set(self, value: float, timestamp: Optional[float] = None) -> None:
            self._value = value
            self._file.write_value(self._key, value, timestamp or 0.0)

        def set_exemplar(self, exemplar: Any) -> None:
            # The multiprocess format has no room for exemplars.
            pass

        def get(self) -> float:
            return self._value

        def get_exemplar(self) -> None:
            return None

    def close() -> None:
        with lock:
            for file in files.values():
                file.close()
            files.clear()

    FileValue.close_files = staticmethod(close)  # type: ignore[attr-defined]
    return FileValue


class MetricFiles:
    """
    Where one worker's metric values go: C{directory}, in files named after
    C{identifier} (the worker's pid, which is what L{mark_process_dead}
    looks for).

    @param directory: the group's directory (L{MetricDirectory.path}).
    @param identifier: this process's pid, as text; tests give two fake
        workers two made-up pids in one process.
    @param worker: the worker's number, for the C{worker} label of the
        per-worker gauges.
    """

    def __init__(self, directory: str, identifier: str, worker: str) -> None:
        self.directory = directory
        self.identifier = identifier
        self.worker = worker
        self._value_class = _file_value_class(directory, identifier)
        self._bound: Dict[type, type] = {}

    def bound(self, kind: Type[M]) -> Type[M]:
        """
        A subclass of C{kind} (Counter, Gauge, Histogram) whose values, and
        its label children's, live in these files.

        prometheus_client makes every value through the module global
        C{values.ValueClass}, when a metric or a label child is made
        (C{_metric_init}); the subclass points that global at our class for
        exactly that call.  Children are made by C{labels()} as
        C{self.__class__(...)}, so they are bound too.  Values are only
        ever made in the reactor thread, so the brief swap cannot catch a
        metric made elsewhere.
        """
        cached = self._bound.get(kind)
        if cached is not None:
            return cached  # type: ignore[return-value]
        value_class = self._value_class

        def _metric_init(metric: Any) -> None:
            saved = values.ValueClass
            values.ValueClass = value_class
            try:
                kind._metric_init(metric)  # type: ignore[attr-defined]
            finally:
                values.ValueClass = saved

        subclass = type(kind.__name__, (kind,), {"_metric_init": _metric_init, "__module__": __name__})
        self._bound[kind] = subclass
        return subclass  # type: ignore[return-value]

    def close(self) -> None:
        """
        Unmap and close the files (the values written stay in them).
        """
        self._value_class.close_files()


class _LockedCollector(MultiProcessCollector):
    """
    prometheus_client's collector of a multiprocess directory, reading
    under the directory's lock so that a scrape never sees a dead worker's
    files half folded (counted twice, or not at all).
    """

    def __init__(self, path: str, lock: threading.Lock) -> None:
        super().__init__(None, path)
        self._lock = lock

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            # merge() reads every file before returning, so the lock
            # covers the whole read.
            return list(super().collect())


class MetricDirectory:
    """
    The supervisor's side: a fresh private directory (mode 0700) for the
    workers' files, what collects it, and its housekeeping.

    @ivar path: the directory; the workers get it in L{DIRECTORY_VARIABLE}.
    @ivar collector: sums every file (L{MultiProcessCollector}); register it
        in the registry the supervisor serves.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        # Held by a scrape (in the thread pool) and by a fold (in the
        # reactor thread).
        self._lock = threading.Lock()
        self.collector = _LockedCollector(path, self._lock)

    @classmethod
    def create(cls, parent: Optional[str] = None) -> "MetricDirectory":
        """
        A new empty directory under C{parent} (the temporary directory,
        C{TMPDIR} or C{/tmp}, when L{None}), readable by this user only.
        """
        path = tempfile.mkdtemp(prefix="qeetgw-metrics-", dir=parent)
        log.info("metric files of the workers in {directory}", directory=path)
        return cls(path)

    def worker_ended(self, pid: int) -> None:
        """
        Worker C{pid} has exited (call it before starting its successor).

        Its live gauges (connections open, requests in flight, its instance
        states) are removed: they described a process that is gone.  Its
        counters and histograms stay in the sums, so no total goes
        backwards: they are folded into the archive files, so that a worker
        restarted many times leaves two files behind rather than two files
        a restart for every scrape to read.
        """
        with self._lock:
            mark_process_dead(pid, self.path)
            for kind in _KEPT_KINDS:
                self._fold(kind, str(pid))

    def _fold(self, kind: str, identifier: str) -> None:
        """
        Add C{kind}_C{identifier}.db into C{kind}_dead.db and remove it.
        The caller holds the lock.
        """
        dead = os.path.join(self.path, f"{kind}_{identifier}.db")
        if not os.path.exists(dead):
            return
        archive = os.path.join(self.path, f"{kind}_{ARCHIVE}.db")
        sources = [path for path in (archive, dead) if os.path.exists(path)]
        # accumulate=False: histogram buckets stay per bucket, as written.
        merged = MultiProcessCollector.merge(sources, accumulate=False)
        # Written beside, then renamed over the archive: a reader never sees
        # half an archive.  (".tmp", so a scrape's "*.db" never reads it.)
        scratch = archive + ".tmp"
        if os.path.exists(scratch):
            os.remove(scratch)
        out = MmapedDict(scratch)
        try:
            for key, value in _samples_as_keys(merged):
                out.write_value(key, value, 0.0)
        finally:
            out.close()
        os.replace(scratch, archive)
        os.remove(dead)

    def files(self) -> List[str]:
        """
        The names of the files in the directory now (for tests and logs).
        """
        return sorted(os.path.basename(path) for path in glob.glob(os.path.join(self.path, "*.db")))

    def remove(self) -> None:
        """
        Remove the directory and everything in it (on shutdown, after the
        workers have exited).
        """
        shutil.rmtree(self.path, ignore_errors=True)
        log.info("metric files removed from {directory}", directory=self.path)


def _samples_as_keys(metrics: Iterable[Metric]) -> Iterable[Tuple[str, float]]:
    """
    Every sample of C{metrics} (merged from files) as the key it has in a
    file, and its value.
    """
    for metric in metrics:
        for sample in metric.samples:
            names = list(sample.labels)
            yield (
                mmap_key(
                    metric.name,
                    sample.name,
                    names,
                    [sample.labels[name] for name in names],
                    metric.documentation,
                ),
                sample.value,
            )
