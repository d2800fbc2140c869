"""A table a document copies from a run's report is that report's, byte for byte (after trimming blank edges).

The convention, in README.md and docs/*.md:

    <!-- copied from: results/benchmarks/<suite>/<run>/report/headline.md -->
    ...the file's content, unedited...
    <!-- end copied -->

so that a rebuilt report (``python run_bench.py --report RUN``) and the page that shows it can never drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COPIED = re.compile(r"^<!-- copied from: (?P<path>\S+) -->\n(?P<body>.*?)^<!-- end copied -->$", re.M | re.S)


def copied_blocks(text: str) -> list[tuple[str, str]]:
    return [(m["path"], m["body"]) for m in COPIED.finditer(text)]


def test_the_marker_grammar_finds_a_block_and_its_source():
    text = "intro\n<!-- copied from: results/x/report/headline.md -->\n| a |\n|---|\n<!-- end copied -->\nafter\n"
    assert copied_blocks(text) == [("results/x/report/headline.md", "| a |\n|---|\n")]
    assert copied_blocks("<!-- copied from: x.md -->\nno end marker\n") == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_copied_block_equals_its_source(document):
    text = document.read_text(encoding="utf-8")
    opened = text.count("<!-- copied from:")
    blocks = copied_blocks(text)
    assert len(blocks) == opened, f"{document.name}: a '<!-- copied from: ... -->' block lacks its '<!-- end copied -->'"
    for path, body in blocks:
        source = ROOT / path
        assert source.is_file(), f"{document.name} copies {path}, which does not exist"
        assert body.strip() == source.read_text(encoding="utf-8").strip(), (
            f"{document.name}: the block copied from {path} differs from the file; paste the file again")
