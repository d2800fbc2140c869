"""The evaluator: masking, exclusion, batching, divergence, bounded batches."""

import numpy as np
import pytest
import torch

from bench.errors import DrbenchError
from bench.protocol.evaluation import TrialDiverged, evaluate, left_padded
from bench.protocol.splits import EvalSet
from bench.data.sequences import Sequences


class FixedScores:
    """Scores item i with i (item n is the best); optionally a huge padding score."""

    def __init__(self, n_items, padding_score=0.0, value=None):
        self.n_items, self.padding_score, self.value = n_items, padding_score, value
        self.batch_sizes = []

    def eval(self):
        return self

    def score(self, histories):
        self.batch_sizes.append(histories.shape[0])
        scores = torch.arange(self.n_items + 1, dtype=torch.float32).repeat(histories.shape[0], 1)
        if self.value is not None:
            scores[:] = self.value
        scores[:, 0] = self.padding_score
        return scores


def eval_set(histories, targets):
    return EvalSet(np.arange(len(targets)), Sequences.from_lists(histories), np.array(targets))


def test_ranks_with_and_without_history_exclusion():
    data = eval_set([[5, 4], [3, 5]], [3, 3])
    plain = evaluate(FixedScores(5), data, 5, ks=[1, 3])
    assert plain.ranks.tolist() == [3, 3]
    excluded = evaluate(FixedScores(5), data, 5, ks=[1, 3], exclude_history=True)
    # user 0: items 5 and 4 removed -> target 3 is first; user 1: target in history -> miss
    assert excluded.ranks.tolist() == [1, 6]
    assert excluded.metrics["hr@1"] == 0.5
    assert excluded.top_items[0].tolist() == [3, 2, 1]


def test_padding_column_is_never_ranked():
    result = evaluate(FixedScores(5, padding_score=1e9), eval_set([[1]], [5]), 5, ks=[1])
    assert result.ranks.tolist() == [1]
    assert 0 not in result.top_items


def test_batching_does_not_change_results_and_bounds_batch_size():
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, 50, rng.integers(1, 8)).tolist() for _ in range(37)]
    data = eval_set(histories, rng.integers(1, 50, 37).tolist())
    model = FixedScores(50)
    small = evaluate(model, data, 50, ks=[5, 10], exclude_history=True, batch_size=4)
    assert max(model.batch_sizes) == 4
    large = evaluate(FixedScores(50), data, 50, ks=[5, 10], exclude_history=True, batch_size=256)
    np.testing.assert_array_equal(small.ranks, large.ranks)
    assert small.metrics == large.metrics


def test_nan_scores_raise_diverged():
    with pytest.raises(TrialDiverged, match="NaN"):
        evaluate(FixedScores(5, value=float("nan")), eval_set([[1]], [2]), 5, ks=[1])


def test_k_larger_than_catalogue_is_rejected():
    with pytest.raises(DrbenchError, match="larger than the catalogue"):
        evaluate(FixedScores(5), eval_set([[1]], [2]), 5, ks=[10])


def test_left_padding_keeps_the_most_recent_item_last():
    batch = left_padded(Sequences.from_lists([[1, 2, 3], [4]]), np.array([0, 1]))
    assert batch.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert left_padded(Sequences.from_lists([[1, 2, 3]]), np.array([0]), max_len=2).tolist() == [[2, 3]]


def test_evaluation_memory_does_not_grow_with_the_number_of_users():
    """20,000 users x 20,000 items: all scores at once would need 1.6 GB; batches keep the peak far lower."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    child = subprocess.run([sys.executable, "-m", "bench.perf.eval_memory", "--one", "--items", "20000", "--users", "20000", "--batch-sizes", "256"],
                           cwd=root, capture_output=True, text=True, check=True)
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    assert measured["peak_rss_mib"] - measured["rss_before_eval_mib"] < 600


class FixedList:
    """Generates the same ranked list for everyone (with ``exclude_seen``: the list without the row's items)."""

    generates_lists = True

    def __init__(self, ranked):
        self.ranked = ranked

    def eval(self):
        return self

    def generate(self, histories, k, exclude_seen=False):
        lists = [[i for i in self.ranked if not exclude_seen or i not in row][:k] for row in histories.tolist()]
        width = max(len(items) for items in lists)
        return torch.tensor([items + [0] * (width - len(items)) for items in lists])


def test_generated_lists_are_ranked_by_position_and_absent_targets_miss():
    # list [5, 3, 9]: target 3 is at rank 2, target 9 at rank 3, target 4 is absent -> a miss at every K
    result = evaluate(FixedList([5, 3, 9]), eval_set([[1], [2], [1]], [3, 9, 4]), n_items=9, ks=(1, 3))
    assert result.ranks.tolist() == [2, 3, 10]
    assert result.metrics["hr@3"] == pytest.approx(2 / 3)
    assert result.metrics["ndcg@3"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 3)
    assert result.top_items[0].tolist() == [5, 3, 9]


def test_generated_lists_with_history_excluded_are_generated_without_seen_items():
    result = evaluate(FixedList([5, 3, 9, 7]), eval_set([[5, 1]], [9]), n_items=9, ks=(1, 3), exclude_history=True)
    assert result.top_items[0].tolist() == [3, 9, 7] and result.ranks.tolist() == [2]


class HistoryEcho:
    """Generates a different list per user: the history, most recent first, then 6, 7, 8, 9.

    With ``exclude_seen`` the history is not generated: the list is the unseen items 6..9, filled to k.
    """

    generates_lists = True

    def eval(self):
        return self

    def generate(self, histories, k, exclude_seen=False):
        lists = []
        for row in histories.tolist():
            seen = [i for i in reversed(row) if i]
            lists.append(([] if exclude_seen else seen) + [i for i in (6, 7, 8, 9) if i not in seen])
        return torch.tensor([(items + [0] * k)[:k] for items in lists])


def test_seen_filtered_generated_lists_come_from_generation_without_the_history():
    # lists (K = 3): user 0 [7, 1, 6], user 1 [2, 6, 7], user 2 [8, 4, 3], user 3 [5, 6, 7];
    # generated without the seen items: [6, 8, 9], [6, 7, 8], [6, 7, 9], [6, 7, 8]. Targets 6, 8, 9, 7:
    # ranks 3, miss, miss, 3 before; 1, 3, 3, 2 after. Dropping the seen items from the first lists
    # instead ([6], [6, 7], [], [6, 7]) would rank 1, miss, miss, 2: filtered HR@3 (0.5) below unfiltered.
    data = eval_set([[1, 7], [2], [3, 4, 8], [5]], [6, 8, 9, 7])
    plain = evaluate(HistoryEcho(), data, n_items=9, ks=(1, 3), batch_size=3)
    excluded = evaluate(HistoryEcho(), data, n_items=9, ks=(1, 3), exclude_history=True, batch_size=3)
    assert plain.ranks.tolist() == [3, 10, 10, 3]
    assert excluded.ranks.tolist() == [1, 3, 3, 2]
    assert excluded.top_items.tolist() == [[6, 8, 9], [6, 7, 8], [6, 7, 9], [6, 7, 8]]
    assert excluded.metrics["hr@3"] == 1.0 >= plain.metrics["hr@3"] == 0.5
    assert excluded.metrics["hr@1"] >= plain.metrics["hr@1"]


class SeenLeak(HistoryEcho):
    """Ignores exclude_seen."""

    def generate(self, histories, k, exclude_seen=False):
        return super().generate(histories, k)


def test_a_generator_that_ignores_exclude_seen_is_caught():
    with pytest.raises(RuntimeError, match="exclude_seen"):
        evaluate(SeenLeak(), eval_set([[1, 7]], [6]), n_items=9, ks=(3,), exclude_history=True)


def test_metrics_beyond_the_generated_list_length_are_not_measured():
    # a list of 2 items judged at K = 1, 2, 3: K = 3 is NaN (not a miss), and the result carries the length
    result = evaluate(FixedList([5, 3]), eval_set([[1], [2]], [3, 4]), n_items=9, ks=(1, 2, 3))
    assert result.list_length == 2
    assert result.metrics["hr@2"] == 0.5 and result.metrics["coverage@2"] == pytest.approx(2 / 9)
    for metric in ("hr@3", "ndcg@3", "mrr@3", "coverage@3"):
        assert np.isnan(result.metrics[metric]), metric
    full = evaluate(FixedScores(9), eval_set([[1]], [3]), 9, ks=(1, 3))
    assert full.list_length is None and not any(np.isnan(v) for v in full.metrics.values())


def test_generated_lists_must_be_rankings():
    with pytest.raises(RuntimeError, match="same item twice"):
        evaluate(FixedList([5, 5, 9]), eval_set([[1]], [9]), n_items=9, ks=(3,))
    with pytest.raises(RuntimeError, match="outside"):
        evaluate(FixedList([5, 12, 9]), eval_set([[1]], [9]), n_items=9, ks=(3,))


class WidthRecorder(FixedScores):
    """FixedScores that remembers each batch's histories."""

    def __init__(self, n_items):
        super().__init__(n_items)
        self.batches = []

    def score(self, histories):
        self.batches.append(histories.clone())
        return super().score(histories)


def test_batches_group_similar_lengths_and_pad_only_to_their_own_longest_history():
    # lengths 1..9 in a shuffled order, batches of 3: the batches hold lengths 1-3, 4-6, 7-9
    rng = np.random.default_rng(0)
    lengths = rng.permutation(np.arange(1, 10))
    data = eval_set([rng.integers(1, 20, n).tolist() for n in lengths], rng.integers(1, 20, 9).tolist())
    model = WidthRecorder(20)
    evaluate(model, data, 20, ks=[5], batch_size=3)
    assert [batch.shape[1] for batch in model.batches] == [3, 6, 9]
    assert [sorted((batch > 0).sum(1).tolist()) for batch in model.batches] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    model = WidthRecorder(20)
    evaluate(model, data, 20, ks=[5], batch_size=3, by_length=False)  # users in their order, as before
    assert [batch.shape[1] for batch in model.batches] == [max(lengths[i : i + 3]) for i in (0, 3, 6)]


def test_length_order_is_stable_and_caps_long_histories():
    from bench.protocol.evaluation import length_order

    histories = Sequences.from_lists([[1] * n for n in (3, 1, 3, 700, 2, 600, 1)])
    assert length_order(histories).tolist() == [1, 6, 4, 0, 2, 3, 5]  # 700 and 600 are both >= the cap: original order
    assert length_order(histories, cap=10_000).tolist() == [1, 6, 4, 0, 2, 5, 3]


def synthetic_users(n_users=300, n_items=40, seed=0):
    """Histories of 1..30 items (some longer than the models' max_len), shuffled lengths; targets random."""
    rng = np.random.default_rng(seed)
    histories = [rng.integers(1, n_items + 1, int(rng.integers(1, 31))).tolist() for _ in range(n_users)]
    return eval_set(histories, rng.integers(1, n_items + 1, n_users).tolist())


@pytest.mark.parametrize("exclude_history", [False, True])
@pytest.mark.parametrize("model_name", ["sasrec", "pop"])
def test_length_batching_gives_the_results_of_batching_in_user_order(model_name, exclude_history):
    from baselines.pop import Pop, PopConfig
    from baselines.sasrec import SASRec, SASRecConfig

    n_items = 40
    data = synthetic_users(n_items=n_items)
    torch.manual_seed(0)
    if model_name == "pop":
        model = Pop(PopConfig(), n_items)
        model.fit(Sequences.from_lists([[1, 2, 2, 3, 3, 3], [5, 7, 7]]), None, lambda fitted: {})  # many tied items
    else:
        model = SASRec(SASRecConfig(max_len=12, hidden_size=16, n_heads=2), n_items)
    ks = (5, 10, 20)
    sorted_result = evaluate(model, data, n_items, ks=ks, exclude_history=exclude_history, batch_size=32)
    unsorted = evaluate(model, data, n_items, ks=ks, exclude_history=exclude_history, batch_size=32, by_length=False)
    np.testing.assert_array_equal(sorted_result.ranks, unsorted.ranks)
    np.testing.assert_array_equal(sorted_result.top_items, unsorted.top_items)
    assert sorted_result.metrics == unsorted.metrics


def test_length_batching_keeps_generated_lists_in_the_users_order():
    data = eval_set([[1, 7], [2], [3, 4, 8], [5]], [6, 8, 9, 7])
    for exclude_history in (False, True):
        results = [evaluate(HistoryEcho(), data, n_items=9, ks=(1, 3), exclude_history=exclude_history, batch_size=2,
                            by_length=by_length) for by_length in (True, False)]
        assert results[0].top_items.tolist() == results[1].top_items.tolist()
        assert results[0].ranks.tolist() == results[1].ranks.tolist() and results[0].metrics == results[1].metrics
        assert results[0].list_length == results[1].list_length == 3


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_non_finite_item_score_raises_diverged_but_the_padding_column_is_ignored(bad):
    class OneBad(FixedScores):
        def __init__(self, n_items, column):
            super().__init__(n_items)
            self.column = column

        def score(self, histories):
            scores = super().score(histories)
            scores[-1, self.column] = bad
            return scores

    data = eval_set([[1], [2, 3], [4]], [2, 3, 4])
    with pytest.raises(TrialDiverged, match="NaN or infinite"):
        evaluate(OneBad(5, column=5), data, 5, ks=[1])
    assert evaluate(OneBad(5, column=0), data, 5, ks=[1]).ranks.tolist() == [4, 3, 2]  # column 0 is padding
