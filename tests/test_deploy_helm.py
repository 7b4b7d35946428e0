"""
deploy/helm/qeetmart-values.yaml, offline: the shop's own chart
(tests/fixtures/qeetmart-chart, helm/qeetmart of qeetgroup/qeetmart, copied
unchanged) rendered with it by C{helm template}, no cluster.  Every object
is valid against the Kubernetes schemas; the api-gateway Deployment runs
qeetgw as deploy/kubernetes does, as far as the chart can say it; and
nothing but the gateway's Deployment and the shared Secret (one key more)
differs from the chart without the file.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from qeetgw.config import Config, load_config
from tests.helm import Helm, find_helm
from tests.kustomize import PROJECT_ROOT
from tests.test_deploy_kubernetes import (
    MEASURED_CONNECTION_KIB,
    MEASURED_START_MIB,
    MEASURED_TUNNEL_KIB,
    KUBERNETES_VERSIONS,
    cpu_cores,
    endpoint_port,
    memory_mib,
    validate,
)

CHART = os.path.join(PROJECT_ROOT, "tests", "fixtures", "qeetmart-chart")
VALUES = os.path.join(PROJECT_ROOT, "deploy", "helm", "qeetmart-values.yaml")

#: What an operator gives at install: a key the auth-service accepts (the
#: chart's CHANGE_ME is 9 bytes, which qeetgw refuses) and the Redis.
SETTINGS = {
    "global.secrets.JWT_SECRET": "c2VjcmV0LWtleS1mb3ItdGhlLWhlbG0tY2hhcnQtdGVzdHM=",
    "global.secrets.REDIS_URL": "redis://:s3cret@redis.example.internal:6379/0",
}


def helm() -> Helm:
    found, why = find_helm()
    if found is None:
        raise SkipTest(why)
    return found


def only(objects: List[Dict[str, Any]], kind: str, suffix: str) -> Dict[str, Any]:
    """
    The one object of C{kind} whose name ends with C{suffix} (the chart
    prefixes the release and chart names).
    """
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{len(found)} {kind} named *{suffix}"
    return found[0]


def environment(objects: List[Dict[str, Any]], container: Dict[str, Any]) -> Dict[str, str]:
    """
    The environment C{container} gets, its ConfigMap and Secret references
    read from the rendered objects (as the kubelet would).
    """
    data: Dict[Any, Mapping[str, str]] = {}
    for o in objects:
        if o["kind"] == "ConfigMap":
            data[("configMapKeyRef", o["metadata"]["name"])] = o.get("data", {})
        elif o["kind"] == "Secret":
            data[("secretKeyRef", o["metadata"]["name"])] = o.get("stringData", {})
    values: Dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
            continue
        ((how, reference),) = entry["valueFrom"].items()
        values[entry["name"]] = data[(how, reference["name"])][reference["key"]]
    return values


class HelmValuesTests(SynchronousTestCase):
    """
    The shop's chart with qeetgw's values file.
    """

    def render(self, *values: str, settings: Mapping[str, str] = SETTINGS) -> List[Dict[str, Any]]:
        return helm().template("qeetmart", CHART, values, settings)

    def gateway(self, objects: List[Dict[str, Any]]) -> Dict[str, Any]:
        deployment = only(objects, "Deployment", "-api-gateway")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return container  # type: ignore[no-any-return]

    def config(self, objects: List[Dict[str, Any]]) -> Config:
        return load_config(environment(objects, self.gateway(objects)))

    def test_every_object_is_valid(self) -> None:
        objects = self.render(VALUES)
        self.assertGreater(len(objects), 10)
        for version in KUBERNETES_VERSIONS:
            for document in objects:
                validate(document, version)

    def test_probes(self) -> None:
        container = self.gateway(self.render(VALUES))
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/ready")
        self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/health")
        # The chart's probes name the port `http`, the container port of PORT.
        (port,) = container["ports"]
        self.assertEqual(port["name"], "http")
        self.assertEqual(endpoint_port(self.config(self.render(VALUES)).listen), port["containerPort"])

    def test_the_configuration_is_the_gateways(self) -> None:
        objects = self.render(VALUES)
        config = self.config(objects)
        self.assertTrue(config.require_auth)
        self.assertIn(config.trust_proxy.mode, ("hops", "cidrs"))
        self.assertEqual(config.workers, 1)
        self.assertEqual(config.rate_limit_store, "redis")
        self.assertEqual(config.redis_url, SETTINGS["global.secrets.REDIS_URL"])
        self.assertEqual(config.metrics_port, "tcp:9464")
        self.assertEqual(config.jwt_issuer, "http://auth-service:8081")
        # No preStop hook in the chart: the drain must fit the default grace
        # period (30 s), since the chart sets none.
        pod = only(objects, "Deployment", "-api-gateway")["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        drain = (config.shutdown_delay_ms + config.shutdown_grace_ms) / 1000
        self.assertGreater(config.shutdown_delay_ms, 0)
        self.assertLess(drain, grace)

    def test_resources(self) -> None:
        objects = self.render(VALUES)
        resources = self.gateway(objects)["resources"]
        config = self.config(objects)
        self.assertGreater(cpu_cores(resources["requests"]["cpu"]), 0)
        self.assertGreaterEqual(cpu_cores(resources["limits"]["cpu"]), 1)
        tunnels = min(config.websocket_max_tunnels, config.max_connections)
        needed = MEASURED_START_MIB + (
            tunnels * MEASURED_TUNNEL_KIB
            + (config.max_connections - tunnels) * MEASURED_CONNECTION_KIB) / 1024
        self.assertGreaterEqual(memory_mib(resources["limits"]["memory"]), needed * 1.5)
        hpa = only(objects, "HorizontalPodAutoscaler", "-api-gateway")
        self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"],
                         only(objects, "Deployment", "-api-gateway")["metadata"]["name"])

    def test_only_the_gateway_changes(self) -> None:
        """
        Every other service, the Service, the HPA and the ConfigMap render
        as without the file; the shared Secret gains REDIS_URL (its
        placeholder, until the install sets it) and nothing else.
        """
        secret_only = {"global.secrets.JWT_SECRET": SETTINGS["global.secrets.JWT_SECRET"]}
        shop = self.render(settings=secret_only)
        ours = self.render(VALUES, settings=secret_only)
        name = only(ours, "Deployment", "-api-gateway")["metadata"]["name"]

        def key(o: Dict[str, Any]) -> Any:
            return (o["kind"], o["metadata"]["name"])

        shop_by, ours_by = {key(o): o for o in shop}, {key(o): o for o in ours}
        self.assertEqual(set(shop_by), set(ours_by))
        changed = sorted(k for k in shop_by if shop_by[k] != ours_by[k])
        secret = only(ours, "Secret", "-shared-secrets")
        self.assertEqual(changed, sorted([("Deployment", name), key(secret)]))
        self.assertEqual(
            set(secret["stringData"]) - set(only(shop, "Secret", "-shared-secrets")["stringData"]),
            {"REDIS_URL"},
        )
