"""SASRec: learns the planted pattern with both losses; causal and padding-invariant."""

import pytest
import torch

from baselines.sasrec import SASRec, SASRecConfig
from bench.run.config import ProtocolConfig
from bench.run.trial import make_trial_spec, run_trial
from tests.planted import planted_split


@pytest.mark.parametrize("loss", ["ce", "bce", "gbce", "sampled"])
def test_sasrec_learns_planted_pattern(loss):
    split = planted_split()
    spec = make_trial_spec("planted", f"sasrec-{loss}", "sasrec", 0, {"loss": loss, "max_len": 20, "hidden_size": 32,
                                                                                "n_negatives": 1 if loss == "bce" else 16},
                           {"epochs": 40, "batch_size": 64, "patience": 3, "lr": 0.005}, ProtocolConfig())
    record, arrays = run_trial(spec, split)
    assert record["test_hr@10"] > 0.9
    assert record["status"] == "ok" and len(arrays["test_ranks"]) == len(split.test)


def test_sasrec_is_causal_and_ignores_left_padding():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(max_len=8, hidden_size=16, dropout=0.0), n_items=20).eval()
    history = torch.tensor([[0, 0, 0, 3, 4, 5, 6, 7]])
    states = model.encoder(history)
    changed = history.clone()
    changed[0, -1] = 9
    # changing the last item must not move any earlier position's state
    torch.testing.assert_close(model.encoder(changed)[0, :-1], states[0, :-1])
    # left padding is invisible: the same items without padding score identically
    scores = model.score(history)
    assert scores.shape == (1, 21)
    torch.testing.assert_close(model.score(history[:, 3:]), scores)


def test_sasrec_config_rejects_bad_values():
    from bench.run.config import build_config
    from bench.errors import DrbenchError

    with pytest.raises(DrbenchError, match="max_len"):
        build_config(SASRecConfig, {"max_len": 0}, "models.sasrec.params")
    with pytest.raises(DrbenchError, match="loss"):
        build_config(SASRecConfig, {"loss": "hinge"}, "models.sasrec.params")


@pytest.mark.parametrize("t, expected", [(0.0, 1.0), (1.0, 16 / 100), (0.5, 16 / 100 * (0.5 * (1 - 100 / 16) + 100 / 16))])
def test_gbce_beta_by_hand(t, expected):
    # alpha = k / (n_items - 1) = 16 / 100; t = 0 is plain BCE, t = 1 weights the positive by alpha
    model = SASRec(SASRecConfig(loss="gbce", n_negatives=16, gbce_t=t), n_items=101)
    assert model._positive_weight() == pytest.approx(expected)


def test_sampled_softmax_never_uses_the_users_own_items_as_negatives():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(loss="sampled", n_negatives=200, max_len=4, hidden_size=8), n_items=5)
    batch = {"inputs": torch.tensor([[1, 2, 3, 4]]), "targets": torch.tensor([[2, 3, 4, 5]])}
    # every item 1..5 is the user's own: all negatives are masked, so the loss is exactly zero
    assert model.loss(batch).item() == pytest.approx(0.0, abs=1e-6)
