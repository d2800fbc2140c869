"""DiffuRec: every-prefix training examples, the loss by hand, padding, deterministic reverse sampling, learning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.run.config import TrainConfig, build_config
from bench.errors import DrbenchError
from bench.protocol.evaluation import evaluate
from bench.models.base import model_entry
from bench.run.trainer import Trainer
from bench.data.sequences import Sequences
from diffusion.diffurec import DiffuRec, DiffuRecConfig
from tests.planted import planted_split
from bench.models.batching import Batching


def tiny(n_items=9, **changes):
    torch.manual_seed(0)
    config = DiffuRecConfig(**{"max_len": 4, "hidden_size": 8, "n_blocks": 1, "n_heads": 2, "dropout": 0.0,
                               "embedding_dropout": 0.0, **changes})
    config.validate()
    return DiffuRec(config, n_items)


def test_registered_with_the_official_defaults():
    entry = model_entry("diffurec")
    assert entry.config_class is DiffuRecConfig and entry.model_class is DiffuRec
    assert entry.defaults_for("movielens") == {"max_len": 50} and entry.defaults_for("amazon") == {"max_len": 50}
    config = DiffuRecConfig()
    config.validate()
    assert (config.max_len, config.hidden_size, config.n_blocks, config.n_heads) == (50, 128, 4, 4)
    assert (config.dropout, config.embedding_dropout, config.lambda_uncertainty) == (0.1, 0.3, 0.001)
    assert (config.diffusion_steps, config.steps, config.schedule, config.timestep_sampler) == (32, 32, "trunc_lin", "lossaware")


def test_training_examples_are_every_prefix_truncated_and_left_padded():
    model = tiny(max_len=3)
    train = Sequences.from_lists([[1, 2, 3, 4, 5], [6], [], [7, 8]])
    # worked out by hand: each item after the first is a target; its history is the last <= 3 items before it
    expected = sorted([
        ((0, 0, 1), 2), ((0, 1, 2), 3), ((1, 2, 3), 4), ((2, 3, 4), 5),  # row 0; the last history is truncated
        ((0, 0, 7), 8),  # row 3; rows 1 and 2 have no next item
    ])
    batch = next(iter(model.training_batches(train, Batching(100), np.random.default_rng(0))))
    pairs = sorted(zip(map(tuple, batch["histories"].tolist()), batch["targets"].tolist()))
    assert pairs == expected
    assert batch["histories"].dtype == batch["targets"].dtype == batch["t"].dtype == torch.int64
    assert ((batch["t"] >= 0) & (batch["t"] < 32)).all()

    # in small batches each example still comes exactly once; a batch is padded only to its longest history
    seen = []
    for small in model.training_batches(train, Batching(2), np.random.default_rng(1)):
        histories = small["histories"].numpy()
        width = max(int((row > 0).sum()) for row in histories)
        assert histories.shape == (len(histories), width) and len(histories) <= 2
        for row, target in zip(histories, small["targets"].tolist()):
            real = row[row > 0]
            assert (row[: len(row) - len(real)] == 0).all()  # padding only on the left
            seen.append((tuple(real), target))
    assert sorted(seen) == sorted((tuple(h for h in history if h), target) for history, target in expected)


def test_training_batches_are_shuffled_by_the_given_generator():
    model = tiny()
    train = Sequences.from_lists([list(range(1, 10))] * 3)
    order = lambda seed: [b["targets"].tolist() for b in model.training_batches(train, Batching(5), np.random.default_rng(seed))]
    assert order(0) == order(0) and order(0) != order(1)


def test_loss_is_the_cross_entropy_of_the_scores_and_feeds_the_sampler():
    # With lambda = 0 the approximator ignores x_t, so the training prediction equals the reverse chain's
    # final x0_hat: the loss must be the cross-entropy of score() (padding column excluded).
    model = tiny(lambda_uncertainty=0.0, timestep_sampler="lossaware").eval()
    histories = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6], [0, 0, 0, 9]])
    targets, t = torch.tensor([3, 7, 1]), torch.tensor([0, 5, 31])
    loss = model.loss({"histories": histories, "targets": targets, "t": t})
    per_example = F.cross_entropy(model.score(histories), targets, reduction="none")
    torch.testing.assert_close(loss, per_example.mean())
    assert model.sampler.counts.tolist() == [1 if step in (0, 5, 31) else 0 for step in range(32)]
    np.testing.assert_allclose(model.sampler.losses[[0, 5, 31], 0], per_example.numpy(), rtol=1e-5)


def test_loss_trains_every_part():
    model = tiny()
    batch = next(iter(model.training_batches(Sequences.from_lists([[1, 2, 3, 4, 5]] * 4), Batching(8), np.random.default_rng(0))))
    model.train()
    model.loss(batch).backward()
    untouched = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert untouched == []


def test_padding_is_never_attended():
    model = tiny().eval()
    history, padding = model._history(torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5]]))
    assert padding.tolist() == [[True, True, False, False], [True, False, False, False]]
    junk = torch.where(padding.unsqueeze(-1), torch.randn_like(history) * 100, history)
    x_t, t = torch.randn(2, 8), torch.tensor([3, 17])
    lam_noise = torch.randn(history.shape, generator=torch.Generator().manual_seed(5))
    denoised = model._denoise(history, padding, x_t, t, lam_noise)
    torch.testing.assert_close(model._denoise(junk, padding, x_t, t, lam_noise), denoised)


def test_scores_cover_the_catalogue_padding_never_wins_and_long_histories_keep_their_tail():
    model = tiny().eval()
    histories = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]])
    scores = model.score(histories)
    assert scores.shape == (2, 10) and torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    assert (scores.argmax(1) > 0).all()
    long = torch.tensor([[9, 8, 7, 1, 2, 3, 4], [0, 0, 0, 5, 6, 7, 8]])  # max_len 4: only the last 4 items count
    torch.testing.assert_close(model.score(long), model.score(long[:, -4:]), rtol=0, atol=0)


def test_scoring_is_deterministic_and_leaves_the_global_rng_alone():
    model = tiny().eval()
    histories = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]])
    state = torch.get_rng_state()
    first = model.score(histories)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(model.score(histories), first)


@pytest.mark.parametrize("steps", [1, 4, 32])
def test_inference_steps_are_a_run_time_knob(steps):
    model = tiny().eval()
    assert model.has_denoising_steps
    calls = []
    model.step_mlp.register_forward_hook(lambda *args: calls.append(1))
    model.set_inference_steps(steps)
    assert model.inference_steps == steps
    scores = model.score(torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]]))
    assert torch.isfinite(scores[:, 1:]).all() and len(calls) == steps  # one approximator call per step


@pytest.mark.parametrize("steps", [0, 33])
def test_inference_steps_outside_the_training_chain_are_refused(steps):
    model = tiny()
    with pytest.raises(DrbenchError, match=r"steps must be in \[1, diffusion_steps=32\]"):
        model.set_inference_steps(steps)
    assert model.config.steps == 32


@pytest.mark.parametrize("values, message", [
    ({"max_len": 0}, "max_len"),
    ({"hidden_size": 30, "n_heads": 4}, "divisible"),
    ({"dropout": 1.0}, "dropout"),
    ({"embedding_dropout": -0.1}, "embedding_dropout"),
    ({"diffusion_steps": 0}, "diffusion_steps must be >= 1"),
    ({"diffusion_steps": 8, "steps": 32}, r"steps must be in \[1, diffusion_steps=8\]"),
    ({"schedule": "quadratic"}, "schedule must be one of trunc_lin, linear, cosine, sqrt"),
    ({"timestep_sampler": "importance"}, "timestep_sampler must be one of uniform, lossaware"),
    ({"lambda_uncertainty": -0.001}, "lambda_uncertainty"),
])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(DrbenchError, match=message):
        build_config(DiffuRecConfig, values, "models.diffurec.params")


def test_diffurec_learns_planted_pattern():
    split = planted_split()
    torch.manual_seed(0)
    config = DiffuRecConfig(max_len=20, hidden_size=32, n_blocks=1, n_heads=2, embedding_dropout=0.1)
    model = DiffuRec(config, split.n_items)
    validate = lambda candidate: evaluate(candidate, split.valid, split.n_items).metrics
    trainer = Trainer(TrainConfig(epochs=3, batch_size=128, lr=3e-3, eval_every=3), "ndcg@10", "cpu", seed=0)
    model.fit(split.train, trainer, validate)
    hr = {}
    for steps in (32, 4):  # the official full chain, and a respaced short one on the same weights
        model.set_inference_steps(steps)
        hr[steps] = evaluate(model, split.test, split.n_items).metrics["hr@10"]
    # item i is followed by i + 1 nine times in ten, which popularity cannot see (its HR@10 here is about 0.2)
    assert hr[32] > 0.8 and hr[4] > 0.8


@pytest.mark.parametrize("std", [1.0, 0.02])
def test_item_embeddings_start_at_the_configured_scale_with_a_zero_padding_row(std):
    torch.manual_seed(0)
    model = DiffuRec(DiffuRecConfig(hidden_size=64, n_blocks=1, n_heads=1, item_init_std=std), n_items=2000)
    weight = model.item_embedding.weight.detach()
    assert weight[1:].std().item() == pytest.approx(std, rel=0.02)
    assert not weight[0].any()
    with pytest.raises(DrbenchError, match="item_init_std"):
        DiffuRecConfig(item_init_std=0.0).validate()


def test_the_final_block_computed_at_the_last_position_alone_equals_the_full_block():
    from diffusion.diffurec import last_position

    model = tiny(n_blocks=2, hidden_size=16, n_heads=2).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        x = torch.randn(3, 5, 16)
        padding = torch.tensor([[True, True, False, False, False], [False] * 5, [True] * 4 + [False]])
        full = model.blocks[-1](x, src_key_padding_mask=padding)[:, -1:]
        torch.testing.assert_close(last_position(model.blocks[-1], x, padding), full)
