"""The configuration reference's metadata table and the example ScaledObject say what the
code does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from scaler.policy import DERIVED_KEYS, zero_delay_s
from scaler.target_config import KEDA_KEYS, METADATA_KEYS, parse_target_config

ROOT = Path(__file__).resolve().parents[1]


def _reference_table() -> dict[str, str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text.split("## Trigger metadata", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {key: default.strip() for key, default in rows}


def test_the_reference_says_which_keys_have_derived_defaults() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| (.+) \|$", text, flags=re.MULTILINE)
    derived = {key for key, meaning in rows if "**Derived default**" in meaning}
    assert derived == set(DERIVED_KEYS)


def test_the_reference_documents_every_key_with_its_default() -> None:
    table = _reference_table()
    assert set(table) == set(METADATA_KEYS)
    for key, spec in METADATA_KEYS.items():
        expected = f"`{spec.default}`" if spec.default is not None else table[key]
        assert table[key] == expected, key
        if spec.default is None:
            assert table[key] in ("required", "none", "ScaledObject name"), key


def test_example_scaled_object_uses_only_known_keys_and_the_defaults() -> None:
    import yaml

    scaled_object = yaml.safe_load((ROOT / "manifests/example/scaledobject.yaml").read_text())
    trigger = scaled_object["spec"]["triggers"][0]
    assert trigger["type"] == "external-push"
    metadata = trigger["metadata"]
    assert set(metadata) <= set(METADATA_KEYS) | KEDA_KEYS
    name = scaled_object["metadata"]["name"]
    parsed = parse_target_config("inference", name, metadata)
    # Every setting the example spells out is the documented default.
    chosen = ("targetConcurrency", "queueKey", "queueType", "targetName")
    not_defaulted = {k: metadata[k] for k in chosen if k in metadata}
    written_as_default = dataclasses.replace(parsed.config, written=frozenset())
    defaulted = parse_target_config("inference", name, not_defaulted).config
    assert written_as_default == dataclasses.replace(defaulted, written=frozenset())
    # Keys with a derived default are left out: written, they would be obeyed as written.
    assert not set(metadata) & set(DERIVED_KEYS)


def test_the_readme_scaled_object_is_the_recommended_one_the_simulator_runs() -> None:

    from scaler.simulator.cli import SCALEDOBJECTS

    spec = _readme_yaml("ScaledObject")["spec"]
    stabilization = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    recommended = (
        spec["pollingInterval"],
        spec["cooldownPeriod"],
        stabilization["stabilizationWindowSeconds"],
    )
    assert recommended == SCALEDOBJECTS["recommended"]
    metadata = spec["triggers"][0]["metadata"]
    parse_target_config("inference", "llama", metadata)  # every key known: no MetadataError


def _example() -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(
        (ROOT / "manifests/example/scaledobject.yaml").read_text()
    )
    return loaded


def _time_to_zero_s(metadata: dict[str, str], cold_s: float) -> tuple[float, float]:
    """The scale-to-zero delay the decision uses, and the time from the last request to zero
    replicas with the example's pollingInterval and cooldownPeriod on top."""
    spec = _example()["spec"]
    config = parse_target_config("inference", "llama", metadata).config
    delay_s = zero_delay_s(config, max(cold_s, config.cold_start_s))
    return delay_s, delay_s + spec["pollingInterval"] + spec["cooldownPeriod"]


def test_the_time_to_zero_the_docs_state_is_the_codes() -> None:
    metadata = _example()["spec"]["triggers"][0]["metadata"]
    default_s, default_total_s = _time_to_zero_s(metadata, 60)
    measured_s, _ = _time_to_zero_s(metadata, 120)
    written_s, written_total_s = _time_to_zero_s({**metadata, "scaleToZeroDelaySeconds": "300"}, 60)
    hold_off_s, _ = _time_to_zero_s({**metadata, "sloWaitSeconds": "off"}, 60)
    assert (default_s, measured_s, written_s, hold_off_s) == (900, 1800, 300, 300)

    comment = (ROOT / "manifests/example/scaledobject.yaml").read_text().split("apiVersion")[0]
    comment = " ".join(line.lstrip("# ") for line in comment.splitlines())
    assert f"here {default_s:g} s" in comment
    assert f"{measured_s:g} s if the pods measure a 120 s cold start" in comment
    assert f"about {default_total_s:g} s" in comment
    assert f'"300": about {written_total_s:g} s' in comment

    decision = (ROOT / "docs/decision.md").read_text()
    rule = " ".join(decision.split("## 4. ", 1)[1].split("\n## ", 1)[0].split())
    assert f"active until t={200 + default_s:g} by default" in rule
    assert f"until t={200 + written_s:g} with" in rule and hold_off_s == written_s
    assert f"{default_s:g} s at the default 60 s cold start" in rule
    assert f"{measured_s:g} s when the pods measure 120 s" in rule
    assert f"about {default_total_s:g} s by default, and {written_total_s:g} s" in rule

    reference = _reference_row("scaleToZeroDelaySeconds")
    assert f"({default_s:g} s at 60 s)" in reference
    assert "decision.md#4-scale-to-zero-only-after-silence" in reference
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"about {default_total_s:g} s with the example ScaledObject" in readme
    choosing = " ".join((ROOT / "docs/choosing-settings.md").read_text().split())
    assert f"(about {default_total_s:g} s with the example ScaledObject" in choosing


def _reference_row(key: str) -> str:
    text = (ROOT / "docs" / "configuration.md").read_text()
    return next(line for line in text.splitlines() if line.startswith(f"| `{key}` |"))


def _readme_table() -> dict[str, tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| (.+) \|$", text, flags=re.MULTILINE)
    return {key: (default.strip(), what) for key, default, what in rows}


def test_the_readme_table_gives_the_codes_defaults() -> None:
    table = _readme_table()
    assert len(table) >= 5 and set(table) <= set(METADATA_KEYS)
    for key, (default, _) in table.items():
        spec = METADATA_KEYS[key]
        assert default == ("required" if spec.default is None else f"`{spec.default}`"), key


def test_the_slo_wait_rule_is_stated_once_and_linked_with_the_slo_the_default_fits() -> None:
    default_s = float(METADATA_KEYS["sloWaitSeconds"].default or "nan")
    fits = f"{2 * default_s:g} s"
    choosing = " ".join((ROOT / "docs/choosing-settings.md").read_text().split())
    rule = choosing.split("## The rule for `sloWaitSeconds`", 1)[1].split(" ## ", 1)[0]
    assert "**half** the wait to start" in rule
    assert f"The default, `{default_s:g}`, fits an SLO of {fits}" in rule
    link = "choosing-settings.md#the-rule-for-slowaitseconds"
    reference = _reference_row("sloWaitSeconds")
    assert link in reference and f"the default {default_s:g} fits an SLO of {fits}" in reference
    readme_what = _readme_table()["sloWaitSeconds"][1]
    assert link in readme_what and f"{default_s:g} fits a {fits} SLO" in readme_what
    # Stated once: no other page gives a rule of its own.
    for page in ["README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]:
        text = " ".join((ROOT / page).read_text().split())
        if page != "docs/choosing-settings.md":
            assert "half your SLO's wait" not in text, page  # the old, second statement
            assert "sized for 2 s" not in text, page


def _readme_yaml(kind: str) -> Any:
    """The README's yaml block of this kind (`containers` for the sidecar's)."""
    import yaml

    blocks = (ROOT / "README.md").read_text().split("```yaml\n")[1:]
    loaded = [yaml.safe_load(block.split("```", 1)[0]) for block in blocks]
    if kind == "containers":
        return next(b["containers"] for b in loaded if "containers" in b)
    return next(b for b in loaded if b.get("kind") == kind)


def test_the_readme_sidecar_is_the_examples_and_its_settings_load() -> None:
    import yaml

    from sidecar.config import SETTINGS, load_config

    readme = next(c for c in _readme_yaml("containers") if c["name"] == "llm-scaler-sidecar")
    deployment = yaml.safe_load((ROOT / "manifests/example/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    example = next(c for c in pod["containers"] if c["name"] == readme["name"])
    assert (readme["image"], readme["command"]) == (example["image"], example["command"])
    example_env = {e["name"]: e.get("value", e.get("valueFrom")) for e in example["env"]}
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in readme["env"]}
    for name, value in env.items():
        assert example_env[name] == value, name
    # The required settings are there; with the downward API and the Secret filled in, the
    # sidecar takes them.
    required = {s.env for s in SETTINGS.values() if s.default == "required"}
    assert required <= set(env)
    filled = {k: v if isinstance(v, str) else "x" for k, v in env.items()}
    filled.update(POD_NAME="llama-0", POD_NAMESPACE="inference")
    config = load_config([], filled)
    assert config.worker and config.worker_slots == int(env["CAPACITY"])
    assert env["TARGET_NAME"] == _readme_yaml("ScaledObject")["metadata"]["name"]


def test_the_reference_explains_every_variable_serve_help_lists() -> None:
    from scaler.settings import ENVIRONMENT

    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text.split("## Environment of the scaler", 1)[1].split("\n## ", 1)[0]
    missing = [name for name, _ in ENVIRONMENT if f"`{name}`" not in section]
    assert not missing, missing
    assert "python -m scaler serve --help" in section


def test_the_examples_commented_out_keys_and_their_comments_give_the_codes_defaults() -> None:
    lines = (ROOT / "manifests/example/scaledobject.yaml").read_text().splitlines()
    checked = []
    for number, line in enumerate(lines):
        commented = re.match(r'^\s+# (\w+): "(.*)"$', line)
        if not commented or commented[1] not in METADATA_KEYS:
            continue
        key, value = commented[1], commented[2]
        default = METADATA_KEYS[key].default
        if default is None:
            continue  # an example value of an optional key (queueKey, consumerGroup)
        assert value == default, key
        # The comment above it says what applies while it is absent.
        above = " ".join(lines[max(0, number - 3) : number])
        assert f"absent: {default} s" in above, key
        checked.append(key)
    assert sorted(checked) == sorted(DERIVED_KEYS)
    choosing = " ".join((ROOT / "docs/choosing-settings.md").read_text().split())
    service, cold = (
        METADATA_KEYS["serviceSeconds"].default,
        METADATA_KEYS["coldStartSeconds"].default,
    )
    assert f"longer than the defaults ({service} s, {cold} s)" in choosing
