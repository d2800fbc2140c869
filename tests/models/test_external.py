"""External lists replayed through the evaluator: each user gets its own list, judged like a generator's."""

import numpy as np
import pytest
import torch

from bench.data.sequences import Sequences
from bench.models.external import ExternalLists, ExternalListsConfig, decode_lists, encode_lists
from bench.protocol.evaluation import evaluate
from bench.protocol.metrics import ranks_from_lists
from bench.protocol.splits import EvalSet

N_ITEMS = 9
# rows 0, 2 and 3 have the same input but their own lists: a model that knows its users (matrix factorisation) does that
INPUTS = [[1, 2], [3], [1, 2], [1, 2], [4, 5, 6], [7]]
LISTS = np.array([[3, 4, 5], [1, 2, 4], [5, 1, 7], [8, 9, 3], [1, 7, 0], [2, 1, 7]])
TARGETS = np.array([4, 2, 7, 8, 7, 9])


def replay(lists=LISTS, inputs=INPUTS):
    return ExternalLists(ExternalListsConfig("lists.tsv", "0" * 64, lists.shape[1]), N_ITEMS, lists, Sequences.from_lists(inputs))


def eval_set(inputs=INPUTS, targets=TARGETS):
    return EvalSet(np.arange(len(inputs)), Sequences.from_lists(inputs), targets)


def expected_ranks(lists):
    return ranks_from_lists(torch.from_numpy(lists).long(), torch.from_numpy(TARGETS), N_ITEMS).numpy()


@pytest.mark.parametrize("batch_size, by_length", [(2, True), (256, True), (1, False), (4, False)])
def test_every_user_is_judged_on_its_own_list_however_the_evaluator_batches(batch_size, by_length):
    model = replay()
    for _ in range(3):  # several passes (headline, filtered): users with one input keep their own lists
        result = evaluate(model, eval_set(), N_ITEMS, ks=(1, 2, 3), batch_size=batch_size, by_length=by_length)
        assert result.ranks.tolist() == expected_ranks(LISTS).tolist()
        assert result.top_items.tolist() == LISTS.tolist()
    assert result.ranks.tolist() == [2, 2, 3, 1, 2, 10]  # a target absent from its list is a miss (n_items + 1)


def test_with_the_history_excluded_seen_items_leave_the_list_and_the_rest_moves_up():
    model = replay()
    result = evaluate(model, eval_set(), N_ITEMS, ks=(1, 2, 3), exclude_history=True)
    # row 2 (input 1, 2) drops 1 but rows 0 and 3, with the same input, keep their lists; row 5 (input 7) drops 7
    filtered = np.array([[3, 4, 5], [1, 2, 4], [5, 7, 0], [8, 9, 3], [1, 7, 0], [2, 1, 0]])
    assert result.top_items.tolist() == filtered.tolist()
    assert result.ranks.tolist() == expected_ranks(filtered).tolist()


def test_metrics_beyond_the_list_length_are_not_measured():
    result = evaluate(replay(LISTS[:, :2]), eval_set(), N_ITEMS, ks=(1, 2, 5))
    assert result.list_length == 2
    assert not np.isnan(result.metrics["hr@2"]) and np.isnan(result.metrics["hr@5"]) and np.isnan(result.metrics["ndcg@5"])


def test_the_lists_survive_the_trip_through_a_spec():
    assert decode_lists(encode_lists(LISTS)).tolist() == LISTS.tolist()
    assert isinstance(encode_lists(LISTS), str)


def test_an_input_that_is_no_test_input_is_an_error_not_a_silent_list():
    with pytest.raises(RuntimeError, match="not a test input"):
        replay().generate(torch.tensor([[0, 9]]), 3)
