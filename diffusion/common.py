"""Pieces shared by the diffusion recommenders: noise schedules, timestep samplers, step embeddings.

Gaussian diffusion (DiffuRec) uses ``beta_schedule`` and ``GaussianDiffusion``;
every model that conditions on a timestep uses ``timestep_embedding``;
training draws timesteps from a ``TimestepSampler``. Everything here is
deterministic given the numpy generator passed in.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.errors import DrbenchError

SCHEDULES = ("trunc_lin", "linear", "cosine", "sqrt")
TIMESTEP_SAMPLERS = ("uniform", "lossaware")


def _betas_from_alpha_bar(n_steps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    t = np.arange(n_steps + 1) / n_steps
    ratio = np.array([alpha_bar(x) for x in t[1:]]) / np.array([alpha_bar(x) for x in t[:-1]])
    return np.minimum(1.0 - ratio, max_beta)


def beta_schedule(name: str, n_steps: int) -> np.ndarray:
    """[n_steps] float64 betas of a named schedule.

    ``linear`` is Ho et al.'s 1e-4..0.02 rescaled to ``n_steps``; ``trunc_lin``
    (DiffuRec's default) is the same line shifted up by 0.01, so that even the
    first step adds noise, with the end lowered when it would exceed 1;
    ``cosine`` (Nichol & Dhariwal) and ``sqrt`` (Diffusion-LM) are defined by
    their cumulative products alpha_bar(t).
    """
    if n_steps < 1:
        raise DrbenchError(f"the number of diffusion steps must be >= 1, got {n_steps}")
    scale = 1000.0 / n_steps
    if name == "linear":
        betas = np.linspace(scale * 1e-4, min(scale * 0.02, 0.999), n_steps)
    elif name == "trunc_lin":
        end = scale * 0.02 + 0.01
        if end > 1.0:
            end = scale * 0.001 + 0.01
        betas = np.linspace(scale * 1e-4 + 0.01, min(end, 0.999), n_steps)
    elif name == "cosine":
        betas = _betas_from_alpha_bar(n_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    elif name == "sqrt":
        betas = _betas_from_alpha_bar(n_steps, lambda t: 1.0 - math.sqrt(t + 1e-4))
    else:
        raise DrbenchError(f"unknown noise schedule '{name}'; choose one of {', '.join(SCHEDULES)}")
    return betas.astype(np.float64)


def evenly_spaced_steps(n_steps: int, n_used: int) -> list[int]:
    """``n_used`` timesteps out of 0..n_steps-1, evenly spread, always including the last (noisiest) one."""
    if not 1 <= n_used <= n_steps:
        raise DrbenchError(f"the number of inference steps must be in [1, {n_steps}] (the training steps), got {n_used}")
    if n_used == 1:
        return [n_steps - 1]
    return sorted({int(round(x)) for x in np.linspace(0, n_steps - 1, n_used)})


class GaussianDiffusion:
    """q(x_t | x_0) and the reverse posterior of a Gaussian diffusion with fixed betas.

    Reverse sampling may skip steps: with a subset of the training
    timesteps, betas are recomputed from the cumulative products at the kept
    steps (the respacing of Nichol & Dhariwal, 2021), so 1..T steps all start
    from pure-noise statistics and end at t = 0.
    """

    def __init__(self, betas: np.ndarray):
        self.betas = betas
        self.n_steps = len(betas)
        self.alphas_cumprod = np.cumprod(1.0 - betas)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # x0, noise: [B, d]; t: [B] int64 in [0, n_steps)
        alpha_bar = torch.as_tensor(self.alphas_cumprod, dtype=x0.dtype, device=x0.device)[t].unsqueeze(-1)
        return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise

    def reverse_plan(self, n_used: int) -> list[tuple[int, float, float, float]]:
        """Per reverse step, from noisiest to cleanest: (t, coef_x0, coef_xt, std).

        x_{prev} = coef_x0 * x0_hat + coef_xt * x_t + std * noise: the mean of
        q(x_prev | x_t, x0_hat) plus noise of spread sqrt(beta_t), as in
        DiffuRec and improved DDPM; the last step (t = 0) adds no noise.
        """
        kept = evenly_spaced_steps(self.n_steps, n_used)
        alpha_bar = self.alphas_cumprod[kept]
        alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
        betas = 1.0 - alpha_bar / alpha_bar_prev
        plan = []
        for i in reversed(range(len(kept))):
            coef_x0 = betas[i] * math.sqrt(alpha_bar_prev[i]) / (1.0 - alpha_bar[i])
            coef_xt = (1.0 - alpha_bar_prev[i]) * math.sqrt(1.0 - betas[i]) / (1.0 - alpha_bar[i])
            plan.append((kept[i], coef_x0, coef_xt, 0.0 if i == 0 else math.sqrt(betas[i])))
        return plan


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[B] (possibly fractional) timesteps -> [B, dim] sinusoidal features (cosines, then sines)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimestepSampler:
    """Draws training timesteps; ``lossaware`` favours steps whose loss is large and varies.

    ``lossaware`` is the second-moment resampler of improved DDPM (Nichol &
    Dhariwal, 2021) that DiffuRec selects: p(t) proportional to
    sqrt(E[loss_t^2]) over the last ``history`` losses of each step, mixed
    with ``uniform_prob`` of the uniform distribution; uniform until every
    step has a full history. ``sample`` also returns the importance weights
    1 / (T p(t)) that keep a weighted loss unbiased.
    """

    def __init__(self, name: str, n_steps: int, history: int = 10, uniform_prob: float = 1e-3):
        if name not in TIMESTEP_SAMPLERS:
            raise DrbenchError(f"unknown timestep sampler '{name}'; choose one of {', '.join(TIMESTEP_SAMPLERS)}")
        self.name = name
        self.n_steps = n_steps
        self.uniform_prob = uniform_prob
        self.losses = np.zeros((n_steps, history))
        self.counts = np.zeros(n_steps, dtype=np.int64)

    def probabilities(self) -> np.ndarray:
        if self.name == "uniform" or (self.counts < self.losses.shape[1]).any():
            return np.full(self.n_steps, 1.0 / self.n_steps)
        weights = np.sqrt((self.losses**2).mean(axis=1))
        if weights.sum() == 0.0:  # every recorded loss underflowed to 0: nothing to favour, and 0/0 would be NaN
            return np.full(self.n_steps, 1.0 / self.n_steps)
        weights = weights / weights.sum()
        return weights * (1.0 - self.uniform_prob) + self.uniform_prob / self.n_steps

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.probabilities()
        t = rng.choice(self.n_steps, size=batch_size, p=p)
        return t.astype(np.int64), (1.0 / (self.n_steps * p[t])).astype(np.float32)

    def update(self, t: np.ndarray, losses: np.ndarray) -> None:
        """Record per-example losses of the timesteps just trained (no-op for ``uniform``)."""
        if self.name == "uniform":
            return
        history = self.losses.shape[1]
        for step, loss in zip(np.asarray(t).tolist(), np.asarray(losses, dtype=np.float64).tolist()):
            if self.counts[step] == history:
                self.losses[step, :-1] = self.losses[step, 1:]
                self.losses[step, -1] = loss
            else:
                self.losses[step, self.counts[step]] = loss
                self.counts[step] += 1
