"""tools/diffurec_side_by_side.py: the split in the official DiffuRec format, the loader check and the log parser.

The official checkout is not needed; the one test that runs the official
loaders reads it from $DRBENCH_DIFFUREC_OFFICIAL and skips when it is unset.
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bench.data.sequences import Sequences
from bench.protocol.splits import leave_one_out

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("diffurec_side_by_side", ROOT / "tools" / "diffurec_side_by_side.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

SEQUENCES = [[1, 2, 3, 4, 5], [6, 1, 2], [3, 4, 5, 6, 1, 2, 3]]


def tiny_split():
    return leave_one_out(Sequences.from_lists(SEQUENCES), n_items=6)


def test_the_official_format_holds_the_loo_split_user_by_user():
    raw = tool.to_official_format(tiny_split())
    assert raw["train"] == {0: [1, 2, 3], 1: [6], 2: [3, 4, 5, 6, 1]}
    assert raw["val"] == {0: [4], 1: [1], 2: [2]}
    assert raw["test"] == {0: [5], 1: [2], 2: [3]}
    assert len(raw["smap"]) == 6 and sorted(raw["smap"].values()) == [1, 2, 3, 4, 5, 6]
    assert sorted(raw["umap"].values()) == [0, 1, 2]


def test_users_that_only_train_cannot_be_written():
    with pytest.raises(ValueError, match="fewer than 3"):
        tool.to_official_format(leave_one_out(Sequences.from_lists([[1, 2, 3], [4, 5]]), n_items=5))


def official_like_views(raw: dict, max_len: int) -> dict:
    """The official src/utils.py loaders, restated: every prefix of train, val input = train, test input = train + val."""
    def pad(seq):
        seq = seq[-max_len:]
        return [0] * (max_len - len(seq)) + seq

    train = [(pad(s[: i + 1]), s[i + 1]) for s in raw["train"].values() for i in range(len(s) - 1)]
    users = sorted(raw["train"])
    views = {"n_items": len(raw["smap"]), "train_tokens": np.array([t for t, _ in train]).reshape(-1, max_len),
             "train_labels": np.array([y for _, y in train], dtype=np.int64)}
    for part, history in (("val", lambda u: raw["train"][u]), ("test", lambda u: raw["train"][u] + raw["val"][u])):
        views[part + "_users"] = np.array(users)
        views[part + "_tokens"] = np.array([pad(history(u)) for u in users])
        views[part + "_labels"] = np.array([raw[part][u][0] for u in users])
    return views


@pytest.mark.parametrize("max_len", [2, 4, 10])
def test_the_harness_examples_match_the_official_loaders(max_len):
    split = tiny_split()
    checks = tool.compare_views(official_like_views(tool.to_official_format(split), max_len), tool.harness_views(split, max_len))
    assert all(c["ok"] for c in checks), checks


def test_a_different_target_or_input_is_caught():
    split = tiny_split()
    official = official_like_views(tool.to_official_format(split), 4)
    official["val_labels"] = official["val_labels"].copy()
    official["val_labels"][1] += 1
    official["test_tokens"] = official["test_tokens"].copy()
    official["test_tokens"][0, -1] = 0
    failed = {c["check"] for c in tool.compare_views(official, tool.harness_views(split, 4)) if not c["ok"]}
    assert failed == {"validation targets, user by user", "test inputs (last max_len items, left-padded), user by user"}


def batch_line(labels, ranks, hr10):
    official = {"HR@5": 0.0, "NDCG@5": 0.0, "HR@10": hr10, "NDCG@10": hr10 / 2, "HR@20": hr10, "NDCG@20": hr10 / 2}
    return tool.BATCH_TAG + json.dumps({"official": official, "labels": labels, "ranks": ranks})


def test_the_log_parser_splits_validations_from_the_test_and_aggregates_like_the_official_trainer():
    val_targets = np.array([4, 1, 2])
    lines = ["Epoch: 0", "loss in epoch 0: 9.0", "Epoch: 1", "start predicting:  now",
             batch_line([4, 1], [3, 30], 0.5), batch_line([2], [1], 1.0),
             "{'Best_HR@5': 0, 'Best_NDCG@5': 0, 'Best_HR@10': np.float64(75.0), 'Best_NDCG@10': np.float64(37.5), 'Best_HR@20': 75.0, 'Best_NDCG@20': 37.5}",
             "{'Best_epoch_HR@5': 0, 'Best_epoch_NDCG@5': 0, 'Best_epoch_HR@10': 1}",
             batch_line([5, 2], [1, 1], 1.0), batch_line([3], [1], 1.0),
             "Test------------------------------------------------------",
             "{'HR@5': 100.0, 'NDCG@5': 100.0, 'HR@10': 100.0, 'NDCG@10': 100.0, 'HR@20': 100.0, 'NDCG@20': 100.0}"]
    parsed = tool.parse_official_log(lines, val_targets, val_batches=2)
    (round_,) = parsed["rounds"]
    assert round_["official_epoch"] == 1
    assert round_["official"]["HR@10"] == 75.0  # mean of the batch means (0.5, 1.0), x100: not the users' mean (2/3)
    assert round_["ranks"].tolist() == [3, 30, 1]
    assert tool.harness_metrics(round_["ranks"])["hr@10"] == pytest.approx(2 / 3)
    assert len(parsed["test_batches"]) == 2 and parsed["printed_test"]["HR@10"] == 100.0
    assert tool.check_running_bests(parsed["rounds"], parsed["printed_bests"]) == []
    parsed["printed_bests"][0]["Best_HR@10"] = 80.0
    assert tool.check_running_bests(parsed["rounds"], parsed["printed_bests"])


def test_validation_batches_with_other_labels_are_refused():
    lines = ["Epoch: 1", "start predicting:  now", batch_line([9, 9, 9], [1, 1, 1], 1.0)]
    with pytest.raises(RuntimeError, match="not the validation targets"):
        tool.parse_official_log(lines, np.array([4, 1, 2]), val_batches=1)


def test_the_curve_aligns_official_epochs_with_trained_epochs():
    rounds = [{"official_epoch": 1, "official": {"HR@10": 50.0, "NDCG@10": 25.0}, "harness_metric": {"hr@10": 0.4, "ndcg@10": 0.2}}]
    history = [{"epoch": 1, "loss": 2.0, "valid_hr@10": 0.1, "valid_ndcg@10": 0.05, "valid_mrr@10": 0.0},
               {"epoch": 2, "loss": 1.0, "valid_hr@10": 0.3, "valid_ndcg@10": 0.15, "valid_mrr@10": 0.0}]
    rows = tool.curve_rows(rounds, history, 2)
    assert "official_hr@10" not in rows[0] and rows[0]["harness_hr@10"] == 0.1
    assert rows[1]["official_hr@10"] == 0.5 and rows[1]["official_harness_metric_ndcg@10"] == 0.2 and rows[1]["harness_ndcg@10"] == 0.15
    assert "harness_mrr@10" not in rows[1]


@pytest.mark.skipif(not os.environ.get("DRBENCH_DIFFUREC_OFFICIAL"), reason="set DRBENCH_DIFFUREC_OFFICIAL to a WHUIR/DiffuRec checkout")
def test_the_real_official_loaders_read_the_written_split(tmp_path):
    import pickle

    official = Path(os.environ["DRBENCH_DIFFUREC_OFFICIAL"])
    split = tiny_split()
    (tmp_path / "datasets" / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "src").mkdir()
    with open(tmp_path / "datasets" / "data" / "tiny" / "dataset.pkl", "wb") as handle:
        pickle.dump(tool.to_official_format(split), handle)
    for max_len in (2, 4):
        views = tool.official_views(official, tmp_path, "tiny", max_len, batch_size=2)
        assert int(views["val_batches"]) == 2
        checks = tool.compare_views(views, tool.harness_views(split, max_len))
        assert all(c["ok"] for c in checks), checks
