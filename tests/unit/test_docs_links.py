"""The README and docs/ refer only to files of the repository, and those files exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    for link in local:
        assert (page.parent / link).exists(), f"{page.name} links to a missing {link}"


def test_the_readme_names_no_outside_document() -> None:
    text = (ROOT / "README.md").read_text()
    assert "API.md" not in text.replace("docs/api.md", "")
    for doc in ("docs/api.md", "docs/yaml.md", "statemachine schema"):
        assert doc in text
