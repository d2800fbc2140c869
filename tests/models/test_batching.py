"""Length-aware training batches: every example once, little padding, still random; and no model's loss moves.

``bench.models.batching`` groups histories of similar length and trims each
batch to its longest one. That may change which examples share a batch,
never what a model computes for an example: the last test checks, model by
model, that a training batch's loss is the same with extra all-padding
columns on the left, i.e. that the padding trimmed away never counted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.data.sequences import Sequences
from bench.models.batching import POOL_BATCHES, Batching, trim
from tests.models.test_padding_invariance import CASES, N_ITEMS, private_sid_cache  # noqa: F401 (fixture)


def skewed_lengths(n, seed=0):
    """Geometric lengths (mean about 7, a long tail), as the histories of Amazon 5-core data."""
    return np.random.default_rng(seed).geometric(1 / 7, n)


@pytest.mark.parametrize("balance", ["rows", "tokens"])
@pytest.mark.parametrize("by_length", [True, False])
@pytest.mark.parametrize("n", [1, 37, 1000, 25_000])
def test_every_row_comes_exactly_once(n, by_length, balance):
    batching = Batching(64, by_length=by_length)
    batches = list(batching.batches(skewed_lengths(n), np.random.default_rng(0), balance))
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    assert all(len(batch) >= 1 for batch in batches)
    if balance == "rows" or not by_length:
        assert all(len(batch) <= 64 for batch in batches)


def test_token_balanced_batches_hold_about_the_same_number_of_tokens_and_as_many_batches_as_rows_would():
    """A loss averaged over positions then weighs every position about alike, whatever the batch's lengths."""
    lengths = np.minimum(skewed_lengths(20_000), 50)
    batches = list(Batching(128).batches(lengths, np.random.default_rng(0), balance="tokens"))
    tokens = np.array([lengths[rows].sum() for rows in batches])
    budget = 128 * lengths.mean()
    full = tokens[:-len(batches) // 20]  # most batches; each pool's last one holds the remainder
    assert np.median(np.abs(tokens / budget - 1)) < 0.05
    assert abs(len(batches) - len(lengths) / 128) <= 0.05 * len(lengths) / 128 + 2
    sizes = [len(rows) for rows in batches]
    assert max(sizes) > 3 * 128 and min(sizes) < 128 / 3  # short histories come many to a batch, long ones few
    # row-balanced batches of the same lengths carry tokens in proportion to their lengths instead
    row_tokens = np.array([lengths[rows].sum() for rows in Batching(128).batches(lengths, np.random.default_rng(0))])
    assert row_tokens.max() / np.median(row_tokens) > 3 and full.max() / np.median(full) < 1.5


def test_balance_is_checked():
    with pytest.raises(ValueError, match="balance must be one of rows, tokens"):
        next(Batching(4).batches(np.ones(3, dtype=int), np.random.default_rng(0), balance="users"))


def padding_share(batching, lengths, rng, balance="rows"):
    widths = [lengths[rows].max() * len(rows) for rows in batching.batches(lengths, rng, balance)]
    return 1.0 - lengths.sum() / sum(widths)


@pytest.mark.parametrize("balance", ["rows", "tokens"])
def test_bucketing_removes_most_of_the_padding_of_random_batches(balance):
    lengths = np.minimum(skewed_lengths(20_000), 50)
    random = padding_share(Batching(128, by_length=False), lengths, np.random.default_rng(0), balance)
    bucketed = padding_share(Batching(128), lengths, np.random.default_rng(0), balance)
    assert random > 0.7  # a random batch is padded to its longest (usually near 50) history
    assert bucketed < 0.1


def test_bucketed_batches_come_in_a_random_order_that_the_generator_fixes():
    lengths = skewed_lengths(5_000)
    order = lambda seed: [rows.tolist() for rows in Batching(32).batches(lengths, np.random.default_rng(seed))]
    assert order(0) == order(0)
    assert order(0) != order(1)
    first_lengths = [lengths[rows].max() for rows in Batching(32).batches(lengths, np.random.default_rng(0))]
    assert first_lengths != sorted(first_lengths) and first_lengths != sorted(first_lengths, reverse=True)


def test_bucketing_mixes_rows_from_one_pool_only():
    """Rows are sorted within pools of POOL_BATCHES batches, so a batch never spans two pools."""
    n = 3 * 8 * POOL_BATCHES
    rng = np.random.default_rng(0)
    order = np.random.default_rng(0).permutation(n)  # the first draw of the same stream
    pool_of = np.empty(n, dtype=int)
    pool_of[order] = np.arange(n) // (8 * POOL_BATCHES)
    for rows in Batching(8).batches(skewed_lengths(n), rng):
        assert len(set(pool_of[rows])) == 1


def test_random_batches_are_the_previous_shuffled_batches():
    """``by_length=False`` draws the same batches from the generator as the models did before bucketing."""
    lengths = skewed_lengths(1_000)
    order = np.random.default_rng(3).permutation(len(lengths))
    expected = [order[start : start + 100].tolist() for start in range(0, len(order), 100)]
    actual = [rows.tolist() for rows in Batching(100, by_length=False).batches(lengths, np.random.default_rng(3))]
    assert actual == expected


def test_trim_drops_only_all_padding_columns_on_the_left():
    matrix = np.array([[0, 0, 0, 1, 2], [0, 0, 3, 4, 5], [0, 0, 0, 0, 6]])
    assert trim(matrix).tolist() == [[0, 1, 2], [3, 4, 5], [0, 0, 6]]
    assert trim(np.zeros((2, 4), dtype=np.int64)).shape == (2, 1)  # never zero columns wide
    assert trim(matrix[:, 2:]).tolist() == trim(matrix).tolist()


def test_rows_are_bucketed_and_trimmed_windows_of_the_matrix():
    lengths = np.minimum(skewed_lengths(500), 20)
    matrix = np.zeros((len(lengths), 20), dtype=np.int64)
    for row, length in enumerate(lengths):
        matrix[row, 20 - length :] = np.arange(1, length + 1) + 100 * row
    batches = list(Batching(16).rows(matrix, np.random.default_rng(0)))
    seen = sorted(tuple(row[row > 0]) for batch in batches for row in batch)
    assert seen == sorted(tuple(row[row > 0]) for row in matrix)
    assert all(batch.shape[1] == (batch > 0).sum(1).max() for batch in batches)


# --- the models' losses do not see the trimmed padding ---------------------------------------

# case of test_padding_invariance -> the batch keys that are left-padded sequences (aligned on the right)
SEQUENCE_KEYS = {
    "gru4rec": ("inputs", "targets"),
    "sasrec": ("inputs", "targets"),
    "sasrec-sampled": ("inputs", "targets"),
    "bert4rec": ("inputs", "labels"),
    "diffsasrec": ("inputs", "labels"),
    "uniform_diffusion": ("inputs", "targets", "corrupted"),
    # lambda 0: the loss's only noise is then x_t's, whose shape [B, d] does not depend on the width
    "diffurec-noiseless": ("histories",),
    "tiger": ("histories",),
    "sid_diffusion": ("histories",),
}


def training_data(seed=0):
    rng = np.random.default_rng(seed)
    return Sequences.from_lists([rng.integers(1, N_ITEMS + 1, int(rng.integers(1, 14))).tolist() for _ in range(60)])


class FitWithoutTraining:
    """Lets ``fit`` build what the model builds from the data (noise source, SIDs), then stops."""

    def fit(self, model, train, validate):
        return None


def model_for(case):
    if case == "sasrec-sampled":
        from tests.models.test_padding_invariance import TRANSFORMER, neural

        return neural("sasrec", **TRANSFORMER, loss="sampled", n_negatives=5)
    return CASES[case]()


@pytest.mark.parametrize("case", list(SEQUENCE_KEYS))
def test_a_training_loss_is_the_same_with_the_trimmed_padding_put_back(case):
    model = model_for(case)
    if case in ("uniform_diffusion",):
        model.fit(training_data(), FitWithoutTraining(), None)  # the SID models were fitted by their builder
    train = training_data()
    if case in ("tiger", "sid_diffusion"):
        from tests.planted import planted_split

        train = planted_split(n_users=60, n_items=30).train  # the data their SIDs were built on
    # the narrowest batch, widened back to the fixed max_len columns every batch had before trimming
    batch = min(model.training_batches(train, Batching(4), np.random.default_rng(0)),
                key=lambda batch: batch[SEQUENCE_KEYS[case][0]].shape[1])
    width = model.config.max_len
    assert batch[SEQUENCE_KEYS[case][0]].shape[1] < width
    widened = {key: F.pad(value, (width - value.shape[1], 0)) if key in SEQUENCE_KEYS[case] else value
               for key, value in batch.items()}
    model.eval()  # no dropout; every other random draw of the loss is seeded alike below
    torch.manual_seed(5)
    trimmed_loss = model.loss(batch)
    torch.manual_seed(5)
    widened_loss = model.loss(widened)
    torch.testing.assert_close(widened_loss, trimmed_loss, rtol=1e-5, atol=1e-6)
    assert trimmed_loss.item() > 0
