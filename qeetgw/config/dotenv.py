"""
The C{.env} reader: a C{.env} file's variables, as the npm C{dotenv}
package reads the common cases, with a problem line for each line it
cannot read.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

from qeetgw.config.errors import ConfigError, Invalid, one_line

_DOTENV_ASSIGNMENT = re.compile(
    r"\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*=(?P<rest>.*)\Z", re.DOTALL
)
_AFTER_QUOTE = re.compile(r"\s*(?:#.*)?\Z", re.DOTALL)
_INLINE_COMMENT = re.compile(r"\s#")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _double_quoted(rest: str) -> Tuple[str, str]:
    """
    The value of C{"..."} at the start of C{rest}, with its escapes
    (C{\\n}, C{\\r}, C{\\t}, C{\\"}, C{\\\\}; any other backslash is kept),
    and what follows the closing quote.

    @raise Invalid: when the quote is not closed on this line.
    """
    value: List[str] = []
    index = 1
    while index < len(rest):
        char = rest[index]
        if char == '"':
            return "".join(value), rest[index + 1:]
        if char == "\\" and index + 1 < len(rest):
            following = rest[index + 1]
            value.append(_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        value.append(char)
        index += 1
    raise Invalid(
        "unterminated double-quoted value (a value must fit on one line; write \\n for a newline)"
    )


def _dotenv_value(rest: str) -> str:
    """
    The value of one C{KEY=...} line, from what follows the C{=}.

    @raise Invalid: for an unterminated quote or text after a closing quote.
    """
    stripped = rest.lstrip()
    if stripped[:1] == '"':
        value, after = _double_quoted(stripped)
    elif stripped[:1] in ("'", "`"):
        # Single quotes (and dotenv's backticks) are literal: no escapes.
        quote = stripped[0]
        end = stripped.find(quote, 1)
        if end < 0:
            raise Invalid("unterminated quoted value (a value must fit on one line)")
        value, after = stripped[1:end], stripped[end + 1:]
    else:
        # An unquoted value ends at " #" (the blank after "=" counts): a '#'
        # with no blank before it (a password, KEY=#x) is part of the value.
        comment = _INLINE_COMMENT.search(rest)
        return (rest if comment is None else rest[: comment.start()]).strip()
    if not _AFTER_QUOTE.match(after):
        raise Invalid("unexpected text after the closing quote")
    return value


def read_dotenv(path: str) -> Dict[str, str]:
    """
    The variables of a C{.env} file, as the npm C{dotenv} package reads the
    common cases: C{KEY=VALUE} lines, blank lines and C{#} comments, an
    optional C{export } prefix, single- or double-quoted values (double
    quotes understand C{\\n}), and C{ #} comments after unquoted values.  A
    later line for the same key wins.

    A missing file is no error: a C{.env} is optional.

    @raise ConfigError: naming the file and line of every malformed line
        (without echoing the line, which may hold a secret).
    """
    try:
        with open(path, "rb") as dotenv:
            data = dotenv.read()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError([f"{path}: cannot be read ({error.strerror or one_line(error)})"])
    try:
        # utf-8-sig: an editor's byte-order mark must not become part of the first key.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: is not UTF-8 text (byte {error.start})"])

    variables: Dict[str, str] = {}
    problems: List[str] = []
    # Only \n ends a line: str.splitlines would also split at \x0c, \u2028...
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _DOTENV_ASSIGNMENT.match(line)
        if match is None:
            problems.append(f"{path}:{number}: expected KEY=VALUE")
            continue
        key = match.group("key")
        try:
            variables[key] = _dotenv_value(match.group("rest"))
        except Invalid as invalid:
            problems.append(f"{path}:{number}: {key}: {invalid}")
    if problems:
        raise ConfigError(problems)
    return variables
