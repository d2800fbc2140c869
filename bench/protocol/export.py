"""A split written as plain files that any framework can read (``run_bench.py --export-split DIR``).

Tab-separated files with a header row, each user's rows in sequence order,
raw ids (as in the data file) next to drbench's internal ids, and a
``manifest.json`` naming the suite, the dataset, the split's fingerprint,
the protocol and every file. The columns are described in
``docs/own-predictions.md`` and in the manifest itself.

Every file is written atomically and the manifest last, so a folder with a
manifest holds a whole export. A folder that is not empty is only
overwritten when it holds an export of the same split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.interactions import InteractionData
from bench.data.sequences import Sequences
from bench.errors import DrbenchError
from bench.files import atomic_write
from bench.protocol.ranked_lists import HEADER
from bench.protocol.splits import Split

FORMAT = "drbench split export 1"
MANIFEST = "manifest.json"

SEQUENCE_COLUMNS = ("user_id, item_id: raw ids; user, item: internal ids; position: the item's place in the user's whole "
                    "sequence (0 = first); timestamp: when the data has timestamps")
FILES = {
    "users.tsv": "user (internal id: the dataset row), user_id (raw id); every user of the dataset",
    "items.tsv": "item (internal id, 1..n_items), item_id (raw id); the catalogue every list is ranked from",
    "train.tsv": f"the training sequences, one row per interaction. {SEQUENCE_COLUMNS}",
    "valid_inputs.tsv": f"the validation users' inputs (what a model sees to predict the validation target). {SEQUENCE_COLUMNS}",
    "valid_targets.tsv": "user_id, item_id, user, item: each validation user's held-out item",
    "test_inputs.tsv": f"the test users' inputs (what a model sees to predict the test target). {SEQUENCE_COLUMNS}",
    "test_targets.tsv": "user_id, item_id, user, item: each test user's held-out item; rank the catalogue for these users",
}


def check_destination(directory: Path, fingerprint: str) -> None:
    """Refuse a folder that is a file, or not empty and not an earlier export of this split."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DrbenchError(f"--export-split: {directory} is a file; name a folder")
    if not directory.is_dir() or not any(directory.iterdir()):
        return
    held = None
    try:
        held = json.loads((directory / MANIFEST).read_text(encoding="utf-8")).get("split_fingerprint")
    except (OSError, ValueError, AttributeError):
        pass
    if held != fingerprint:
        what = f"the export of another split ({held})" if held else "files that are not a drbench split export"
        raise DrbenchError(f"--export-split: {directory} is not empty and holds {what}; name an empty or new folder")


def write_split(directory: Path, split: Split, data: InteractionData, manifest: dict) -> Path:
    """Write ``split`` of ``data`` into ``directory`` (``check_destination`` first); ``manifest`` adds the suite's facts."""
    directory = Path(directory)
    everyone = np.arange(len(split.train), dtype=np.int64)
    tables = {
        "users.tsv": pd.DataFrame({"user": everyone, "user_id": data.user_ids}),
        "items.tsv": pd.DataFrame({"item": np.arange(1, split.n_items + 1), "item_id": data.item_ids[1:]}),
        "train.tsv": sequence_table(data, everyone, split.train),
        "valid_inputs.tsv": sequence_table(data, split.valid.users, split.valid.histories),
        "valid_targets.tsv": target_table(data, split.valid.users, split.valid.targets),
        "test_inputs.tsv": sequence_table(data, split.test.users, split.test.histories),
        "test_targets.tsv": target_table(data, split.test.users, split.test.targets),
    }
    try:
        for name, table in tables.items():
            atomic_write(directory / name, table.to_csv(sep="\t", index=False))
        atomic_write(directory / MANIFEST, json.dumps({
            "format": FORMAT, **manifest, "split_fingerprint": split.fingerprint,
            "ranked_lists_header": f"{HEADER}{split.fingerprint}",
            "n_users": len(split.train), "n_items": split.n_items, "train_interactions": split.train.nnz,
            "valid_users": len(split.valid), "test_users": len(split.test), "files": FILES,
        }, indent=2) + "\n")
    except OSError as error:
        raise DrbenchError(f"--export-split: cannot write into {directory}: {error.strerror}; name a writable folder") from None
    return directory


def sequence_table(data: InteractionData, users: np.ndarray, rows: Sequences) -> pd.DataFrame:
    """One row per item of ``rows`` (row i belongs to dataset user ``users[i]``), with raw and internal ids."""
    users = np.asarray(users, dtype=np.int64)
    lengths = rows.lengths
    owner = np.repeat(users, lengths)
    within = np.arange(rows.nnz) - np.repeat(rows.offsets[:-1], lengths)
    table = pd.DataFrame({"user_id": data.user_ids[owner], "item_id": data.item_ids[rows.values],
                          "user": owner, "item": rows.values, "position": within})
    # Every input of both splits is the beginning of the user's chronological sequence, so an item's place
    # there is its place in the input and its timestamp is the sequence's; checked rather than assumed.
    index = data.items.offsets[owner] + within
    if (lengths > data.items.lengths[users]).any() or not np.array_equal(data.items.values[index], rows.values):
        raise RuntimeError("a split's input is not the beginning of its user's sequence; the export cannot name positions")
    if data.timestamps is not None:
        table["timestamp"] = data.timestamps.values[index]
    return table


def target_table(data: InteractionData, users: np.ndarray, targets: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_id": data.user_ids[users], "item_id": data.item_ids[targets], "user": users, "item": targets})
