"""Uniform-noise discrete diffusion: schedules, forward process, noise sources, loss, denoising, learning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.run.config import TrainConfig, build_config
from bench.errors import DrbenchError
from bench.protocol.evaluation import evaluate, left_padded
from bench.models.base import model_entry
from bench.run.trainer import Trainer
from bench.data.sequences import Sequences
from diffusion.uniform_diffusion import (
    PopularityNoise,
    UniformDiffusion,
    UniformDiffusionConfig,
    UniformNoise,
    corrupt,
    corruption_schedule,
)
from tests.planted import planted_split
from bench.models.batching import Batching


def tiny(**changes) -> UniformDiffusion:
    torch.manual_seed(0)
    return UniformDiffusion(UniformDiffusionConfig(max_len=8, hidden_size=8, n_heads=1, dropout=0.0, **changes), n_items=9)


class NoTraining:
    """A trainer stand-in: ``fit`` then only builds the noise source."""

    def fit(self, model, train, validate):
        return None


def trained_on_planted(split, epochs: int, eval_every: int, **changes) -> UniformDiffusion:
    torch.manual_seed(0)
    config = UniformDiffusionConfig(max_len=20, hidden_size=32, n_blocks=1, dropout=0.1, **changes)
    model = UniformDiffusion(config, split.n_items)
    training = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, eval_every=eval_every, patience=2)
    model.fit(split.train, Trainer(training, "ndcg@10", "cpu", seed=0), lambda m: evaluate(m, split.valid, split.n_items).metrics)
    return model


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_runs_from_zero_to_beta_max(schedule):
    beta_bar = corruption_schedule(schedule, 20, 0.4)
    assert len(beta_bar) == 21 and beta_bar[0] == 0.0 and beta_bar[-1] == pytest.approx(0.4)
    assert (np.diff(beta_bar) > 0).all()
    halfway = 0.2 if schedule == "linear" else 0.4 * (1 - np.cos(np.pi / 4))
    assert beta_bar[10] == pytest.approx(halfway)


def test_corruption_rate_is_beta_bar_and_padding_is_never_touched():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 1001, size=(2000, 50))
    tokens[:, :10] = 0  # left padding
    noisy, corrupted = corrupt(tokens, np.full(2000, 0.25), UniformNoise(Sequences.from_lists([]), 1000), rng)
    assert (noisy[:, :10] == 0).all() and not corrupted[:, :10].any()
    assert corrupted.tolist() == (noisy != tokens).tolist()
    assert ((noisy >= 1) & (noisy <= 1000))[:, 10:].all()
    # a replacement equal to the original (1 in 1000) is not a corruption
    assert corrupted[:, 10:].mean() == pytest.approx(0.25 * (1 - 1 / 1000), abs=0.005)


def test_zero_corruption_changes_nothing():
    tokens = np.array([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]])
    noisy, corrupted = corrupt(tokens, np.zeros(2), UniformNoise(Sequences.from_lists([]), 9), np.random.default_rng(0))
    assert noisy.tolist() == tokens.tolist() and not corrupted.any()


def test_training_batches_corrupt_inputs_at_the_timestep_rate_and_keep_targets_clean():
    model = tiny()
    train = Sequences.from_lists([list(range(1, 10))] * 600 + [[1, 2, 3]] * 200)
    model.fit(train, NoTraining(), None)
    batch = next(iter(model.training_batches(train, Batching(800), np.random.default_rng(0))))
    inputs, targets = batch["inputs"].numpy(), batch["targets"].numpy()
    corrupted, t = batch["corrupted"].numpy(), batch["t"].numpy()
    assert t.min() >= 1 and t.max() <= 20
    long = targets[:, 0] > 0  # the full-length rows: clean inputs 1..8, targets 2..9
    assert long.sum() == 600
    assert (targets[long] == np.arange(2, 10)).all()
    assert (targets[~long] == [0, 0, 0, 0, 0, 1, 2, 3]).all()
    assert (inputs[~long, :6] == 0).all() and not corrupted[~long, :6].any()  # padding stays padding
    assert corrupted[long].tolist() == (inputs[long] != np.arange(1, 9)).tolist()
    # per row, each token is replaced with probability beta_bar_t; 1 in 9 replacements draws the original back
    expected = (model.beta_bar[t[long]] * 8 / 9).mean()
    assert corrupted[long].mean() == pytest.approx(expected, abs=0.02)
    again = next(iter(model.training_batches(train, Batching(800), np.random.default_rng(0))))
    assert torch.equal(again["inputs"], batch["inputs"])  # deterministic given the trainer's generator


def test_noise_sources_draw_catalogue_ids_popularity_by_training_counts():
    rng = np.random.default_rng(0)
    uniform = UniformNoise(Sequences.from_lists([]), 9).draw((4000,), rng)
    assert set(uniform.tolist()) == set(range(1, 10))
    train = Sequences.from_lists([[2, 3, 3, 3], [3, 2, 3, 3]])  # item 2: 1/4, item 3: 3/4, others never
    drawn = PopularityNoise(train, 9).draw((200, 100), rng)
    assert drawn.shape == (200, 100) and set(drawn.ravel().tolist()) == {2, 3}
    assert (drawn == 3).mean() == pytest.approx(0.75, abs=0.01)
    with pytest.raises(DrbenchError, match="popularity"):
        PopularityNoise(Sequences.from_lists([[]]), 9)


def test_loss_is_cross_entropy_plus_lambda_times_noise_bce_over_real_positions():
    model = tiny(lambda_mask=0.3)
    batch = {
        "inputs": torch.tensor([[0, 0, 1, 7, 3], [0, 0, 0, 0, 5]]),
        "targets": torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 5, 6]]),
        "corrupted": torch.tensor([[False, False, False, True, False], [False, False, False, False, False]]),
        "t": torch.tensor([4, 9]),
    }
    states = model.encoder(batch["inputs"], model.condition(batch["t"]))
    real = [(0, 2), (0, 3), (0, 4), (1, 4)]  # the padding slots, and their targets, do not count
    logits = torch.stack([model.logits(states[r, p]) for r, p in real])
    noise_logits = torch.stack([model.noise_head(states[r, p])[0] for r, p in real])
    expected = F.cross_entropy(logits, torch.tensor([2, 3, 4, 6])) + 0.3 * F.binary_cross_entropy_with_logits(
        noise_logits, torch.tensor([0.0, 1.0, 0.0, 0.0])
    )
    torch.testing.assert_close(model.loss(batch), expected)


def force_noise_head(model: UniformDiffusion, logit: float) -> None:
    """Make the noise head output ``logit`` at every position."""
    with torch.no_grad():
        model.noise_head[-1].weight.zero_()
        model.noise_head[-1].bias.fill_(logit)


def test_denoising_replaces_flagged_items_by_the_previous_positions_prediction():
    model = tiny(diffusion_steps=5, steps=1, denoise_from=1.0).eval()
    force_noise_head(model, 50.0)  # every position flagged
    history = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    states = model.encoder(history, model.condition(torch.tensor([5])))  # one step from denoise_from * T = 5
    predicted = model.logits(states).argmax(-1)[0]
    denoised = model.denoise(history)[0].tolist()
    assert denoised[:3] == [0, 0, 3]  # padding and the first real item (nothing predicts it) are kept
    assert denoised[3:] == predicted[2:7].tolist()  # item i <- the next-item prediction at i - 1


def test_nothing_flagged_means_scoring_the_history_at_t0():
    model = tiny().eval()
    force_noise_head(model, -50.0)
    history = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 0, 0, 0, 0, 0, 0, 4, 5]])
    assert model.denoise(history[:, -8:]).tolist() == history[:, -8:].tolist()
    states = model.encoder(history[:, -8:], model.condition(torch.zeros(2, dtype=torch.long)))
    torch.testing.assert_close(model.score(history), model.logits(states[:, -1]))


def test_inference_steps_from_one_to_t():
    model = tiny(diffusion_steps=6, steps=6).eval()
    assert model.inference_steps == 6
    history = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    for steps in (1, 6):
        model.set_inference_steps(steps)
        scores = model.score(history)
        assert scores.shape == (2, 10) and torch.isneginf(scores[:, 0]).all()
        assert (scores.argmax(-1) > 0).all()
    for steps in (0, 7):
        with pytest.raises(DrbenchError, match="steps"):
            model.set_inference_steps(steps)
    assert model.inference_steps == 6


@pytest.mark.parametrize("config, levels", [
    ({"diffusion_steps": 20, "steps": 5, "denoise_from": 0.25}, [5, 4, 3, 2, 1]),
    ({"diffusion_steps": 20, "steps": 1, "denoise_from": 0.25}, [5]),
    ({"diffusion_steps": 20, "steps": 3, "denoise_from": 1.0}, [20, 10, 1]),  # rint(10.5) = 10
    ({"diffusion_steps": 20, "steps": 9, "denoise_from": 0.1}, [2, 2, 2, 2, 2, 1, 1, 1, 1]),  # repeated refinement
])
def test_denoising_levels_run_from_the_assumed_noise_level_down_to_one(config, levels):
    assert tiny(**config).denoising_levels() == levels


@pytest.mark.parametrize("values, message", [
    ({"denoise_from": 0.0}, "denoise_from"), ({"denoise_from": 1.5}, "denoise_from"),
    ({"max_len": 0}, "max_len"), ({"hidden_size": 10, "n_heads": 3}, "divisible"),
    ({"diffusion_steps": 0}, "diffusion_steps"), ({"beta_max": 0.0}, "beta_max"), ({"beta_max": 1.5}, "beta_max"),
    ({"schedule": "sqrt"}, "schedule"), ({"lambda_mask": -0.1}, "lambda_mask"),
    ({"noise_source": "cross_view"}, "noise_source"), ({"steps": 21}, "steps"), ({"steps": 0}, "steps"),
])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(DrbenchError, match=message):
        build_config(UniformDiffusionConfig, values, "models.uniform_diffusion.params")


def test_registered_with_family_defaults():
    entry = model_entry("uniform_diffusion")
    assert entry.config_class is UniformDiffusionConfig and entry.model_class.has_denoising_steps
    assert entry.defaults_for("movielens") == {"max_len": 200} and entry.defaults_for("amazon") == {"max_len": 50}


def test_learns_planted_pattern():
    split = planted_split()
    model = trained_on_planted(split, epochs=20, eval_every=2)  # validation (and test) denoise with 20 steps
    assert evaluate(model, split.test, split.n_items).metrics["hr@10"] > 0.8


def test_noise_head_tells_corrupted_items_from_clean_ones():
    # Without random jumps (follow = 1) a corrupted item is decidable from its context;
    # lambda_mask = 1 makes the encoder learn the features for it within a few seconds.
    split = planted_split(follow=1.0)
    model = trained_on_planted(split, epochs=40, eval_every=40, lambda_mask=1.0).eval()
    histories = left_padded(split.test.histories, np.arange(len(split.test)), 20).numpy()
    t = 15
    noisy, corrupted = corrupt(histories, np.full(len(histories), model.beta_bar[t]), UniformNoise(split.train, split.n_items),
                               np.random.default_rng(1))
    tokens = torch.from_numpy(noisy)
    with torch.no_grad():
        states = model.encoder(tokens, model.condition(torch.full((len(tokens),), t)))
        probability = torch.sigmoid(model.noise_head(states)[..., 0]).numpy()
    real = noisy > 0
    on_corrupted, on_clean = probability[real & corrupted], probability[real & ~corrupted]
    auc = (on_corrupted[:, None] > on_clean[None, :]).mean()
    assert on_corrupted.mean() - on_clean.mean() > 0.3 and auc > 0.8


class FixedNoiseLogits(torch.nn.Module):
    """A noise head that ignores the states: ``logits[b, i]`` for input position i + 1, every step."""

    def __init__(self, logits: list[list[float]]):
        super().__init__()
        self.values = torch.tensor(logits, dtype=torch.float32)

    def forward(self, states):
        return self.values[..., None].expand(*states.shape[:-1], 1)


def ranked(**changes) -> UniformDiffusion:
    # T = 10, beta_bar(t) = 0.05 t: the chain from t_start = 10 replaces half of each history's real items
    return tiny(diffusion_steps=10, beta_max=0.5, denoise_from=1.0, reverse="ranked", **changes).eval()


def test_ranked_step_replaces_the_scheduled_count_the_noise_head_ranks_highest():
    model = ranked(steps=1)
    history = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 1], [0, 0, 0, 3, 4, 5, 6, 7]])
    # all logits negative: the threshold process would replace nothing; ranked goes by rank alone.
    # Row 1 ranks its padding and its first real item (positions 1-3) highest: never eligible.
    model.noise_head = FixedNoiseLogits([[-5, -1, -9, -3, -2, -7, -4], [-0.1, -0.2, -0.3, -6, -1, -8, -2]])
    states = model.encoder(history, model.condition(torch.tensor([10, 10])))
    predicted = model.logits(states).argmax(-1)  # position i is replaced by the prediction at i - 1
    [(level, denoised, replaced)] = model.denoise_trace(history)
    assert level == 10
    # 8 real items x 0.5 = 4: positions 2, 5, 4, 7 (logits -1, -2, -3, -4); 5 x 0.5 = 2.5 -> 3: positions 4, 7, 5
    assert torch.nonzero(replaced).tolist() == [[0, 2], [0, 4], [0, 5], [0, 7], [1, 4], [1, 5], [1, 7]]
    expected = history.clone()
    expected[replaced] = predicted[:, :-1][replaced[:, 1:]]
    assert denoised.tolist() == expected.tolist()
    assert denoised[1, :4].tolist() == [0, 0, 0, 3]  # padding and the first real item are kept


def test_ranked_chain_spreads_the_replacements_over_the_steps_and_never_replaces_a_position_twice():
    model = ranked(steps=2)
    levels, cleaned = model.ranked_chain()
    assert levels == [10, 5] and cleaned == pytest.approx([0.25, 0.5])  # tau 10 -> 5 -> 0
    history = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 1]])
    model.noise_head = FixedNoiseLogits([[-5, -1, -9, -3, -2, -7, -4]])  # the same ranking at every step
    trace = model.denoise_trace(history)
    # 8 x 0.25 = 2 in the first step (positions 2, 5), then 2 more: the next best, 4 and 7
    assert [torch.nonzero(replaced[0]).ravel().tolist() for _, _, replaced in trace] == [[2, 5], [4, 7]]
    assert [level for level, _, _ in trace] == [10, 5]


@pytest.mark.parametrize("steps, levels", [(1, [5]), (2, [5, 2]), (5, [5, 4, 3, 2, 1]), (10, [5, 4, 4, 4, 3, 2, 2, 2, 1, 1])])
def test_ranked_chain_ends_at_beta_bar_of_t_start_whatever_the_number_of_steps(steps, levels):
    model = tiny(diffusion_steps=20, steps=steps, denoise_from=0.25, reverse="ranked")  # t_start 5, beta_bar 0.1
    got_levels, cleaned = model.ranked_chain()
    assert got_levels == levels and len(cleaned) == steps
    assert cleaned[-1] == pytest.approx(0.1) and (np.diff(cleaned) > 0).all()


def test_ranked_denoising_is_deterministic_padding_invariant_and_its_steps_change_the_output():
    torch.manual_seed(1)
    history = torch.randint(1, 10, (6, 6))
    history[3, :2] = 0  # left padding
    history[4, :5] = 0  # a single real item: nothing can be replaced
    one, four = ranked(steps=1), ranked(steps=4)
    assert torch.equal(one.denoise(history), one.denoise(history))
    assert torch.equal(one.score(history), one.score(history))
    once, chained = one.denoise(history), four.denoise(history)
    assert once[4].tolist() == chained[4].tolist() == history[4].tolist()
    assert not torch.equal(once, chained)  # re-ranking after each step's replacements is not the one-shot result
    assert not torch.allclose(one.score(history), four.score(history))
    padded = torch.cat([torch.zeros(6, 2, dtype=torch.long), history], dim=1)  # the model's max_len, 8
    assert torch.equal(four.denoise(padded)[:, 2:], chained)


def test_threshold_and_ranked_differ_when_the_head_is_unsure():
    history = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 1]])
    model = ranked(steps=1)
    force_noise_head(model, -50.0)  # probability ~0 everywhere: the threshold process keeps the history
    threshold = tiny(diffusion_steps=10, beta_max=0.5, denoise_from=1.0, steps=1).eval()
    force_noise_head(threshold, -50.0)
    assert threshold.denoise(history).tolist() == history.tolist()
    [(_, _, replaced)] = model.denoise_trace(history)
    assert replaced.sum().item() == 4 and replaced[0, 1:5].all()  # constant logits: ties go to the earlier positions


def test_config_rejects_an_unknown_reverse_process():
    with pytest.raises(DrbenchError, match="reverse"):
        build_config(UniformDiffusionConfig, {"reverse": "sample"}, "models.uniform_diffusion.params")


@pytest.mark.parametrize("reverse", ["threshold", "ranked"])
def test_a_batch_of_one_item_histories_is_kept(reverse):
    model = tiny(reverse=reverse, steps=3).eval()
    force_noise_head(model, 50.0)
    history = torch.tensor([[4], [7]])  # one column: nothing precedes any item
    assert model.denoise(history).tolist() == [[4], [7]]
    assert model.score(history).shape == (2, 10)
