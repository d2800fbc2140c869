"""Splits: hand-made sequences, leakage guards, temporal cutoffs."""


import numpy as np
import pytest

from bench.errors import DrbenchError
from bench.protocol.splits import global_temporal, leave_one_out
from bench.data.sequences import Sequences
from tests.conftest import MIRROR


def test_leave_one_out_by_hand():
    split = leave_one_out(Sequences.from_lists([[1, 2, 3, 4], [5, 6], [7, 8, 9]]), n_items=9)
    assert [s.tolist() for s in split.train] == [[1, 2], [5, 6], [7]]
    assert split.valid.users.tolist() == [0, 2] and split.valid.targets.tolist() == [3, 8]
    assert [h.tolist() for h in split.valid.histories] == [[1, 2], [7]]
    assert split.test.targets.tolist() == [4, 9]
    assert [h.tolist() for h in split.test.histories] == [[1, 2, 3], [7, 8]]


def assert_no_target_in_training(split, items):
    """Targets are positions of a user's sequence: training must stop before both."""
    for evalset in (split.valid, split.test):
        for user, history in zip(evalset.users, evalset.histories):
            assert len(split.train[user]) <= len(history)
            np.testing.assert_array_equal(split.train[user], items[user][: len(split.train[user])])
    for user, valid_history in zip(split.valid.users, split.valid.histories):
        assert len(split.train[user]) <= len(valid_history)


def test_leave_one_out_never_trains_on_targets():
    rng = np.random.default_rng(1)
    items = Sequences.from_lists([rng.integers(1, 30, rng.integers(1, 12)) for _ in range(200)])
    split = leave_one_out(items, 30)
    assert_no_target_in_training(split, items)
    for user, history in zip(split.valid.users, split.valid.histories):
        assert len(split.train[user]) == len(history) == len(items[user]) - 2


def test_global_temporal_by_hand():
    # timestamps 1..20 over three users; q = 0.75, nearest observed value (DiffSASRec's pandas
    # quantile(interpolation="nearest")): t_test = sorted[round(0.75 * 19)] = 15; the 14 stamps
    # before it give t_valid = sorted[round(0.75 * 13)] = 11 (linear interpolation would give 15.25 / 11.5)
    items = Sequences.from_lists([[1, 2, 3, 4, 5, 6, 5], [2, 3, 4, 8, 9, 1, 2], [9, 9, 9, 3, 2, 1]])
    stamps = Sequences.from_lists([[1, 2, 3, 12, 13, 16, 17], [4, 5, 6, 14, 15, 18, 19], [7, 8, 9, 10, 11, 20]])
    split = global_temporal(items, stamps, n_items=9, quantile=0.75)
    assert split.cutoffs == {"t_test": 15, "t_valid": 11}
    # train: everything strictly before t_valid (user 2's item 2 at t = 11 is the validation window)
    assert [s.tolist() for s in split.train] == [[1, 2, 3], [2, 3, 4], [9, 9, 9, 3]]
    # valid: first interaction in [11, 15) whose item occurs in training; user 1's only one (item 8) does not
    assert split.valid.users.tolist() == [0, 2]
    assert split.valid.targets.tolist() == [4, 2]
    assert [h.tolist() for h in split.valid.histories] == [[1, 2, 3], [9, 9, 9, 3]]
    # test: first interaction at or after 15 whose item occurs in training; the input is the history
    # before 15 only. User 0's items 6 and 5 (t = 16, 17) never occur in training, so user 0 is not tested.
    assert split.test.users.tolist() == [1, 2]
    assert split.test.targets.tolist() == [9, 1]
    assert [h.tolist() for h in split.test.histories] == [[2, 3, 4, 8], [9, 9, 9, 3, 2]]
    assert_no_target_in_training(split, items)


def test_temporal_requires_timestamps():
    from bench.protocol.splits import make_split

    class NoTimes:
        name, items, timestamps, n_items = "toy", Sequences.from_lists([[1, 2, 3]]), None, 3

    with pytest.raises(DrbenchError, match="no timestamps"):
        make_split(NoTimes(), "temporal")


def test_fingerprint_is_stable_and_sensitive():
    items = Sequences.from_lists([[1, 2, 3, 4], [2, 3, 4]])
    a, b = leave_one_out(items, 4), leave_one_out(items, 4)
    assert a.fingerprint == b.fingerprint
    assert leave_one_out(Sequences.from_lists([[1, 2, 3, 4], [2, 3, 1]]), 4).fingerprint != a.fingerprint




@pytest.mark.skipif(not (MIRROR / "ml-100k" / "u.data").is_file(), reason="dataset mirror ../shared/data not present")
@pytest.mark.parametrize("dataset, protocol", [("ml-100k", "loo"), ("ml-100k", "temporal"), ("amazon-beauty", "temporal")])
def test_real_splits_never_train_on_targets(dataset, protocol):
    from bench.protocol.splits import make_split
    from bench.data import load_dataset

    data = load_dataset(dataset, MIRROR)
    split = make_split(data, protocol)
    assert len(split.test) > 0 and len(split.valid) > 0
    assert_no_target_in_training(split, data.items)
    if protocol == "temporal":
        assert split.train.nnz == int((data.timestamps.values < split.cutoffs["t_valid"]).sum())
        assert_evaluated_targets_and_users_are_trained(split)


# --- temporal split: DiffSASRec's rules (Shinypuff/DiffSASRec utils.py) and trained targets / users ---


def assert_evaluated_targets_and_users_are_trained(split):
    trained_items = np.zeros(split.n_items + 1, dtype=bool)
    trained_items[split.train.values] = True
    for evalset in (split.valid, split.test):
        assert trained_items[evalset.targets].all(), "a target never occurs in split.train"
        assert (split.train.lengths[evalset.users] > 0).all(), "an evaluated user has no training interactions"


def random_timed(seed, n_users=80, n_items=150, max_len=14, horizon=100):
    """Random sequences with integer stamps (many ties); users join over time, some only near the end."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len, n_users)
    starts = rng.integers(0, horizon, n_users)
    items = Sequences.from_lists([rng.integers(1, n_items + 1, n) for n in lengths])
    stamps = Sequences.from_lists([s + np.sort(rng.integers(0, horizon // 3, n)) for s, n in zip(starts, lengths)])
    return items, stamps, n_items


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temporal_targets_and_users_occur_in_training(seed):
    items, stamps, n_items = random_timed(seed)
    split = global_temporal(items, stamps, n_items, quantile=0.8)
    assert len(split.test) > 0 and len(split.valid) > 0
    assert_evaluated_targets_and_users_are_trained(split)
    assert_no_target_in_training(split, items)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temporal_cutoffs_are_the_sources_nearest_quantile(seed):
    pd = pytest.importorskip("pandas")
    items, stamps, n_items = random_timed(seed)
    split = global_temporal(items, stamps, n_items, quantile=0.8)
    everything = pd.Series(stamps.values)
    t_test = everything.quantile(0.8, interpolation="nearest")  # utils.py split_by_time
    t_valid = everything[everything < t_test].quantile(0.8, interpolation="nearest")
    assert split.cutoffs == {"t_test": t_test, "t_valid": t_valid}
    assert split.train.nnz == int((stamps.values < t_valid).sum())


def test_temporal_cutoff_ties_go_after_the_cutoff():
    # stamps 1 2 3 3 5 6 6 7 8 9, q = 0.5: t_test = sorted[round(0.5 * 9)] = sorted[4] = 5 (ties at .5
    # round to even, as numpy / pandas "nearest"; linear would give 5.5); the four stamps before 5 give
    # t_valid = sorted[round(0.5 * 3)] = sorted[2] = 3 (linear: 2.5). "After" is t >= cutoff, as the
    # source's `timestamp >= split_timepoint`: both stamps 3 are validation window, stamp 5 is test window.
    items = Sequences.from_lists([[1, 1, 2, 3, 1], [2, 4, 3, 1, 2]])
    stamps = Sequences.from_lists([[1, 3, 5, 7, 9], [2, 3, 6, 6, 8]])
    split = global_temporal(items, stamps, n_items=4, quantile=0.5)
    assert split.cutoffs == {"t_test": 5, "t_valid": 3}
    assert [s.tolist() for s in split.train] == [[1], [2]]
    # user 1's only validation-window item (4, t = 3) never occurs in training: no validation target
    assert split.valid.users.tolist() == [0] and split.valid.targets.tolist() == [1]
    assert [h.tolist() for h in split.valid.histories] == [[1]]
    # user 0's target is stamped exactly t_test; user 1's two stamps 6 are tied: item 3 is untrained,
    # so item 1 (next in data order) is the target
    assert split.test.users.tolist() == [0, 1]
    assert split.test.targets.tolist() == [2, 1]
    assert [h.tolist() for h in split.test.histories] == [[1, 1], [2, 4]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_temporal_input_is_the_history_before_the_cutoff(seed):
    # source rule: the input is the user's pre-cutoff history only, never the post-cutoff items before the target
    items, stamps, n_items = random_timed(seed)
    split = global_temporal(items, stamps, n_items, quantile=0.8)
    t_valid, t_test = split.cutoffs["t_valid"], split.cutoffs["t_test"]
    for user, history in zip(split.valid.users, split.valid.histories):
        np.testing.assert_array_equal(history, items[user][stamps[user] < t_valid])
        np.testing.assert_array_equal(history, split.train[user])
    for user, history in zip(split.test.users, split.test.histories):
        np.testing.assert_array_equal(history, items[user][stamps[user] < t_test])
    for evalset, start, end in ((split.valid, t_valid, t_test), (split.test, t_test, np.inf)):
        for user, target in zip(evalset.users, evalset.targets):
            in_window = (stamps[user] >= start) & (stamps[user] < end)
            trained = np.isin(items[user], split.train.values)
            assert target == items[user][np.flatnonzero(in_window & trained)[0]]


def test_splits_report_json_stats():
    import json

    items, stamps, n_items = random_timed(0)
    temporal = global_temporal(items, stamps, n_items, quantile=0.8)
    stats = json.loads(json.dumps(temporal.stats))
    assert stats["t_valid"] == temporal.cutoffs["t_valid"] and stats["t_test"] == temporal.cutoffs["t_test"]
    assert stats["interactions"] == items.nnz and stats["interactions_trained"] == temporal.train.nnz
    assert stats["valid_users"] == len(temporal.valid) and stats["test_users"] == len(temporal.test)
    assert stats["users_with_training"] == int((temporal.train.lengths > 0).sum())
    assert stats["interactions_trained"] + stats["interactions_valid_window"] + stats["interactions_test_window"] == items.nnz
    with_test_window = {int(u) for u in items.row_ids()[stamps.values >= stats["t_test"]]}
    assert len(with_test_window) == (stats["test_users"] + stats["test_users_dropped_no_training"]
                                     + stats["test_users_dropped_unseen_items"])
    loo = leave_one_out(items, n_items)
    assert json.loads(json.dumps(loo.stats)) == loo.stats
    assert loo.stats["users_too_short"] == int((items.lengths < 3).sum())
    assert loo.stats["test_users"] == len(loo.test) and loo.stats["interactions_trained"] == loo.train.nnz


def test_split_stats_are_not_part_of_the_fingerprint():
    import dataclasses

    split = leave_one_out(Sequences.from_lists([[1, 2, 3, 4], [2, 3, 4]]), 4)
    assert split.fingerprint == "5379f8d17a0a"  # unchanged since before stats existed
    assert dataclasses.replace(split, stats={}).fingerprint == split.fingerprint
