"""
The table of every configuration variable, read from the fields of
L{Config} (see L{qeetgw.config.model} for why the fields declare them):
what the loader parses, and what C{twistd qeetgw} makes its options and
C{--help} from.
"""

from __future__ import annotations

from typing import Mapping, Tuple

from qeetgw.config.model import Config
from qeetgw.config.variable import Variable, declared_variables

#: Every configuration variable, in the order --help lists them and problem
#: lines are reported: the order of L{Config}'s fields, a combined field's
#: variables in their own order.  Adding a variable is adding a field.
VARIABLES: Tuple[Variable, ...] = declared_variables(Config)

#: Each variable by its name.
BY_NAME: Mapping[str, Variable] = {variable.name: variable for variable in VARIABLES}

#: Each variable by each of its older names (C{CORS_ORIGIN}).
BY_ALIAS: Mapping[str, Variable] = {
    alias: variable for variable in VARIABLES for alias in variable.aliases
}
