"""Metrics checked against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from bench.protocol.metrics import coverage, per_user_metrics, ranks_from_lists, ranks_from_scores, summarize

NEG = -math.inf


def test_rank_counts_ties_against_the_target():
    # items 1..5; item 4 ties with item 2 at the top -> pessimistic rank 2
    scores = torch.tensor([[NEG, 0.5, 0.9, 0.1, 0.9, 0.3]])
    assert ranks_from_scores(scores, torch.tensor([4])).tolist() == [2]
    assert ranks_from_scores(scores, torch.tensor([2])).tolist() == [2]
    assert ranks_from_scores(scores, torch.tensor([3])).tolist() == [5]


def test_constant_scores_get_the_worst_rank():
    scores = torch.zeros(2, 6)
    scores[:, 0] = NEG
    assert ranks_from_scores(scores, torch.tensor([1, 5])).tolist() == [5, 5]


def test_excluded_target_is_a_miss():
    scores = torch.tensor([[NEG, 0.5, NEG, 0.1]])
    assert ranks_from_scores(scores, torch.tensor([2])).tolist() == [4]  # n_items + 1


def test_metric_values_by_hand():
    m = per_user_metrics(np.array([1, 2, 3, 10, 11]), ks=[10])
    np.testing.assert_allclose(m["hr@10"], [1, 1, 1, 1, 0])
    np.testing.assert_allclose(m["ndcg@10"], [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(11), 0.0])
    np.testing.assert_allclose(m["mrr@10"], [1.0, 0.5, 1 / 3, 0.1, 0.0])


def test_k_boundary():
    m = per_user_metrics(np.array([5, 6]), ks=[5])
    assert m["hr@5"].tolist() == [1.0, 0.0]
    assert m["ndcg@5"][0] == pytest.approx(1 / math.log2(6))
    assert m["mrr@5"].tolist() == [pytest.approx(0.2), 0.0]


def test_ranks_from_lists():
    lists = torch.tensor([[3, 7, 2], [3, 7, 2], [4, 0, 0]])
    assert ranks_from_lists(lists, torch.tensor([7, 9, 4]), n_items=10).tolist() == [2, 11, 1]


def test_coverage_counts_distinct_items_and_ignores_empty_slots():
    top = np.array([[1, 2], [2, 3], [2, 0]])
    assert coverage(top, 1, n_items=5) == pytest.approx(1 / 5 * 2)  # {1, 2}
    assert coverage(top, 2, n_items=5) == pytest.approx(3 / 5)  # {1, 2, 3}


def test_summarize_is_the_mean_of_per_user_values():
    ranks = np.array([1, 4])
    top = np.array([[1, 2, 3, 4], [2, 1, 3, 4]])
    s = summarize(ranks, top, ks=[1, 4], n_items=8)
    assert s["hr@1"] == 0.5 and s["hr@4"] == 1.0
    assert s["ndcg@4"] == pytest.approx((1.0 + 1 / math.log2(5)) / 2)
    assert s["mrr@4"] == pytest.approx((1.0 + 0.25) / 2)
    assert s["coverage@1"] == pytest.approx(2 / 8) and s["coverage@4"] == pytest.approx(4 / 8)
