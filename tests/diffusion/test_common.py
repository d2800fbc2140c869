"""diffusion/common.py: schedules, the forward process, respaced reverse plans, timestep samplers, step embeddings."""

import math

import numpy as np
import pytest
import torch

from bench.errors import DrbenchError
from diffusion.common import (
    SCHEDULES,
    GaussianDiffusion,
    TimestepSampler,
    beta_schedule,
    evenly_spaced_steps,
    timestep_embedding,
)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("n_steps", [1, 5, 32, 1000])
def test_every_schedule_gives_betas_strictly_between_0_and_1(name, n_steps):
    betas = beta_schedule(name, n_steps)
    assert betas.shape == (n_steps,) and betas.dtype == np.float64
    assert ((betas > 0.0) & (betas < 1.0)).all()


def test_trunc_lin_by_hand():
    # scale = 1000 / 32 = 31.25; start = 31.25 * 1e-4 + 0.01, end = 31.25 * 0.02 + 0.01
    betas = beta_schedule("trunc_lin", 32)
    assert betas[0] == pytest.approx(0.013125)
    assert betas[-1] == pytest.approx(0.635)
    np.testing.assert_allclose(np.diff(betas), (0.635 - 0.013125) / 31)  # a straight line
    # the last step is pure noise: alpha_bar = prod(1 - beta) is negligible
    assert GaussianDiffusion(betas).alphas_cumprod[-1] < 1e-4


def test_linear_is_ho_et_al_rescaled():
    betas = beta_schedule("linear", 1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)


def test_unknown_names_and_bad_step_counts_are_refused_with_the_choices():
    with pytest.raises(DrbenchError, match="trunc_lin, linear, cosine, sqrt"):
        beta_schedule("quadratic", 32)
    with pytest.raises(DrbenchError, match="uniform, lossaware"):
        TimestepSampler("importance", 32)
    with pytest.raises(DrbenchError, match=">= 1"):
        beta_schedule("linear", 0)
    for n_used in (0, 33):
        with pytest.raises(DrbenchError, match=r"\[1, 32\]"):
            evenly_spaced_steps(32, n_used)


@pytest.mark.parametrize("n_steps", [7, 32])
def test_evenly_spaced_steps_are_distinct_and_span_the_chain(n_steps):
    assert evenly_spaced_steps(n_steps, 1) == [n_steps - 1]
    assert evenly_spaced_steps(n_steps, n_steps) == list(range(n_steps))
    for n_used in range(2, n_steps + 1):
        kept = evenly_spaced_steps(n_steps, n_used)
        assert len(kept) == n_used and kept[0] == 0 and kept[-1] == n_steps - 1


def test_q_sample_has_the_forward_process_moments():
    diffusion = GaussianDiffusion(beta_schedule("trunc_lin", 32))
    generator = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.0, -2.0, 0.5]).repeat(40_000, 1)  # [N, 3]
    for step in (0, 10, 31):
        t = torch.full((len(x0),), step, dtype=torch.long)
        x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=generator))
        alpha_bar = diffusion.alphas_cumprod[step]
        torch.testing.assert_close(x_t.mean(0), math.sqrt(alpha_bar) * x0[0], atol=0.02, rtol=0)
        torch.testing.assert_close(x_t.var(0), torch.full((3,), 1.0 - alpha_bar), atol=0.03, rtol=0)


def test_q_sample_uses_each_rows_own_step():
    diffusion = GaussianDiffusion(beta_schedule("linear", 10))
    x0, noise = torch.ones(2, 4), torch.zeros(2, 4)
    x_t = diffusion.q_sample(x0, torch.tensor([0, 9]), noise)
    torch.testing.assert_close(x_t[:, 0], torch.tensor(np.sqrt(diffusion.alphas_cumprod[[0, 9]]), dtype=torch.float32))


def test_one_step_plan_jumps_from_pure_noise_straight_to_the_prediction():
    plan = GaussianDiffusion(beta_schedule("trunc_lin", 32)).reverse_plan(1)
    assert len(plan) == 1
    t, coef_x0, coef_xt, std = plan[0]
    assert t == 31 and coef_x0 == pytest.approx(1.0) and coef_xt == pytest.approx(0.0) and std == 0.0


@pytest.mark.parametrize("n_used", [2, 4, 7, 31, 32])
def test_plan_steps_decrease_to_zero_and_only_the_last_is_noise_free(n_used):
    plan = GaussianDiffusion(beta_schedule("trunc_lin", 32)).reverse_plan(n_used)
    steps = [t for t, *_ in plan]
    assert len(plan) == n_used and steps[0] == 31 and steps[-1] == 0
    assert all(a > b for a, b in zip(steps, steps[1:]))
    assert plan[-1][3] == 0.0 and all(std > 0.0 for *_, std in plan[:-1])


@pytest.mark.parametrize("n_used", [1, 3, 32])
def test_plan_coefficients_are_the_posterior_mean_of_the_kept_steps(n_used):
    # With x_t = sqrt(ab_t) x0 (no noise), the posterior mean must be sqrt(ab_prev) x0, where
    # ab_prev is alpha_bar at the next kept step below t (1 below the first): coef_x0 + coef_xt sqrt(ab_t) = sqrt(ab_prev).
    diffusion = GaussianDiffusion(beta_schedule("trunc_lin", 32))
    plan = diffusion.reverse_plan(n_used)
    alpha_bar = [diffusion.alphas_cumprod[t] for t, *_ in plan] + [1.0]
    for (_, coef_x0, coef_xt, _), ab, ab_prev in zip(plan, alpha_bar, alpha_bar[1:]):
        assert coef_x0 + coef_xt * math.sqrt(ab) == pytest.approx(math.sqrt(ab_prev))


def test_full_plan_is_the_ddpm_posterior_with_noise_sqrt_beta():
    betas = beta_schedule("trunc_lin", 32)
    alpha_bar = np.cumprod(1.0 - betas)
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    plan = GaussianDiffusion(betas).reverse_plan(32)
    for t, coef_x0, coef_xt, std in plan:
        assert coef_x0 == pytest.approx(betas[t] * math.sqrt(alpha_bar_prev[t]) / (1.0 - alpha_bar[t]))
        assert coef_xt == pytest.approx((1.0 - alpha_bar_prev[t]) * math.sqrt(1.0 - betas[t]) / (1.0 - alpha_bar[t]))
        assert std == (0.0 if t == 0 else pytest.approx(math.sqrt(betas[t])))


@pytest.mark.parametrize("n_used", [1, 5, 32])
def test_a_perfect_predictor_recovers_x0_exactly(n_used):
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 16, generator=generator, dtype=torch.float64)
    x = torch.randn(8, 16, generator=generator, dtype=torch.float64)  # x_T
    for _, coef_x0, coef_xt, std in GaussianDiffusion(beta_schedule("trunc_lin", 32)).reverse_plan(n_used):
        x = coef_x0 * x0 + coef_xt * x + std * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(x, x0)


def test_lossaware_sampler_is_uniform_until_warm_then_favours_large_losses():
    sampler = TimestepSampler("lossaware", 4, history=3)
    for _ in range(2):
        sampler.update(np.arange(4), np.ones(4))
    np.testing.assert_array_equal(sampler.probabilities(), np.full(4, 0.25))  # 2 of 3 losses per step: not warm
    sampler.update(np.array([0, 1, 3]), np.ones(3))
    np.testing.assert_array_equal(sampler.probabilities(), np.full(4, 0.25))  # step 2 still short of history
    sampler.update(np.array([2]), np.array([10.0]))  # step 2's history is now [1, 1, 10]: warm
    root_mean_square = np.array([1.0, 1.0, math.sqrt(102.0 / 3.0), 1.0])
    expected = root_mean_square / root_mean_square.sum() * (1.0 - 1e-3) + 1e-3 / 4
    np.testing.assert_allclose(sampler.probabilities(), expected)
    assert expected.argmax() == 2

    t, weights = sampler.sample(40_000, np.random.default_rng(0))
    assert abs((t == 2).mean() - expected[2]) < 0.01
    np.testing.assert_allclose(weights, 1.0 / (4 * expected[t]), rtol=1e-6)
    assert t.dtype == np.int64 and weights.dtype == np.float32


def test_lossaware_history_forgets_old_losses():
    sampler = TimestepSampler("lossaware", 2, history=2)
    sampler.update(np.array([0, 0, 1, 1]), np.array([50.0, 50.0, 1.0, 1.0]))
    assert sampler.probabilities()[0] > 0.9
    sampler.update(np.array([0, 0]), np.array([1.0, 1.0]))  # both old losses of step 0 roll out
    np.testing.assert_allclose(sampler.probabilities(), [0.5, 0.5])


def test_lossaware_sampler_with_only_zero_losses_stays_uniform():
    # float32 cross-entropy is exactly 0 once the target wins by a wide margin; 0/0 must not give NaN
    sampler = TimestepSampler("lossaware", 3, history=2)
    sampler.update(np.array([0, 0, 1, 1, 2, 2]), np.zeros(6))
    np.testing.assert_array_equal(sampler.probabilities(), np.full(3, 1.0 / 3.0))
    sampler.sample(8, np.random.default_rng(0))


def test_uniform_sampler_ignores_losses():
    sampler = TimestepSampler("uniform", 4, history=1)
    sampler.update(np.arange(4), np.array([1.0, 1.0, 100.0, 1.0]))
    np.testing.assert_array_equal(sampler.probabilities(), np.full(4, 0.25))
    t, weights = sampler.sample(1000, np.random.default_rng(0))
    assert set(t.tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(weights, np.ones(1000, dtype=np.float32))


def test_sampling_is_deterministic_given_the_generator():
    sampler = TimestepSampler("lossaware", 32)
    first = sampler.sample(64, np.random.default_rng(7))
    second = sampler.sample(64, np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], second[0])


def test_timestep_embedding_shape_values_and_odd_width():
    t = torch.tensor([0.0, 1.5, 1000.0])
    embedding = timestep_embedding(t, 8)
    assert embedding.shape == (3, 8)
    torch.testing.assert_close(embedding[0], torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))  # cos 0, sin 0
    # the first frequency is 1, the others 10000^(-i/4): cosines first, then sines
    frequencies = 10000.0 ** (-torch.arange(4) / 4)
    torch.testing.assert_close(embedding[1], torch.cat([torch.cos(1.5 * frequencies), torch.sin(1.5 * frequencies)]))
    odd = timestep_embedding(torch.tensor([3, 7]), 7)  # integer steps are accepted too
    assert odd.shape == (2, 7) and (odd[:, -1] == 0).all()
    torch.testing.assert_close(odd[:, :6], timestep_embedding(torch.tensor([3.0, 7.0]), 6))
