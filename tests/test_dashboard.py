"""
The Grafana dashboard in memory: the PromQL reader on sample expressions,
the dashboard's shape (importable, one data-source variable, units, a
layout without overlaps), and the checker against small fake scrapes
(tests/e2e/test_dashboard.py checks it against a real gateway's scrape).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Optional, Set

from prometheus_client import generate_latest
from twisted.trial.unittest import TestCase

from qeetgw.metrics import Metrics
from tests.dashboardcheck import (
    DASHBOARD,
    TARGET_LABELS,
    load,
    panels,
    problems,
    queries,
    scraped,
    uses,
)
from tests.gateway import MemoryGateway
from tests.promqlnames import PromQLError, legend_labels, read, tokenize, used

#: Metric families of the gateway not on the dashboard, and why.
NOT_ON_DASHBOARD: Dict[str, str] = {}


class TokenizerTests(TestCase):
    """
    The tokens of PromQL and of Grafana's variables.
    """

    def test_kinds(self) -> None:
        tokens = tokenize('rate(m{a=~"x|y"}[$__rate_interval]) * 1e3 > bool 0.5 # why')
        self.assertEqual(
            [(token.kind, token.text) for token in tokens],
            [
                ("name", "rate"), ("open", "("), ("name", "m"), ("open", "{"), ("name", "a"),
                ("operator", "=~"), ("string", '"x|y"'), ("close", "}"), ("open", "["),
                ("variable", "$__rate_interval"), ("close", "]"), ("close", ")"),
                ("operator", "*"), ("number", "1e3"), ("operator", ">"), ("name", "bool"),
                ("number", "0.5"),
            ],
        )

    def test_durations_and_variables(self) -> None:
        tokens = tokenize("m[1h30m:${step}] offset 5m inf [[old]]")
        self.assertEqual(
            [(token.kind, token.text) for token in tokens],
            [
                ("name", "m"), ("open", "["), ("duration", "1h30m"), ("name", ":"),
                ("variable", "${step}"), ("close", "]"), ("name", "offset"),
                ("duration", "5m"), ("number", "inf"), ("variable", "[[old]]"),
            ],
        )

    def test_quoted_values(self) -> None:
        tokens = tokenize(r"""m{a="say \"hi\"", b='x', c=`raw\`}""")
        self.assertEqual(
            [token.text for token in tokens if token.kind == "string"],
            [r'"say \"hi\""', "'x'", r"`raw\`"],
        )

    def test_unknown_character(self) -> None:
        with self.assertRaises(PromQLError) as raised:
            tokenize("m ? 1")
        self.assertIn("'?' at 2", str(raised.exception))


class ReaderTests(TestCase):
    """
    The metrics and labels of sample expressions.
    """

    def test_bare_metric(self) -> None:
        self.assertEqual(used("up"), {"up": frozenset()})

    def test_matchers(self) -> None:
        self.assertEqual(
            used('m{a="1", b=~"x|y", c!="", d!~"z",}'), {"m": frozenset({"a", "b", "c", "d"})}
        )

    def test_name_matcher(self) -> None:
        self.assertEqual(used('{__name__="m", a="b"}'), {"m": frozenset({"a"})})

    def test_by_either_side(self) -> None:
        self.assertEqual(used("sum by (a, b) (rate(m[5m]))"), {"m": frozenset({"a", "b"})})
        self.assertEqual(used("sum(rate(m[5m])) by (a)"), {"m": frozenset({"a"})})
        self.assertEqual(used("max without (c) (m)"), {"m": frozenset({"c"})})
        self.assertEqual(used("sum(m)"), {"m": frozenset()})

    def test_by_applies_to_what_it_aggregates(self) -> None:
        self.assertEqual(
            used("sum by (a) (rate(m1[5m])) / sum(rate(m2[5m]))"),
            {"m1": frozenset({"a"}), "m2": frozenset()},
        )

    def test_vector_matching(self) -> None:
        self.assertEqual(
            used("sum by (s, c) (m1) / ignoring (c) group_left sum by (s) (m2)"),
            {"m1": frozenset({"s", "c"}), "m2": frozenset({"s", "c"})},
        )
        self.assertEqual(
            used("(m1 * on (a) group_right (b) m2) + m3"),
            {"m1": frozenset({"a", "b"}), "m2": frozenset({"a", "b"}), "m3": frozenset()},
        )

    def test_histogram_quantile(self) -> None:
        self.assertEqual(
            used(
                'histogram_quantile(0.99, sum by (service, le) '
                '(rate(m_bucket{service=~"$service"}[$__rate_interval])))'
            ),
            {"m_bucket": frozenset({"service", "le"})},
        )

    def test_ranges_subqueries_and_modifiers(self) -> None:
        self.assertEqual(
            used("max_over_time(rate(m[5m])[1h:1m]) + n offset -5m + o @ start() + p[${__range}]"),
            {"m": frozenset(), "n": frozenset(), "o": frozenset(), "p": frozenset()},
        )

    def test_keywords_are_not_metrics(self) -> None:
        self.assertEqual(
            set(used("m1 > bool 0 and m2 or m3 unless m4 atan2 m5")),
            {"m1", "m2", "m3", "m4", "m5"},
        )

    def test_aggregation_parameters(self) -> None:
        self.assertEqual(used("topk(5, m)"), {"m": frozenset()})
        self.assertEqual(used('count_values("v", m) by (a)'), {"m": frozenset({"a"})})
        self.assertEqual(used("quantile(0.9, m) without (b)"), {"m": frozenset({"b"})})

    def test_label_values(self) -> None:
        self.assertEqual(
            used('label_values(m{job=~"$job"}, instance)'), {"m": frozenset({"job", "instance"})}
        )
        self.assertEqual(used("label_values(m, service)"), {"m": frozenset({"service"})})
        self.assertEqual(used("label_values(service)"), {None: frozenset({"service"})})

    def test_a_metric_named_like_a_function(self) -> None:
        # "rate" without "(" is a metric name, as PromQL reads it.
        self.assertEqual(used("rate + 1"), {"rate": frozenset()})

    def test_refused(self) -> None:
        for expression, why in [
            ("rat(m[5m])", "unknown function 'rat'"),
            ("histogram_quantil(0.9, m)", "unknown function 'histogram_quantil'"),
            ("sum(m", "missing ')'"),
            ("sum(m))", "unexpected ')'"),
            ('{a="b"}', "without a metric name"),
            ("m by (a)", "'by' outside an aggregation"),
            ("m{a}", "expected a matcher"),
            ("m{a=b}", "expected a quoted value"),
            ("sum by (1) (m)", "expected a label name"),
            ("rate(m[5m)", "unexpected ')'"),
        ]:
            with self.assertRaises(PromQLError, msg=expression) as raised:
                read(expression)
            self.assertIn(why, str(raised.exception), expression)

    def test_legend(self) -> None:
        self.assertEqual(legend_labels("{{service}} {{ kind }} p99"), frozenset({"service", "kind"}))
        self.assertEqual(legend_labels("__auto"), frozenset())


def _panel_boxes(dashboard: Dict[str, Any]) -> List[Any]:
    return [(panel["id"], panel["gridPos"]) for panel in panels(dashboard)]


class DashboardShapeTests(TestCase):
    """
    The dashboard as Grafana imports it.
    """

    def setUp(self) -> None:
        self.dashboard = load()
        self.variables = {v["name"]: v for v in self.dashboard["templating"]["list"]}

    def test_importable(self) -> None:
        with open(DASHBOARD, encoding="utf-8") as file:
            self.assertEqual(json.load(file), self.dashboard)
        self.assertEqual(self.dashboard["uid"], "qeetgw")
        self.assertGreaterEqual(self.dashboard["schemaVersion"], 36)
        self.assertIsNone(self.dashboard["id"])
        self.assertTrue(self.dashboard["title"])

    def test_variables(self) -> None:
        source = self.variables["datasource"]
        self.assertEqual((source["type"], source["query"]), ("datasource", "prometheus"))
        for name in ("job", "instance", "service"):
            variable = self.variables[name]
            self.assertEqual(variable["type"], "query", name)
            self.assertEqual(variable["datasource"]["uid"], "${datasource}", name)
            self.assertEqual(variable["allValue"], ".*", name)
        self.assertEqual(
            used(self.variables["service"]["query"]),
            {"qeetgw_request_duration_seconds_count": frozenset({"job", "instance", "service"})},
        )

    def test_every_panel_uses_the_variable(self) -> None:
        for panel in panels(self.dashboard):
            if panel["type"] == "row":
                continue
            self.assertEqual(panel["datasource"], {"type": "prometheus", "uid": "${datasource}"}, panel["title"])
            self.assertTrue(panel["targets"], panel["title"])
            for target in panel["targets"]:
                self.assertEqual(target["datasource"], panel["datasource"], panel["title"])

    def test_every_query_filters_by_the_variables(self) -> None:
        for query in queries(self.dashboard):
            if query.where.startswith("variable"):
                continue
            for metric, labels in used(query.expression).items():
                self.assertLessEqual({"job", "instance"}, labels, (query.where, metric))
                if "$service" in query.expression or metric.startswith(("qeetgw_upstream", "qeetgw_websocket")):
                    self.assertIn("service", labels, (query.where, metric))

    def test_ids_unique(self) -> None:
        ids = [panel["id"] for panel in panels(self.dashboard)]
        self.assertEqual(len(ids), len(set(ids)))

    def test_layout(self) -> None:
        """
        Every panel within the 24 columns, and no two overlapping.
        """
        boxes = _panel_boxes(self.dashboard)
        cells: Dict[Any, int] = {}
        for panel_id, box in boxes:
            self.assertGreater(box["w"], 0)
            self.assertGreater(box["h"], 0)
            self.assertLessEqual(box["x"] + box["w"], 24, panel_id)
            for x in range(box["x"], box["x"] + box["w"]):
                for y in range(box["y"], box["y"] + box["h"]):
                    self.assertNotIn((x, y), cells, f"panels {cells.get((x, y))} and {panel_id} overlap")
                    cells[(x, y)] = panel_id

    def test_units(self) -> None:
        units: Set[str] = set()
        for panel in panels(self.dashboard):
            if panel["type"] != "row":
                unit = panel["fieldConfig"]["defaults"].get("unit")
                self.assertTrue(unit, panel["title"])
                units.add(unit)
        self.assertLessEqual({"reqps", "s", "bytes", "Bps", "percentunit"}, units)

    def test_every_query_reads(self) -> None:
        found = queries(self.dashboard)
        self.assertGreater(len(found), 20)
        for query in found:
            self.assertTrue(read(query.expression), query.where)

    def test_every_metric_of_the_gateway(self) -> None:
        """
        Every family of the gateway's registry is on the dashboard, or in
        L{NOT_ON_DASHBOARD} with the reason.
        """
        metrics = MemoryGateway({"REQUIRE_AUTH": "false"}, metrics=Metrics(process=False)).gateway.metrics
        assert metrics is not None
        queried = {use.metric for use in uses(self.dashboard) if use.metric is not None}
        for family in metrics.registry.collect():
            if family.name in NOT_ON_DASHBOARD:
                continue
            on = [m for m in queried if m == family.name or m.startswith(family.name + "_")]
            self.assertTrue(
                on,
                f"{family.name} is not on contrib/grafana/qeetgw.json: add a panel, "
                "or list it in NOT_ON_DASHBOARD with the reason",
            )


#: A small scrape: what L{SMALL} queries, as the gateway would serve it.
SMALL_SCRAPE = """\
# HELP qeetgw_requests_total Requests
# TYPE qeetgw_requests_total counter
qeetgw_requests_total{service="user-service",method="GET",status_class="2xx"} 3.0
# HELP qeetgw_request_duration_seconds Durations
# TYPE qeetgw_request_duration_seconds histogram
qeetgw_request_duration_seconds_bucket{service="user-service",le="0.1"} 3.0
qeetgw_request_duration_seconds_bucket{service="user-service",le="+Inf"} 3.0
qeetgw_request_duration_seconds_count{service="user-service"} 3.0
qeetgw_request_duration_seconds_sum{service="user-service"} 0.03
# HELP qeetgw_client_connections_open Open
# TYPE qeetgw_client_connections_open gauge
qeetgw_client_connections_open 0.0
"""

#: A small dashboard: a panel, a collapsed row holding another, variables.
SMALL: Dict[str, Any] = {
    "panels": [
        {
            "id": 1, "type": "timeseries", "title": "requests",
            "targets": [{
                "refId": "A",
                "expr": 'sum by (service) (rate(qeetgw_requests_total{job=~"$job", status_class="2xx"}[5m]))',
                "legendFormat": "{{service}} {{instance}}",
            }],
        },
        {
            "id": 2, "type": "row", "title": "latency", "collapsed": True,
            "panels": [{
                "id": 3, "type": "timeseries", "title": "p99",
                "targets": [{
                    "refId": "A",
                    "expr": "histogram_quantile(0.99, sum by (le) (rate(qeetgw_request_duration_seconds_bucket[5m])))",
                }],
            }],
        },
    ],
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus"},
        {"name": "job", "type": "query", "query": "label_values(qeetgw_client_connections_open, job)"},
        {"name": "service", "type": "query", "query": {"query": "label_values(service)", "refId": "A"}},
    ]},
}


def _with(expression: str, row_panel: Optional[str] = None) -> Dict[str, Any]:
    """
    L{SMALL} with its first panel's (or, with C{row_panel}, its row's
    panel's) expression replaced.
    """
    dashboard = copy.deepcopy(SMALL)
    if row_panel is None:
        dashboard["panels"][0]["targets"][0]["expr"] = expression
    else:
        dashboard["panels"][1]["panels"][0]["targets"][0]["expr"] = expression
    return dashboard


class CheckerTests(TestCase):
    """
    The check against a small fake scrape: silent when everything is
    there, and one line for each thing missing.
    """

    def setUp(self) -> None:
        self.scrape = scraped(SMALL_SCRAPE)

    def test_scraped(self) -> None:
        self.assertEqual(self.scrape["qeetgw_request_duration_seconds_bucket"], {"service", "le"})
        self.assertEqual(self.scrape["qeetgw_client_connections_open"], set())

    def test_all_there(self) -> None:
        # job and instance (in a matcher, a legend, a variable) are
        # Prometheus's and never looked for.
        self.assertEqual(TARGET_LABELS, {"job", "instance"})
        self.assertEqual(problems(SMALL, self.scrape), [])

    def test_every_query_read(self) -> None:
        self.assertEqual(
            [query.where for query in queries(SMALL)],
            ["panel 1 'requests' A", "panel 3 'p99' A", "variable 'job'", "variable 'service'"],
        )

    def test_misspelt_metric(self) -> None:
        dashboard = _with('sum(rate(qeetgw_request_total{job=~"$job"}[5m]))')
        self.assertEqual(
            problems(dashboard, self.scrape),
            ["panel 1 'requests' A: no metric qeetgw_request_total in the scrape"],
        )

    def test_misspelt_metric_in_a_row(self) -> None:
        dashboard = _with("histogram_quantile(0.99, sum by (le) (rate(qeetgw_request_duration_bucket[5m])))", "row")
        self.assertEqual(
            problems(dashboard, self.scrape),
            ["panel 3 'p99' A: no metric qeetgw_request_duration_bucket in the scrape"],
        )

    def test_misspelt_labels(self) -> None:
        for expression, label in [
            ('sum(rate(qeetgw_requests_total{status="2xx"}[5m]))', "status"),
            ("sum by (services) (rate(qeetgw_requests_total[5m]))", "services"),
            ("sum without (methods) (rate(qeetgw_requests_total[5m]))", "methods"),
            ("sum(qeetgw_requests_total) / on (svc) sum(qeetgw_requests_total)", "svc"),
        ]:
            self.assertEqual(
                problems(_with(expression), self.scrape),
                [f"panel 1 'requests' A: no label {label!r} on qeetgw_requests_total"],
                expression,
            )

    def test_le_only_on_buckets(self) -> None:
        dashboard = _with("histogram_quantile(0.99, sum by (le) (rate(qeetgw_request_duration_seconds_count[5m])))", "row")
        self.assertEqual(
            problems(dashboard, self.scrape),
            ["panel 3 'p99' A: no label 'le' on qeetgw_request_duration_seconds_count"],
        )

    def test_legend_label(self) -> None:
        dashboard = copy.deepcopy(SMALL)
        dashboard["panels"][0]["targets"][0]["legendFormat"] = "{{servcie}}"
        self.assertEqual(
            problems(dashboard, self.scrape),
            ["panel 1 'requests' A: no label 'servcie' on qeetgw_requests_total"],
        )

    def test_variables(self) -> None:
        dashboard = copy.deepcopy(SMALL)
        dashboard["templating"]["list"][1]["query"] = "label_values(qeetgw_client_connection_open, job)"
        dashboard["templating"]["list"][2]["query"]["query"] = "label_values(services)"
        self.assertEqual(
            problems(dashboard, self.scrape),
            [
                "variable 'job': no metric qeetgw_client_connection_open in the scrape",
                "variable 'service': no label 'services' on any metric",
            ],
        )

    def test_unreadable(self) -> None:
        with self.assertRaises(PromQLError):
            problems(_with("rate(qeetgw_requests_total[5m]"), self.scrape)


class FreshGatewayTests(TestCase):
    """
    The dashboard over a gateway just built, in memory: every series it
    queries is there before any traffic (made at 0 at start), but the
    requests counter, made on first use.
    """

    def test_before_any_request(self) -> None:
        memory = MemoryGateway({"REQUIRE_AUTH": "false"}, metrics=Metrics())
        metrics = memory.gateway.metrics
        assert metrics is not None
        scrape = scraped(generate_latest(metrics.registry).decode("utf-8"))
        self.assertEqual(
            {line.split(": ", 1)[1] for line in problems(load(), scrape)},
            {"no metric qeetgw_requests_total in the scrape"},
        )
