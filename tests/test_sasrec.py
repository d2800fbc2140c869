"""SASRec: learns the planted pattern with both losses; causal and padding-invariant."""

import pytest
import torch

from baselines.sasrec import SASRec, SASRecConfig
from bench.config import ProtocolConfig
from bench.trial import make_trial_spec, run_trial
from tests.planted import planted_split


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_sasrec_learns_planted_pattern(loss):
    split = planted_split()
    spec = make_trial_spec("planted", f"sasrec-{loss}", "sasrec", 0, {"loss": loss, "max_len": 20, "hidden_size": 32},
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
    from bench.config import build_config
    from bench.errors import DrbenchError

    with pytest.raises(DrbenchError, match="max_len"):
        build_config(SASRecConfig, {"max_len": 0}, "models.sasrec.params")
    with pytest.raises(DrbenchError, match="loss"):
        build_config(SASRecConfig, {"loss": "hinge"}, "models.sasrec.params")
