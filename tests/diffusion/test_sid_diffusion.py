"""SID masked diffusion: the masking schemes, the 1/p-weighted loss by hand, steps, constrained generation, learning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.run.config import ProtocolConfig, build_config
from bench.errors import DrbenchError
from bench.run.trial import make_trial_spec, run_trial
from diffusion.sid_diffusion import MASK, SidDiffusion, SidDiffusionConfig
from tests.planted import planted_split
from tests.baselines.test_tiger import SMALL, untrained


@pytest.fixture(autouse=True)
def private_sid_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRBENCH_SID_CACHE", str(tmp_path / "sids"))


def diffusion(**changes):
    return untrained(SidDiffusion, SidDiffusionConfig, **{"steps": 3, **changes})


def test_random_masking_masks_each_digit_at_the_example_rate():
    model, _ = diffusion(masking="random", eps=0.2)
    masked, p = model.masking_rates(20000, 3, np.random.default_rng(0))
    assert p.min() >= 0.2 and p.max() <= 1.0
    assert abs(masked.mean() - p.mean()) < 0.01
    high = p > 0.9
    assert masked[high].mean() > 0.9


def test_fixed_masking_draws_rates_from_the_list_and_sequential_masks_a_suffix():
    model, _ = diffusion(masking="fixed", mask_probs=(0.5, 1.0))
    masked, p = model.masking_rates(4000, 3, np.random.default_rng(0))
    assert set(p.tolist()) == {0.5, 1.0} and masked[p == 1.0].all()
    model, _ = diffusion(masking="sequential")
    masked, p = model.masking_rates(4000, 3, np.random.default_rng(0))
    assert {tuple(row) for row in masked.tolist()} == {(False, False, True), (False, True, True), (True, True, True)}
    np.testing.assert_allclose(p, masked.sum(1) / 3)


def test_loss_is_masked_digit_cross_entropy_over_p_divided_by_all_digits():
    model, _ = diffusion()
    histories, targets = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 5]]), torch.tensor([6, 7])
    masked = torch.tensor([[False, True, True], [True, False, False]])
    p_mask = torch.tensor([0.5, 0.25])
    loss = model.loss({"histories": histories, "targets": targets, "masked": masked, "p_mask": p_mask})
    codes = model.codes[targets]
    states = model.target_states(histories, model.embedding.digit_tokens(codes).masked_fill(masked, MASK))
    ce = lambda row, digit: F.cross_entropy(model.embedding.digit_logits(states[row, digit], digit)[None], codes[row, digit][None])
    torch.testing.assert_close(loss, (ce(0, 1) / 0.5 + ce(0, 2) / 0.5 + ce(1, 0) / 0.25) / 6)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_generation_at_every_step_count_returns_distinct_real_items(steps):
    model, split = diffusion(steps=steps)
    top = model.generate(torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]]), 10)
    assert top.shape == (2, 10)
    for row in top.tolist():
        assert len(set(row)) == 10 and all(1 <= item <= split.n_items for item in row)


def test_steps_are_a_run_time_knob_within_the_code_length():
    model, _ = diffusion()
    assert model.has_denoising_steps and model.inference_steps == 3
    model.set_inference_steps(1)
    assert model.inference_steps == 1
    with pytest.raises(DrbenchError, match="steps must be in \\[1, levels \\+ 1 = 3\\]"):
        model.set_inference_steps(4)


@pytest.mark.parametrize("values, message", [({"masking": "cosine"}, "masking"), ({"mask_probs": [0.0, 0.5]}, "mask_probs"),
                                             ({"eps": 0.0}, "eps"), ({"steps": 0}, "steps")])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(DrbenchError, match=message):
        build_config(SidDiffusionConfig, values, "models.sid_diffusion.params")


def test_sid_diffusion_learns_planted_pattern_in_one_and_in_all_steps():
    training = {"epochs": 12, "batch_size": 128, "lr": 0.01, "eval_every": 4, "patience": 2}
    params = {**SMALL, "dropout": 0.0, "steps": 3}
    record, _ = run_trial(make_trial_spec("planted", "sid", "sid_diffusion", 0, params, training, ProtocolConfig(), [1, 3]),
                          planted_split())
    by_steps = {entry["inference_steps"]: entry["test_hr@10"] for entry in record["steps_sweep"]}
    assert record["ranking"] == "generated" and record["inference_steps"] == 3
    assert by_steps[1] > 0.85 and by_steps[3] > 0.85


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_generation_with_seen_items_excluded_at_every_step_count(steps):
    # digits unmasked together (steps < 3) share one prediction: prefixes leading only to seen items are still pruned
    model, split = diffusion(steps=steps, beam_size=10)
    histories = torch.tensor([list(range(1, 21)), [0] * 17 + [3, 9, 27]])
    top = model.generate(histories, 10, exclude_seen=True)
    assert top.shape == (2, 10)
    assert sorted(top[0].tolist()) == list(range(21, 31))  # the only 10 unseen items, all found by a beam of 10
    assert len(set(top[1].tolist())) == 10 and not {3, 9, 27} & set(top[1].tolist()) and 0 not in top[1].tolist()
    torch.testing.assert_close(model.generate(histories, 10, exclude_seen=True), top)
