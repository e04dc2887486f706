"""The documents a newcomer follows link to files that exist (README -> guide -> deploy/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    "README.md",
    "docs/operations.md",
    "docs/performance.md",
    "deploy/compose/README.md",
]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_relative_links_point_to_existing_files(document: str) -> None:
    path = ROOT / document
    targets = [t for t in LINK.findall(path.read_text(encoding="utf-8")) if "://" not in t]
    missing = [t for t in targets if not (path.parent / t).exists()]
    assert not missing, f"{document} links to missing files: {missing}"


def test_readme_leads_to_the_operators_guide_and_the_compose_stack() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/operations.md)" in readme
    assert "(deploy/compose/README.md)" in readme
