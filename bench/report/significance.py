"""Paired significance tests on per-user metrics, with Holm's correction.

Every model of a suite is tested on the same users (one shared split), so
two models can be compared user by user. A model's per-user value is its
metric averaged over seeds, which keeps the pairing and uses every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

from bench.errors import DrbenchError
from bench.protocol.metrics import per_user_metrics

TEST_NAME = "two-sided paired Wilcoxon signed-rank test on per-user values, Holm-corrected over all {n} tests, alpha {alpha:g}"


def per_user_metric(ranks_by_seed: list[np.ndarray], metric: str) -> np.ndarray:
    """[U] mean over seeds of a per-user metric (e.g. ``ndcg@10``) from the seeds' target ranks."""
    name, _, k = metric.partition("@")
    values = [per_user_metrics(ranks, [int(k)])[metric] for ranks in ranks_by_seed]
    return np.mean(values, axis=0)


def paired_p_value(candidate: np.ndarray, reference: np.ndarray) -> float:
    """p-value of "candidate and reference differ" (two-sided Wilcoxon signed-rank, zero differences dropped).

    Two-sided, so that one test per cell gives the three verdicts: better, worse, no detectable difference.
    """
    if candidate.shape != reference.shape:
        raise ValueError(f"paired test needs the same users: {candidate.shape} vs {reference.shape}")
    if np.all(candidate == reference):
        return 1.0
    return float(wilcoxon(candidate, reference, alternative="two-sided", zero_method="wilcox").pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), controlling the family-wise error rate."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.empty(m)
    running_max = 0.0
    for position, index in enumerate(order):
        running_max = max(running_max, min(1.0, (m - position) * p[index]))
        adjusted[index] = running_max
    return adjusted.tolist()


@dataclass
class Comparison:
    dataset: str
    model: str
    reference: str  # the best baseline on this dataset
    metric: str
    model_mean: float
    reference_mean: float
    p_value: float
    p_holm: float = float("nan")
    alpha: float = 0.05

    @property
    def verdict(self) -> str:
        """Against the best baseline: "better", "worse" (significant after Holm) or "no detectable difference"."""
        if self.p_holm < self.alpha and self.model_mean != self.reference_mean:
            return "better" if self.model_mean > self.reference_mean else "worse"
        return "no detectable difference"

    @property
    def significant(self) -> bool:
        """Significantly better than the best baseline."""
        return self.verdict == "better"


def check_same_users(dataset: str, model: str, reference: str, evaluated: dict[tuple[str, str], tuple[str, np.ndarray]]) -> None:
    """A paired test pairs user i with user i: both models must have been tested on the same users of the same split."""
    (split_a, users_a), (split_b, users_b) = evaluated[(dataset, model)], evaluated[(dataset, reference)]
    if split_a != split_b or not np.array_equal(users_a, users_b):
        what = f"splits {split_a} and {split_b}" if split_a != split_b else "different users of one split"
        raise DrbenchError(f"{dataset}: {model} and {reference} were tested on {what}; a paired test needs the same users "
                           "of the same split (report runs of different splits separately)")


def compare_to_best_baseline(per_user: dict[tuple[str, str], dict[str, np.ndarray]], baselines: set[str],
                             metrics: list[str], alpha: float = 0.05,
                             evaluated: dict[tuple[str, str], tuple[str, np.ndarray]] | None = None) -> list[Comparison]:
    """Test every non-baseline model against the best baseline, per dataset and metric; Holm across all tests.

    per_user: (dataset, model) -> {metric: [U] per-user values (seed-averaged)}.
    The best baseline is the one with the highest mean on that dataset and
    metric. Every non-baseline model is tested (the family of tests is fixed
    before looking at the results), two-sided, so each comparison ends as
    better, worse or no detectable difference; the correction counts every
    test of the table.
    ``evaluated``: (dataset, model) -> (split fingerprint, [U] test users);
    every pair is checked to be the same users of the same split.
    A metric a model did not measure (NaN values: K beyond its generated
    list) is not tested, and such a baseline is no reference for it.
    """
    comparisons = []
    for metric in metrics:
        for dataset in sorted({d for d, _ in per_user}):
            models = {m: v[metric] for (d, m), v in per_user.items() if d == dataset and not np.isnan(v[metric]).any()}
            reference_models = {m: v for m, v in models.items() if m in baselines}
            if not reference_models:
                continue
            reference = max(reference_models, key=lambda m: reference_models[m].mean())
            for model, values in models.items():
                if model in baselines:
                    continue
                if evaluated is not None:
                    check_same_users(dataset, model, reference, evaluated)
                comparisons.append(Comparison(dataset, model, reference, metric, float(values.mean()),
                                              float(reference_models[reference].mean()),
                                              paired_p_value(values, reference_models[reference]), alpha=alpha))
    for comparison, adjusted in zip(comparisons, holm([c.p_value for c in comparisons])):
        comparison.p_holm = adjusted
    return comparisons
