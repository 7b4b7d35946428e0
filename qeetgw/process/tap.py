"""
The C{twistd qeetgw} command line, and the service it makes.

Each option overrides the environment variable its C{--help} line names,
which overrides the C{.env} file in the working directory, which overrides
the default (see L{qeetgw.config.VARIABLES}).  The options are built from that
table, so a new variable gets its option and its C{--help} line for free.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Union

from twisted.python import usage

from qeetgw.config import VARIABLES, Config, ConfigError, load_config, read_dotenv
from qeetgw.logging import observer_for
from qeetgw.process.heap import settle
from qeetgw.process.service import GatewayService
from qeetgw.process.supervisor import Supervisor, worker_environment
from qeetgw.site import build_site


class Options(usage.Options):
    """
    The options of C{twistd qeetgw}: C{--port} (a port number or a Twisted
    endpoint description) and one option per configuration variable.  After
    parsing, L{Options.config} holds the checked L{Config}.

    @ivar config: the configuration, set by L{postOptions}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run the QeetMart API gateway. Every option overrides the environment "
        "variable named in its help, which overrides the .env file in the "
        "working directory, which overrides the default. Booleans are true or "
        "false."
    )
    # Every value is checked by load_config, not by a usage coercer, so that
    # an option and its environment variable give the same problem line.
    # The default is None so that only options actually given override.
    optParameters: List[List[Optional[str]]] = [
        [variable.option, None, None, variable.usage_help]
        for variable in VARIABLES
        if variable.option is not None
    ]

    def __init__(
        self,
        environ: Optional[Mapping[str, str]] = None,
        dotenv_path: Optional[str] = None,
    ) -> None:
        """
        @param environ: the environment to read; C{os.environ} when L{None}.
        @param dotenv_path: the C{.env} file to read; C{.env} in the working
            directory (at parse time) when L{None}.
        """
        super().__init__()
        self._environ = environ
        self._dotenv_path = dotenv_path
        self._bad_configuration = False
        self.config: Optional[Config] = None

    @property
    def environ(self) -> Mapping[str, str]:
        """
        The environment the configuration was read from.
        """
        return os.environ if self._environ is None else self._environ

    def overrides(self) -> Dict[str, str]:
        """
        The options given, keyed by the variable (or override key) each sets.
        """
        return {
            variable.name: self[variable.option]
            for variable in VARIABLES
            if variable.option is not None and self[variable.option] is not None
        }

    def postOptions(self) -> None:
        """
        Build and check the configuration from the options, the environment
        and the C{.env} file.

        @raise usage.UsageError: listing every problem, one per line; twistd
            prints it and exits with status 1, without a traceback.
        """
        environ = self.environ
        dotenv_path = self._dotenv_path
        if dotenv_path is None:
            dotenv_path = os.path.join(os.getcwd(), ".env")
        try:
            self.config = load_config(environ, read_dotenv(dotenv_path), self.overrides())
        except ConfigError as error:
            self._bad_configuration = True
            # `from None`: the ConfigError adds nothing to the message.
            raise usage.UsageError("\n".join(error.problems)) from None

    def getUsage(self, width: Optional[int] = None) -> str:
        """
        The usage text; only a pointer to C{--help} after a bad
        configuration.

        twistd prints the usage before a L{usage.UsageError}'s text and exits
        with status 1; for a bad value the whole option list (a hundred lines)
        would bury the one line per problem that matters.
        """
        if self._bad_configuration:
            return (
                "qeetgw: bad configuration, one problem a line below "
                "(twistd qeetgw --help lists every option and variable):"
            )
        return super().getUsage(width)


def makeService(options: Options) -> Union[GatewayService, Supervisor]:
    """
    The gateway service for C{twistd qeetgw}, from C{options}' validated
    configuration: the gateway itself, or with WORKERS > 1 the supervisor of
    that many gateway processes.
    """
    from twisted.internet import reactor

    config = options.config
    assert config is not None, "postOptions builds the configuration"
    # How a failure to listen ends the process depends on whether twistd
    # runs as a daemon (qeetgw.process.startup); twistd's own options say.
    parent = getattr(options, "parent", None)
    daemon = parent is not None and not parent["nodaemon"]
    observer = (
        observer_for("json", flush_soon=reactor.callLater) if config.log_format == "json" else None
    )
    if config.workers > 1:
        return Supervisor(
            config.listen,
            config.workers,
            worker_environment(options.environ, options.overrides()),
            grace=(config.shutdown_delay_ms + config.shutdown_grace_ms) / 1000,
            reactor=reactor,
            observer=observer,
            # The one metrics port of the group: the supervisor serves the
            # workers' metrics, summed.
            metrics_port=config.metrics_port,
            daemon=daemon,
        )
    # With METRICS_PORT the gateway's parts include the metrics listener,
    # started and stopped with the service (after the drain, so the drain
    # itself can be watched).
    gateway = build_site(config, reactor)
    return GatewayService(
        config.listen,
        gateway.site,
        gateway.upstreams,
        grace=config.shutdown_grace_ms / 1000,
        # JSON lines replace twistd's text observer; text keeps twistd's own
        # (stdout with --nodaemon, twistd.log otherwise).
        observer=observer,
        reactor=reactor,
        parts=gateway.parts,
        delay=config.shutdown_delay_ms / 1000,
        daemon=daemon,
        settle_heap=settle,
    )
