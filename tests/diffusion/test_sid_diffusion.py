"""SID masked diffusion: the masking schemes, the 1/p-weighted loss by hand, steps, constrained generation, learning."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.models.batching import Batching
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


# ---------------------------------------------------------------- DiffGM's masking strategies, any-order unmasking

def test_subset_masking_masks_a_uniformly_random_set_of_m_digits():
    model, _ = diffusion(masking="subset")
    masked, p = model.masking_rates(30000, 3, np.random.default_rng(0))
    np.testing.assert_allclose(p, masked.sum(1) / 3)
    assert set(masked.sum(1).tolist()) == {1, 2, 3}
    single = masked[masked.sum(1) == 1]
    np.testing.assert_allclose(single.mean(0), [1 / 3] * 3, atol=0.02)  # any digit, not only the last (sequential)


def test_guided_masking_masks_the_least_confident_digits_in_the_loss():
    model, _ = diffusion(masking="guided")
    histories, targets = torch.tensor([[0, 1, 2, 3], [0, 0, 4, 5], [6, 7, 8, 9]]), torch.tensor([6, 7, 1])
    order = model.confidence_order(histories)
    states = model.target_states(histories, torch.full((3, 3), MASK))
    confidence = torch.stack([model.embedding.digit_logits(states[:, d], d).softmax(-1).amax(-1) for d in range(3)], 1)
    assert order.tolist() == confidence.argsort(dim=1).tolist()
    count = torch.tensor([[True, False, False], [True, True, False], [True, True, True]])  # mask 1, 2 and 3 digits
    p_mask = torch.tensor([1 / 3, 2 / 3, 1.0])
    loss = model.loss({"histories": histories, "targets": targets, "masked": count, "p_mask": p_mask})
    explicit = torch.zeros_like(count).scatter(1, order, count)
    assert explicit[0, order[0, 0]] and explicit.sum().item() == 6
    model.config = dataclasses.replace(model.config, masking="random")
    torch.testing.assert_close(loss, model.loss({"histories": histories, "targets": targets, "masked": explicit, "p_mask": p_mask}))
    model.config = dataclasses.replace(model.config, guided_select="most")
    assert model.confidence_order(histories).tolist() == confidence.argsort(dim=1, descending=True).tolist()


def test_mask_views_repeat_each_example_with_its_own_mask():
    model, split = diffusion(masking="subset", mask_views=3, targets_per_user=1)
    batch = next(iter(model.training_batches(split.train, Batching(8), np.random.default_rng(0))))
    n = len(batch["targets"]) // 3
    assert torch.equal(batch["targets"], batch["targets"][:n].repeat(3))
    assert torch.equal(batch["histories"], batch["histories"][:n].repeat(3, 1))
    assert not torch.equal(batch["masked"][:n], batch["masked"][n : 2 * n])


@pytest.mark.parametrize("unmasking", ["confidence", "joint", "random_order"])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_any_order_generation_returns_distinct_real_unseen_items(unmasking, steps):
    model, split = diffusion(steps=steps, unmasking=unmasking, beam_size=10)
    histories = torch.tensor([list(range(1, 21)), [0] * 17 + [3, 9, 27]])
    for exclude_seen in (False, True):
        top = model.generate(histories, 10, exclude_seen=exclude_seen)
        assert top.shape == (2, 10)
        for row, seen in zip(top.tolist(), histories.tolist()):
            real = [item for item in row if item]
            assert real == row[: len(real)] and len(set(real)) == len(real) >= 5 and all(1 <= i <= split.n_items for i in real)
            assert not exclude_seen or not set(real) & set(seen)
    wide, _ = diffusion(steps=steps, unmasking=unmasking, beam_size=10, beam_act=40)
    top = wide.generate(histories, 10, exclude_seen=True)
    assert (top > 0).all() and all(len(set(row)) == 10 for row in top.tolist())
    assert sorted(top[0].tolist()) == list(range(21, 31))  # the only 10 unseen items


def test_code_order_through_the_any_order_search_is_the_trie_search():
    model, _ = diffusion(steps=2, beam_size=10)
    histories = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]])
    by_trie = model.generate(histories, 10)
    model.config = dataclasses.replace(model.config, beam_act=11)  # any beam_act routes to the any-order search
    wider = model.generate(histories, 10)
    assert by_trie.shape == wider.shape == (2, 10) and (wider > 0).all()
    from bench.models.sid_decoding import masked_beam_search
    n_digits, batch = 3, 2

    def predict_all(values, known):
        width = values.shape[1]
        tokens = model.embedding.digit_tokens(values).masked_fill(~known, MASK).reshape(batch * width, n_digits)
        states = model.target_states(histories.repeat_interleave(width, dim=0), tokens)
        return [model.embedding.digit_logits(states[:, d], d).log_softmax(-1).reshape(batch, width, -1) for d in range(n_digits)]

    same = masked_beam_search(model.table_on("cpu"), predict_all, [2, 1], batch, 10, 10, order="fixed", digit_order=[0, 1, 2])
    assert same.tolist() == by_trie.tolist()


def test_unconstrained_generation_gives_real_unseen_items_only():
    model, split = diffusion(unmasking="joint", constrained=False, beam_size=10)
    histories = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]])
    top = model.generate(histories, 10, exclude_seen=True)
    for row, seen in zip(top.tolist(), histories.tolist()):
        real = [item for item in row if item]
        assert real == row[: len(real)] and len(set(real)) == len(real) and all(1 <= i <= split.n_items for i in real)
        assert not set(real) & set(seen)


@pytest.mark.parametrize("values, message", [({"unmasking": "entropy"}, "unmasking"), ({"guided_select": "some"}, "guided_select"),
                                             ({"mask_views": 0}, "mask_views"), ({"beam_act": 5}, "beam_act"),
                                             ({"label_smoothing": 1.0}, "label_smoothing")])
def test_config_rejects_bad_decoding_values(values, message):
    with pytest.raises(DrbenchError, match=message):
        build_config(SidDiffusionConfig, values, "models.sid_diffusion.params")


@pytest.mark.parametrize("params", [{"masking": "subset", "unmasking": "confidence"},
                                    {"masking": "guided", "unmasking": "joint", "quantizer": "pq", "pca_dim": 8}])
def test_sid_diffusion_learns_planted_pattern_with_any_order_unmasking(params):
    training = {"epochs": 12, "batch_size": 128, "lr": 0.01, "eval_every": 4, "patience": 2}
    record, _ = run_trial(make_trial_spec("planted", "sid", "sid_diffusion", 0, {**SMALL, "dropout": 0.0, "steps": 3, **params},
                                          training, ProtocolConfig(), [1, 3]), planted_split())
    by_steps = {entry["inference_steps"]: entry["test_hr@10"] for entry in record["steps_sweep"]}
    assert by_steps[1] > 0.85 and by_steps[3] > 0.85


@pytest.mark.parametrize("unmasking", ["confidence", "joint"])
def test_any_order_generation_of_a_user_does_not_depend_on_the_batch(unmasking):
    model, _ = diffusion(unmasking=unmasking, steps=2, beam_size=10)
    histories = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6], [0, 7, 8, 9]])
    for exclude_seen in (False, True):
        together = model.generate(histories, 10, exclude_seen=exclude_seen)
        alone = torch.cat([model.generate(histories[row : row + 1], 10, exclude_seen=exclude_seen) for row in range(3)])
        assert together.tolist() == alone.tolist()
