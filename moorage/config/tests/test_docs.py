"""The README and docs/ stand on their own in a clone: every link they make resolves inside
the repository, and what they list matches the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moorage.cli.engine import ENGINE_VARIABLES

REPO = Path(__file__).resolve().parents[3]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.M)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(h) for h in _HEADING.findall(path.read_text())}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(document: Path) -> None:
    links = _LINK.findall(document.read_text())
    broken = []
    for link in links:
        if re.match(r"^[a-z]+:", link):  # http(s)://, mailto: — outside by design
            continue
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        if not path.is_relative_to(REPO) or not path.exists():
            broken.append(link)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(link)
    assert broken == [], f"{document.relative_to(REPO)} links to what a clone does not have"


def test_the_readme_points_to_the_architecture_in_the_repository() -> None:
    readme = (REPO / "README.md").read_text()
    assert "](docs/architecture.md)" in readme
    architecture = (REPO / "docs" / "architecture.md").read_text()
    for invariant in range(1, 13):
        assert f"**I{invariant} —" in architecture
    assert "X-Registry-Auth" in architecture


def test_the_readme_lists_the_engine_variables_the_cli_reads() -> None:
    section = (REPO / "README.md").read_text().split("### Container engine", 1)[1]
    listed = re.findall(r"^\| `([A-Z_]+)` \|", section.split("\n## ", 1)[0], re.M)
    assert tuple(listed) == ENGINE_VARIABLES
