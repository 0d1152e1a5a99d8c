"""The gateway's manifests (manifests/gateway) against the code that reads them: its settings
and targets file parse, its ports, probes and policies agree, and each target it feeds is a
ScaledObject measuring the gateway's streams whose pods run the worker."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from gateway.config import load_config as load_gateway_config
from scaler.target_config import QueueType, parse_target_config
from sidecar.config import load_config as load_sidecar_config
from tests.test_manifests import (
    KUBELET_ENV,
    SIDECAR_COMMAND,
    Obj,
    _container_env,
    _Recording,
    container,
    container_ports,
    env_of,
    find,
    full,
    of_kind,
    pod_spec,
    selects,
)

GATEWAY_COMMAND = ["python", "-m", "gateway"]


def _gateway() -> tuple[list[Obj], Obj, Obj]:
    objs = full()
    deployment, gateway = container(objs, GATEWAY_COMMAND)
    return objs, deployment, gateway


def _targets_json(objs: list[Obj], deployment: Obj) -> str:
    (volume,) = pod_spec(deployment)["volumes"]
    namespace = deployment["metadata"]["namespace"]
    config_map = find(objs, "ConfigMap", volume["configMap"]["name"], namespace)
    return str(config_map["data"]["targets.json"])


def test_gateway_settings_and_targets_file_parse(tmp_path: Path) -> None:
    objs, deployment, gateway = _gateway()
    declared = _container_env(objs, gateway, "inference")
    (mount,) = gateway["volumeMounts"]
    assert Path(declared["GATEWAY_TARGETS_FILE"]).parent == Path(mount["mountPath"])
    targets_file = tmp_path / Path(declared["GATEWAY_TARGETS_FILE"]).name
    targets_file.write_text(_targets_json(objs, deployment))
    env = _Recording({**declared, "GATEWAY_TARGETS_FILE": str(targets_file), **KUBELET_ENV})
    config = load_gateway_config([], env)
    assert config.name == "llama-6d5f8-x2x9z"  # the pod's name, from the downward API
    assert config.redis_password == "from-a-secret"
    unread = set(declared) - env.read
    assert not unread, f"the gateway reads no such setting: {sorted(unread)}"
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace > config.shutdown_delay_s + config.shutdown_grace_s


def test_gateway_ports_probes_and_annotations_agree(tmp_path: Path) -> None:
    _, deployment, gateway = _gateway()
    ports = container_ports(deployment)
    env = env_of(gateway)
    assert ports["http"] == int(env["PORT"]["value"])
    assert ports["metrics"] == int(env["METRICS_PORT"]["value"])
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]


def test_each_gateway_target_is_a_scaled_object_fed_by_its_streams_and_served_by_workers() -> None:
    objs, deployment, _ = _gateway()
    targets = json.loads(_targets_json(objs, deployment))["targets"]
    assert targets
    for target in targets:
        configs = []
        for scaled_object in of_kind(objs, "ScaledObject"):
            if scaled_object["metadata"]["namespace"] != target["namespace"]:
                continue
            (trigger,) = scaled_object["spec"]["triggers"]
            parsed = parse_target_config(
                target["namespace"], scaled_object["metadata"]["name"], trigger["metadata"]
            ).config
            if parsed.target_name == target["name"]:
                configs.append((scaled_object, parsed))
        assert len(configs) == 1, f"no ScaledObject reads target {target['name']}"
        ((scaled_object, parsed),) = configs
        assert parsed.queue_type is QueueType.GATEWAY and parsed.queue_key is None
        workload = find(
            objs, "Deployment", scaled_object["spec"]["scaleTargetRef"]["name"], target["namespace"]
        )
        pod, sidecar = container(objs, SIDECAR_COMMAND)
        assert pod is workload
        declared = _container_env(objs, sidecar, target["namespace"])
        sidecar_config = load_sidecar_config([], {**declared, **KUBELET_ENV})
        assert sidecar_config.target == target["name"]
        assert sidecar_config.worker, "the target's pods must run the worker"


def test_pdb_and_network_policy_cover_the_gateway_pods() -> None:
    objs, deployment, _ = _gateway()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = find(objs, "PodDisruptionBudget", "llm-gateway", "inference")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    policy = find(objs, "NetworkPolicy", "llm-gateway", "inference")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    allowed = {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}
    assert set(allowed) == {"http", "metrics"}
    assert allowed["metrics"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    service = find(objs, "Service", "llm-gateway", "inference")
    assert selects(service["spec"]["selector"], pod_labels)


def test_the_image_carries_every_package_the_project_ships() -> None:
    """`python -m gateway` runs from the one image: a package left out of the Dockerfile's
    COPY (or .dockerignore's allow-list) would fail only in the cluster."""
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = (root / "Dockerfile").read_text()
    allowed = (root / ".dockerignore").read_text().splitlines()
    for package in packages:
        assert f"COPY {package}/ {package}/" in dockerfile, package
        assert f"!{package}/" in allowed, package
