"""The shipped alerts and dashboard (manifests/monitoring/), validated as Prometheus users do.

- `promtool check rules` on the PrometheusRule's spec, and `promtool test rules` on
  tests/monitoring/alerts.test.yaml: every alert fires on synthetic series showing its
  case and stays quiet on a near miss.
- Every alert has summary, description and a runbook_url whose anchor is a heading of
  docs/operating.md.
- Every metric name the rules and the dashboard use is one the code exports: a real
  Prometheus scrapes a running scaler, a running sidecar with its worker and a running
  gateway put through the cases that create their labelled series, and knows each name;
  the few whose series need the Kubernetes API (pod watch, deletion cost) are checked in
  the scrape's own HELP/TYPE.

promtool and Prometheus come from Debian's `prometheus` package (`make test` unpacks it
under .venv/prometheus when the machine has none); without them these tests skip and say so.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import yaml

from scaler.local_redis import LocalRedis, free_port
from tests.harness import ReportPublisher, RunningScaler, ref, scaler_settings
from tests.test_sidecar_process import eventually, pods

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "manifests" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboards" / "llm-keda-scaler.json"
ALERT_TESTS = ROOT / "tests" / "monitoring" / "alerts.test.yaml"
OPERATING = ROOT / "docs" / "operating.md"
METRIC = re.compile(r"\bllm_(?:scaler|sidecar|gateway)_[a-z0-9_]+")
# Series that only the Kubernetes API brings: the pod watch's cold starts and errors,
# the sidecar's pod-deletion-cost patches.
NEEDS_KUBERNETES = {
    "llm_scaler_cold_start_seconds_bucket": "llm_scaler_cold_start_seconds",
    "llm_scaler_pod_watch_errors_total": "llm_scaler_pod_watch_errors_total",
    "llm_sidecar_deletion_cost_patches_total": "llm_sidecar_deletion_cost_patches_total",
}


def tool(name: str) -> str:
    found = shutil.which(name) or ROOT / ".venv" / "prometheus" / "usr" / "bin" / name
    if not Path(found).is_file():
        pytest.skip(
            f"{name} not found (on PATH or in .venv/prometheus): Debian's `prometheus` "
            "package provides it; `make test` installs it where apt is available"
        )
    return str(found)


def alert_rules() -> list[dict[str, Any]]:
    spec = yaml.safe_load(RULES.read_text())["spec"]
    return [rule for group in spec["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    variables = board["templating"]["list"]
    exprs += [v["query"]["query"] for v in variables if v["type"] == "query"]
    return exprs


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    spec = yaml.safe_load(RULES.read_text())["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": spec["groups"]}))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    return tmp_path


def test_promtool_checks_the_rules(rules_dir: Path) -> None:
    done = subprocess.run(
        [tool("promtool"), "check", "rules", "rules.yaml"],
        cwd=rules_dir,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_unit_tests_fire_and_hold_each_alert(rules_dir: Path) -> None:
    done = subprocess.run(
        [tool("promtool"), "test", "rules", ALERT_TESTS.name],
        cwd=rules_dir,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [
        c for t in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for c in t["alert_rule_test"]
    ]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']}: no quiet case"


def test_every_alert_says_what_and_links_its_runbook() -> None:
    anchors = heading_anchors(OPERATING.read_text())
    for rule in alert_rules():
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert (ROOT / page) == OPERATING, rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]


def test_the_dashboard_is_one_grafana_imports() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "llm-keda-scaler" and board["title"]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["description"], panel["title"]
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == [str(DASHBOARD.relative_to(MONITORING))]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}


# --- a real Prometheus scraping the real processes -------------------------------------------


class Prometheus:
    def __init__(self, binary: str, workdir: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": job, "honor_labels": True, "static_configs": [{"targets": [address]}]}
                for job, address in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return json.loads(answer.read())["data"]
        except OSError:
            return None

    def names(self) -> set[str]:
        return set(self.api("label/__name__/values") or ())

    def close(self) -> str:
        self.process.terminate()
        _, err = self.process.communicate(timeout=30)
        return err


@pytest.fixture
def prometheus_binary() -> str:
    return tool("prometheus")


@pytest.fixture
def running_scaler(redis_server: LocalRedis) -> Iterator[RunningScaler]:
    running = RunningScaler(scaler_settings(redis_server.url), clock=None)
    yield running
    running.stop()


def _exercise(scaler: RunningScaler, client: redis.Redis, publisher: ReportPublisher) -> None:
    """The cases that create the scaler's labelled series: a decision, an open stream,
    a target whose every report is broken, a queue key of the wrong type, bad metadata."""
    scaler.keda.poll(ref("llama"))
    stream = scaler.stub.StreamIsActive(ref("llama"), timeout=10)
    threading.Thread(target=lambda: next(stream, None), daemon=True).start()
    publisher.publish_raw("broken", "broken-0", "not json", at=time.time())
    client.set("a-string", "x")
    for broken in (
        ref("broken"),
        ref("llama", queueKey="a-string"),
        ref("x", targetConcurrency="0"),
    ):
        with contextlib.suppress(grpc.RpcError):
            scaler.keda.poll(broken)
    eventually(lambda: scaler.sample("llm_scaler_streams_open", method="StreamIsActive"), bool, 5)
    stream.cancel()


@contextlib.contextmanager
def _gateway_process(workdir: Path, redis_url: str) -> Iterator[int]:
    """`python -m gateway` for one target; yields its metrics port once it is ready."""
    targets = workdir / "targets.json"
    targets.write_text(
        json.dumps({"targets": [{"namespace": "inference", "name": "llama", "models": ["llama"]}]})
    )
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gateway", "--targets", str(targets), "--name", "gw-0",
            "--redis-url", redis_url, "--bind-address", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), "--shutdown-delay", "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        assert eventually(ready, bool, timeout_s=20), "the gateway did not become ready"
        yield metrics_port
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=15)
        assert process.returncode == 0, errors[-2000:]


def test_every_metric_the_rules_and_dashboard_use_is_exported(
    tmp_path: Path,
    prometheus_binary: str,
    running_scaler: RunningScaler,
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    publisher: ReportPublisher,
) -> None:
    used = {name for rule in alert_rules() for name in METRIC.findall(rule["expr"])}
    used |= {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    assert all(METRIC.search(rule["expr"]) for rule in alert_rules())

    with (
        pods(
            "llama-0", target="llama", redis_url=redis_server.url, WORKER="on", WORKER_SLOTS="8"
        ) as (pod,),
        _gateway_process(tmp_path, redis_server.url) as gateway_metrics_port,
    ):
        pod.load(active=3)
        eventually(lambda: pod.report(redis_client), lambda r: r is not None)
        _exercise(running_scaler, redis_client, publisher)
        prometheus = Prometheus(
            prometheus_binary,
            tmp_path,
            {
                "llm-scaler": f"127.0.0.1:{running_scaler.server.metrics_port}",
                "llm-sidecar": f"127.0.0.1:{pod.metrics_port}",
                "llm-gateway": f"127.0.0.1:{gateway_metrics_port}",
            },
        )
        try:
            wanted = {
                "llm_scaler_decision_reason",
                "llm_sidecar_reports_written_total",
                "llm_sidecar_worker_taken_total",
                "llm_gateway_requests_accepted_total",
            }
            names = eventually(prometheus.names, lambda n: wanted <= n, timeout_s=30)
            up = prometheus.api("query", query="up")
        finally:
            log = prometheus.close()
        with urllib.request.urlopen(running_scaler.metrics_url, timeout=5) as answer:
            exposition = answer.read().decode()
        _, sidecar_exposition = pod.get("/metrics")

    assert up and all(s["value"][1] == "1" for s in up["result"]), log[-2000:]
    missing = used - names - set(NEEDS_KUBERNETES)
    assert not missing, f"used but not exported: {sorted(missing)}"
    for name, family in NEEDS_KUBERNETES.items():
        if name in used:
            assert f"# TYPE {family} " in exposition + sidecar_exposition, name
