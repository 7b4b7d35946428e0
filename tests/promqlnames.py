"""
Which metrics a PromQL expression reads, and which of their labels it uses:
enough of PromQL to check a dashboard against a scrape, not an evaluator.

A small tokenizer and a reader over its tokens.  The reader knows PromQL's
functions and aggregations (a name followed by C{(} that is neither is an
error: a misspelt function would otherwise read as a metric), its keywords,
range and subquery selectors (skipped: they hold durations and Grafana's
C{$__rate_interval}), and Grafana's C{label_values(selector, label)} of a
variable's query.  A label counts as used when it is in a matcher C{{...}},
in C{by}/C{without} (for the selectors the aggregation reads), in
C{on}/C{ignoring}/C{group_left}/C{group_right} (for every selector of the
enclosing parentheses: both sides of the operation) or in C{label_values}.
"""

from __future__ import annotations

import re
from typing import Dict, FrozenSet, List, Optional, Set

import attrs

#: PromQL's functions (Prometheus 2 and 3), and C{start}/C{end} of the
#: C{@} modifier.
FUNCTIONS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
    clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year
    days_in_month deg delta deriv double_exponential_smoothing exp floor histogram_avg
    histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
    histogram_sum holt_winters hour idelta increase info irate label_join label_replace
    last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi
    predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin
    sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time
    stdvar_over_time sum_over_time tan tanh time timestamp vector year start end
    """.split()
)

#: PromQL's aggregation operators (they take C{by}/C{without}).
AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio".split()
)

#: Keywords whose label list, when present, is labels used.
GROUPING = frozenset({"by", "without"})
MATCHING = frozenset({"on", "ignoring", "group_left", "group_right"})

#: Keywords that name nothing: binary operators and modifiers.
OTHER_KEYWORDS = frozenset({"offset", "bool", "and", "or", "unless", "atan2"})

#: Grafana's templating function (a variable's query, not PromQL).
LABEL_VALUES = "label_values"

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<operator>=~|!~|!=|==|<=|>=|[-+*/%^<>=,@])
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
    """,
    re.VERBOSE,
)

_PAIRS = {"(": ")", "{": "}", "[": "]"}


class PromQLError(ValueError):
    """
    An expression the reader cannot read (says where and why).
    """


@attrs.frozen
class Token:
    """
    One token: its C{kind} (a group name of L{_TOKEN}), text and offset.
    """

    kind: str
    text: str
    at: int


def tokenize(expression: str) -> List[Token]:
    """
    The tokens of C{expression}, spaces and comments left out; C{inf} and
    C{nan} are numbers.

    @raise PromQLError: at a character no token starts with.
    """
    tokens = []
    at = 0
    while at < len(expression):
        found = _TOKEN.match(expression, at)
        if found is None:
            raise PromQLError(f"unexpected {expression[at]!r} at {at} in {expression!r}")
        kind = found.lastgroup
        assert kind is not None
        text = found.group()
        if kind == "name" and text.lower() in ("inf", "nan"):
            kind = "number"
        if kind != "space":
            tokens.append(Token(kind, text, at))
        at = found.end()
    return tokens


@attrs.define
class Selector:
    """
    A metric an expression reads (L{None}: any metric, for
    C{label_values(label)}) and the labels used on it.
    """

    metric: Optional[str]
    labels: Set[str] = attrs.field(factory=set)


class _Reader:
    """
    Reads tokens left to right, one parenthesised group at a time.
    """

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = tokenize(expression)
        self.at = 0

    def error(self, why: str) -> PromQLError:
        where = self.tokens[self.at].at if self.at < len(self.tokens) else len(self.expression)
        return PromQLError(f"{why} at {where} in {self.expression!r}")

    def peek(self, offset: int = 0) -> Optional[Token]:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end")
        self.at += 1
        return token

    def expect(self, text: str) -> Token:
        token = self.take()
        if token.text != text:
            self.at -= 1
            raise self.error(f"expected {text!r}, found {token.text!r}")
        return token

    def is_next(self, text: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token is not None and token.kind in ("open", "close", "operator") and token.text == text

    def group(self, closer: Optional[str]) -> List[Selector]:
        """
        Read up to C{closer} (consumed), or to the end when L{None}; the
        selectors read, nested ones included.
        """
        selectors: List[Selector] = []
        matching: Set[str] = set()
        while True:
            token = self.peek()
            if token is None:
                if closer is not None:
                    raise self.error(f"missing {closer!r}")
                break
            if token.kind == "close":
                if token.text != closer:
                    raise self.error(f"unexpected {token.text!r}")
                self.at += 1
                break
            self.at += 1
            if token.kind == "open":
                if token.text == "(":
                    selectors += self.group(")")
                elif token.text == "[":
                    self.skip("[")
                else:
                    selectors.append(self.matchers(None))
            elif token.kind == "name":
                selectors += self.name(token, matching)
        for selector in selectors:
            selector.labels |= matching
        return selectors

    def skip(self, opener: str) -> None:
        """
        Skip a range or subquery selector, whose opener was just read.
        """
        depth = [_PAIRS[opener]]
        while depth:
            token = self.take()
            if token.kind == "open":
                depth.append(_PAIRS[token.text])
            elif token.kind == "close":
                if token.text != depth.pop():
                    raise self.error(f"unexpected {token.text!r}")

    def label_list(self) -> Set[str]:
        """
        C{(label, ...)}, the opener not yet read.
        """
        self.expect("(")
        labels = set()
        while not self.is_next(")"):
            token = self.take()
            if token.kind != "name":
                raise self.error(f"expected a label name, found {token.text!r}")
            labels.add(token.text)
            if not self.is_next(")"):
                self.expect(",")
        self.expect(")")
        return labels

    def name(self, token: Token, matching: Set[str]) -> List[Selector]:
        """
        What a name starts: a keyword, a function call, an aggregation or
        a metric selector.
        """
        word = token.text
        if word in MATCHING:
            if self.is_next("("):
                matching |= self.label_list()
            return []
        if word in OTHER_KEYWORDS:
            return []
        if word in GROUPING:
            raise self.error(f"{word!r} outside an aggregation")
        if word in AGGREGATIONS and (self.is_next("(") or self.peek_word() in GROUPING):
            return self.aggregation()
        if self.is_next("("):
            if word == LABEL_VALUES:
                return self.label_values()
            if word not in FUNCTIONS:
                raise self.error(f"unknown function {word!r}")
            self.expect("(")
            return self.group(")")
        if self.is_next("{"):
            self.expect("{")
            return [self.matchers(word)]
        return [Selector(word)]

    def peek_word(self) -> Optional[str]:
        token = self.peek()
        return token.text if token is not None and token.kind == "name" else None

    def aggregation(self) -> List[Selector]:
        """
        C{agg by (labels) (expr)} or C{agg (expr) by (labels)}, the
        operator's name read.
        """
        labels: Set[str] = set()
        if self.peek_word() in GROUPING:
            self.at += 1
            labels = self.label_list()
        self.expect("(")
        selectors = self.group(")")
        if not labels and self.peek_word() in GROUPING:
            self.at += 1
            labels = self.label_list()
        for selector in selectors:
            selector.labels |= labels
        return selectors

    def matchers(self, metric: Optional[str]) -> Selector:
        """
        C{{label op "value", ...}}, the brace read; C{__name__="m"} names
        the metric.
        """
        selector = Selector(metric)
        while not self.is_next("}"):
            label = self.take()
            if label.kind != "name":
                raise self.error(f"expected a label name, found {label.text!r}")
            operator = self.take()
            if operator.text not in ("=", "!=", "=~", "!~"):
                raise self.error(f"expected a matcher, found {operator.text!r}")
            value = self.take()
            if value.kind != "string":
                raise self.error(f"expected a quoted value, found {value.text!r}")
            if label.text == "__name__" and operator.text == "=":
                selector.metric = value.text[1:-1]
            else:
                selector.labels.add(label.text)
            if not self.is_next("}"):
                self.expect(",")
        self.expect("}")
        if selector.metric is None:
            raise self.error("a selector without a metric name")
        return selector

    def label_values(self) -> List[Selector]:
        """
        Grafana's C{label_values(label)} or C{label_values(selector, label)}.
        """
        self.expect("(")
        selectors: List[Selector] = []
        if not (self.peek_word() is not None and self.is_next(")", 1)):
            selectors = self.group_until_comma()
        label = self.take()
        if label.kind != "name":
            raise self.error(f"expected a label name, found {label.text!r}")
        self.expect(")")
        if not selectors:
            return [Selector(None, {label.text})]
        for selector in selectors:
            selector.labels.add(label.text)
        return selectors

    def group_until_comma(self) -> List[Selector]:
        """
        The selector argument of C{label_values}, up to its comma (read).
        """
        token = self.take()
        if token.kind != "name":
            raise self.error(f"expected a metric, found {token.text!r}")
        selectors = self.name(token, set())
        self.expect(",")
        return selectors


def read(expression: str) -> List[Selector]:
    """
    The metrics C{expression} reads and the labels it uses on each.

    @raise PromQLError: when it cannot be read.
    """
    return _Reader(expression).group(None)


def used(expression: str) -> Dict[Optional[str], FrozenSet[str]]:
    """
    L{read}, merged by metric.
    """
    merged: Dict[Optional[str], Set[str]] = {}
    for selector in read(expression):
        merged.setdefault(selector.metric, set()).update(selector.labels)
    return {metric: frozenset(labels) for metric, labels in merged.items()}


_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def legend_labels(legend: str) -> FrozenSet[str]:
    """
    The labels a Grafana C{legendFormat} shows (C{{{service}} {{kind}}}).
    """
    return frozenset(_LEGEND_LABEL.findall(legend))

