"""
The metrics of a whole group of workers (WORKERS > 1 with METRICS_PORT),
as the supervisor serves them on the one METRICS_PORT.

The supervisor owns the metrics port; the workers never listen for
metrics.  A scrape reads:

- the workers' metric files (L{qeetgw.metricfiles.MetricDirectory}), summed
  as each metric means (see L{qeetgw.metrics}): the counters and histograms
  of every worker that ever ran, the live workers' gauges;
- each process's own figures (memory, CPU, descriptors, start time) from
  C{/proc}, labelled C{worker} with the worker's number, or C{supervisor}:
  prometheus_client's process collector reads one process, and summing
  resident memories or start times would mean nothing;
- C{python_info}, once (every process runs the same interpreter);
- C{qeetgw_worker_restarts_total}, the supervisor's own count.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping, Optional

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from qeetgw.metricfiles import MetricDirectory

#: The C{worker} label of the supervisor's own process figures.
SUPERVISOR = "supervisor"


class WorkerProcesses:
    """
    A collector of every live process's figures (prometheus_client's
    process collector, once per process), each sample labelled C{worker}.

    @param processes: the live processes now, C{worker label -> pid}; it is
        called from the scrape's thread, so it must return a copy.
    @param proc: where C{/proc} is (tests give a fake one).
    """

    def __init__(self, processes: Callable[[], Mapping[str, int]], proc: str = "/proc") -> None:
        self._processes = processes
        self._proc = proc
        self._collectors: Dict[int, ProcessCollector] = {}

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        families: Dict[str, Metric] = {}
        processes = dict(self._processes())
        # One collector a pid, kept while the pid lives (it reads the boot
        # time once), dropped when it is gone.
        collectors = {}
        for worker, pid in processes.items():
            collector = self._collectors.get(pid)
            if collector is None:
                collector = ProcessCollector(pid=lambda pid=pid: pid, proc=self._proc, registry=None)
            collectors[pid] = collector
            for metric in collector.collect():
                family = families.get(metric.name)
                if family is None:
                    family = families[metric.name] = Metric(metric.name, metric.documentation, metric.type)
                for sample in metric.samples:
                    family.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
        self._collectors = collectors
        return list(families.values())


class GroupMetrics:
    """
    The registry the supervisor serves, over the workers' C{directory}.

    @param directory: the workers' metric files.
    @param processes: the live processes, C{worker label -> pid}, the
        supervisor's own included (see L{WorkerProcesses}).
    @param process: read the processes' figures from C{/proc}.
    """

    def __init__(
        self,
        directory: MetricDirectory,
        processes: Callable[[], Mapping[str, int]],
        process: bool = True,
        proc: Optional[str] = None,
    ) -> None:
        self.directory = directory
        self.registry = CollectorRegistry()
        self.registry.register(directory.collector)
        self.restarts = Counter(
            "qeetgw_worker_restarts", "Workers started again after they exited",
            registry=self.registry,
        )
        if process:
            self.registry.register(WorkerProcesses(processes, proc or "/proc"))
            PlatformCollector(registry=self.registry)

    def worker_ended(self, pid: int) -> None:
        """
        Worker C{pid} exited: its live gauges go, its counts stay
        (L{MetricDirectory.worker_ended}).
        """
        self.directory.worker_ended(pid)
