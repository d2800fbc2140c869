import numpy as np
import pytest

from bench.report.significance import compare_to_best_baseline, holm, paired_p_value, per_user_metric


def test_holm_by_hand():
    # sorted p: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_per_user_metric_from_ranks_averages_seeds():
    seed0 = np.array([1, 3, 11])
    seed1 = np.array([1, 1, 11])
    # NDCG@10 per user: rank 1 -> 1, rank 3 -> 1/log2(4) = 0.5, rank 11 -> 0
    assert per_user_metric([seed0], "ndcg@10") == pytest.approx([1.0, 0.5, 0.0])
    assert per_user_metric([seed0, seed1], "ndcg@10") == pytest.approx([1.0, 0.75, 0.0])
    assert per_user_metric([seed0], "hr@2") == pytest.approx([1.0, 0.0, 0.0])


def test_the_paired_test_is_two_sided():
    rng = np.random.default_rng(0)
    reference = rng.random(300)
    better = reference + 0.05 + 0.01 * rng.random(300)
    assert paired_p_value(better, reference) < 1e-6 and paired_p_value(reference, better) < 1e-6
    assert paired_p_value(better, reference) == pytest.approx(paired_p_value(reference, better))
    assert paired_p_value(reference + rng.normal(0, 1e-3, 300), reference) > 0.01
    assert paired_p_value(reference, reference.copy()) == 1.0
    with pytest.raises(ValueError, match="same users"):
        paired_p_value(reference, reference[:10])


def test_compares_each_candidate_with_the_best_baseline_and_corrects_for_all_tests():
    rng = np.random.default_rng(1)
    weak, strong = rng.random(400) * 0.2, rng.random(400) * 0.2 + 0.1
    per_user = {
        ("d", "pop"): {"ndcg@10": weak},
        ("d", "sasrec"): {"ndcg@10": strong},
        ("d", "diff-good"): {"ndcg@10": strong + 0.05},
        ("d", "diff-same"): {"ndcg@10": strong + rng.normal(0, 1e-3, 400)},
        ("d", "diff-bad"): {"ndcg@10": weak},
    }
    comparisons = {c.model: c for c in compare_to_best_baseline(per_user, {"pop", "sasrec"}, ["ndcg@10"])}
    assert set(comparisons) == {"diff-good", "diff-same", "diff-bad"}
    assert all(c.reference == "sasrec" for c in comparisons.values())
    verdicts = {model: c.verdict for model, c in comparisons.items()}
    assert verdicts == {"diff-good": "better", "diff-same": "no detectable difference", "diff-bad": "worse"}
    assert comparisons["diff-good"].significant and not comparisons["diff-bad"].significant
    raw = sorted(c.p_value for c in comparisons.values())
    assert comparisons["diff-good"].p_holm == pytest.approx(min(1.0, 3 * raw[0]))  # three tests in the family
