"""
What a configuration variable is, and how a L{Config} field declares the
variables it is set from.

A field is declared once, on L{Config}, with its type and either
L{setting} (one variable: its name, its default as the variable would be
written, its parser and its C{--help} sentence) or L{combined} (several
variables the loader builds one value from).  The field's default is the
variable's default parsed, so the two cannot disagree; L{declared_variables}
reads the table back from the fields.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Tuple, TypeVar, cast

import attrs

from qeetgw.config.parsers import Parser

_T = TypeVar("_T")

#: Where a field's metadata holds the one L{Variable} a setting declares.
_SETTING = "qeetgw.config.setting"

#: Where a field's metadata holds the L{Variable}s a combined field is built from.
_COMBINED = "qeetgw.config.combined"


@attrs.frozen
class Variable:
    """
    One configuration variable: where it comes from, how it is checked, and
    how C{twistd qeetgw --help} describes it.

    @ivar name: the environment variable (and override key), C{"RATE_LIMIT_MAX"}.
    @ivar default: the default, written as the variable would be (SPEC.md's
        spelling); L{None} when the variable is unset by default.
    @ivar parse: turns the text into the value, or raises
        L{qeetgw.config.errors.Invalid}.
    @ivar help: one sentence for C{--help}, without the C{[env: ...]} suffix.
    @ivar field: the L{Config} field set from the parsed value; L{None} for a
        variable that is combined with others (PORT and HOST into C{listen},
        the service variables into C{services}).  L{declared_variables} fills
        it in: a field knows its own name only once its class is made.
    @ivar aliases: older names read when C{name} is not set (C{CORS_ORIGIN}).
    @ivar option: the C{twistd qeetgw} option that overrides it, without the
        dashes; L{None} for none.
    @ivar environment: whether the environment and C{.env} may set it;
        C{False} for an override key only options give (C{LISTEN}).
    @ivar label: how problem lines name it; the variable's name unless given.
    """

    name: str
    default: Optional[str]
    parse: Parser
    help: str
    field: Optional[str] = None
    aliases: Tuple[str, ...] = ()
    option: Optional[str] = attrs.field(
        default=attrs.Factory(
            lambda self: self.name.lower().replace("_", "-"), takes_self=True
        )
    )
    environment: bool = True
    label: str = attrs.field(
        default=attrs.Factory(lambda self: self.name, takes_self=True)
    )

    @property
    def usage_help(self) -> str:
        """
        The help text of this variable's option: its sentence, then which
        variable it overrides and the default.
        """
        if not self.environment:
            # An override-only key explains itself in its own sentence.
            return self.help
        names = " or ".join((self.name,) + self.aliases)
        default = "unset" if self.default is None else self.default
        return f"{self.help} [env: {names}, default: {default}]"

    def default_value(self) -> Any:
        """
        The value when nothing sets the variable: its default parsed, or
        L{None} for a variable unset by default.
        """
        return None if self.default is None else self.parse(self.default)


def setting(
    name: str,
    default: Optional[str],
    parse: Callable[[str], _T],
    help: str,
    aliases: Tuple[str, ...] = (),
    hidden: bool = False,
) -> _T:
    """
    Declare an attrs field set from the variable C{name}: the field's
    default is C{default} parsed with C{parse}.

    @param hidden: the value is a secret (a key, a URL with a password):
        left out of the configuration's repr, so that no log or traceback
        that shows a L{qeetgw.config.Config} shows it.

    Typed as the parser's value, so that a type checker compares the
    parser with the field's annotation; at run time it is an attrs field
    that carries the variable in its metadata.
    """
    variable = Variable(name, default, parse, help, aliases=aliases)
    field = attrs.field(
        default=variable.default_value(), metadata={_SETTING: variable}, repr=not hidden
    )
    return cast(_T, field)


def combined(variables: Iterable[Variable], default: _T) -> _T:
    """
    Declare an attrs field the loader builds from several C{variables}
    (C{listen} from PORT and HOST, C{services} from the service variables),
    whose default is C{default}.
    """
    return attrs.field(default=default, metadata={_COMBINED: tuple(variables)})


def declared_variables(cls: type) -> Tuple[Variable, ...]:
    """
    The variables the fields of the attrs class C{cls} declare, in the
    order of its fields; a setting's variable names its field.

    @raise TypeError: when a field declares no variable: every value of the
        configuration comes from one.
    """
    variables: List[Variable] = []
    for field in attrs.fields(cls):
        if _SETTING in field.metadata:
            variables.append(attrs.evolve(field.metadata[_SETTING], field=field.name))
        elif _COMBINED in field.metadata:
            variables.extend(field.metadata[_COMBINED])
        else:
            raise TypeError(f"{cls.__name__}.{field.name} declares no variable")
    return tuple(variables)
