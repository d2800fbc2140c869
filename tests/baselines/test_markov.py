import torch

from baselines.markov import Markov, MarkovConfig
from bench.data.sequences import Sequences
from bench.run.config import ProtocolConfig
from bench.run.trial import make_trial_spec, run_trial
from tests.planted import planted_split


def _fitted(rows, n_items):
    model = Markov(MarkovConfig(), n_items=n_items)
    model.fit(Sequences.from_lists(rows), trainer=None, validate=lambda m: {"ndcg@10": 0.0})
    return model


def _order(scores):
    return sorted(range(1, scores.shape[0]), key=lambda item: -scores[item].item())


def test_items_rank_by_transitions_from_the_last_item_within_users_only():
    # 1 -> 2 twice, 1 -> 3 once; the pair (3, 1) across the two users' sequences is no transition
    model = _fitted([[1, 2, 1, 3], [1, 2], [4, 4, 4, 4]], n_items=4)  # occurrences: 4 four times, 1 three, 2 two, 3 one
    scores = model.score(torch.tensor([[0, 0, 1], [0, 4, 3]]))
    assert _order(scores[0]) == [2, 3, 4, 1]  # the two successors of 1 by count, then popularity
    assert _order(scores[1]) == [4, 1, 2, 3]  # 3 never led anywhere: popularity alone


def test_popularity_breaks_ties_between_equal_counts_and_never_outranks_a_transition():
    # 1 -> 2, 1 -> 3, 1 -> 4 once each; 3 is the most popular, then 4; 5 never followed 1 but is the most popular item
    model = _fitted([[1, 2], [1, 3, 3], [1, 4], [3, 4], [5, 5, 5, 5, 5]], n_items=5)
    scores = model.score(torch.tensor([[0, 1]]))[0]
    assert _order(scores) == [3, 4, 2, 5, 1]
    assert scores[1:].float().unique().numel() == 5  # no two items tie after the cast the protocol applies


def test_equal_transition_counts_and_popularity_still_tie():
    model = _fitted([[1, 2], [1, 3]], n_items=3)
    scores = model.score(torch.tensor([[0, 1]]))[0]
    assert scores[2] == scores[3] > scores[1]


def test_markov_learns_the_planted_pattern():
    spec = make_trial_spec("planted", "markov", "markov", 0, {}, {}, ProtocolConfig())
    record, _ = run_trial(spec, planted_split())
    assert record["test_hr@10"] > 0.85
