"""
One worker of a multi-process gateway (WORKERS > 1): a whole gateway that
serves on a listening socket its supervisor opened and handed down.

Run by L{qeetgw.process.supervisor}, never by hand.  The supervisor passes where to
listen — an address to bind with C{SO_REUSEPORT} in C{QEETGW_LISTEN_ADDRESS},
or a shared socket as file descriptor L{SOCKET_FD} — the address family in
C{QEETGW_LISTEN_FAMILY}, and every C{twistd qeetgw} option as the
environment variable it overrides, so the worker builds the same L{Config}.
With METRICS_PORT the supervisor also passes the directory of the group's
metric files in C{QEETGW_METRICS_DIR}: the worker counts into its own files
there and never listens for metrics itself (the supervisor serves them).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import List, Mapping, Optional, Tuple

import attrs
from twisted.application.service import IService
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogEvent, Logger, globalLogBeginner

from qeetgw.config import ConfigError, load_config, read_dotenv
from qeetgw.logging import observer_for
from qeetgw.metricfiles import DIRECTORY_VARIABLE, MetricFiles
from qeetgw.metrics import Metrics
from qeetgw.process.heap import settle
from qeetgw.process.service import GatewayService
from qeetgw.site import Gateway, build_site
from qeetgw.statusfiles import StatusFileWriter, status_path

#: The descriptor the supervisor puts the listening socket on.
SOCKET_FD = 3
#: The environment variable naming the socket's family (C{INET}, C{INET6}).
FAMILY_VARIABLE = "QEETGW_LISTEN_FAMILY"
#: The environment variable with the address to listen on ("host port").
ADDRESS_VARIABLE = "QEETGW_LISTEN_ADDRESS"
#: The environment variable carrying the worker's number, for its logs.
INDEX_VARIABLE = "QEETGW_WORKER"

log = Logger(namespace="qeetgw.process.worker")


def main(argv: Optional[List[str]] = None, environ: Optional[Mapping[str, str]] = None) -> None:
    """
    Serve until SIGTERM/SIGINT, drain, exit 0 (1 for a bad configuration).
    """
    from twisted.internet import reactor

    environ = os.environ if environ is None else environ
    try:
        config = load_config(environ, read_dotenv(os.path.join(os.getcwd(), ".env")))
    except ConfigError as error:
        # The supervisor checked this configuration before starting us; only
        # a .env edited in between gets here.
        print("\n".join(error.problems), file=sys.stderr)
        sys.exit(1)
    observer = observer_for(config.log_format, flush_soon=reactor.callLater)
    index = environ.get(INDEX_VARIABLE)

    def tagged(event: LogEvent) -> None:
        # Every event names its worker, so interleaved logs can be told apart.
        observer({**event, "worker": index})

    globalLogBeginner.beginLoggingTo([tagged], redirectStandardIO=False)
    family = socket.AF_INET6 if environ.get(FAMILY_VARIABLE) == "INET6" else socket.AF_INET
    address = environ.get(ADDRESS_VARIABLE)
    # The endpoint adopts a duplicate of the descriptor and closes this one.
    descriptor = _listen_reusing(address, family) if address else SOCKET_FD
    # METRICS_PORT is the supervisor's: the worker never listens on it, and
    # counts into the files the supervisor reads when it gave a directory.
    config = attrs.evolve(config, metrics_port=None)
    gateway = build_site(config, reactor, metrics=worker_metrics(environ, index))
    parts = gateway.parts + status_writer(environ, index, gateway, reactor)
    service = GatewayService(
        AdoptedStreamServerEndpoint(reactor, descriptor, family),
        gateway.site,
        gateway.upstreams,
        grace=config.shutdown_grace_ms / 1000,
        reactor=reactor,
        parts=parts,
        delay=config.shutdown_delay_ms / 1000,
        settle_heap=settle,
    )
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    log.info("worker {worker} serving (pid {pid})", worker=index, pid=os.getpid())
    reactor.run()
    sys.exit(0)


def worker_metrics(environ: Mapping[str, str], index: Optional[str]) -> Optional[Metrics]:
    """
    The worker's metrics: over its own files (named by its pid) in the
    directory the supervisor gave in C{QEETGW_METRICS_DIR}, or none when it
    gave none (no METRICS_PORT).
    """
    directory = environ.get(DIRECTORY_VARIABLE)
    if not directory:
        return None
    return Metrics(files=MetricFiles(directory, str(os.getpid()), index or "0"))


def status_writer(
    environ: Mapping[str, str], index: Optional[str], gateway: Gateway, clock: IReactorTime
) -> Tuple[IService, ...]:
    """
    The part that writes the worker's status report for the supervisor's
    status page (L{qeetgw.statusfiles}), in the directory the supervisor
    gave (with METRICS_PORT); none without one.
    """
    directory = environ.get(DIRECTORY_VARIABLE)
    if not directory or gateway.status is None:
        return ()
    status = gateway.status
    return (
        StatusFileWriter(
            lambda: status.report(raw=True),
            status_path(directory, os.getpid()),
            index or "0",
            clock,
        ),
    )


def _listen_reusing(address: str, family: socket.AddressFamily) -> int:
    """
    The descriptor of a non-blocking socket listening on C{address}
    ("host port") with C{SO_REUSEPORT}, beside the other workers' on the
    same address.  The caller owns the descriptor.
    """
    host, port = address.rsplit(" ", 1)
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listening.bind((host, int(port)))
    listening.listen(socket.SOMAXCONN)
    listening.setblocking(False)
    return listening.detach()


if __name__ == "__main__":
    main()
