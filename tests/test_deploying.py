"""docs/deploying.md, followed line by line: every command in it that can run without a cluster
runs here against the rendered manifests, a local scaler or the gateway's targets, and each one
that needs a cluster names objects the install renders.

What needs a cluster and so runs nowhere here: `kubectl apply`, `rollout status`, `get` and
`describe`, and the port-forwards; the calls made through the port-forwards run against a local
scaler instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.targets import Router, load_targets
from scaler._generated import externalscaler_pb2 as pb
from tests.certs import CertificateAuthority
from tests.harness import RunningScaler
from tests.test_manifests import KUBERNETES_VERSIONS, MANIFESTS, find, render, validate

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "deploying.md"
README = ROOT / "README.md"
IMAGE = "llm-keda-scaler"


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found on PATH: the doc's kubectl commands cannot run")
    return kubectl


def _commands(path: Path) -> list[str]:
    """The shell commands of the page's indented code blocks, continuation lines joined and
    comments dropped; a heredoc's body stays with its command."""
    commands: list[str] = []
    in_block, previous = False, ""
    heredoc_end: str | None = None
    for raw in path.read_text().splitlines():
        # A block starts after a blank line (an indented line right after text continues a
        # list item) and runs while its lines are indented.
        in_block = raw.startswith("    ") and (in_block or previous.strip() == "")
        previous = raw
        if not in_block:
            continue
        line = raw[4:]
        if heredoc_end is not None:
            commands[-1] += "\n" + line
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        if commands and commands[-1].endswith("\\"):
            commands[-1] = commands[-1][:-1] + " " + line.strip()
        else:
            commands.append(line)
        marker = re.search(r"<<'?(\w+)'?", line)
        if marker:
            heredoc_end = marker[1]
    return [c for c in commands if c.strip() and not c.lstrip().startswith(("{", "#"))]


def _without_comment(command: str) -> str:
    return re.sub(r"\s+#\s.*$", "", command.split("\n", 1)[0]).strip()


DEPLOYING = _commands(DOC)


def _commands_starting(prefix: str, commands: list[str] = DEPLOYING) -> list[str]:
    return [c for c in commands if _without_comment(c).startswith(prefix)]


def test_the_page_is_read_as_the_commands_it_shows() -> None:
    firsts = {_without_comment(c).split()[0] for c in DEPLOYING}
    assert firsts == {"make", "docker", "mkdir", "cat", "kubectl", "curl", "grpcurl"}


def test_make_image_builds_the_name_the_page_tags_and_says_so_without_an_engine() -> None:
    tag = _commands_starting("docker tag")[0].split()
    push = _commands_starting("docker push")[0].split()
    assert tag[2] == f"{IMAGE}:0.1.0" and tag[3] == push[2] == f"REGISTRY/{IMAGE}:0.1.0"
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "image"], cwd=ROOT, capture_output=True, text=True
    )
    assert f"docker build -t {IMAGE}:0.1.0 ." in done.stdout
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "info"], capture_output=True).returncode
    ):
        # What the page promises without an engine: a line saying so, exit 1, nothing built.
        failed = subprocess.run(["make", "image"], cwd=ROOT, capture_output=True, text=True)
        assert failed.returncode != 0
        assert f"image {IMAGE}:0.1.0 not built" in failed.stderr


def _my_install(tmp_path: Path, base: str = "manifests") -> Path:
    """The page's `mkdir my-install` and its kustomization.yaml, beside a copy of the repo's
    manifests (the page runs from the repository's root, so my-install is a sibling of
    manifests/), its resource pointed at `base` there."""
    (mkdir,) = _commands_starting("mkdir")
    assert mkdir.split() == ["mkdir", "my-install"]
    (cat,) = _commands_starting("cat > my-install/kustomization.yaml")
    body = cat.split("\n", 1)[1].rsplit("\n", 1)[0]
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    overlay = tmp_path / "my-install"
    overlay.mkdir()
    kustomization = yaml.safe_load(body)
    assert kustomization["resources"] == [os.path.join(os.pardir, "manifests")]
    kustomization["resources"] = [os.path.join(os.pardir, base)]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def _render(path: Path) -> tuple[str, list[dict[str, Any]]]:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, [d for d in yaml.safe_load_all(done.stdout) if d]


def _our_containers(objs: list[dict[str, Any]]) -> dict[str, str]:
    found = {}
    for obj in objs:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                if IMAGE in c["image"]:
                    found[f"{obj['metadata']['name']}/{c['name']}"] = c["image"]
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_images_overlay_points_every_component_at_the_registry(
    tmp_path: Path, version: str
) -> None:
    text, objs = _render(_my_install(tmp_path))
    ours = _our_containers(objs)
    assert set(ours) == {"llm-scaler/scaler", "llama/llm-scaler-sidecar", "llm-gateway/gateway"}
    assert set(ours.values()) == {f"REGISTRY/{IMAGE}:0.1.0"}
    # The page's check: grep 'image: REGISTRY' finds one line per component.
    (check,) = _commands_starting("kubectl kustomize my-install")
    pattern = re.search(r"grep '([^']+)'", check)
    assert pattern is not None
    assert len([line for line in text.splitlines() if pattern[1] in line]) == len(ours)
    # Nothing else changed, and what renders is valid as the install is.
    for obj in objs:
        validate(obj, version)
    assert len(objs) == len(render(""))


def test_the_images_overlay_on_the_tls_install_renders_too(tmp_path: Path) -> None:
    _, objs = _render(_my_install(tmp_path, base="manifests/overlays/tls"))
    assert set(_our_containers(objs).values()) == {f"REGISTRY/{IMAGE}:0.1.0"}
    assert find(objs, "TriggerAuthentication", "llm-scaler-tls", "inference")


def test_every_kubectl_apply_names_an_entry_point_or_files_that_render() -> None:
    applies = _commands_starting("kubectl apply")
    assert len(applies) == 3
    for command in applies:
        words = shlex.split(_without_comment(command))
        if "-k" in words:
            target = words[words.index("-k") + 1]
            if target != "my-install":  # the images overlay: tested above
                assert target.startswith("manifests/") and render(target.removeprefix("manifests/"))
        else:
            files = [words[i + 1] for i, w in enumerate(words) if w == "-f"]
            namespaces = {yaml.safe_load((ROOT / f).read_text())["metadata"]["name"] for f in files}
            assert namespaces == {"llm-scaler", "inference"}


def test_the_checks_name_objects_the_install_renders() -> None:
    objs = render("")
    for command in _commands_starting("kubectl -n"):
        words = shlex.split(_without_comment(command))
        namespace, verb = words[2], words[3]
        if verb == "rollout":
            kind, name = words[5].split("/")
            assert kind == "deployment" and find(objs, "Deployment", name, namespace), command
        elif verb in ("get", "describe"):
            assert words[4] == "scaledobject" and find(objs, "ScaledObject", words[5], namespace)
        elif verb == "port-forward":
            kind, name = words[4].split("/")
            service = find(objs, "Service", name, namespace)
            assert kind == "svc" and service, command
            ports = {p["port"] for p in service["spec"]["ports"]}
            for pair in (w for w in words[5:] if w != "&"):
                local, remote = pair.split(":")
                assert local == remote and int(remote) in ports, command
        elif verb == "create":
            continue  # the TLS Secrets: their own test
        else:
            raise AssertionError(f"a kubectl command this test does not follow: {command}")


def test_the_tls_secrets_created_as_shown_are_the_ones_the_overlay_mounts(tmp_path: Path) -> None:
    creates = _commands_starting("kubectl -n", [c for c in DEPLOYING if "create secret" in c])
    assert len(creates) == 2
    # The files the commands name: the scaler's certificate and the CA of KEDA's, KEDA's
    # client certificate and the CA of the scaler's.
    scaler_ca, keda_ca = CertificateAuthority("scaler CA"), CertificateAuthority("KEDA CA")
    scaler_ca.issue("llm-scaler.llm-scaler.svc.cluster.local", server=True).write(
        tmp_path, "scaler"
    )
    keda_ca.issue("keda", server=False).write(tmp_path, "keda")
    (tmp_path / "scaler-ca.crt").write_bytes(scaler_ca.cert_pem)
    (tmp_path / "keda-ca.crt").write_bytes(keda_ca.cert_pem)
    for command in creates:
        words = shlex.split(_without_comment(command))
        done = subprocess.run(
            [_kubectl(), *words[1:], "--dry-run=client", "-o", "yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        secret = yaml.safe_load(done.stdout)
        name, namespace = secret["metadata"]["name"], secret["metadata"]["namespace"]
        assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}, name
        _assert_referenced(render("overlays/tls"), name, namespace, set(secret["data"]))


def _assert_referenced(
    objs: list[dict[str, Any]], name: str, namespace: str, keys: set[str]
) -> None:
    """The overlay reads this Secret, only keys it holds."""
    used: set[str] = set()
    for obj in objs:
        if obj["metadata"].get("namespace") != namespace:
            continue
        if obj["kind"] == "TriggerAuthentication":
            for ref in obj["spec"].get("secretTargetRef", []):
                if ref["name"] == name:
                    used.add(ref["key"])
        if obj["kind"] == "Deployment":
            for volume in obj["spec"]["template"]["spec"].get("volumes", []):
                secret = volume.get("secret", {})
                if secret.get("secretName") == name:
                    used |= {item["key"] for item in secret.get("items", [])} or keys
    assert used and used <= keys, (name, used, keys)


def _grpcurl_calls(path: Path) -> list[tuple[dict[str, Any], str]]:
    calls = []
    for command in _commands_starting("grpcurl", _commands(path)):
        words = shlex.split(_without_comment(command))
        body = json.loads(words[words.index("-d") + 1])
        calls.append((body, words[-1]))
    return calls


@pytest.mark.parametrize("page", [DOC, README], ids=lambda p: p.name)
def test_the_grpcurl_calls_answer_as_the_page_says(scaler: RunningScaler, page: Path) -> None:
    calls = _grpcurl_calls(page)
    assert calls
    for body, method in calls:
        assert method == "externalscaler.ExternalScaler/IsActive"
        ref = pb.ScaledObjectRef(
            name=body["name"], namespace=body["namespace"], scalerMetadata=body["scalerMetadata"]
        )
        # Nothing waits and no pod reports: inactive, as the page says ({} is false).
        assert scaler.stub.IsActive(ref, timeout=5).result is False


def test_the_metrics_line_the_page_greps_is_exported(scaler: RunningScaler) -> None:
    (command,) = _commands_starting("curl -s localhost:9100/metrics")
    metric = shlex.split(command.split("|", 1)[1])[-1]
    pb_ref = pb.ScaledObjectRef(
        name="llama", namespace="inference", scalerMetadata={"targetConcurrency": "8"}
    )
    scaler.stub.IsActive(pb_ref, timeout=5)  # a Redis call made: the timestamp is set
    with urllib.request.urlopen(scaler.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    assert re.search(rf"^{metric} \d", text, re.M), metric


def test_the_request_through_the_gateway_routes_to_the_example_target() -> None:
    (command,) = _commands_starting("curl localhost:8000")
    words = shlex.split(command)
    model = re.search(r"/v2/models/([^/]+)/generate", words[1])
    assert model is not None
    router = Router(load_targets(str(MANIFESTS / "gateway" / "targets.json")))
    target = router.find(None, f"/v2/models/{model[1]}/generate", model[1])
    assert target is not None and (target.namespace, target.name) == ("inference", "llama")
    assert json.loads(words[words.index("-d") + 1])["text_input"]
    timeout_s = float(words[words.index("-H") + 1].split(":")[1])
    assert timeout_s > 60 * 2, "long enough for a pod to start from zero"
