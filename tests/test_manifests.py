"""The deployable manifests (manifests/, kustomize): valid, consistent, and in step with the code.

- Every object is validated offline against the Kubernetes OpenAPI schemas (kubernetes-validate,
  strict: an unknown field is an error) at the oldest and the newest Kubernetes we support; the
  ScaledObject against KEDA's own CRD schema (tests/schemas/keda.sh_scaledobjects.yaml), made
  strict the same way; the TriggerAuthentication, ServiceMonitor and PodMonitor against the part
  of their CRDs we use. An object of any other kind fails: nothing goes unchecked.
- `kubectl kustomize` renders every entry point (skipped, and said so, only without kubectl).
- Cross-checks on what is rendered: selectors select, ports and probes name ports that exist,
  every referenced Secret, ConfigMap, ServiceAccount and TriggerAuthentication exists, the
  scalerAddress is the scaler's headless Service, the ScaledObject's metadata is what the scaler
  accepts, settings parse to the documented defaults, images are the Makefile's.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from scaler.redis_connect import parse_redis_url
from scaler.server import SCALER_SERVICE
from scaler.settings import Settings, settings_from_env
from scaler.target_config import KEDA_KEYS, METADATA_KEYS, parse_target_config
from sidecar.config import load_config
from tests.harness import RunningScaler

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
KEDA_CRD = ROOT / "tests" / "schemas" / "keda.sh_scaledobjects.yaml"

# Oldest Kubernetes we support, and the newest kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.30", kv_utils.major_minor(kv_utils.latest_version()))

# The scaler pointed at a Sentinel deployment or a Redis Cluster (docs/redis.md).
REDIS_OVERLAYS = ("overlays/redis-sentinel", "overlays/redis-cluster")
# Entry points a user applies with `kubectl apply -k`; the parts of the whole install
# (base, redis, example, gateway) render exactly objects of the whole, so they are validated there.
ENTRY_POINTS = (
    "",
    "base",
    "redis",
    "example",
    "gateway",
    "monitoring",
    "overlays/tls",
    *REDIS_OVERLAYS,
)
WHOLES = ("", "overlays/tls", "monitoring")
PARTS = ("base", "redis", "example", "gateway")

# What the manifests refer to but deliberately do not create: the user's model repository and
# the TLS certificates (manifests/components/tls says how to make them).
EXTERNAL = {
    ("PersistentVolumeClaim", "inference", "llama-engines"),
    ("Secret", "llm-scaler", "llm-scaler-tls"),
    ("Secret", "inference", "llm-scaler-client-tls"),
}

# What the kubelet adds to every container's environment: how `auto` switches know they
# run in a cluster.
KUBELET_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}

SCALER_COMMAND = ["python", "-m", "scaler", "serve"]
SIDECAR_COMMAND = ["python", "-m", "sidecar"]

Obj = dict[str, Any]


# --- rendering ----------------------------------------------------------------------------------


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl not found on PATH: `kubectl kustomize` renders cannot be checked "
            "(Debian: apt-get install kubernetes-client)"
        )
    return kubectl


def _render_text(entry: str) -> str:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(MANIFESTS / entry)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize manifests/{entry} failed:\n{done.stderr}"
    return done.stdout


@functools.cache
def render(entry: str) -> list[Obj]:
    """Shared between tests: copy before changing anything."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(_render_text(entry), Loader=loader) if doc]


def full() -> list[Obj]:
    return render("")


def tls() -> list[Obj]:
    return render("overlays/tls")


@functools.cache
def everything() -> list[Obj]:
    """Every distinct object of every entry point (TLS variants included)."""
    seen: dict[str, Obj] = {}
    for entry in ENTRY_POINTS:
        for obj in render(entry):
            seen[json.dumps(obj, sort_keys=True)] = obj
    return list(seen.values())


def find(objs: list[Obj], kind: str, name: str, namespace: str | None = None) -> Obj:
    for obj in objs:
        meta = obj["metadata"]
        if obj["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return obj
    raise AssertionError(f"no {kind} {namespace}/{name} in the render")


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objs if obj["kind"] == kind]


def workloads(objs: list[Obj]) -> list[Obj]:
    return [obj for obj in objs if obj["kind"] in ("Deployment", "StatefulSet")]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def container(objs: list[Obj], command: list[str]) -> tuple[Obj, Obj]:
    """(workload, container) of the one container running `command`."""
    found = [
        (w, c)
        for w in workloads(objs)
        for c in pod_spec(w)["containers"]
        if c.get("command") == command
    ]
    assert len(found) == 1, f"expected one container running {command}, found {len(found)}"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_ports(workload: Obj) -> dict[str | int, int]:
    """Port names and numbers of every container of the pod, to the number."""
    ports: dict[str | int, int] = {}
    for c in pod_spec(workload)["containers"]:
        for port in c.get("ports", []):
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def env_of(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


def label(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']}/{meta.get('namespace', '-')}/{meta['name']}"


# --- schemas --------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as `kubectl apply --validate=strict` does
    (structural schemas otherwise prune them silently)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _keda_scaled_object_schema() -> Obj:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    assert crd["spec"]["names"]["kind"] == "ScaledObject"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: Obj = _strict(version["schema"]["openAPIV3Schema"])
    return schema


_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": _NAME, "namespace": _NAME, "labels": _LABELS},
    "additionalProperties": False,
}
_DURATION = {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"}
_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": _LABELS},
    "required": ["matchLabels"],
    "additionalProperties": False,
}
_NAMESPACE_SELECTOR = {
    "type": "object",
    "properties": {"matchNames": {"type": "array", "items": _NAME}, "any": {"type": "boolean"}},
    "additionalProperties": False,
}
_SCRAPE_ENDPOINT = {
    "type": "object",
    "required": ["port"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": _DURATION,
        "honorLabels": {"type": "boolean"},
    },
    "additionalProperties": False,
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_ALERT_RULE = {
    "type": "object",
    "required": ["alert", "expr", "labels", "annotations"],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": _DURATION,
        "labels": {**_STRINGS, "required": ["severity"]},
        "annotations": {**_STRINGS, "required": ["summary", "description", "runbook_url"]},
    },
    "additionalProperties": False,
}


def _crd_object(group_version: str, kind: str, spec: Obj) -> Obj:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": group_version},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": spec,
        },
        "additionalProperties": False,
    }


# The part of these CRDs the manifests use, field names as in KEDA's
# keda.sh_triggerauthentications.yaml and the Prometheus Operator's
# monitoring.coreos.com_{servicemonitors,podmonitors,prometheusrules}.yaml (no copy of them is
# at hand offline). The rules themselves are checked by promtool (tests/test_monitoring.py).
CRD_SUBSETS: dict[str, Obj] = {
    "TriggerAuthentication": _crd_object(
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
        {
            "type": "object",
            "required": ["secretTargetRef"],
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "properties": {
                            "parameter": {"enum": ["caCert", "tlsClientCert", "tlsClientKey"]},
                            "name": _NAME,
                            "key": {"type": "string"},
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    ),
    "ServiceMonitor": _crd_object(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _SELECTOR,
                "namespaceSelector": _NAMESPACE_SELECTOR,
                "endpoints": {"type": "array", "minItems": 1, "items": _SCRAPE_ENDPOINT},
            },
            "additionalProperties": False,
        },
    ),
    "PodMonitor": _crd_object(
        "monitoring.coreos.com/v1",
        "PodMonitor",
        {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": _SELECTOR,
                "namespaceSelector": _NAMESPACE_SELECTOR,
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _SCRAPE_ENDPOINT},
            },
            "additionalProperties": False,
        },
    ),
    "PrometheusRule": _crd_object(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string"},
                            "rules": {"type": "array", "minItems": 1, "items": _ALERT_RULE},
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    ),
}


# kubernetes-validate reads its (large) definitions file on every call: read each once.
_schema_contents = functools.cache(kv_utils.schema_contents)


@pytest.fixture(autouse=True)
def _schemas_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv_utils, "schema_contents", _schema_contents)


def validate(obj: Obj, version: str) -> None:
    """Raises with the path and the message when `obj` breaks its schema."""
    if obj["kind"] == "ScaledObject":
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        jsonschema.Draft7Validator(_keda_scaled_object_schema()).validate(obj)
        return
    if obj["kind"] in CRD_SUBSETS:
        jsonschema.Draft7Validator(CRD_SUBSETS[obj["kind"]]).validate(obj)
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kv_utils.SchemaNotFoundError as exc:
        raise AssertionError(f"{label(obj)}: no schema: {exc.message}") from None
    except kv_utils.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise AssertionError(f"{label(obj)} at {where}: {exc.message}") from None


def _resource_files() -> list[Path]:
    """Every file some kustomization lists as a resource (patches are not whole objects)."""
    files = set()
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(kustomization.read_text()).get("resources", []):
            path = (kustomization.parent / entry).resolve()
            if path.is_file():
                files.add(path)
    return sorted(files)


# --- schemas: tests -------------------------------------------------------------------------------


def test_kubernetes_validate_ships_schemas_for_the_versions_we_validate_against() -> None:
    shipped = {kv_utils.major_minor(v) for v in kv_utils.all_versions()}
    assert set(KUBERNETES_VERSIONS) <= shipped


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", _resource_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_resource_file_is_valid(path: Path, version: str) -> None:
    """Without kubectl too: the files as written, before kustomize touches them."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs, f"{path} holds no object"
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("entry", WHOLES, ids=lambda e: f"manifests/{e}")
def test_every_rendered_object_is_valid(entry: str, version: str) -> None:
    objs = render(entry)
    assert objs, f"manifests/{entry} renders nothing"
    for obj in objs:
        validate(obj, version)


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        (lambda so: so["spec"].update(pollingIntervall=15), "unknown field (typo)"),
        (lambda so: so["spec"]["fallback"].update(behavior="hold"), "not in the enum"),
        (lambda so: so["spec"]["triggers"][0].pop("type"), "a required field missing"),
        (lambda so: so["spec"].update(minReplicaCount="0"), "a string for an integer"),
    ],
    ids=["typo", "enum", "required", "type"],
)
def test_the_keda_schema_catches_a_broken_scaled_object(
    broken: Callable[[Obj], None], why: str
) -> None:
    scaled_object = copy.deepcopy(find(full(), "ScaledObject", "llama", "inference"))
    validate(scaled_object, KUBERNETES_VERSIONS[0])
    broken(scaled_object)
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled_object, KUBERNETES_VERSIONS[0])


def test_the_kubernetes_schema_catches_an_unknown_field() -> None:
    deployment = copy.deepcopy(find(full(), "Deployment", "llm-scaler", "llm-scaler"))
    pod_spec(deployment)["containers"][0]["readinessProbes"] = {}
    with pytest.raises(AssertionError, match="readinessProbes"):
        validate(deployment, KUBERNETES_VERSIONS[0])


# --- renders --------------------------------------------------------------------------------------


def test_the_try_it_out_install_needs_only_kubernetes_and_keda() -> None:
    """`kubectl apply -k manifests/` must work without the Prometheus Operator's CRDs."""
    groups = {obj["apiVersion"].split("/")[0] for obj in full() if "/" in obj["apiVersion"]}
    assert groups <= {"apps", "policy", "networking.k8s.io", "rbac.authorization.k8s.io", "keda.sh"}
    kinds = {obj["kind"] for obj in full()}
    assert {"Namespace", "Deployment", "StatefulSet", "ScaledObject", "Secret"} <= kinds


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda e: f"manifests/{e}")
def test_every_namespaced_object_has_a_namespace(entry: str) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in render(entry):
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") in ("llm-scaler", "inference"), label(obj)


@pytest.mark.parametrize("entry", PARTS, ids=lambda e: f"manifests/{e}")
def test_each_part_renders_objects_of_the_whole_install(entry: str) -> None:
    whole = full()
    for obj in render(entry):
        assert obj in whole, f"{label(obj)} of manifests/{entry} differs in manifests/"


def test_the_example_scaled_object_file_is_what_renders() -> None:
    """tests/test_docs_agree.py reads the file; the install applies the render."""
    from_file = yaml.safe_load((MANIFESTS / "example/scaledobject.yaml").read_text())
    assert find(full(), "ScaledObject", "llama", "inference") == from_file


# --- cross-checks ---------------------------------------------------------------------------------


def test_workload_selectors_select_their_own_pods() -> None:
    for w in workloads(everything()):
        assert selects(
            w["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"]
        ), label(w)


def _selected_workloads(objs: list[Obj], namespace: str, selector: dict[str, str]) -> list[Obj]:
    return [
        w
        for w in workloads(objs)
        if w["metadata"]["namespace"] == namespace
        and selects(selector, w["spec"]["template"]["metadata"]["labels"])
    ]


@pytest.mark.parametrize("render_of", [full, tls], ids=["plaintext", "tls"])
def test_services_select_pods_and_target_their_ports(render_of: Callable[[], list[Obj]]) -> None:
    objs = render_of()
    for service in of_kind(objs, "Service"):
        ns = service["metadata"]["namespace"]
        selected = _selected_workloads(objs, ns, service["spec"]["selector"])
        assert len(selected) == 1, f"{label(service)} selects {len(selected)} workloads"
        ports = container_ports(selected[0])
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports, f"{label(service)}: no container port {target!r}"
            assert ports[target] == port["port"], f"{label(service)}: {port} != {ports[target]}"


def test_probes_name_ports_the_container_has() -> None:
    for w in workloads(everything()):
        for c in pod_spec(w)["containers"]:
            own = {p["containerPort"] for p in c.get("ports", [])} | {
                p["name"] for p in c.get("ports", []) if "name" in p
            }
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(kind, {})
                for action in ("grpc", "httpGet", "tcpSocket"):
                    if action in probe:
                        assert probe[action]["port"] in own, f"{label(w)} {c['name']} {kind}"


def test_scaler_ports_settings_probes_and_annotations_agree() -> None:
    deployment, scaler = container(full(), SCALER_COMMAND)
    ports = container_ports(deployment)
    env = env_of(scaler)
    assert ports["grpc"] == int(env["GRPC_PORT"]["value"]) == Settings().grpc_port
    assert ports["metrics"] == int(env["METRICS_PORT"]["value"]) == Settings().metrics_port
    assert scaler["livenessProbe"]["grpc"] == {"port": ports["grpc"], "service": ""}
    assert scaler["readinessProbe"]["grpc"] == {"port": ports["grpc"], "service": SCALER_SERVICE}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]


def test_sidecar_ports_and_annotations_agree() -> None:
    deployment, sidecar = container(full(), SIDECAR_COMMAND)
    ports = container_ports(deployment)
    assert int(env_of(sidecar)["METRICS_PORT"]["value"]) == ports["sidecar-metrics"]
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "sidecar-metrics"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["sidecar-metrics"]
    triton = {c["name"]: c for c in pod_spec(deployment)["containers"]}["triton"]
    assert f"--metrics-port={ports['triton-metrics']}" in triton["args"]
    assert env_of(sidecar)["TRITON_METRICS_URL"]["value"] == (
        f"http://localhost:{ports['triton-metrics']}/metrics"
    )
    assert env_of(sidecar)["TRITON_HTTP_URL"]["value"] == f"http://localhost:{ports['http']}"
    assert env_of(sidecar)["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env_of(sidecar)["POD_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }


def _service_by_dns(objs: list[Obj], address: str) -> tuple[Obj, int]:
    match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", address)
    assert match, f"{address!r} is not <service>.<namespace>.svc.cluster.local:<port>"
    return find(objs, "Service", match[1], match[2]), int(match[3])


@pytest.mark.parametrize("render_of", [full, tls], ids=["plaintext", "tls"])
def test_scaler_address_is_the_headless_service_of_the_scaler(
    render_of: Callable[[], list[Obj]],
) -> None:
    objs = render_of()
    scaled_object = find(objs, "ScaledObject", "llama", "inference")
    (trigger,) = scaled_object["spec"]["triggers"]
    service, port = _service_by_dns(objs, trigger["metadata"]["scalerAddress"])
    assert service["spec"]["clusterIP"] == "None", "KEDA balances over replicas only when headless"
    (selected,) = _selected_workloads(
        objs, service["metadata"]["namespace"], service["spec"]["selector"]
    )
    assert selected is container(objs, SCALER_COMMAND)[0]
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert container_ports(selected)[service_port["targetPort"]] == port


def test_redis_urls_point_at_the_redis_service() -> None:
    objs = full()
    config = find(objs, "ConfigMap", "llm-scaler-config", "llm-scaler")["data"]
    _, sidecar = container(objs, SIDECAR_COMMAND)
    for url in (config["REDIS_URL"], env_of(sidecar)["REDIS_URL"]["value"]):
        match = re.fullmatch(r"redis://([^/]+)/0", url)
        assert match, url
        service, port = _service_by_dns(objs, match[1])
        assert service["metadata"]["name"] == "redis"
        assert port in {p["port"] for p in service["spec"]["ports"]}


def test_the_redis_passwords_of_both_namespaces_agree() -> None:
    objs = full()
    passwords = {
        find(objs, "Secret", "redis-auth", ns)["stringData"]["password"]
        for ns in ("llm-scaler", "inference")
    }
    assert len(passwords) == 1


def _references(pod: Obj, namespace: str) -> Iterator[tuple[str, str, str, str | None]]:
    """(kind, namespace, name, key) of everything a pod spec needs to exist."""
    yield ("ServiceAccount", namespace, pod.get("serviceAccountName", "default"), None)
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            yield ("Secret", namespace, volume["secret"]["secretName"], None)
        if "configMap" in volume:
            yield ("ConfigMap", namespace, volume["configMap"]["name"], None)
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            yield ("PersistentVolumeClaim", namespace, claim, None)
    for c in pod["containers"]:
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                yield ("ConfigMap", namespace, source["configMapRef"]["name"], None)
            if "secretRef" in source:
                yield ("Secret", namespace, source["secretRef"]["name"], None)
        for e in c.get("env", []):
            ref = e.get("valueFrom", {})
            if "secretKeyRef" in ref:
                yield ("Secret", namespace, ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
            if "configMapKeyRef" in ref:
                key_ref = ref["configMapKeyRef"]
                yield ("ConfigMap", namespace, key_ref["name"], key_ref["key"])


@pytest.mark.parametrize("render_of", [full, tls], ids=["plaintext", "tls"])
def test_everything_referenced_exists(render_of: Callable[[], list[Obj]]) -> None:
    objs = render_of()
    refs: list[tuple[str, str, str, str | None]] = []
    for w in workloads(objs):
        refs.extend(_references(pod_spec(w), w["metadata"]["namespace"]))
    for binding in of_kind(objs, "RoleBinding") + of_kind(objs, "ClusterRoleBinding"):
        role = binding["roleRef"]
        role_ns = binding["metadata"]["namespace"] if role["kind"] == "Role" else None
        find(objs, role["kind"], role["name"], role_ns)
        for subject in binding["subjects"]:
            refs.append(("ServiceAccount", subject["namespace"], subject["name"], None))
    for auth in of_kind(objs, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            refs.append(("Secret", auth["metadata"]["namespace"], ref["name"], ref["key"]))
    for scaled_object in of_kind(objs, "ScaledObject"):
        ns = scaled_object["metadata"]["namespace"]
        find(objs, "Deployment", scaled_object["spec"]["scaleTargetRef"]["name"], ns)
        for trigger in scaled_object["spec"]["triggers"]:
            if "authenticationRef" in trigger:
                find(objs, "TriggerAuthentication", trigger["authenticationRef"]["name"], ns)
    for kind, ns, name, key in refs:
        if (kind, ns, name) in EXTERNAL or (kind, name) == ("ServiceAccount", "default"):
            continue
        obj = find(objs, kind, name, ns)
        if key is not None:
            assert key in {**obj.get("data", {}), **obj.get("stringData", {})}, (kind, name, key)


def test_pdb_and_network_policy_cover_the_scaler_pods() -> None:
    objs = full()
    deployment, _ = container(objs, SCALER_COMMAND)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = find(objs, "PodDisruptionBudget", "llm-scaler", "llm-scaler")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    policy = find(objs, "NetworkPolicy", "llm-scaler", "llm-scaler")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    ports = container_ports(deployment)
    allowed = {}
    for rule in policy["spec"]["ingress"]:
        (port,) = rule["ports"]
        assert port["port"] in ports
        allowed[port["port"]] = rule["from"]
    assert allowed == {
        "grpc": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}],
        "metrics": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
    }


def test_redis_network_policy_admits_the_scaler_and_the_workload_namespace() -> None:
    objs = full()
    policy = find(objs, "NetworkPolicy", "redis", "llm-scaler")
    redis = find(objs, "StatefulSet", "redis", "llm-scaler")
    assert selects(
        policy["spec"]["podSelector"]["matchLabels"],
        redis["spec"]["template"]["metadata"]["labels"],
    )
    (rule,) = policy["spec"]["ingress"]
    scaler_labels = container(objs, SCALER_COMMAND)[0]["spec"]["template"]["metadata"]["labels"]
    assert any(
        selects(p.get("podSelector", {}).get("matchLabels", {}), scaler_labels)
        for p in rule["from"]
    )
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "inference"}}
    } in rule["from"]


def test_scaler_deployment_is_replicated_and_spread() -> None:
    deployment, _ = container(full(), SCALER_COMMAND)
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (term,) = pod_spec(deployment)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)


def _effective(pod: Obj, c: Obj, field: str) -> Any:
    return c.get("securityContext", {}).get(field, pod.get("securityContext", {}).get(field))


@pytest.mark.parametrize("render_of", [full, tls], ids=["plaintext", "tls"])
def test_every_container_is_locked_down_and_sized(render_of: Callable[[], list[Obj]]) -> None:
    for w in workloads(render_of()):
        pod = pod_spec(w)
        for c in pod["containers"]:
            where = f"{label(w)} {c['name']}"
            assert _effective(pod, c, "runAsNonRoot") is True, where
            assert _effective(pod, c, "seccompProfile") == {"type": "RuntimeDefault"}, where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert "memory" in c["resources"]["limits"], where
            if c["name"] != "triton":  # Triton writes in its home and /tmp (deployment.yaml)
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, where


def test_rbac_is_what_the_kubernetes_client_half_needs_and_no_more() -> None:
    objs = full()
    scaler_role = find(objs, "ClusterRole", "llm-scaler-pod-reader")
    assert scaler_role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    deployment, _ = container(objs, SCALER_COMMAND)
    binding = find(objs, "ClusterRoleBinding", "llm-scaler-pod-reader")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod_spec(deployment)["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]
    sidecar_role = find(objs, "Role", "llama-sidecar", "inference")
    assert sidecar_role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}
    ]
    workload, _ = container(objs, SIDECAR_COMMAND)
    binding = find(objs, "RoleBinding", "llama-sidecar", "inference")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod_spec(workload)["serviceAccountName"],
            "namespace": "inference",
        }
    ]
    assert len(of_kind(objs, "ClusterRole")) == len(of_kind(objs, "Role")) == 1


# --- the code's own view --------------------------------------------------------------------------


class _Recording(dict[str, str]):
    """An environment that remembers which variables the code asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


def _container_env(objs: list[Obj], c: Obj, namespace: str) -> dict[str, str]:
    """What the container's process sees, as far as the manifests say."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(find(objs, "ConfigMap", source["configMapRef"]["name"], namespace)["data"])
    for e in c.get("env", []):
        ref = e.get("valueFrom", {})
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in ref:
            env[e["name"]] = {
                "metadata.name": "llama-6d5f8-x2x9z",
                "metadata.namespace": namespace,
            }[ref["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in ref:
            env[e["name"]] = "from-a-secret"
    return env


def _in_cluster(expected: Any, switch: str) -> Any:
    """`expected` with the switch that `auto` turns on in a cluster, where the code has it."""
    return (
        dataclasses.replace(expected, **{switch: True}) if hasattr(expected, switch) else expected
    )


def test_scaler_settings_parse_to_the_documented_defaults() -> None:
    objs = full()
    deployment, scaler = container(objs, SCALER_COMMAND)
    declared = _container_env(objs, scaler, deployment["metadata"]["namespace"])
    env = _Recording({**declared, **KUBELET_ENV})
    settings = settings_from_env(env)
    expected = Settings(redis_url=declared["REDIS_URL"], redis_password="from-a-secret")
    assert settings == _in_cluster(expected, "watch_pods")
    unread = set(declared) - env.read
    assert not unread, f"the scaler reads no such setting: {sorted(unread)}"
    assert declared["WATCH_PODS"] in ("auto", "on", "off")


@pytest.mark.parametrize("entry", REDIS_OVERLAYS, ids=lambda e: f"manifests/{e}")
def test_redis_overlays_change_only_where_the_scaler_finds_redis(entry: str) -> None:
    objs = render(entry)
    _, scaler = container(objs, SCALER_COMMAND)
    declared = _container_env(objs, scaler, "llm-scaler")
    settings = settings_from_env({**declared, **KUBELET_ENV})
    kind = entry.removeprefix("overlays/redis-")
    assert settings.redis_url.startswith(f"redis+{kind}://")
    assert parse_redis_url(settings.redis_url).kind == kind
    assert settings.redis_password == "from-a-secret"
    sentinel_env = [e for e in scaler["env"] if e["name"] == "REDIS_SENTINEL_PASSWORD"]
    if kind == "sentinel":
        (ref,) = [e["valueFrom"]["secretKeyRef"] for e in sentinel_env]
        assert ref == {"name": "redis-auth", "key": "sentinel-password", "optional": True}
        assert settings.redis_sentinel_password == "from-a-secret"
    else:
        assert not sentinel_env
    # Everything else is the base's, object for object.
    base = render("base")
    for obj in objs:
        if obj["kind"] not in ("ConfigMap", "Deployment"):
            assert obj in base, label(obj)
    base_data = find(base, "ConfigMap", "llm-scaler-config", "llm-scaler")["data"]
    data = find(objs, "ConfigMap", "llm-scaler-config", "llm-scaler")["data"]
    assert {k: v for k, v in data.items() if k != "REDIS_URL"} == {
        k: v for k, v in base_data.items() if k != "REDIS_URL"
    }


def test_sidecar_settings_parse() -> None:
    objs = full()
    deployment, sidecar = container(objs, SIDECAR_COMMAND)
    declared = _container_env(objs, sidecar, deployment["metadata"]["namespace"])
    env = _Recording({**declared, **KUBELET_ENV})
    config = load_config([], env)
    assert config.namespace == "inference"
    assert config.redis_password == "from-a-secret"
    assert config == _in_cluster(config, "deletion_cost")
    unread = set(declared) - env.read
    assert not unread, f"the sidecar reads no such setting: {sorted(unread)}"
    assert declared["DELETION_COST"] in ("auto", "on", "off")


@pytest.mark.parametrize("render_of", [full, tls], ids=["plaintext", "tls"])
def test_scaled_object_metadata_is_what_the_scaler_accepts(
    render_of: Callable[[], list[Obj]],
) -> None:
    objs = render_of()
    scaled_object = find(objs, "ScaledObject", "llama", "inference")
    (trigger,) = scaled_object["spec"]["triggers"]
    assert trigger["type"] == "external-push"
    metadata = trigger["metadata"]
    assert set(metadata) <= METADATA_KEYS.keys() | KEDA_KEYS
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA's metadata is a string map"
    parsed = parse_target_config("inference", scaled_object["metadata"]["name"], metadata)
    # The sidecars report under the name the scaler reads, in the ScaledObject's namespace.
    _, sidecar = container(objs, SIDECAR_COMMAND)
    assert env_of(sidecar)["TARGET_NAME"]["value"] == parsed.config.target_name
    assert float(env_of(sidecar)["CAPACITY"]["value"]) == parsed.config.target_concurrency
    workload = find(
        objs, "Deployment", scaled_object["spec"]["scaleTargetRef"]["name"], "inference"
    )
    assert container(objs, SIDECAR_COMMAND)[0] is workload


def test_example_scaled_object_documents_every_metadata_key() -> None:
    """Each key the scaler has appears in the example (set, or commented out when it is
    optional), and each key set there has a comment of its own just above it."""
    lines = (MANIFESTS / "example/scaledobject.yaml").read_text().splitlines()
    text = "\n".join(lines)
    for key in METADATA_KEYS:
        assert re.search(rf"^\s+(# )?{key}: ", text, flags=re.MULTILINE), (
            f"{key} not in the example"
        )
    start = max(i for i, line in enumerate(lines) if line.strip() == "metadata:")
    for before, line in zip(lines[start:], lines[start + 1 :], strict=False):
        if re.match(r"^\s+\w+: ", line):
            assert before.strip().startswith("#"), f"no comment above {line.strip()!r}"


def test_scaled_object_follows_the_readme_recommendations() -> None:
    spec = find(full(), "ScaledObject", "llama", "inference")["spec"]
    assert spec["minReplicaCount"] == 0
    assert spec["pollingInterval"] == 15
    assert spec["cooldownPeriod"] == 15
    assert spec["fallback"]["failureThreshold"] > 0 and spec["fallback"]["replicas"] > 0
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 0


# --- images ---------------------------------------------------------------------------------------


def _makefile_variable(name: str) -> str:
    match = re.search(
        rf"^{name} [?:]?= (\S+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE
    )
    assert match, f"Makefile defines no {name}"
    return match[1]


def test_images_are_the_ones_the_makefile_builds() -> None:
    image = f"{_makefile_variable('IMAGE')}:{_makefile_variable('IMAGE_TAG')}"
    ours = []
    for w in workloads(everything()):
        for c in pod_spec(w)["containers"]:
            repository = c["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1]
            if repository == _makefile_variable("IMAGE") or c.get("command", [""])[0] == "python":
                assert c["image"] == image, f"{label(w)} {c['name']}: {c['image']} != {image}"
                ours.append(c["command"])
    assert SCALER_COMMAND in ours and SIDECAR_COMMAND in ours


def test_dockerfile_runs_non_root_as_the_manifests_say_and_generates_the_grpc_code() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\S+)$", dockerfile, flags=re.MULTILINE)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "USER must be a numeric non-root UID"
    for w in workloads(full()):
        pod = pod_spec(w)
        for c in pod["containers"]:
            if c.get("command", [""])[0] == "python":
                assert _effective(pod, c, "runAsUser") == int(uid), label(w)
                assert _effective(pod, c, "runAsGroup") == int(gid), label(w)
    makefile_gen = re.search(r"--proto_path=\$\(GEN_DIR\)=(\S+)", (ROOT / "Makefile").read_text())
    assert makefile_gen, "the Makefile's protoc call changed: update this test"
    proto_path = f"--proto_path={_makefile_variable('GEN_DIR')}={makefile_gen[1]}"
    assert proto_path in dockerfile, f"protoc as in `make gen`: {proto_path}"
    assert re.search(r'^CMD \["python", "-m", "scaler", "serve"\]$', dockerfile, flags=re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "scaler/_generated/*_pb2*" in ignored, "generated code is rebuilt, never copied in"


# --- TLS ------------------------------------------------------------------------------------------


def test_tls_component_mounts_the_certificates_and_replaces_the_grpc_probes() -> None:
    objs = tls()
    deployment, scaler = container(objs, SCALER_COMMAND)
    env = env_of(scaler)
    (mount,) = [m for m in scaler["volumeMounts"] if m["name"] == "tls"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "tls"]
    for name, key in (
        ("TLS_CERT_FILE", "tls.crt"),
        ("TLS_KEY_FILE", "tls.key"),
        ("TLS_CLIENT_CA_FILE", "ca.crt"),
    ):
        assert env[name]["value"] == f"{mount['mountPath']}/{key}"
    assert volume["secret"]["secretName"] == "llm-scaler-tls"
    settings = settings_from_env(_container_env(objs, scaler, "llm-scaler"))
    assert settings.tls_client_ca_file is not None  # mutual TLS
    for probe in ("livenessProbe", "readinessProbe"):
        assert "grpc" not in scaler[probe], "kubelet's gRPC probes cannot do TLS"
    assert scaler["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    auth = find(objs, "TriggerAuthentication", "llm-scaler-tls", "inference")
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {
        "caCert",
        "tlsClientCert",
        "tlsClientKey",
    }
    (trigger,) = find(objs, "ScaledObject", "llama", "inference")["spec"]["triggers"]
    assert trigger["authenticationRef"] == {"name": "llm-scaler-tls"}
    assert trigger["metadata"]["enableTLS"] == "true"
    # Nothing else changes.
    plain = {label(o): o for o in full()}
    changed = {label(o) for o in objs if plain.get(label(o)) != o}
    assert changed == {
        "Deployment/llm-scaler/llm-scaler",
        "ScaledObject/inference/llama",
        "TriggerAuthentication/inference/llm-scaler-tls",
    }


def _tls_readiness_command() -> list[str]:
    _, scaler = container(tls(), SCALER_COMMAND)
    command: list[str] = scaler["readinessProbe"]["exec"]["command"]
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def _probe(metrics_port: int) -> int:
    env = {"METRICS_PORT": str(metrics_port), "HEALTH_INTERVAL_SECONDS": "5"}
    done = subprocess.run(
        _tls_readiness_command(), env=env, capture_output=True, timeout=10, check=False
    )
    return done.returncode


def test_tls_readiness_probe_passes_while_redis_answers(scaler: RunningScaler) -> None:
    deadline = time.monotonic() + 5
    while _probe(scaler.server.metrics_port) != 0:
        assert time.monotonic() < deadline, "the readiness probe never passed"
        time.sleep(0.1)


def test_tls_readiness_probe_fails_when_redis_last_answered_too_long_ago() -> None:
    page = f"llm_scaler_redis_last_success_timestamp_seconds {time.time() - 11:.3f}\n".encode()

    class Stale(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Stale)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        assert _probe(server.server_address[1]) == 1
    finally:
        server.shutdown()
        server.server_close()


# --- monitoring -----------------------------------------------------------------------------------


def test_service_monitor_scrapes_each_scaler_replica_once() -> None:
    objs = full() + render("monitoring")
    monitor = find(objs, "ServiceMonitor", "llm-scaler", "llm-scaler")
    namespaces = monitor["spec"]["namespaceSelector"]["matchNames"]
    selected = [
        s
        for s in of_kind(objs, "Service")
        if s["metadata"]["namespace"] in namespaces
        and selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in selected] == ["llm-scaler"]
    names = {p["name"] for p in selected[0]["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics"} <= names


def test_pod_monitor_scrapes_the_sidecar_and_triton() -> None:
    objs = full() + render("monitoring")
    monitor = find(objs, "PodMonitor", "llama", "inference")
    (workload,) = _selected_workloads(objs, "inference", monitor["spec"]["selector"]["matchLabels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["inference"]
    ports = container_ports(workload)
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} == {
        "sidecar-metrics",
        "triton-metrics",
    }
    assert all(e["port"] in ports for e in monitor["spec"]["podMetricsEndpoints"])
