"""A clone works on its own: no tracked file refers to a path outside the repository.

A user's clone has nothing beside it, so a reference to a sibling folder or to an
absolute path of some machine works only where it was written. Checked on every
tracked text file: absolute paths into a workspace, and relative paths whose `../`
climb out of the repository, from the file's own folder (links) or, for files run
from the repository root (Makefile, code), from there too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Written so that this file does not match its own patterns.
_ABSOLUTE = re.compile(r"(?<![\w.~])/(?:w[o]rk|h[o]me|U[s]ers|t[m]p)/[\w.-]+")
_CLIMB = re.compile(r"(?<![\w.])((?:\.\.[/\\])+)([\w-][\w.-]*)")
_SIBLING = re.compile(r"\.parent\s*/\s*[\"']s[h]ared[\"']")
# Read from their own folder (markdown links, kustomize paths), never run from the root.
_LINK_ONLY = {".md", ".yaml", ".yml"}


def tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout with git installed: {exc}")
    files = []
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file():
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # binary (images): no paths to check
            files.append(path)
    return files


def _escapes(start: Path, climb: str) -> bool:
    levels = climb.count("..")
    return levels > len(start.relative_to(ROOT).parts)


def outside_references(path: Path, text: str) -> list[str]:
    found = [f"absolute path {m.group(0)!r}" for m in _ABSOLUTE.finditer(text)]
    found += [f"sibling of the repository {m.group(0)!r}" for m in _SIBLING.finditer(text)]
    starts = [path.parent] if path.suffix in _LINK_ONLY else [path.parent, ROOT]
    for m in _CLIMB.finditer(text):
        if any(_escapes(start, m.group(1)) for start in starts):
            found.append(f"relative path out of the repository {m.group(0)!r}")
    return found


def test_no_tracked_file_refers_outside_the_repository() -> None:
    offenders = []
    for path in tracked_text_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            for what in outside_references(path, line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {what}")
    assert not offenders, "\n".join(offenders)


# The examples are assembled (UP, SIBLING, WORKSPACE) so that this file itself stays clean.
UP = "." * 2 + "/"
SIBLING = "ROOT.parent / " + '"shared"'
WORKSPACE = "/" + "work"


@pytest.mark.parametrize(
    ("file", "line"),
    [
        ("Makefile", f"TRACE ?= {UP}shared/traces/x.csv"),
        ("tests/t.py", f'KEDA = {SIBLING} / "keda"'),
        ("scaler/x.py", f'Path("{WORKSPACE}/shared/x")'),
        ("docs/a.md", f"[up]({UP}{UP}elsewhere.md)"),
    ],
)
def test_outside_references_are_found(file: str, line: str) -> None:
    assert outside_references(ROOT / file, line)


@pytest.mark.parametrize(
    ("file", "line"),
    [
        ("docs/a.md", f"[readme]({UP}README.md)"),
        ("scaler/x.py", f"from . import y  # {UP} in prose: nothing after"),
        ("Makefile", "TRACE ?= scaler/simulator/traces/x.csv"),
        ("scaler/x.py", "Path(__file__).parent / 'traces'"),
    ],
)
def test_paths_inside_the_repository_pass(file: str, line: str) -> None:
    assert not outside_references(ROOT / file, line)
