#!/usr/bin/env python
"""Paste each report file that README.md or a page of docs/ copies, again, after its run's report was rebuilt.

A document shows a run's table between two markers, the first naming the file:

    <!-- copied from: results/benchmarks/<suite>/<run>/report/headline.md -->
    ...the file's content, unedited...
    <!-- end copied -->

``python tools/paste_copied_tables.py`` replaces every such block by its
file's current content (each document written atomically, only if it
changes) and lists what it changed; ``--check`` changes nothing and exits 1
if a block differs from its file (``tests/docs/test_copied_tables.py`` is
that check). Prose around a block is never touched: read it again after a
paste, since its numbers may have moved.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project's own modules

from bench.files import atomic_write  # noqa: E402
COPIED = re.compile(r"^<!-- copied from: (?P<path>\S+) -->\n(?P<body>.*?)^<!-- end copied -->$", re.M | re.S)


def documents(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def copied_blocks(text: str) -> list[tuple[str, str]]:
    """(source path, body) of every complete block, in order."""
    return [(m["path"], m["body"]) for m in COPIED.finditer(text)]


def pasted(text: str, root: Path = ROOT) -> str:
    """``text`` with every block's body replaced by its source file (trimmed of blank edges, one newline after)."""
    def paste(match: re.Match) -> str:
        source = root / match["path"]
        if not source.is_file():
            raise SystemExit(f"a document copies {match['path']}, which does not exist; fix the marker or rebuild that report")
        return f"<!-- copied from: {match['path']} -->\n{source.read_text(encoding='utf-8').strip()}\n<!-- end copied -->"
    return COPIED.sub(paste, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a copied block differs from its file")
    args = parser.parse_args(argv)
    stale = []
    for document in documents():
        text = document.read_text(encoding="utf-8")
        if text.count("<!-- copied from:") != len(copied_blocks(text)):
            raise SystemExit(f"{document.relative_to(ROOT)}: a '<!-- copied from: ... -->' block lacks its '<!-- end copied -->'")
        new = pasted(text)
        if new != text:
            stale.append(document.relative_to(ROOT))
            if not args.check:
                atomic_write(document, new)
    verb = "differs from its copied files" if args.check else "pasted again"
    for document in stale:
        print(f"{document}: {verb}")
    if not stale:
        print("every copied block equals its file")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
