"""GRU4Rec: learns the planted pattern; left padding is invisible."""

import torch

from baselines.gru4rec import GRU4Rec, GRU4RecConfig, right_aligned_to_left
from bench.run.config import ProtocolConfig
from bench.run.trial import make_trial_spec, run_trial
from tests.planted import planted_split


def test_gru4rec_learns_planted_pattern():
    split = planted_split()
    spec = make_trial_spec("planted", "gru4rec", "gru4rec", 0, {"max_len": 20, "hidden_size": 32},
                           {"epochs": 40, "batch_size": 64, "patience": 3, "lr": 0.005}, ProtocolConfig())
    record, _ = run_trial(spec, split)
    assert record["test_hr@10"] > 0.9


def test_padding_moves_right_and_is_invisible():
    tokens = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 7]])
    packed, lengths = right_aligned_to_left(tokens)
    assert packed.tolist() == [[3, 4, 0, 0], [1, 2, 3, 4], [7, 0, 0, 0]] and lengths.tolist() == [2, 4, 1]
    torch.manual_seed(0)
    model = GRU4Rec(GRU4RecConfig(max_len=8, hidden_size=8), n_items=10).eval()
    padded = model.score(torch.tensor([[0, 0, 0, 3, 4, 5]]))
    torch.testing.assert_close(model.score(torch.tensor([[3, 4, 5]])), padded)
    assert padded.shape == (1, 11) and torch.isneginf(padded[0, 0])
