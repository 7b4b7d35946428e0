"""
How the configuration says what is wrong: L{ConfigError} for the caller,
L{Invalid} between a value parser and the loader that words the problem line.
"""

from __future__ import annotations

from typing import List


class ConfigError(Exception):
    """
    The configuration cannot be used.

    @ivar problems: one line per bad variable (or bad C{.env} line), each
        naming the variable, the value given and what is allowed, such as
        C{"RATE_LIMIT_MAX='abc': must be a whole number of at least 1"}.
    """

    def __init__(self, problems: List[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems: List[str] = list(problems)


class Invalid(Exception):
    """
    Raised by a value parser; its text says what is allowed, and becomes the
    part of a problem line after the variable's name and value.

    @ivar hide_value: the value may hold a secret (a password in a URL), so
        the problem line must not repeat it.
    """

    def __init__(self, message: str, hide_value: bool = False) -> None:
        super().__init__(message)
        self.hide_value = hide_value


def one_line(error: BaseException) -> str:
    """
    An exception's text on one short line, for a problem line: what Twisted
    or the OS says may span lines, or run long.
    """
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
