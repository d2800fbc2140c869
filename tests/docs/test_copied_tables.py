"""A table a document copies from a run's report is that report's, byte for byte (after trimming blank edges).

The convention, in README.md and docs/*.md (``tools/paste_copied_tables.py`` pastes the files again):

    <!-- copied from: results/benchmarks/<suite>/<run>/report/headline.md -->
    ...the file's content, unedited...
    <!-- end copied -->

so that a rebuilt report (``python run_bench.py --report RUN``) and the page that shows it can never drift apart.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("paste_copied_tables", ROOT / "tools" / "paste_copied_tables.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def test_the_marker_grammar_finds_a_block_and_its_source():
    text = "intro\n<!-- copied from: results/x/report/headline.md -->\n| a |\n|---|\n<!-- end copied -->\nafter\n"
    assert tool.copied_blocks(text) == [("results/x/report/headline.md", "| a |\n|---|\n")]
    assert tool.copied_blocks("<!-- copied from: x.md -->\nno end marker\n") == []


def test_pasting_replaces_only_the_block_body_with_the_file(tmp_path):
    (tmp_path / "table.md").write_text("\n| new |\n|-----|\n\n")
    text = "Prose 0.1.\n<!-- copied from: table.md -->\n| old |\n<!-- end copied -->\nMore prose.\n"
    assert tool.pasted(text, tmp_path) == "Prose 0.1.\n<!-- copied from: table.md -->\n| new |\n|-----|\n<!-- end copied -->\nMore prose.\n"
    with pytest.raises(SystemExit, match="copies gone.md, which does not exist"):
        tool.pasted("<!-- copied from: gone.md -->\nx\n<!-- end copied -->", tmp_path)


@pytest.mark.parametrize("document", tool.documents(ROOT), ids=lambda p: p.name)
def test_every_copied_block_equals_its_source(document):
    text = document.read_text(encoding="utf-8")
    blocks = tool.copied_blocks(text)
    assert len(blocks) == text.count("<!-- copied from:"), f"{document.name}: a '<!-- copied from: ... -->' block lacks its '<!-- end copied -->'"
    for path, body in blocks:
        source = ROOT / path
        assert source.is_file(), f"{document.name} copies {path}, which does not exist"
        assert body.strip() == source.read_text(encoding="utf-8").strip(), (
            f"{document.name}: the block copied from {path} differs from the file; run python tools/paste_copied_tables.py")
