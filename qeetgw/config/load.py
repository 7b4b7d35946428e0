"""
Loading: the text each variable is given, by precedence (options over the
environment over C{.env} over the defaults), parsed and checked into one
L{Config}, or every problem at once in a L{ConfigError}.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Tuple

from qeetgw.config.checks import check_discovery, check_jwt, check_workers
from qeetgw.config.errors import ConfigError, Invalid
from qeetgw.config.listen import listen_description, port_number_as_port
from qeetgw.config.model import Config
from qeetgw.config.services import build_services
from qeetgw.config.table import BY_ALIAS, BY_NAME, VARIABLES

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _given(
    environ: Mapping[str, str], dotenv: Mapping[str, str], overrides: Mapping[str, str]
) -> Dict[str, Tuple[str, str]]:
    """
    The text given for each variable, by precedence, as C{name -> (the
    name it was given under, text)}: the name matters for an alias, whose
    problem line must name what the user wrote.

    Within one source a variable beats its alias; across sources the higher
    source wins, whichever name it uses (an override's C{CORS_ORIGIN} beats
    the environment's C{CORS_ORIGINS}).
    """
    given: Dict[str, Tuple[str, str]] = {}
    sources = ((dotenv, False), (environ, False), (overrides, True))
    for source, is_overrides in sources:
        for variable in VARIABLES:
            if not (variable.environment or is_overrides):
                continue
            names = (variable.name,) + variable.aliases
            present = [name for name in names if name in source]
            # A blank variable does not hide a set alias (CORS_ORIGINS= with
            # CORS_ORIGIN=x means x), as JavaScript's || would have it.
            filled = [name for name in present if source[name].strip()]
            chosen = next(iter(filled or present), None)
            if chosen is not None:
                given[variable.name] = (chosen, source[chosen])
    return given


def _check_overrides(overrides: Mapping[str, str]) -> None:
    """
    Refuse override keys that name no variable: a typo in a caller would
    otherwise be silently ignored.
    """
    unknown = sorted(key for key in overrides if key not in BY_NAME and key not in BY_ALIAS)
    if unknown:
        raise ValueError(f"unknown override keys: {', '.join(unknown)}")


def _parse_all(given: Mapping[str, Tuple[str, str]], problems: List[str]) -> Dict[str, Any]:
    """
    Parse every variable from its given text or its default, collecting one
    problem line per bad value.  Bad variables are left out of the result.
    """
    values: Dict[str, Any] = {}
    for variable in VARIABLES:
        spelled, text = given.get(variable.name, (variable.name, variable.default))
        if text is None:
            values[variable.name] = None
            continue
        try:
            values[variable.name] = variable.parse(text)
        except Invalid as invalid:
            label = variable.label if spelled == variable.name else spelled
            shown = "(value hidden)" if invalid.hide_value else repr(text)
            problems.append(f"{label}={shown}: {invalid}")
    return values


def load_config(
    environ: Mapping[str, str],
    dotenv: Mapping[str, str] = _EMPTY,
    overrides: Mapping[str, str] = _EMPTY,
) -> Config:
    """
    Build the L{Config} from its sources, checking every variable.

    Precedence: C{overrides} (the command-line options, keyed by variable
    name, plus C{LISTEN} for C{--port}) > C{environ} (the real environment) >
    C{dotenv} (the C{.env} file's variables) > the defaults of L{VARIABLES}.
    A C{LISTEN} that is only a port number sets PORT instead.

    This reads no configuration source itself (not C{os.environ}, not
    C{.env}); it only opens the files a value names (C{UPSTREAM_CA_FILE}, an
    C{ssl:} endpoint's key and certificate) to check them.

    @raise ConfigError: listing every bad variable, one line each.
    @raise ValueError: when C{overrides} has a key that names no variable.
    """
    _check_overrides(overrides)
    overrides = port_number_as_port(overrides)

    problems: List[str] = []
    given = _given(environ, dotenv, overrides)
    values = _parse_all(given, problems)
    listen = listen_description(values, overrides, problems)
    check_jwt(values, given, problems)
    check_discovery(values, problems)
    check_workers(values, listen, problems)
    if problems:
        raise ConfigError(problems)
    # Every way listen_description has of giving None added a problem line.
    assert listen is not None

    fields = {
        variable.field: values[variable.name]
        for variable in VARIABLES
        if variable.field is not None
    }
    return Config(listen=listen, services=build_services(values), **fields)
