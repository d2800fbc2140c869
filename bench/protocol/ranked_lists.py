"""The file of ranked lists that ``run_bench.py --score`` judges: one test user per line, items best first.

The format (``docs/own-predictions.md``), in the raw ids of the export
(the ``user_id`` and ``item_id`` columns of ``--export-split``), fields
separated by tabs, UTF-8::

    # split 1a2b3c4d5e6f
    <user_id>\t<item_id>\t<item_id>\t...

The first line names the split the lists were made for (the export's
``ranked_lists_header``); lists for another split are refused. Every test
user of the split has exactly one line with at least one item, and a list
names each item once. Blank lines and further lines starting with ``#``
are ignored. A list may be longer than the largest K; the first items
count. Every problem is one ``DrbenchError`` naming the line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import DrbenchError
from bench.protocol.splits import Split

HEADER = "# split "
SHOWN = 3  # missing users named in the message


@dataclass(frozen=True)
class RankedLists:
    lists: np.ndarray  # int32 [test users, longest list] internal item ids in ``split.test``'s user order; 0 = empty slot
    sha256: str  # of the file
    source: str  # the file's name (results never keep a folder of this machine)

    @property
    def list_length(self) -> int:
        return int(self.lists.shape[1])


def read_ranked_lists(path: Path, split: Split, user_ids: np.ndarray, item_ids: np.ndarray) -> RankedLists:
    """Read and check ``path`` against ``split``; ``user_ids[u]`` / ``item_ids[i]`` are the raw ids of dataset row u and item i."""
    path = Path(path)
    name = path.name
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise DrbenchError(f"--score: {path} is a directory; name the file of ranked lists inside it") from None
    except FileNotFoundError:
        raise DrbenchError(f"--score: file not found: {path}") from None
    except OSError as error:
        raise DrbenchError(f"--score: cannot read {path}: {error.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is no part of the header
    except UnicodeDecodeError as error:
        raise DrbenchError(f"{name}: not UTF-8 text (byte {error.start}); write the ranked lists as UTF-8") from None
    lines = text.splitlines()
    if not text.strip():
        raise DrbenchError(f"{name} is empty; it needs the line '{HEADER}{split.fingerprint}' and one line per test user")
    _check_header(name, lines[0], split.fingerprint)
    position = {int(user): i for i, user in enumerate(split.test.users)}  # dataset row -> place in the test set
    rows = {str(user): row for row, user in enumerate(user_ids)}
    items = {str(item): i for i, item in enumerate(item_ids) if i > 0}  # item 0 is padding, never an item
    lists: list[list[int] | None] = [None] * len(split.test)
    first_line: dict[int, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        user, *listed = line.split("\t")
        listed = [item for item in listed if item]  # a trailing tab leaves an empty field
        where = f"{name} line {number}"
        if user not in rows:
            hint = " (fields are separated by tabs)" if not listed and " " in user.strip() else ""
            raise DrbenchError(f"{where}: unknown user id '{user}'{hint}; user ids are the user_id column of the export's users.tsv")
        place = position.get(rows[user])
        if place is None:
            raise DrbenchError(f"{where}: user '{user}' is not a test user of this split (it has no test target); "
                               "list only the users of the export's test_targets.tsv")
        if place in first_line:
            raise DrbenchError(f"{where}: user '{user}' is listed twice (first on line {first_line[place]}); give each user one list")
        first_line[place] = number
        if not listed:
            raise DrbenchError(f"{where}: user '{user}' has an empty list; give at least one item id after the user id, "
                               "separated by tabs")
        ids = []
        for item in listed:
            if item not in items:
                hint = " (fields are separated by tabs)" if " " in item.strip() else ""
                raise DrbenchError(f"{where}: unknown item id '{item}' in the list of user '{user}'{hint}; "
                                   "item ids are the item_id column of the export's items.tsv")
            ids.append(items[item])
        if len(set(ids)) != len(ids):
            twice = next(item for item in listed if listed.count(item) > 1)
            raise DrbenchError(f"{where}: item '{twice}' appears twice in the list of user '{user}'; a ranking lists each item once")
        lists[place] = ids
    if not first_line:
        raise DrbenchError(f"{name} has no ranked lists after its first line; write one line per test user")
    missing = [i for i, found in enumerate(lists) if found is None]
    if missing:
        names = ", ".join(f"'{user_ids[split.test.users[i]]}'" for i in missing[:SHOWN])
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        raise DrbenchError(f"{name} has no list for {len(missing)} of the {len(split.test)} test users ({names}{more}); "
                           "every test user needs a list, so that the metrics average over the same users as every other model's")
    width = max(len(found) for found in lists)
    table = np.zeros((len(lists), width), dtype=np.int32)
    for i, found in enumerate(lists):
        table[i, : len(found)] = found
    return RankedLists(table, hashlib.sha256(raw).hexdigest(), name)


def _check_header(name: str, first: str, fingerprint: str) -> None:
    if not first.startswith(HEADER):
        raise DrbenchError(f"{name}: line 1 must be '{HEADER}<fingerprint>' naming the split the lists were made for "
                           f"(here: '{HEADER}{fingerprint}', the ranked_lists_header of the export's manifest.json)")
    made_for = first[len(HEADER):].strip()
    if made_for != fingerprint:
        raise DrbenchError(f"{name} was made for split {made_for}, but this suite and dataset have split {fingerprint}; "
                           "export this split (--export-split) and make the lists from it")
