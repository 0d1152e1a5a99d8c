"""The configuration reference's metadata table and the example ScaledObject say what the
code does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from scaler.policy import DERIVED_KEYS
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
    import yaml

    from scaler.simulator.cli import SCALEDOBJECTS

    text = (ROOT / "README.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = yaml.safe_load(block)["spec"]
    stabilization = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    recommended = (
        spec["pollingInterval"],
        spec["cooldownPeriod"],
        stabilization["stabilizationWindowSeconds"],
    )
    assert recommended == SCALEDOBJECTS["recommended"]
    metadata = spec["triggers"][0]["metadata"]
    parse_target_config("inference", "llama", metadata)  # every key known: no MetadataError
