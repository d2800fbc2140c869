"""--export-split: the files hold exactly the split, in raw and internal ids, and a folder is never overwritten by mistake."""

import json

import numpy as np
import pandas as pd
import pytest

from bench.data.synthetic import synthetic_dataset
from bench.errors import DrbenchError
from bench.protocol.export import FILES, MANIFEST, check_destination, write_split
from bench.protocol.splits import make_split

DATA = synthetic_dataset(n_users=60, n_items=30, n_clusters=3, min_len=3, max_len=9, seed=1)


def renamed(data):
    """The data with raw ids that differ from the internal ones, as in a real log."""
    from dataclasses import replace

    return replace(data, user_ids=np.array([f"u{i * 7}" for i in range(data.n_users)]),
                   item_ids=np.array(["[PAD]"] + [f"item-{i * 3}" for i in range(1, data.n_items + 1)]))


def read(folder, name):
    return pd.read_csv(folder / name, sep="\t", dtype={"user_id": str, "item_id": str})


def sequences_of(table: pd.DataFrame, column: str) -> dict:
    return {user: rows.sort_values("position")[column].tolist() for user, rows in table.groupby("user")}


@pytest.mark.parametrize("protocol", ["loo", "temporal"])
def test_the_files_hold_the_split_in_raw_and_internal_ids(tmp_path, protocol):
    data = renamed(DATA)
    split = make_split(data, protocol, 0.8)
    write_split(tmp_path, split, data, {"suite": "s", "dataset": "synthetic"})
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["split_fingerprint"] == split.fingerprint and manifest["ranked_lists_header"] == f"# split {split.fingerprint}"
    assert manifest["suite"] == "s" and manifest["test_users"] == len(split.test) and manifest["n_items"] == split.n_items
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*FILES, MANIFEST]) == sorted([*manifest["files"], MANIFEST])

    items = read(tmp_path, "items.tsv")
    assert items["item"].tolist() == list(range(1, split.n_items + 1)) and items["item_id"].tolist() == data.item_ids[1:].tolist()
    raw_item = dict(zip(items["item"], items["item_id"]))
    train = read(tmp_path, "train.tsv")
    assert sequences_of(train, "item") == {u: split.train[u].tolist() for u in range(len(split.train)) if len(split.train[u])}
    assert (train["item_id"] == train["item"].map(raw_item)).all() and (train["user_id"] == data.user_ids[train["user"]]).all()
    assert (train["timestamp"].to_numpy() == np.concatenate([data.timestamps[u][: len(split.train[u])] for u in range(len(split.train))])).all()
    for part, evaluated in (("valid", split.valid), ("test", split.test)):
        inputs, targets = read(tmp_path, f"{part}_inputs.tsv"), read(tmp_path, f"{part}_targets.tsv")
        assert sequences_of(inputs, "item") == {int(u): evaluated.histories[i].tolist() for i, u in enumerate(evaluated.users)}
        assert targets["user"].tolist() == evaluated.users.tolist() and targets["item"].tolist() == evaluated.targets.tolist()
        assert (targets["item_id"] == targets["item"].map(raw_item)).all()


def test_a_folder_is_refused_unless_empty_or_an_export_of_the_same_split(tmp_path):
    split = make_split(DATA, "loo")
    check_destination(tmp_path / "new", split.fingerprint)  # a folder to be made
    check_destination(tmp_path, split.fingerprint)  # an empty one
    write_split(tmp_path / "export", split, DATA, {})
    check_destination(tmp_path / "export", split.fingerprint)  # the same split again: rewritten
    other = make_split(DATA, "temporal", 0.8)
    with pytest.raises(DrbenchError, match=f"is not empty and holds the export of another split \\({split.fingerprint}\\)"):
        check_destination(tmp_path / "export", other.fingerprint)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DrbenchError, match="holds files that are not a drbench split export; name an empty or new folder"):
        check_destination(tmp_path / "mine", split.fingerprint)
    with pytest.raises(DrbenchError, match="is a file; name a folder"):
        check_destination(tmp_path / "mine" / "notes.txt", split.fingerprint)
