"""
The Grafana dashboard (contrib/grafana/qeetgw.json) against a scrape of the
gateway: every metric it queries must be a sample name of the scrape, and
every label it uses must be on that metric's samples.

What a query uses is read by L{tests.promqlnames}; the labels a panel's
C{legendFormat} shows (C{{{service}}}) count as used on every metric of its
expression.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, FrozenSet, Iterator, List, Mapping, Optional, Set

import attrs
from prometheus_client.parser import text_string_to_metric_families

from tests.promqlnames import legend_labels, read

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Where the dashboard is.
DASHBOARD = os.path.join(PROJECT_ROOT, "contrib", "grafana", "qeetgw.json")

#: The labels Prometheus itself adds to every series it scrapes (the
#: target's job and instance): never in what the gateway serves, so never
#: in a scrape of it, and not looked for there.
TARGET_LABELS = frozenset({"job", "instance"})


def load(path: str = DASHBOARD) -> Dict[str, Any]:
    """
    The dashboard at C{path}, as JSON.
    """
    with open(path, encoding="utf-8") as file:
        return json.load(file)  # type: ignore[no-any-return]


def panels(dashboard: Mapping[str, Any]) -> Iterator[Dict[str, Any]]:
    """
    Every panel, the rows and the panels of collapsed rows included.
    """
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)


@attrs.frozen
class Query:
    """
    One PromQL query of the dashboard: where it is (for messages), its
    expression and its legend.
    """

    where: str
    expression: str
    legend: str = ""


def queries(dashboard: Mapping[str, Any]) -> List[Query]:
    """
    Every query of the dashboard: each panel's targets, and each query
    variable's (a string, or an object with C{query} as newer Grafanas
    save it).
    """
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                found.append(
                    Query(
                        f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}",
                        target["expr"],
                        target.get("legendFormat", ""),
                    )
                )
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        found.append(Query(f"variable {variable.get('name')!r}", query))
    return found


@attrs.frozen
class Use:
    """
    A metric a query reads (L{None}: any metric) and the labels it uses
    on it.
    """

    where: str
    metric: Optional[str]
    labels: FrozenSet[str]


def uses(dashboard: Mapping[str, Any]) -> List[Use]:
    """
    What every query of the dashboard reads.

    @raise tests.promqlnames.PromQLError: for a query it cannot read.
    """
    found = []
    for query in queries(dashboard):
        shown = legend_labels(query.legend)
        for selector in read(query.expression):
            found.append(Use(query.where, selector.metric, frozenset(selector.labels | shown)))
    return found


def scraped(text: str) -> Dict[str, Set[str]]:
    """
    Every sample name of an exposition, with the labels its samples carry.
    """
    labels: Dict[str, Set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def problems(dashboard: Mapping[str, Any], scrape: Mapping[str, Set[str]]) -> List[str]:
    """
    What the dashboard queries that C{scrape} (L{scraped}) does not have,
    one line each; empty when it has everything.
    """
    found = []
    anywhere: Set[str] = set().union(*scrape.values())
    for use in uses(dashboard):
        wanted = use.labels - TARGET_LABELS
        if use.metric is None:
            have = anywhere
        elif use.metric not in scrape:
            found.append(f"{use.where}: no metric {use.metric} in the scrape")
            continue
        else:
            have = scrape[use.metric]
        for label in sorted(wanted - have):
            found.append(f"{use.where}: no label {label!r} on {use.metric or 'any metric'}")
    # A query that reads a metric twice (both sides of a division) says so once.
    return list(dict.fromkeys(found))
