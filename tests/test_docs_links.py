"""Every relative link in the repository's markdown resolves: the file exists, and a
`#anchor` into a markdown page names one of its headings (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_monitoring import heading_anchors
from tests.test_self_contained import ROOT, UP, tracked_text_files

# [text](target) and [text]: target, skipping images' and code's look-alikes well enough:
# a target with a scheme (http:, mailto:) is not relative.
_INLINE = re.compile(r"\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s+(\S+)", re.MULTILINE)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def relative_links(markdown: str) -> list[str]:
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)  # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    links = _INLINE.findall(text) + _REFERENCE.findall(text)
    return [link for link in links if not _SCHEME.match(link)]


def broken_links(page: Path, text: str | None = None) -> list[str]:
    broken = []
    for link in relative_links(page.read_text(encoding="utf-8") if text is None else text):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists() or not target.is_relative_to(ROOT):
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    return broken


def _anchors(page: Path) -> set[str]:
    return heading_anchors(page.read_text(encoding="utf-8"))


def test_every_relative_link_in_the_docs_resolves() -> None:
    pages = [p for p in tracked_text_files() if p.suffix == ".md"]
    problems = [f"{p.relative_to(ROOT)}: {b}" for p in pages for b in broken_links(p)]
    assert not problems, "\n".join(problems)


def test_a_broken_link_or_anchor_is_found() -> None:
    text = (
        f"[ok]({UP}README.md) [here](#runbooks) [gone](missing.md) [anchor](#no-such-heading) "
        "[web](https://example.org/x.md) `[code](nowhere.md)`"
    )
    assert broken_links(ROOT / "docs" / "operating.md", text) == [
        "missing.md: no such file",
        "#no-such-heading: no heading #no-such-heading in docs/operating.md",
    ]
