import torch

from baselines.pop import Pop, PopConfig
from bench.data.sequences import Sequences


def test_pop_scores_training_counts():
    model = Pop(PopConfig(), n_items=4)
    train = Sequences.from_lists([[1, 2, 2], [2, 3]])
    model.fit(train, trainer=None, validate=lambda m: {"ndcg@10": 0.0})
    scores = model.score(torch.zeros(2, 3, dtype=torch.long))
    assert scores.tolist() == [[0, 1, 3, 1, 0]] * 2
