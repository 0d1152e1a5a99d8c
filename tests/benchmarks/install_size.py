"""Install size: what `pip install .` adds to a fresh virtualenv, runtime alone and with `sim`.

The runtime (the scaler and the sidecar, what the image installs) is measured against
`.[sim]`, which adds what only the simulator, the demo and the benchmarks use (numpy,
matplotlib, tritonclient): that set was the runtime's own before they moved to the extra.
Each install goes into a new virtualenv built from this checkout (pip's cache serves
the downloads); the size is the virtualenv's on disk minus the empty one's.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "matplotlib", "tritonclient")


@dataclass(frozen=True)
class InstallFigures:
    what: str  # the pip argument
    added_mib: float
    distributions: int
    heavy: tuple[str, ...]  # which of HEAVY it brought


def run_both() -> list[InstallFigures]:
    return [run("."), run(".[sim]")]


def run(extra: str) -> InstallFigures:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        empty = _size_mib(venv)
        before = set(_distributions(python))
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"{ROOT}{extra.removeprefix('.')}"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        added = [d for d in _distributions(python) if d not in before]
        return InstallFigures(
            what=f"pip install '{extra}'",
            added_mib=_size_mib(venv) - empty,
            distributions=len(added),
            heavy=tuple(h for h in HEAVY if h in added),
        )


def _distributions(python: str) -> list[str]:
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("==")[0].lower() for line in listed.splitlines() if "==" in line]


def _size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / (
        1024 * 1024
    )


def section(figures: list[InstallFigures]) -> list[str]:
    return [
        "## Install size",
        "",
        "What `pip install` adds to a fresh virtualenv (Python "
        f"{sys.version_info.major}.{sys.version_info.minor}): the runtime alone, as the image "
        "installs it, and with the `sim` extra, which holds what only the simulator, the demo "
        "and the benchmarks use (and was part of every runtime install before).",
        "",
        *table(figures),
    ]


def table(figures: list[InstallFigures]) -> list[str]:
    return [
        "| install | added to a fresh virtualenv MiB | distributions | of numpy, matplotlib, "
        "tritonclient |",
        "|---|---|---|---|",
        *(
            f"| `{f.what}` | {f.added_mib:.0f} | {f.distributions} | "
            f"{', '.join(f.heavy) or 'none'} |"
            for f in figures
        ),
    ]


if __name__ == "__main__":
    print("\n".join(table(run_both())))
