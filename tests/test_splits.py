"""Splits: hand-made sequences, leakage guards, temporal cutoffs."""


import numpy as np
import pytest

from bench.errors import DrbenchError
from bench.splits import global_temporal, leave_one_out
from datasets.sequences import Sequences
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
    # timestamps 1..20 over three users; q = 0.75 -> t_test = 15.25, t_valid = 0.75-quantile of ts <= 15.25 = 11.5
    items = Sequences.from_lists([[1, 2, 3, 4, 5, 6, 5], [2, 3, 4, 8, 9, 1, 2], [9, 9, 9, 3, 2, 1]])
    stamps = Sequences.from_lists([[1, 2, 3, 12, 13, 16, 17], [4, 5, 6, 14, 15, 18, 19], [7, 8, 9, 10, 11, 20]])
    split = global_temporal(items, stamps, n_items=9, quantile=0.75)
    assert split.cutoffs == {"t_test": pytest.approx(15.25), "t_valid": pytest.approx(11.5)}
    # train: everything at or before t_valid
    assert [s.tolist() for s in split.train] == [[1, 2, 3], [2, 3, 4], [9, 9, 9, 3, 2]]
    # valid: first interaction in (11.5, 15.25] whose item is known before 11.5 (item 8 is not)
    assert split.valid.users.tolist() == [0, 1]
    assert split.valid.targets.tolist() == [4, 9]
    assert [h.tolist() for h in split.valid.histories] == [[1, 2, 3], [2, 3, 4, 8]]
    # test: first interaction after 15.25 with a known user and item; input is the whole prefix.
    # User 0's item 6 (t=16) was never seen before the cutoff, so its target is the next one.
    assert split.test.users.tolist() == [0, 1, 2]
    assert split.test.targets.tolist() == [5, 1, 1]
    assert [h.tolist() for h in split.test.histories] == [[1, 2, 3, 4, 5, 6], [2, 3, 4, 8, 9], [9, 9, 9, 3, 2]]
    assert_no_target_in_training(split, items)


def test_temporal_requires_timestamps():
    from bench.splits import make_split

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
    from bench.splits import make_split
    from datasets import load_dataset

    data = load_dataset(dataset, MIRROR)
    split = make_split(data, protocol)
    assert len(split.test) > 0 and len(split.valid) > 0
    assert_no_target_in_training(split, data.items)
    if protocol == "temporal":
        assert split.train.nnz == int((data.timestamps.values <= split.cutoffs["t_valid"]).sum())
