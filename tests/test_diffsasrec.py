"""DiffSASRec: the LLaDA objective by hand, masking, single- and multi-step inference, learning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.config import ProtocolConfig, build_config
from bench.errors import DrbenchError
from bench.trial import make_trial_spec, run_trial
from datasets.sequences import Sequences
from diffusion.diffsasrec import DiffSASRec, DiffSASRecConfig
from tests.planted import planted_split


def tiny(**changes):
    torch.manual_seed(0)
    return DiffSASRec(DiffSASRecConfig(max_len=8, hidden_size=8, n_heads=1, dropout=0.0, **changes), n_items=9)


def test_training_masks_only_real_items_at_rate_p():
    model = tiny(eps=0.5)
    train = Sequences.from_lists([[1, 2, 3, 4, 5, 6, 7, 8]] * 400 + [[1, 2]] * 400)
    batch = next(iter(model.training_batches(train, 800, np.random.default_rng(0))))
    inputs, labels, p_mask = batch["inputs"].numpy(), batch["labels"].numpy(), batch["p_mask"].numpy()
    masked = inputs == model.mask_token
    assert (labels > 0).tolist() == masked.tolist()
    assert not masked[inputs == 0].any()
    assert p_mask.min() >= 0.5 and p_mask.max() <= 1.0  # p = (1 - eps) t + eps
    assert batch["n_real"].item() == 400 * 8 + 400 * 2
    full = (inputs > 0).sum(axis=1) == 8  # batches are shuffled: find the long rows
    assert full.sum() == 400
    assert abs(masked[full].mean() - p_mask[full].mean()) < 0.03


def test_loss_is_cross_entropy_over_p_normalised_by_real_positions():
    model = tiny()
    inputs = torch.tensor([[0, 0, 1, 10, 3, 10], [0, 0, 0, 0, 10, 5]])  # 10 = [MASK]
    labels = torch.tensor([[0, 0, 0, 2, 0, 4], [0, 0, 0, 0, 7, 0]])
    p_mask = torch.tensor([0.5, 0.25])
    loss = model.loss({"inputs": inputs, "labels": labels, "p_mask": p_mask, "n_real": torch.tensor(6)})
    logits = model.logits(model.encoder(inputs))
    ce = lambda row, pos: F.cross_entropy(logits[row, pos][None], labels[row, pos][None])
    expected = (ce(0, 3) / 0.5 + ce(0, 5) / 0.5 + ce(1, 4) / 0.25) / 6
    torch.testing.assert_close(loss, expected)


def test_single_step_appends_one_mask_and_never_sees_the_target():
    model = tiny().eval()
    seen = []
    model.encoder.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    scores = model.score(torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8]]))
    assert seen[0].tolist() == [[2, 3, 4, 5, 6, 7, 8, model.mask_token]]
    assert scores.shape == (1, 10) and torch.isneginf(scores[0, 0])
    torch.testing.assert_close(model.score(torch.tensor([[2, 3, 4, 5, 6, 7, 8]])), scores)


@pytest.mark.parametrize("steps", [1, 3, 20])
def test_multi_step_returns_k_distinct_real_items(steps):
    model = tiny(inference="multi", steps=steps).eval()
    assert model.generates_lists
    top = model.generate(torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), k=5)  # k < n_masks: k slots
    assert top.shape == (2, 5)
    for row in top.tolist():
        assert len(set(row)) == 5 and all(1 <= item <= 9 for item in row)


def test_multi_step_validates_with_single_step_while_fitting():
    model = tiny(inference="multi")

    class Recorder:
        def fit(self, fitted, train, validate):
            return fitted.generates_lists

    assert model.fit(None, Recorder(), None) is False
    assert model.generates_lists is True


@pytest.mark.parametrize("values, message", [({"inference": "many"}, "inference"), ({"eps": 0.0}, "eps"),
                                             ({"steps": 0}, "steps"), ({"threshold_decay": 1.0}, "threshold"),
                                             ({"n_masks": 8, "max_len": 8}, "n_masks")])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(DrbenchError, match=message):
        build_config(DiffSASRecConfig, values, "models.diffsasrec.params")


@pytest.mark.parametrize("seed", [0, 2])
def test_diffsasrec_learns_planted_pattern_single_and_multi_step(seed):
    # Masked inputs leave a plateau of 10-25 epochs before the pattern is found, hence the patience
    # (with 6, seeds 2 and 7 of 0-7 stopped on it).
    split = planted_split()
    params = {"max_len": 30, "hidden_size": 32, "dropout": 0.1}
    training = {"epochs": 100, "batch_size": 64, "patience": 15, "lr": 0.005}
    single, _ = run_trial(make_trial_spec("planted", "d", "diffsasrec", seed, params, training, ProtocolConfig()), split)
    multi, _ = run_trial(make_trial_spec("planted", "d", "diffsasrec", seed, {**params, "inference": "multi", "steps": 5},
                                         training, ProtocolConfig()), split)
    assert single["test_hr@10"] > 0.85 and single["ranking"] == "full"
    # Generating the 10-item list step by step loses a little against full scoring: 0.72 was seen for
    # seed 0 on an H100 (other random streams than the CPU's); the untrained level is about 0.2.
    assert multi["test_hr@10"] > 0.65 and multi["ranking"] == "generated"
    assert multi["test_hr@20"] == multi["test_hr@10"]  # a list of n_masks = 10 items


def test_sft_batches_mask_only_the_last_item():
    model = tiny(sft_epochs=1)
    model._stage = "sft"
    train = Sequences.from_lists([[1, 2, 3], [4], [5, 6]])
    batch = next(iter(model.training_batches(train, 10, np.random.default_rng(0))))
    rows = sorted(zip(batch["inputs"].tolist(), batch["labels"].tolist()))
    # [4] alone has no history to predict from; windows are left-padded to max_len = 8
    assert rows == [([0] * 6 + [5, 10], [0] * 7 + [6]), ([0] * 5 + [1, 2, 10], [0] * 7 + [3])]
    assert batch["p_mask"].tolist() == [1.0, 1.0] and batch["n_real"].item() == 2


class ScriptedTrainer:
    """Stands in for bench.trainer.Trainer: each stage perturbs the weights and reports a scripted validation score."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.stages = []

    def with_epochs(self, epochs):
        self.stages.append(epochs)
        return self

    def fit(self, model, train, validate):
        from bench.models import FitSummary

        with torch.no_grad():
            model.encoder.item_embedding.weight.add_(1.0)
        score = self.scores.pop(0)
        history = [{"epoch": 1, "valid_ndcg@10": score, "best_valid": score}, {"epoch": 2, "valid_ndcg@10": score / 2, "best_valid": score}]
        return FitSummary(epochs_run=2, best_epoch=1, train_time_s=1.0, history=history)


@pytest.mark.parametrize("sft_score, kept_sft", [(0.6, True), (0.4, False)])
def test_sft_stage_is_kept_only_when_it_beats_pretraining_on_validation(sft_score, kept_sft):
    model = tiny(sft_epochs=3)
    trainer = ScriptedTrainer([0.5, sft_score])
    before = model.encoder.item_embedding.weight.detach().clone()
    summary = model.fit(None, trainer, None)
    assert trainer.stages == [3]
    shift = (model.encoder.item_embedding.weight - before).mean().item()
    assert shift == pytest.approx(2.0 if kept_sft else 1.0)  # pre-trained weights restored when SFT did not help
    assert [h["epoch"] for h in summary.history] == [1, 2, 3, 4]
    assert [h.get("stage") for h in summary.history] == [None, None, "sft", "sft"]
    assert summary.epochs_run == 4 and summary.best_epoch == (3 if kept_sft else 1)
    assert model._stage == "diffusion"
