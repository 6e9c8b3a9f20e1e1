"""The docs' own links lead somewhere: every relative link in the README, CONTRIBUTING and
docs/ names a file of the repository, and a `#fragment` names a heading of that file, slugged
as GitHub slugs it (lower case, punctuation dropped, spaces to hyphens, `-1`, `-2` for a
repeated heading). A new user following a link to a section that was renamed lands nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").rglob("*.md")],
)
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(doc: Path) -> list[str]:
    broken: list[str] = []
    for link in LINK.findall(FENCE.sub("", doc.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto: and the like
            continue
        path, _, fragment = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{link}: no such heading in {target.name}")
    return broken


def test_slug_is_githubs() -> None:
    assert slug("The issue's figures (issue: cost per refund)") == (
        "the-issues-figures-issue-cost-per-refund"
    )
    assert slug("2,000 pending Mews refunds on 4 workers (2026-12-03)") == (
        "2000-pending-mews-refunds-on-4-workers-2026-12-03"
    )
    assert slug("`refunds status` and `--json`") == "refunds-status-and---json"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## Same\n\n## Same\n")
    doc = tmp_path / "b.md"
    doc.write_text(
        "[ok](a.md#same-1) [ok](#here) [ok](https://example.com/x#y)\n"
        "[gone](a.md#renamed) [gone](missing.md)\n\n# Here\n"
        "```\n[in code](nowhere.md)\n```\n"
    )
    assert broken_links(doc) == [
        "a.md#renamed: no such heading in a.md",
        "missing.md: no such file",
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(doc: Path) -> None:
    assert broken_links(doc) == []
